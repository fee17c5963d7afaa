//! The verl backend against a real Ray head (from PyPI, on CPU): a bridge daemon submits a verl
//! stage through Ray's Jobs API, whose entrypoint (`tests/python/verl_stand_in.py`, in place of
//! verl's trainer, which needs GPUs) writes verl's files step by step; the bridge records them
//! as the run's events while they are written. The bridge is killed mid-run and another one
//! follows the same Ray job on; the stage's final checkpoint is evaluated by a tch daemon; a
//! verl job that crashes fails its stage with its error; a cancelled verl stage stops its Ray job.

use prl_integration_tests::{RayHead, TestApp, training_turn};
use prl_schema::spec::StageKind;
use prl_trainer::daemon::{DaemonConfig, Executor};
use prl_trainer::verl::VerlBridge;
use prl_trainer::verl::ray_jobs::RayJobs;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn bridge(app: &TestApp, ray: &RayHead, id: &str) -> DaemonConfig {
    let bridge = VerlBridge {
        ray: RayJobs::new(&ray.address).unwrap(),
        program: format!(
            "{} {REPO}/tests/python/verl_stand_in.py",
            ray.python.display()
        ),
        run_root: app.data_dir.join("verl"),
        poll: Duration::from_millis(300),
    };
    std::fs::create_dir_all(&bridge.run_root).unwrap();
    DaemonConfig {
        kinds: vec![StageKind::Rl],
        device: "ray".into(),
        ..app.daemon_config(id, Executor::Verl(bridge))
    }
}

fn verl_stage(steps: u64, seconds_per_step: f64, more: &[&str]) -> Value {
    let mut overrides = vec![format!("+prl_test.step_seconds={seconds_per_step}")];
    overrides.extend(more.iter().map(|o| o.to_string()));
    json!({
        "kind": "rl", "name": "rl", "backend": "verl", "dataset": "builtin:easy", "reward": "s2",
        "learning_rate": 1e-6, "steps": steps, "prompts_per_step": 2, "group_size": 4,
        "mini_batch_size": 8, "dynamic_sampling": false, "clip_high": 0.28,
        "checkpoint_every": 3, "eval_every": 2, "eval_dataset": "builtin:easy-test",
        "verl": {"n_gpus_per_node": 1, "overrides": overrides}
    })
}

