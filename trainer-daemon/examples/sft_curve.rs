//! What cold-start SFT does to held-out accuracy, step by step, and whether blocks pay after it.
//!
//! Trains an SFT stage from a model directory (tiny-base by default) and evaluates greedily on
//! held-out hard problems at the start, every `--every` steps and at the end: accuracy and
//! parallel ratio, and at the end also with blocks forbidden (forced-sequential decoding under the
//! same prompt). Blocks pay when the parallel accuracy beats the forced-sequential one.
//!
//! `cargo run --release -p prl-trainer --example sft_curve -- --steps 1000 --learning-rate 1e-3`

use anyhow::Result;
use clap::Parser;
use prl_schema::ids::{ExperimentId, JobId, RunId};
use prl_schema::jobs::{JobMessage, WorkerEvent};
use prl_schema::spec::{Attention, ModelRef, RolloutMode, StageSpec};
use prl_trainer::checkpoint;
use prl_trainer::data;
use prl_trainer::eval::{Protocol, evaluate};
use prl_trainer::model::LoadedModel;
use prl_trainer::rollout::RolloutConfig;
use prl_trainer::sampling::Sampler;
use prl_trainer::sft;
use prl_trainer::tokenizer::{EOS, PrlTokenizer};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// The model SFT starts from.
    #[arg(long, default_value = "trainer-daemon/assets/tiny-base")]
    from: PathBuf,
    /// Scratch space for the checkpoints.
    #[arg(long, default_value = "target/sft-curve")]
    work: PathBuf,
    #[arg(long, default_value = "builtin:mixed")]
    dataset: String,
    #[arg(long, value_enum, default_value = "unseen")]
    attention: AttentionArg,
    #[arg(long, default_value_t = 1e-3)]
    learning_rate: f64,
    #[arg(long, default_value_t = 400)]
    steps: u64,
    #[arg(long, default_value_t = 32)]
    batch_size: u64,
    /// Evaluates the checkpoint every this many steps.
    #[arg(long, default_value_t = 100)]
    every: u64,
    /// Held-out prompts per evaluation.
    #[arg(long, default_value_t = 256)]
    prompts: usize,
    #[arg(long, default_value = "builtin:hard-test")]
    benchmark: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AttentionArg {
    Seen,
    Unseen,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let attention = match args.attention {
        AttentionArg::Seen => Attention::Seen,
        AttentionArg::Unseen => Attention::Unseen,
    };
    let started = Instant::now();
    let report = |step: u64, dir: &Path, modes: &[RolloutMode]| -> Result<()> {
        for &mode in modes {
            let (accuracy, ratio) = greedy(dir, &args.benchmark, args.prompts, attention, mode)?;
            println!(
                "step {step:>5} {:>10}: greedy {accuracy:.3}, parallel ratio {ratio:.3} ({:.0} s)",
                format!("{mode:?}"),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    };
    let both = [RolloutMode::Parallel, RolloutMode::Sequential];
    report(0, &args.from, &both)?;

    let stage = serde_json::from_value(serde_json::json!({
        "name": "sft", "dataset": args.dataset, "attention": attention,
        "learning_rate": args.learning_rate, "max_steps": args.steps,
        "batch_size": args.batch_size, "warmup_ratio": 0.05, "checkpoint_every": args.every,
    }))?;
    let job = JobMessage {
        job_id: JobId::new(),
        run_id: RunId::new(),
        experiment_id: ExperimentId::new(),
        attempt: 1,
        expected_version: 0,
        model: ModelRef::Path(args.from.display().to_string()),
        stage: StageSpec::Sft(stage),
        seed: 1,
        input_checkpoint: None,
        datasets: Default::default(),
    };
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let training = {
        let (job, work) = (job.clone(), args.work.clone());
        std::thread::spawn(move || sft::train(&job, &work, &CancellationToken::new(), &events))
    };
    // Checkpoints are evaluated once training is done, so that timings stay the SFT's own.
    while let Some(event) = received.blocking_recv() {
        if let WorkerEvent::Metrics { step, values } = event
            && step % args.every == 0
        {
            println!(
                "step {step:>5}: loss {:.4}, {:.0} tokens/s ({:.0} s)",
                values["loss"],
                values["tokens_per_s"],
                started.elapsed().as_secs_f64()
            );
        }
    }
    training.join().expect("the training thread")?;
    for step in (args.every..args.steps).step_by(args.every as usize) {
        let dir = checkpoint::step_dir(&args.work, job.run_id, step);
        report(step, &dir, &[RolloutMode::Parallel])?;
    }
    let last = checkpoint::step_dir(&args.work, job.run_id, args.steps);
    report(args.steps, &last, &both)
}

/// Greedy accuracy and parallel ratio of the model in `dir` on `prompts` prompts of `benchmark`.
fn greedy(
    dir: &Path,
    benchmark: &str,
    prompts: usize,
    attention: Attention,
    mode: RolloutMode,
) -> Result<(f64, f64)> {
    let model = LoadedModel::load(dir, Device::Cpu)?;
    let (tok, _) = PrlTokenizer::load(&dir.join("tokenizer.json"), EOS)?;
    let tasks = data::tasks(benchmark, Some(prompts), &Default::default())?;
    let protocol = Protocol {
        k: 1,
        greedy: false,
        config: RolloutConfig {
            attention,
            mode,
            paths: 2,
            path_budget: 64,
            max_blocks: 4,
            max_new_tokens: 256,
            sampler: Sampler {
                temperature: 0.0,
                top_p: 1.0,
            },
        },
    };
    let evaluation = evaluate(&model, &tok, &tasks, benchmark, 0, &protocol, Device::Cpu)?;
    let result = &evaluation.results[0];
    Ok((result.mean_at_k, result.parallel_ratio))
}
