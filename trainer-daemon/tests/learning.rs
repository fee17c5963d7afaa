//! A real learning check: GRPO with parallel rollouts on the built-in task, seeded, starting from
//! the committed Unseen SFT checkpoint (`tests/fixtures/tiny-sft-unseen`: 400 SFT steps from an
//! earlier tiny-base, see `scripts/fixtures/tiny-sft-unseen.toml`), must raise
//! held-out accuracy by a clear margin. The RL job's own evaluations, before its first step and
//! after its last, are the measurement.

use prl_schema::ids::{ExperimentId, JobId, RunId};
use prl_schema::jobs::{JobMessage, WorkerEvent};
use prl_schema::spec::{ModelRef, StageSpec};
use prl_trainer::rl;
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// RL steps, and the gain in held-out Mean@4 (256 hard problems, 1,024 samples) they must bring.
/// Measured with these settings: see BENCHMARKS.md, "RL learning check". One evaluation's
/// standard error is about 0.02.
const STEPS: u64 = 10;
const MARGIN: f64 = 0.05;

#[test]
fn rl_raises_held_out_accuracy_over_its_sft_start() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-sft-unseen");
    let stage = serde_json::from_value(serde_json::json!({
        "name": "rl", "dataset": "builtin:hard", "attention": "unseen",
        "reward": "s1", "learning_rate": 5e-5, "warmup_steps": 2, "steps": STEPS,
        "prompts_per_step": 16, "group_size": 8, "mini_batch_size": 32,
        "max_response_tokens": 256, "max_path_tokens": 64, "eval_every": STEPS,
        "eval_dataset": "builtin:hard-test", "eval_max_prompts": 256, "eval_k": 4
    }))
    .unwrap();
    let job = JobMessage {
        job_id: JobId::new(),
        // Fixed, so that the run's sampling seeds are too.
        run_id: RunId(uuid::Uuid::from_u128(0x5eed)),
        experiment_id: ExperimentId::new(),
        attempt: 1,
        expected_version: 0,
        model: ModelRef::Path(fixture.display().to_string()),
        stage: StageSpec::Rl(stage),
        seed: 1,
        input_checkpoint: None,
        resume_from: None,
        datasets: Default::default(),
    };
    let data_dir = std::env::temp_dir().join(format!("prl-learning-{}", std::process::id()));
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    rl::train(&job, &data_dir, &CancellationToken::new(), &events).unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut evaluations = Vec::new();
    while let Ok(event) = received.try_recv() {
        if let WorkerEvent::Evaluation(result) = event {
            evaluations.push(result);
        }
    }
    let (before, after) = (&evaluations[0], evaluations.last().unwrap());
    assert_eq!((before.step, after.step), (0, STEPS));
    println!(
        "held-out Mean@4: {:.3} -> {:.3}, Pass@4: {:.3} -> {:.3}, parallel ratio {:.2} -> {:.2}",
        before.mean_at_k,
        after.mean_at_k,
        before.pass_at_k,
        after.pass_at_k,
        before.parallel_ratio,
        after.parallel_ratio
    );
    assert!(
        after.mean_at_k >= before.mean_at_k + MARGIN,
        "RL moved held-out Mean@4 from {:.3} to {:.3}; at least +{MARGIN} was expected",
        before.mean_at_k,
        after.mean_at_k
    );
}