async fn ray_job(ray: &RayHead, job: &str) -> Value {
    reqwest::get(format!("{}/api/jobs/prl-{job}", ray.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn rows(app: &TestApp, sql: &'static str, run: Uuid) -> Vec<(i64, i64)> {
    sqlx::query_as(sql)
        .bind(run)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verl_stage_runs_as_a_ray_job_recorded_live_across_a_bridge_restart_and_cancels() {
    let app = TestApp::spawn().await;
    let ray = RayHead::start(2).await;
    let first = app.start_configured(bridge(&app, &ray, "bridge-1"));
    let model = format!("path:{REPO}/tests/fixtures/tiny-sft-unseen");
    let id = app
        .submit(&json!({
            "name": "verl s2", "model": model,
            "stages": [verl_stage(6, 1.0, &[]),
                       {"kind": "eval", "name": "eval", "dataset": "builtin:easy-test",
                        "max_prompts": 4, "max_response_tokens": 32}]
        }))
        .await;
    let detail = app.experiment(id).await;
    let job = detail["jobs"][0]["id"].as_str().unwrap().to_owned();
    let run: Uuid = detail["jobs"][0]["run_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // The bridge dies after two steps were recorded; another one follows the same Ray job on.
    let recorded = "SELECT count(DISTINCT step) FROM trajectories";
    app.wait_for_count(recorded, 2, Duration::from_secs(120))
        .await;
    first.kill();
    let _second = app.start_configured(bridge(&app, &ray, "bridge-2"));
    let turn = training_turn().await;
    let _evaluator = app.start_configured(DaemonConfig {
        kinds: vec![StageKind::Eval],
        ..app.daemon_config("evaluator", Executor::Train)
    });
    let done = app
        .wait_for_status(id, "completed", Duration::from_secs(240))
        .await;
    drop(turn);
    assert_eq!(done["jobs"][0]["attempt"], 2, "{done}");

    // One Ray job, submitted once with the recipe's settings, which succeeded.
    let submitted = ray_job(&ray, &job).await;
    assert_eq!(submitted["status"], "SUCCEEDED", "{submitted}");
    let entrypoint = submitted["entrypoint"].as_str().unwrap();
    for flag in [
        "actor_rollout_ref.rollout.n=4",
        "data.train_batch_size=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.actor.clip_ratio_high=0.28",
        "trainer.total_training_steps=6",
        "trainer.test_freq=2",
        "trainer.save_freq=3",
        "+prl_test.step_seconds=1",
    ] {
        assert!(entrypoint.contains(flag), "{flag} not in {entrypoint}");
    }
    let listed: Vec<Value> = reqwest::get(format!("{}/api/jobs/", ray.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");

    // Every step's rollouts and metrics once, whichever attempt recorded them.
    let per_step = rows(
        &app,
        "SELECT step, count(*) FROM trajectories WHERE run_id = $1 GROUP BY step ORDER BY step",
        run,
    )
    .await;
    assert_eq!(per_step, (1..=6).map(|s| (s, 8)).collect::<Vec<_>>());
    let metrics = rows(
        &app,
        "SELECT step, count(DISTINCT attempt)::bigint FROM run_metrics WHERE run_id = $1
         GROUP BY step ORDER BY step",
        run,
    )
    .await;
    assert_eq!(
        metrics.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    let blocks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM trajectory_blocks b JOIN trajectories t
           ON t.position = b.position AND t.idx = b.idx WHERE t.run_id = $1",
    )
    .bind(run)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        blocks > 0,
        "the parallel blocks of verl's rollouts are analysed"
    );
    let evaluations = rows(
        &app,
        "SELECT step, count(*) FROM evaluations WHERE run_id = $1 AND benchmark = 'stand-in-bench'
         GROUP BY step ORDER BY step",
        run,
    )
    .await;
    assert_eq!(evaluations, vec![(2, 1), (4, 1), (6, 1)]);

    // Checkpoints at steps 3 and 6, in the artifact store; the eval stage started from step 6's.
    let checkpoints: Vec<(i64, String)> =
        sqlx::query_as("SELECT step, uri FROM checkpoints WHERE run_id = $1 ORDER BY step")
            .bind(run)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        checkpoints.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![3, 6]
    );
    assert!(
        checkpoints.iter().all(|c| c.1.contains("/store/")),
        "{checkpoints:?}"
    );
    let eval_run: Uuid = done["jobs"][1]["run_id"].as_str().unwrap().parse().unwrap();
    let evaluated: i64 = sqlx::query_scalar("SELECT count(*) FROM evaluations WHERE run_id = $1")
        .bind(eval_run)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        evaluated, 1,
        "the tch daemon evaluated verl's final checkpoint"
    );

    // A verl job that crashes fails the stage, saying why, with what it recorded kept.
    let id = app
        .submit(&json!({"name": "verl crashes", "model": model,
                        "stages": [verl_stage(6, 0.2, &["+prl_test.fail_at=3"])]}))
        .await;
    let failed = app
        .wait_for_status(id, "failed", Duration::from_secs(120))
        .await;
    let reason = failed["jobs"][0]["failure_reason"].as_str().unwrap();
    assert!(reason.contains("the verl job prl-"), "{reason}");
    assert!(reason.contains("CUDA out of memory at step 3"), "{reason}");
    let run: Uuid = failed["jobs"][0]["run_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let kept = rows(
        &app,
        "SELECT step, count(*) FROM trajectories WHERE run_id = $1 GROUP BY step ORDER BY step",
        run,
    )
    .await;
    assert_eq!(kept, vec![(1, 8), (2, 8)]);

    // A cancelled verl stage stops its Ray job.
    let id = app
        .submit(&json!({"name": "verl cancelled", "model": model,
                        "stages": [verl_stage(1000, 0.5, &[])]}))
        .await;
    let detail = app.experiment(id).await;
    let job = detail["jobs"][0]["id"].as_str().unwrap().to_owned();
    let run = detail["jobs"][0]["run_id"].as_str().unwrap().to_owned();
    let started = format!("SELECT count(*) FROM trajectories WHERE run_id = '{run}'");
    app.wait_for_count(&started, 8, Duration::from_secs(120))
        .await;
    assert_eq!(app.cancel(id, None).await.status(), 200);
    app.wait_for_status(id, "cancelled", Duration::from_secs(60))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = ray_job(&ray, &job).await["status"].clone();
        if status == "STOPPED" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Ray job still {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
