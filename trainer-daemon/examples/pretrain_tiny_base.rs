//! Pretrains the `tiny-base` preset, as Parallel-R1 starts from a pretrained base: the tiny
//! architecture learns *sequential* solutions of the built-in task family (no tags), under both
//! prompts, until it reasons step by step with real accuracy. The solutions check hard steps by
//! other routes and try both cases of a condition in plain lines, as a real base has read such
//! text: the parallel solutions' reasoning without their tags (`builtin:pretrain`). Its
//! vocabulary, a byte-level BPE learned from the same text, already holds the six tags, whose rows
//! are then reset to the mean of the others: untrained, as in the reference's
//! Qwen3-4B-Base-Special.
//!
//! Run by `scripts/pretrain_tiny_base.sh`, which writes `trainer-daemon/assets/tiny-base/`. The run
//! is seeded: the same seed, steps and thread count give the same weights.

mod common;

use anyhow::{Context, Result};
use clap::Parser;
use prl_schema::ids::RunId;
use prl_schema::spec::{Attention, RolloutMode};
use prl_trainer::checkpoint;
use prl_trainer::data::BuiltinSet;
use prl_trainer::model::LoadedModel;
use prl_trainer::presets::{self, PRL_META};
use prl_trainer::tokenizer::PrlTokenizer;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Parser)]
struct Args {
    /// Where the finished base goes.
    #[arg(long)]
    out: PathBuf,
    /// Scratch space for the run's checkpoints (a killed run resumes from them).
    #[arg(long, default_value = "target/pretrain-tiny-base")]
    work: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 2_000)]
    steps: u64,
    #[arg(long, default_value_t = 32)]
    batch_size: u64,
    #[arg(long, default_value_t = 2e-3)]
    learning_rate: f64,
    #[arg(long, default_value_t = 512)]
    vocab: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    // The vocabulary covers the parallel solutions' words too (tags aside), as a real base's
    // covers the text it is later fine-tuned on.
    let parallel = BuiltinSet::parse("builtin:mixed")?.examples();
    let pretrain = BuiltinSet::parse("builtin:pretrain")?.examples();
    let corpus = pretrain.iter().chain(&parallel).map(|e| {
        let mut text = format!("{}{}", e.prompt, e.response);
        for tag in prl_schema::parallel::TAGS {
            text = text.replace(tag, "");
        }
        text
    });
    let tok = PrlTokenizer::byte_bpe(corpus, args.vocab)?;
    println!("tokenizer: {} tokens", tok.vocab_size());

    // The random start, written as a model directory the SFT job loads like any other.
    let init = args.work.join(format!("init-{}", args.seed));
    tch::manual_seed(args.seed as i64);
    let random = LoadedModel::random(presets::tiny_config(tok.vocab_size()), Device::Cpu);
    random.save(&init)?;
    tok.save(&init.join("tokenizer.json"))?;
    std::fs::write(
        init.join(PRL_META),
        serde_json::json!({ "eos": tok.eos_token }).to_string(),
    )?;

    let stage = serde_json::json!({
        "name": "pretrain", "dataset": "builtin:pretrain",
        "learning_rate": args.learning_rate, "max_steps": args.steps,
        "batch_size": args.batch_size, "warmup_ratio": 0.02, "checkpoint_every": 1000,
        "group_by_length": true
    });
    let run_id = RunId(uuid::Uuid::from_u128(
        0x0007_ba5e_0000 + u128::from(args.seed),
    ));
    let job = common::train_sft(&init, stage, run_id, &args.work, 250)?;
    let trained = checkpoint::step_dir(&args.work, &job, args.steps);
    let mut base = LoadedModel::load(&trained, Device::Cpu)?;
    forget_tags(&mut base, &tok)?;

    std::fs::create_dir_all(&args.out)?;
    base.save(&args.out)?;
    tok.save(&args.out.join("tokenizer.json"))?;
    let measured = measure(&base, &tok)?;
    let meta = serde_json::json!({
        "eos": tok.eos_token,
        "pretraining": {
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "seed": args.seed, "steps": args.steps, "batch_size": args.batch_size,
            "learning_rate": args.learning_rate, "dataset": "builtin:pretrain",
            "group_by_length": true,
            "minutes": (started.elapsed().as_secs_f64() / 60.0 * 10.0).round() / 10.0,
            "threads": tch::get_num_threads(),
            "accuracy": measured,
        }
    });
    std::fs::write(
        args.out.join(PRL_META),
        serde_json::to_string_pretty(&meta)?,
    )?;
    println!("{}", serde_json::to_string_pretty(&meta)?);
    Ok(())
}

/// Resets the tags' embedding rows (tied with the output head) to the mean of the other rows.
fn forget_tags(model: &mut LoadedModel, tok: &PrlTokenizer) -> Result<()> {
    let tags = [
        tok.tags.open_parallel,
        tok.tags.close_parallel,
        tok.tags.open_path,
        tok.tags.close_path,
        tok.open_summary,
        tok.close_summary,
    ];
    let mut vars = model.vs.variables();
    let embed = vars
        .get_mut("model.embed_tokens.weight")
        .context("no embedding")?;
    tch::no_grad(|| {
        let keep: Vec<i64> = (0..embed.size()[0]).filter(|i| !tags.contains(i)).collect();
        let mean =
            embed
                .index_select(0, &Tensor::from_slice(&keep))
                .mean_dim(0, false, Kind::Float);
        for tag in tags {
            let mut row = embed.get(tag);
            row.copy_(&mean);
        }
    });
    Ok(())
}

/// Greedy accuracy and parallel ratio on the held-out splits, under both prompts.
fn measure(model: &LoadedModel, tok: &PrlTokenizer) -> Result<serde_json::Value> {
    let mut out = serde_json::Map::new();
    for set in [
        "builtin:easy-test",
        "builtin:hard-test",
        "builtin:easy-test:sequential",
        "builtin:hard-test:sequential",
    ] {
        let (result, _) = common::greedy(
            model,
            tok,
            set,
            512,
            Attention::Seen,
            RolloutMode::Parallel,
            256,
        )?;
        println!(
            "{set}: greedy accuracy {:.3}, parallel ratio {:.3}",
            result.mean_at_k, result.parallel_ratio
        );
        out.insert(
            set.to_owned(),
            serde_json::json!({
                "greedy": result.mean_at_k,
                "parallel_ratio": result.parallel_ratio,
            }),
        );
    }
    Ok(out.into())
}
