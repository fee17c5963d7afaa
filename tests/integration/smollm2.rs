//! The smollm2 suite (the recipe on SmolLM2-135M, sized for a GPU) runs through the stack on CPU
//! with two steps of each training stage, one evaluation a row and a handful of prompts: every
//! row of the main table on a real pretrained model, its tags added to a byte-level vocabulary,
//! in bf16 where the CPU computes it natively, else in float32 (bf16 training itself is
//! `trainer-daemon/tests/precision.rs`).

use prl_cli::client::Client;
use prl_cli::suite::Suite;
use prl_integration_tests::{TOKEN, TestApp, training_turn};
use prl_schema::spec::{PositiveCount, Precision, StageSpec, Stages};
use std::path::Path;

fn count(n: u64) -> PositiveCount {
    PositiveCount::try_from(n).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smollm2_suite_runs_two_steps_of_each_stage() {
    let _turn = training_turn().await;
    let app = TestApp::spawn_with(|s| s.jobs.lease_seconds = 300).await;
    let _trainer = app.start_trainer("trainer");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/suite/smollm2");
    // bf16 matrix products are emulated on CPUs without AVX-512 BF16 or AMX (a step of 2 × 192
    // tokens took 80 s on an EPYC with AVX2 only, and this test 717 s).
    let native_bf16 = std::fs::read_to_string("/proc/cpuinfo")
        .is_ok_and(|info| info.contains(" avx512_bf16") || info.contains(" amx_bf16"));
    let suite = Suite::read(&dir).unwrap().map_specs(|spec| {
        let mut stages: Vec<StageSpec> = spec.stages.clone().into();
        // One evaluation a row (hard-test): each is a job that loads the model again, and the
        // second runs the same code on another built-in set.
        let mut evals = 0;
        stages.retain(|s| match s {
            StageSpec::Eval(_) => {
                evals += 1;
                evals == 1
            }
            _ => true,
        });
        for stage in &mut stages {
            if !native_bf16 {
                match stage {
                    StageSpec::Sft(s) => s.precision = Precision::Fp32,
                    StageSpec::Rl(s) => s.precision = Precision::Fp32,
                    StageSpec::Eval(s) => s.precision = Precision::Fp32,
                }
            }
            match stage {
                // One short example a step.
                StageSpec::Sft(s) => {
                    s.max_steps = Some(count(2));
                    s.batch_size = count(1);
                    s.max_length = count(96);
                }
                StageSpec::Rl(s) => {
                    s.steps = count(2);
                    s.prompts_per_step = count(1);
                    s.group_size = 2.try_into().unwrap();
                    s.mini_batch_size = count(2);
                    s.max_response_tokens = count(24);
                    s.max_path_tokens = count(8);
                    s.eval_every = None;
                    s.warmup_steps = 1;
                }
                StageSpec::Eval(s) => {
                    s.max_prompts = Some(count(2));
                    s.k = 1.try_into().unwrap();
                    s.max_response_tokens = count(24);
                    s.max_path_tokens = count(8);
                }
            }
        }
        spec.stages = Stages::try_from(stages).unwrap();
    });
    let client = Client::new(Some(app.address.clone()), Some(TOKEN.into()));
    let ids = suite.run(&client, &[], 1).await.unwrap().remove(0);
    assert_eq!(ids.len(), 9);
    let table = client.results(&ids).await.unwrap();
    for row in &table.rows {
        assert_eq!(row.status, "completed", "{}", row.method);
        assert_eq!(row.results.len(), 1, "{}", row.method);
    }
    // Every training stage ran its two steps, on the model the suite names.
    let steps: Vec<i64> = sqlx::query_scalar(
        "SELECT r.last_step FROM runs r JOIN stages s ON s.experiment_id = r.experiment_id AND s.idx = r.stage_idx
         WHERE s.kind IN ('sft', 'rl') ORDER BY r.started_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        steps,
        vec![2; 8],
        "two SFT rows, the control, GRPO and four Parallel-R1 rows"
    );
    let base = client.detail(ids[0]).await.unwrap();
    assert_eq!(base.summary.model, "smollm2-135m");
}
