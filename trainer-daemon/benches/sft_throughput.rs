//! SFT training throughput (tokens/s) of prl against PyTorch + HF transformers, side by side in
//! one run: the same model, weights, batch and optimiser settings; forward, backward, clipping
//! and an AdamW step per iteration. prl is timed twice, on the padded batch and split by length
//! as SFT trains, the second run going on from the weights the first trained (the speed of a
//! step does not depend on the weights' values). The PyTorch side is `scripts/bench_sft_pytorch.py`, run with
//! the reference venv (`scripts/python_venv.sh reference`, made on first use).
//!
//!     cargo bench -p prl-trainer --bench sft_throughput
//!
//! `PRL_DEVICE=cuda` measures both sides on the first GPU.

mod common;

use prl_schema::spec::Attention;
use prl_trainer::adamw::AdamW;
use prl_trainer::batch::{self, Batch, Example};
use prl_trainer::data::{BuiltinSet, SftExample};
use prl_trainer::model::LoadedModel;
use prl_trainer::presets;
use prl_trainer::tokenizer::PrlTokenizer;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Tensor};

const WARMUP: usize = 2;

fn main() {
    let work = std::env::temp_dir().join(format!("prl-sft-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let texts = BuiltinSet::parse("builtin:easy").unwrap().examples();
    let device = common::device();
    println!("# SFT throughput, {}", common::describe(device));

    let corpus: Vec<&str> = texts
        .iter()
        .flat_map(|e| [e.prompt.as_str(), e.response.as_str()])
        .collect();
    let tok = PrlTokenizer::characters(corpus).unwrap();
    let tiny = LoadedModel::random(presets::tiny_config(tok.vocab_size()), device);
    compare("tiny", &tiny, &tok, &texts, 32, 10, &work);

    let dir = presets::model_cache().join("smollm2-135m");
    if dir.join("model.safetensors").exists() {
        let (model, smol) = presets::load_dir(&dir, device).unwrap();
        compare("smollm2-135m", &model, &smol, &texts, 8, 6, &work);
    } else {
        println!(
            "smollm2-135m: skipped, {} is missing (run scripts/setup_smollm2.sh)",
            dir.display()
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

fn compare(
    name: &str,
    model: &LoadedModel,
    tok: &PrlTokenizer,
    texts: &[SftExample],
    batch_size: usize,
    steps: usize,
    work: &Path,
) {
    let examples = prl_trainer::sft::encode(&texts[..batch_size], tok, usize::MAX).unwrap();
    let rows: Vec<&Example> = examples.iter().collect();
    let device = model.vs.device();
    let batch = batch::build(&rows, tok.tags, Attention::Seen, tok.pad, device);
    let tokens = batch.input_ids.numel();

    // The same weights and batch for PyTorch.
    let dir = work.join(name);
    model.save(&dir).unwrap();
    Tensor::write_safetensors(
        &[("input_ids", &batch.input_ids), ("targets", &batch.targets)],
        dir.join("batch.safetensors"),
    )
    .unwrap();

    let (b, l) = batch.input_ids.size2().unwrap();
    println!(
        "{name}: batch {b} x {l} tokens ({:.0} % padding), {steps} steps",
        100.0 * (1.0 - batch.tokens as f64 / tokens as f64)
    );
    let parts = batch::build_by_length(&rows, tok.tags, Attention::Seen, tok.pad, device);
    let padded = train(model, std::slice::from_ref(&batch), tokens, steps);
    let split = train(model, &parts, tokens, steps);
    let torch = pytorch(&dir, steps, device);
    let ratio = |prl: f64| match &torch {
        Ok(torch) => format!("{:.2}x PyTorch", prl / torch),
        Err(_) => "-".into(),
    };
    match &torch {
        Ok(torch) => println!("  PyTorch + HF transformers (padded): {torch:.0} tokens/s"),
        Err(why) => println!("  PyTorch not measured: {why}"),
    }
    for (how, (prl, optimizing)) in [
        ("padded, as PyTorch".to_owned(), padded),
        (
            format!("in {} parts by length, as SFT trains", parts.len()),
            split,
        ),
    ] {
        println!(
            "  prl, {how}: {prl:.0} tokens/s = {} ({:.1} % in clipping, AdamW and zeroing \
             gradients)",
            ratio(prl),
            100.0 * optimizing
        );
    }
}

/// Trains `model` on one batch cut into `parts` for `steps` timed steps; returns the batch's
/// padded `tokens` per second, the basis both sides share, and the share of the time spent in
/// the optimiser.
fn train(model: &LoadedModel, parts: &[Batch], tokens: usize, steps: usize) -> (f64, f64) {
    let device = model.vs.device();
    let mut optimizer = AdamW::new(&model.vs, 0.01);
    let (mut timed, mut optimizing) = (0.0, 0.0);
    for step in 0..WARMUP + steps {
        let started = Instant::now();
        let loss = batch::token_mean_loss(parts, &model.model);
        loss.backward();
        common::sync(device);
        let optimizer_started = Instant::now();
        optimizer.clip_grad_norm(1.0);
        optimizer.step(1e-4);
        optimizer.zero_grad();
        common::sync(device);
        if step >= WARMUP {
            timed += started.elapsed().as_secs_f64();
            optimizing += optimizer_started.elapsed().as_secs_f64();
        }
    }
    ((tokens * steps) as f64 / timed, optimizing / timed)
}

/// Runs the PyTorch side; returns its tokens/s.
fn pytorch(dir: &Path, steps: usize, device: Device) -> Result<f64, String> {
    let line = common::run_reference(
        "bench_sft_pytorch.py",
        &[
            dir.to_str().unwrap(),
            "--steps",
            &steps.to_string(),
            "--warmup",
            &WARMUP.to_string(),
        ],
        device,
    )?;
    line.trim()
        .parse()
        .map_err(|e| format!("unexpected output {line:?}: {e}"))
}
