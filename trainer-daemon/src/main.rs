use clap::Parser;
use prl_artifacts::{ArtifactStore, S3Options};
use prl_schema::spec::StageKind;
use prl_trainer::checkpoint::Checkpoints;
use prl_trainer::cli::Args;
use prl_trainer::daemon::{DaemonConfig, Executor, run};
use prl_trainer::file_access::FileAccess;
use prl_trainer::verl::VerlBridge;
use prl_trainer::verl::ray_jobs::RayJobs;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "host".into());
    let host = host.trim().to_owned();
    let worker_id = args
        .worker_id
        .unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    prl_trainer::device::set(args.device);
    let gpu_memory_gb = match args.device {
        tch::Device::Cuda(n) => args
            .gpu_memory_gb
            .or_else(|| prl_trainer::device::gpu_memory_gb(n)),
        _ => None,
    };
    let mut data_roots = match args.data_roots.is_empty() {
        true => vec![PathBuf::from("."), prl_trainer::presets::cache_root()],
        false => args.data_roots,
    };
    data_roots.push(args.data_dir.clone());
    std::fs::create_dir_all(&args.data_dir)?;
    let data_dir = args.data_dir.canonicalize()?;
    let store_url = match args.store {
        Some(url) => url,
        None => format!("file://{}", data_dir.join("store").display()),
    };
    let store = ArtifactStore::open(&store_url, &S3Options::default())?;
    // A bridge takes verl's RL stages and nothing else.
    let (executor, kinds, device) = match &args.ray_address {
        Some(address) => {
            let run_root = args.verl_run_dir.unwrap_or_else(|| data_dir.join("verl"));
            std::fs::create_dir_all(&run_root)?;
            let bridge = VerlBridge {
                ray: RayJobs::new(address)?,
                program: args.verl_command,
                run_root: run_root.canonicalize()?,
                poll: Duration::from_millis(args.verl_poll_ms),
            };
            (
                Executor::Verl(bridge),
                vec![StageKind::Rl],
                "ray".to_owned(),
            )
        }
        None => (
            args.executor,
            args.kinds,
            prl_trainer::device::name(args.device),
        ),
    };
    let config = DaemonConfig {
        nats_url: args.nats_url,
        namespace: args.namespace,
        replicas: args.replicas,
        worker_id,
        host,
        device,
        gpu_memory_gb,
        labels: args.labels.into_iter().collect(),
        kinds,
        files: FileAccess::new(&data_roots, args.max_dataset_bytes),
        checkpoints: Checkpoints { store, data_dir },
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        step_delay: Duration::from_millis(args.step_ms),
        executor,
    };
    let shutdown = CancellationToken::new();
    prl_bus::signals::cancel_on_signal(shutdown.clone());
    run(config, shutdown).await
}
