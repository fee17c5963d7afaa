//! bf16 training: the same tiny SFT run in float32 and in bf16 (bf16 weights, float32 master
//! weights and moments in the optimiser) learns alike, and the optimiser's state round-trips.
//! On CPU, where libtorch runs bf16 too; CUDA is where it pays.

use prl_schema::ids::{ExperimentId, JobId, RunId};
use prl_schema::jobs::JobMessage;
use prl_schema::spec::{Attention, ModelPreset, ModelRef, Precision, SftStage, StageSpec};
use prl_trainer::adamw::AdamW;
use prl_trainer::{batch, presets, sft};
use tch::{Device, Kind};

const STEPS: usize = 30;
const BATCH: usize = 8;

fn train(precision: Precision) -> (Vec<f64>, AdamW, prl_trainer::model::LoadedModel) {
    let texts = prl_trainer::data::examples("builtin:easy", &Default::default()).unwrap();
    let texts = &texts[..STEPS * BATCH];
    let corpus: Vec<&str> = texts
        .iter()
        .flat_map(|e| [e.prompt.as_str(), e.response.as_str()])
        .collect();
    let stage: SftStage = serde_json::from_value(serde_json::json!({
        "name": "sft", "dataset": "builtin:easy", "learning_rate": 2e-3, "precision": precision
    }))
    .unwrap();
    let job = JobMessage {
        job_id: JobId::new(),
        run_id: RunId::new(),
        experiment_id: ExperimentId::new(),
        attempt: 1,
        expected_version: 0,
        model: ModelRef::Preset(ModelPreset::Tiny),
        stage: StageSpec::Sft(stage),
        seed: 1,
        input_checkpoint: None,
        resume_from: None,
        datasets: Default::default(),
    };
    let (model, tok) = presets::load(&job, &corpus, Device::Cpu).unwrap();
    let examples = sft::encode(texts, &tok, 512).unwrap();
    assert!(examples.iter().all(batch::Example::has_targets));
    let mut optimizer = AdamW::new(&model.vs, 0.0);
    let mut losses = vec![];
    for step in 0..STEPS {
        let rows: Vec<&batch::Example> =
            examples[step * BATCH..(step + 1) * BATCH].iter().collect();
        let b = batch::build(&rows, tok.tags, Attention::Unseen, tok.pad, Device::Cpu);
        let loss = batch::token_mean_loss(&[b], &model.model);
        loss.backward();
        losses.push(loss.double_value(&[]));
        optimizer.clip_grad_norm(1.0);
        optimizer.step(2e-3);
        optimizer.zero_grad();
    }
    (losses, optimizer, model)
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn bf16_training_learns_like_float32_and_keeps_float32_master_weights() {
    let (full, _, _) = train(Precision::Fp32);
    let (half, optimizer, model) = train(Precision::Bf16);
    assert!(half.iter().all(|l| l.is_finite()), "{half:?}");
    for (_, var) in model.vs.variables() {
        assert_eq!(var.kind(), Kind::BFloat16);
    }
    // Both learn: the last steps' loss is well below the first steps'.
    let (first, last) = (mean(&half[..5]), mean(&half[STEPS - 5..]));
    assert!(
        last < first * 0.85,
        "bf16 did not learn: {first:.3} -> {last:.3}"
    );
    let full_last = mean(&full[STEPS - 5..]);
    assert!(
        (last - full_last).abs() / full_last < 0.1,
        "bf16 {last:.3} vs float32 {full_last:.3}"
    );

    // The optimiser saves its float32 masters and a fresh one restores them exactly.
    let path = std::env::temp_dir().join(format!("prl-bf16-{}.safetensors", std::process::id()));
    optimizer.save(&path).unwrap();
    let read = |path: &std::path::Path| {
        let mut named = tch::Tensor::read_safetensors(path).unwrap();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    };
    let saved = read(&path);
    let masters: Vec<_> = saved.iter().filter(|(n, _)| n.starts_with("w.")).collect();
    assert_eq!(masters.len(), model.vs.variables().len());
    assert!(masters.iter().all(|(_, t)| t.kind() == Kind::Float));
    let mut fresh = AdamW::new(&model.vs, 0.0);
    fresh.load(&path).unwrap();
    fresh.save(&path).unwrap();
    let again = read(&path);
    for ((name, a), (other, b)) in saved.iter().zip(&again) {
        assert_eq!(name, other);
        assert!(a.equal(b), "{name} differs after a round trip");
    }
    let _ = std::fs::remove_file(path);
}
