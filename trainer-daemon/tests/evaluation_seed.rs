//! An RL run's evaluations repeat whatever the process drew before them. Alone in its test
//! binary: libtorch's generator is global, so a test beside it drawing at the same time would
//! move it between the seeding and the draws.

use prl_schema::ids::{ExperimentId, JobId, RunId};
use prl_schema::jobs::{JobMessage, WorkerEvent};
use prl_schema::spec::{ModelPreset, ModelRef, StageSpec};
use prl_trainer::rl;
use tch::{Device, Kind, Tensor};
use tokio_util::sync::CancellationToken;

#[test]
fn a_runs_evaluations_repeat_whatever_was_drawn_before_them() {
    // The evaluation before the first step samples at T = 1; it must not depend on what the
    // process drew before the run (here: the first run's draws, then others).
    let stage = serde_json::from_value(serde_json::json!({
        "name": "rl", "dataset": "builtin:hard", "attention": "unseen",
        "reward": "s1", "learning_rate": 1e-5, "steps": 1, "prompts_per_step": 2,
        "group_size": 2, "mini_batch_size": 4, "dynamic_sampling": false,
        "max_response_tokens": 48, "eval_every": 1, "eval_dataset": "builtin:hard-test",
        "eval_max_prompts": 4, "eval_k": 2
    }))
    .unwrap();
    let job = JobMessage {
        job_id: JobId::new(),
        run_id: RunId(uuid::Uuid::from_u128(3)),
        experiment_id: ExperimentId::new(),
        attempt: 1,
        expected_version: 0,
        model: ModelRef::Preset(ModelPreset::TinyBase),
        stage: StageSpec::Rl(stage),
        seed: 1,
        input_checkpoint: None,
        resume_from: None,
        datasets: Default::default(),
    };
    let data_dir = std::env::temp_dir().join(format!("prl-eval-seed-{}", std::process::id()));
    let evaluated_texts = |drawn_before: i64| {
        let _ = Tensor::rand([drawn_before], (Kind::Float, Device::Cpu));
        let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
        rl::train(&job, &data_dir, &CancellationToken::new(), &events).unwrap();
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut texts = Vec::new();
        while let Ok(event) = received.try_recv() {
            if let WorkerEvent::Trajectories(batch) = event
                && batch.benchmark.is_some()
            {
                texts.extend(batch.trajectories.into_iter().map(|t| (batch.step, t.text)));
            }
        }
        texts
    };
    let first = evaluated_texts(1);
    let second = evaluated_texts(7);
    assert_eq!(first.iter().filter(|(step, _)| *step == 0).count(), 8);
    assert_eq!(first, second);
}
