use clap::Parser;
use prl_schema::spec::StageKind;
use prl_trainer::daemon::{DaemonConfig, Executor, run};
use prl_trainer::file_access::FileAccess;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The prl trainer daemon: takes jobs from NATS JetStream and reports events back.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Prefix of the streams and subjects; must match the API's.
    #[arg(long, env = "PRL_NATS__NAMESPACE", default_value = "prl")]
    namespace: String,
    /// Servers of a NATS cluster that keep each stream; must match the API's.
    #[arg(long, env = "PRL_NATS__REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// This daemon's name in claims; defaults to host and process id.
    #[arg(long, env = "PRL_WORKER_ID")]
    worker_id: Option<String>,
    /// Job kinds to take (sft, rl, eval).
    #[arg(long, value_delimiter = ',', default_value = "sft,rl,eval", value_parser = parse_kind)]
    kinds: Vec<StageKind>,
    /// Where checkpoints are written.
    #[arg(long, env = "PRL_DATA_DIR", default_value = ".prl/trainer")]
    data_dir: PathBuf,
    /// Directories under which jobs may name dataset files and model directories (repeatable);
    /// the working directory and prl's cache (~/.cache/prl) when absent. The data directory is
    /// always one.
    #[arg(long = "data-root", value_name = "DIR")]
    data_roots: Vec<PathBuf>,
    /// The largest dataset file a job may make the daemon read.
    #[arg(long, default_value_t = 1 << 30)]
    max_dataset_bytes: u64,
    #[arg(long, default_value_t = 2000)]
    heartbeat_ms: u64,
    /// Duration of one dry-run step.
    #[arg(long, default_value_t = 200)]
    step_ms: u64,
    /// `train` runs every job for real; `dry-run` walks the job protocol without a model.
    #[arg(long, default_value = "train", value_parser = parse_executor)]
    executor: Executor,
    /// libtorch's threads for this daemon's work; all cores when absent. Daemons sharing a
    /// machine each take their share.
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_executor(text: &str) -> Result<Executor, String> {
    match text {
        "train" => Ok(Executor::Train),
        "dry-run" => Ok(Executor::DryRun),
        other => Err(format!(
            "unknown executor {other:?}; expected train or dry-run"
        )),
    }
}

fn parse_kind(text: &str) -> Result<StageKind, String> {
    StageKind::ALL
        .into_iter()
        .find(|k| k.as_str() == text)
        .ok_or_else(|| format!("unknown job kind {text:?}; expected sft, rl or eval"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,prl_trainer=info".into()),
        )
        .init();
    let args = Args::parse();
    if let Some(threads) = args.threads {
        tch::set_num_threads(threads.max(1) as i32);
    }
    let worker_id = args.worker_id.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "host".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let mut data_roots = match args.data_roots.is_empty() {
        true => vec![PathBuf::from("."), prl_trainer::presets::cache_root()],
        false => args.data_roots,
    };
    data_roots.push(args.data_dir.clone());
    let config = DaemonConfig {
        nats_url: args.nats_url,
        namespace: args.namespace,
        replicas: args.replicas,
        worker_id,
        kinds: args.kinds,
        files: FileAccess::new(&data_roots, args.max_dataset_bytes),
        data_dir: args.data_dir,
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        step_delay: Duration::from_millis(args.step_ms),
        executor: args.executor,
    };
    let shutdown = CancellationToken::new();
    prl_bus::signals::cancel_on_signal(shutdown.clone());
    run(config, shutdown).await
}
