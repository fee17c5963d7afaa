//! End-to-end tests of the web UI: a real API (PostgreSQL, NATS) with seeded experiments, driven
//! by Playwright in Debian's Chromium (`web/e2e/ui.test.mjs`). Screenshots land in
//! `target/e2e-screenshots/`.

use prl_integration_tests::seeds::{EXPLORE, VERIFY, answered, block, trajectory};
use prl_integration_tests::{FakeWorker, TOKEN, TestApp, quick_spec};
use prl_schema::jobs::{CheckpointRef, WorkerEvent};
use prl_schema::spec::StageKind;
use prl_schema::trajectory::{
    EvaluationResult, PromptRecord, Sampling, Trajectory, TrajectoryBatch,
};
use prl_trainer::daemon::{DaemonConfig, Executor};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const UNCLOSED: &str = "Half of 10.<Parallel><Path>10/2 = 5</Path><Path>maybe 6";

/// One benchmark's reported numbers: (benchmark, Mean@k, Pass@k, parallel ratio).
type Reported = (&'static str, f64, f64, f64);

/// The benchmarks' numbers each seeded experiment reports.
const SEEDED: [(&str, [Reported; 2]); 2] = [
    (
        "Parallel-R1-Unseen (S1)",
        [("AIME25", 0.25, 0.5, 0.6), ("AMC23", 0.4, 0.7, 0.8)],
    ),
    (
        "GRPO baseline",
        [("AIME25", 0.3, 0.45, 0.0), ("AMC23", 0.45, 0.75, 0.0)],
    ),
];

fn batch(step: u64) -> TrajectoryBatch {
    TrajectoryBatch {
        step,
        benchmark: None,
        prompts: vec![PromptRecord {
            id: format!("p{step}"),
            group: 0,
            text: "What is half of 10?".into(),
            tokens: Some(12),
            truth: "5".into(),
        }],
        trajectories: vec![
            trajectory(0, answered(EXPLORE, 5), true, vec![block(5 + step as u32)]),
            trajectory(1, answered(VERIFY, 5), true, vec![block(20)]),
            trajectory(2, answered("10/2 = 5.", 5), true, vec![]),
            Trajectory {
                format_valid: false,
                ..trajectory(3, answered(UNCLOSED, 6), false, vec![])
            },
        ],
    }
}

fn evaluation(step: u64, benchmark: &str, mean: f64, pass: f64, parallel: f64) -> WorkerEvent {
    WorkerEvent::Evaluation(EvaluationResult {
        step,
        benchmark: benchmark.into(),
        k: 4,
        prompts: 64,
        mean_at_k: mean,
        pass_at_k: pass,
        mean_at_k_se: Some(0.02),
        pass_at_k_se: Some(0.03),
        greedy: None,
        sampling: Some(Sampling {
            temperature: 1.0,
            top_p: 1.0,
            max_response_tokens: 256,
        }),
        parallel_ratio: parallel,
        format_valid_ratio: 0.9,
        mean_response_tokens: Some(120.0),
    })
}

/// A finished run logged through prl's MLflow protocol (params, a tag, 20 steps of metrics, an
/// artifact), sent as an MLflow client sends it; the prl experiment's id.
async fn seed_mlflow_run(app: &TestApp) -> Uuid {
    let call = |route: &str, body: Value| {
        app.http
            .post(format!("{}/mlflow/api/2.0/mlflow/{route}", app.address))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let created: Value = call("experiments/create", json!({"name": "web sweep"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let experiment = created["experiment_id"].as_str().unwrap().to_owned();
    let run: Value = call(
        "runs/create",
        json!({"experiment_id": experiment, "run_name": "logged by mlflow",
               "start_time": 1_700_000_000_000i64}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_owned();
    let metrics: Vec<Value> = (0..20)
        .flat_map(|step| {
            [("loss", 1.0 / (1.0 + step as f64)), ("reward", step as f64 / 20.0)]
                .map(|(key, value)| json!({"key": key, "value": value, "timestamp": 1_700_000_000_000i64 + step, "step": step}))
        })
        .collect();
    let logged = call(
        "runs/log-batch",
        json!({"run_id": run_id, "metrics": metrics, "params": [{"key": "lr", "value": "1e-5"}],
               "tags": [{"key": "method", "value": "parallel-r1"}]}),
    )
    .await
    .unwrap();
    assert!(logged.status().is_success());
    let uploaded = app
        .http
        .put(format!(
            "{}/mlflow/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run_id}/artifacts/notes.txt",
            app.address
        ))
        .bearer_auth(TOKEN)
        .body("S1 reward\n")
        .send()
        .await
        .unwrap();
    assert!(uploaded.status().is_success());
    let finished = call(
        "runs/update",
        json!({"run_id": run_id, "status": "FINISHED", "end_time": 1_700_000_100_000i64}),
    )
    .await
    .unwrap();
    assert!(finished.status().is_success());
    run_id.parse().unwrap()
}

/// A session of the real MLflow client (tests/python/mlflow_session.py, pinned mlflow in its
/// venv) against the stack; the run's id.
async fn real_mlflow_session(app: &TestApp) -> Uuid {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let python = tokio::task::spawn_blocking(|| prl_integration_tests::python_of("mlflow"))
        .await
        .unwrap();
    let out = tokio::process::Command::new(python)
        .arg(format!("{root}/tests/python/mlflow_session.py"))
        .arg("browser sweep")
        .env("MLFLOW_TRACKING_URI", format!("{}/mlflow", app.address))
        .env("MLFLOW_TRACKING_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    seen["run_id"].as_str().unwrap().parse().unwrap()
}

/// A verl run's files (two steps of rollouts with parallel blocks, a validation step, the
/// file logger's metrics) recorded by `prl follow`, the real binary; the experiment's id.
async fn seed_followed_run(app: &TestApp) -> Uuid {
    let root = std::env::temp_dir().join(format!("prl-web-follow-{}", app.namespace));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("rollouts")).unwrap();
    std::fs::create_dir_all(root.join("validation")).unwrap();
    let mut metrics = String::new();
    for step in 1..=2 {
        let lines: String = (0..4)
            .map(|p| {
                json!({"input": format!("What is {p} + 1?"),
                       "output": format!("<Parallel><Path>{p} + 1 = {}</Path><Path>1 + {p} = {}</Path></Parallel><Summary>Same.</Summary> Final Answer: {}", p + 1, p + 1, p + 1),
                       "gts": p + 1, "score": 1.0, "step": step, "acc": true})
                .to_string()
                    + "\n"
            })
            .collect();
        std::fs::write(root.join(format!("rollouts/{step}.jsonl")), lines).unwrap();
        metrics += &format!(
            "{{\"step\": {step}, \"data\": {{\"actor/pg_loss\": {}}}}}\n",
            1.0 / step as f64
        );
    }
    std::fs::write(root.join("metrics.jsonl"), metrics).unwrap();
    let out = tokio::process::Command::new(prl_integration_tests::workspace_binary("prl"))
        .args([
            "follow",
            "--name",
            "followed verl run",
            "--once",
            "--finish",
        ])
        .arg("--rollouts")
        .arg(root.join("rollouts"))
        .arg("--validation")
        .arg(root.join("validation"))
        .arg("--metrics")
        .arg(root.join("metrics.jsonl"))
        .env("PRL_API_URL", &app.address)
        .env("PRL_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sqlx::query_scalar("SELECT experiment_id FROM tracked_runs WHERE source = 'verl'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// An RL experiment that trained 60 steps, logged trajectories and evaluations, and finished.
async fn seed_finished(app: &TestApp, name: &str, results: &[Reported]) -> Value {
    let id = app
        .submit(&json!({
            "name": name, "model": "tiny", "tags": ["seeded"],
            "stages": [{"kind": "rl", "name": "rl", "dataset": "builtin:easy", "reward": "s1",
                        "learning_rate": 1e-5, "steps": 60}]
        }))
        .await;
    let (worker, _) = FakeWorker::take(app, StageKind::Rl, "seeder").await;
    let send = |event| worker.reporter.send(event);
    for step in 1..=60u64 {
        let x = step as f64 / 60.0;
        let values = BTreeMap::from([
            ("reward/mean".to_owned(), -1.0 + 1.5 * x),
            ("accuracy".to_owned(), 0.2 + 0.5 * x),
            ("parallel_ratio".to_owned(), x * results[0].3),
        ]);
        send(WorkerEvent::Metrics { step, values }).await.unwrap();
        if step <= 3 {
            send(WorkerEvent::Trajectories(batch(step))).await.unwrap();
        }
    }
    // An older evaluation the table must not show: the latest per benchmark counts.
    send(evaluation(10, results[0].0, 0.01, 0.02, 0.0))
        .await
        .unwrap();
    for (benchmark, mean, pass, parallel) in results {
        send(evaluation(60, benchmark, *mean, *pass, *parallel))
            .await
            .unwrap();
    }
    let checkpoint = CheckpointRef {
        uri: format!("file:///checkpoints/{name}/step-60"),
        step: 60,
        sha256: "ab".repeat(32),
        size_bytes: 3_400_000,
    };
    send(WorkerEvent::Checkpoint(checkpoint.clone()))
        .await
        .unwrap();
    send(WorkerEvent::Finished {
        checkpoint: Some(checkpoint),
    })
    .await
    .unwrap();
    let detail = app
        .wait_for_status(id, "completed", Duration::from_secs(30))
        .await;
    json!({"id": id, "run": detail["runs"][0]["id"], "name": name})
}

/// An SFT run with 3000 loss values, flat but for one spike: more steps than a chart has points.
async fn seed_long_run(app: &TestApp) -> Uuid {
    let id = app
        .submit(&json!({
            "name": "long run", "model": "tiny",
            "stages": [{"kind": "sft", "name": "sft", "dataset": "builtin:easy",
                        "learning_rate": 1e-4, "max_steps": 3000}]
        }))
        .await;
    let (worker, _) = FakeWorker::take(app, StageKind::Sft, "long").await;
    for step in 1..=3000u64 {
        let loss = if step == 1777 { 50.0 } else { 1.0 };
        let values = BTreeMap::from([("loss".to_owned(), loss)]);
        worker
            .reporter
            .send(WorkerEvent::Metrics { step, values })
            .await
            .unwrap();
    }
    worker
        .reporter
        .send(WorkerEvent::Finished { checkpoint: None })
        .await
        .unwrap();
    app.wait_for_status(id, "completed", Duration::from_secs(60))
        .await;
    id
}

/// An RL experiment that keeps training while the browser looks: a metric every 300 ms, with
/// heartbeats, until the returned token is cancelled.
async fn start_live_run(app: &TestApp) -> (Uuid, CancellationToken) {
    let id = app
        .submit(&json!({
            "name": "training now", "model": "tiny",
            "stages": [{"kind": "rl", "name": "rl", "dataset": "builtin:easy", "reward": "s1",
                        "learning_rate": 1e-5, "steps": 1000}]
        }))
        .await;
    let (worker, _) = FakeWorker::take(app, StageKind::Rl, "live").await;
    let done = CancellationToken::new();
    let FakeWorker {
        reporter, lease, ..
    } = worker;
    tokio::spawn(lease.keep(
        Duration::from_millis(500),
        done.clone(),
        CancellationToken::new(),
        CancellationToken::new(),
    ));
    let stop = done.clone();
    tokio::spawn(async move {
        for step in 1.. {
            let values = BTreeMap::from([("reward/mean".to_owned(), (step as f64 / 50.0).sin())]);
            if reporter
                .send(WorkerEvent::Metrics { step, values })
                .await
                .is_err()
            {
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
    });
    app.wait_for_status(id, "running", Duration::from_secs(10))
        .await;
    (id, done)
}

fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web")
}

#[tokio::test]
async fn the_web_ui_works_against_a_seeded_stack() {
    let web = web_dir();
    // Rebuilds the UI if `web/` changed since its last build (a no-op otherwise), so the browser
    // never tests a stale build.
    let build = tokio::process::Command::new("bash")
        .arg(web.join("../deploy/web.sh"))
        .output()
        .await
        .expect("running deploy/web.sh");
    assert!(
        build.status.success(),
        "building the web UI failed:\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let app = TestApp::spawn_with(|s| s.web.dir = web.join("dist")).await;
    let mut finished = Vec::new();
    for (name, results) in &SEEDED {
        finished.push(seed_finished(&app, name, results).await);
    }
    app.wait_for_count(
        "SELECT count(*) FROM trajectories",
        24,
        Duration::from_secs(30),
    )
    .await;
    let long = seed_long_run(&app).await;
    let mlflow = seed_mlflow_run(&app).await;
    let followed = seed_followed_run(&app).await;
    let mlflow_client = real_mlflow_session(&app).await;
    let (live, feeder) = start_live_run(&app).await;
    // A daemon that only evaluates: the seeded SFT jobs stay queued, and say why.
    let _evaluator = app.start_configured(DaemonConfig {
        host: "rack-7".into(),
        device: "cuda:0".into(),
        gpu_memory_gb: Some(141.0),
        labels: [("gpu".to_owned(), "h200".to_owned())].into(),
        kinds: vec![StageKind::Eval],
        ..app.daemon_config("gpu-node-1", Executor::DryRun)
    });
    app.wait_for_workers(1).await;
    let queued = app.submit(&quick_spec("to cancel in the list")).await;
    let watched = app.submit(&quick_spec("cancelled elsewhere")).await;

    // What the compare table must show (percent, one decimal), worked out by hand from SEEDED:
    // parallel ratio is the mean over benchmarks, Avg the mean of Mean@k; `*` marks a column's best.
    let expected = json!([
        {"Parallel ratio (%)": "70.0", "AIME25 Mean@4": "25.0", "AIME25 Pass@4": "50.0*",
         "AMC23 Mean@4": "40.0", "AMC23 Pass@4": "70.0", "Avg. (Mean@k)": "32.5"},
        {"Parallel ratio (%)": "0.0", "AIME25 Mean@4": "30.0*", "AIME25 Pass@4": "45.0",
         "AMC23 Mean@4": "45.0*", "AMC23 Pass@4": "75.0*", "Avg. (Mean@k)": "37.5*"},
    ]);
    let seed = json!({
        "finished": finished,
        "queued": queued,
        "watched": watched,
        "live": live,
        "long": long,
        "mlflow": mlflow,
        "followed": followed,
        "mlflow_client": mlflow_client,
        "expected": expected,
    });
    let guarded = TestApp::spawn_with(|s| {
        s.web.dir = web.join("dist");
        s.auth.protect_reads = true;
    })
    .await;
    guarded.submit(&quick_spec("behind the token")).await;
    let guarded_mlflow = seed_mlflow_run(&guarded).await;
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let output = tokio::process::Command::new("node")
        .arg("e2e/ui.test.mjs")
        .current_dir(&web)
        .env("PRL_URL", &app.address)
        .env("PRL_PROTECTED_URL", &guarded.address)
        .env("PRL_TOKEN", TOKEN)
        .env("PRL_SEED", seed.to_string())
        .env("PRL_PROTECTED_MLFLOW", guarded_mlflow.to_string())
        .env("PRL_SCREENSHOTS", &shots)
        .output()
        .await
        .expect("running node (installed by deploy/setup.sh)");
    feeder.cancel();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser tests failed:\n{stdout}\n{stderr}"
    );

    // What the browser did went through the API: both experiments are cancelled in the log.
    for id in [queued, watched] {
        assert_eq!(app.experiment(id).await["status"], "cancelled");
    }
}
