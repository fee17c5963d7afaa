//! What cold-start SFT does to held-out accuracy, step by step, and whether blocks pay after it.
//!
//! Trains an SFT stage from a model directory (tiny-base by default) and evaluates greedily on
//! held-out hard problems at the start, every `--every` steps and at the end: accuracy and
//! parallel ratio, and at the end also with blocks forbidden (forced-sequential decoding under the
//! same prompt). Blocks pay when the parallel accuracy beats the forced-sequential one.
//!
//! `cargo run --release -p prl-trainer --example sft_curve -- --steps 1000 --learning-rate 1e-3`

mod common;

use anyhow::Result;
use clap::Parser;
use prl_schema::ids::RunId;
use prl_schema::spec::{Attention, RolloutMode};
use prl_trainer::checkpoint;
use prl_trainer::model::LoadedModel;
use prl_trainer::tokenizer::{EOS, PrlTokenizer};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

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
    /// Prints this many responses of each evaluation, wrong ones first.
    #[arg(long, default_value_t = 0)]
    show: usize,
    /// Batches in plain shuffled order instead of grouped by length, as the demo's SFT rows are.
    #[arg(long)]
    no_group_by_length: bool,
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
        let model = LoadedModel::load(dir, Device::Cpu)?;
        let (tok, _) = PrlTokenizer::load(&dir.join("tokenizer.json"), EOS)?;
        for &mode in modes {
            let (result, mut responses) = common::greedy(
                &model,
                &tok,
                &args.benchmark,
                args.prompts,
                attention,
                mode,
                256,
            )?;
            println!(
                "step {step:>5} {:>10}: greedy {:.3}, parallel ratio {:.3} ({:.0} s)",
                format!("{mode:?}"),
                result.mean_at_k,
                result.parallel_ratio,
                started.elapsed().as_secs_f64()
            );
            responses.sort_by_key(|r| r.correct);
            for response in responses.iter().take(args.show) {
                let verdict = if response.correct { "right" } else { "wrong" };
                println!("  [{verdict}] {}", response.text.replace('\n', "\n  "));
            }
        }
        Ok(())
    };
    let both = [RolloutMode::Parallel, RolloutMode::Sequential];
    report(0, &args.from, &both)?;

    let stage = serde_json::json!({
        "name": "sft", "dataset": args.dataset, "attention": attention,
        "learning_rate": args.learning_rate, "max_steps": args.steps,
        "batch_size": args.batch_size, "warmup_ratio": 0.05, "checkpoint_every": args.every,
        "group_by_length": !args.no_group_by_length,
    });
    // Checkpoints are evaluated once training is done, so that timings stay the SFT's own.
    let job = common::train_sft(&args.from, stage, RunId::new(), &args.work, args.every)?;
    for step in (args.every..args.steps).step_by(args.every as usize) {
        let dir = checkpoint::step_dir(&args.work, &job, step);
        report(step, &dir, &[RolloutMode::Parallel])?;
    }
    let last = checkpoint::step_dir(&args.work, &job, args.steps);
    report(args.steps, &last, &both)
}
