//! `prl-trainer`'s command line (docs/reference/prl-trainer.md is generated from it).

use crate::daemon::Executor;
use clap::Parser;
use prl_schema::spec::StageKind;
use std::path::PathBuf;

/// The prl trainer daemon: takes jobs from NATS JetStream and reports events back.
#[derive(Parser)]
#[command(version)]
pub struct Args {
    /// NATS with JetStream: one URL or a cluster's seeds separated by commas, with
    /// `user:password@` or `token@` before the host.
    #[arg(
        long,
        env = "NATS_URL",
        hide_env_values = true,
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Prefix of the streams and subjects; must match the API's.
    #[arg(long, env = "PRL_NATS__NAMESPACE", default_value = "prl")]
    pub namespace: String,
    /// Servers of a NATS cluster that keep each stream; must match the API's.
    #[arg(long, env = "PRL_NATS__REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// This daemon's name in claims; defaults to host and process id.
    #[arg(long, env = "PRL_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Job kinds to take (sft, rl, eval).
    #[arg(long, value_delimiter = ',', default_value = "sft,rl,eval", value_parser = parse_kind)]
    pub kinds: Vec<StageKind>,
    /// Where checkpoints are written, and fetched ones kept (a local mirror of the store).
    #[arg(long, env = "PRL_DATA_DIR", default_value = ".prl/trainer")]
    pub data_dir: PathBuf,
    /// The artifact store every host reads checkpoints from: `file:///shared/dir` or
    /// `s3://bucket/prefix`; `<data-dir>/store` when absent (this host alone). An S3-compatible
    /// server's address and credentials come from AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ALLOW_HTTP.
    #[arg(long, env = "PRL_STORE__URL")]
    pub store: Option<String>,
    /// Directories under which jobs may name dataset files and model directories (repeatable);
    /// the working directory and prl's cache (~/.cache/prl) when absent. The data directory is
    /// always one.
    #[arg(long = "data-root", value_name = "DIR")]
    pub data_roots: Vec<PathBuf>,
    /// The largest dataset file a job may make the daemon read.
    #[arg(long, default_value_t = 1 << 30)]
    pub max_dataset_bytes: u64,
    /// How often a running job's lease is renewed, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub heartbeat_ms: u64,
    /// Duration of one dry-run step, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub step_ms: u64,
    /// `train` runs every job for real; `dry-run` walks the job protocol without a model.
    #[arg(long, default_value = "train", value_parser = parse_executor)]
    pub executor: Executor,
    /// The device jobs train on: `cpu`, `cuda:N` (run one daemon per GPU), or `auto` (the first
    /// GPU when CUDA is available, else the CPU).
    #[arg(long, env = "PRL_DEVICE", default_value = "auto", value_parser = crate::device::parse)]
    pub device: tch::Device,
    /// The GPU's memory in GB (10^9 bytes), which stages' `resources.min_gpu_memory_gb` is compared with;
    /// read from nvidia-smi when absent.
    #[arg(long)]
    pub gpu_memory_gb: Option<f64>,
    /// A label stages' `resources.labels` can ask for, as KEY=VALUE (repeatable), e.g.
    /// `--label gpu=h100 --label zone=a`.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// libtorch's threads for this daemon's work; all cores when absent. Daemons sharing a
    /// machine each take their share.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Makes this daemon a verl bridge: it takes only RL stages with `backend = "verl"` and runs
    /// them on the Ray cluster whose dashboard (Jobs API) is at this address, such as
    /// `http://head:8265` (docs/verl.md).
    /// (Not Ray's own RAY_ADDRESS, which often names a cluster for `ray job submit` and would
    /// turn every trainer started beside it into a bridge.)
    #[arg(long, env = "PRL_RAY_ADDRESS")]
    pub ray_address: Option<String>,
    /// A bridge's command that verl's overrides follow in the Ray job's entrypoint.
    #[arg(long, default_value = "python3 -m verl.trainer.main_ppo")]
    pub verl_command: String,
    /// Where a bridge makes each verl job's directory (data, dumps, metrics, checkpoints): the
    /// same path on the Ray head node, which runs entrypoints; `<data-dir>/verl` when absent.
    #[arg(long)]
    pub verl_run_dir: Option<PathBuf>,
    /// How often a bridge reads the job's files and status, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub verl_poll_ms: u64,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("a label is KEY=VALUE, not {text:?}"))?;
    let check = |part: &str| prl_schema::spec::Label::try_from(part.to_owned()).map(String::from);
    Ok((check(key)?, check(value)?))
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
