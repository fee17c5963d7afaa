//! Daemons that say what they are, and stages that say what they need: the workers list, a job
//! that goes only to the daemon that fits, one that no daemon fits waiting visibly with the
//! reason until one that fits starts, and a daemon that stops answering listed as lost.

use prl_integration_tests::{Daemon, TestApp};
use prl_trainer::daemon::{DaemonConfig, Executor};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn announcing(
    app: &TestApp,
    worker_id: &str,
    device: &str,
    gpu_memory_gb: Option<f64>,
    labels: &[(&str, &str)],
) -> Daemon {
    // Dry-run daemons: the device is what they announce, which is what routing reads.
    app.start_configured(DaemonConfig {
        device: device.into(),
        gpu_memory_gb,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        step_delay: Duration::from_millis(20),
        ..app.daemon_config(worker_id, Executor::DryRun)
    })
}

async fn workers(app: &TestApp) -> Vec<Value> {
    let response = app.get("/api/v1/workers").await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

fn spec(name: &str, resources: Value) -> Value {
    json!({
        "name": name, "model": "tiny",
        "stages": [{"kind": "sft", "name": "sft", "dataset": "builtin:easy",
                    "learning_rate": 1e-3, "max_steps": 3, "resources": resources}]
    })
}

#[tokio::test]
async fn jobs_go_to_the_daemon_that_fits_and_wait_visibly_when_none_does() {
    let app = TestApp::spawn().await;
    let _cpu = announcing(&app, "cpu-a", "cpu", None, &[("zone", "a")]);
    let _h100 = announcing(&app, "gpu-b", "cuda:0", Some(80.0), &[("gpu", "h100")]);
    let listed = app.wait_for_workers(2).await;
    let gpu = listed.iter().find(|w| w["worker_id"] == "gpu-b").unwrap();
    assert_eq!(gpu["device"], "cuda:0");
    assert_eq!(gpu["gpu_memory_gb"], 80.0);
    assert_eq!(gpu["labels"], json!({"gpu": "h100"}));
    assert_eq!(gpu["host"], "test-host");
    assert!(gpu["job"].is_null() && gpu["seconds_since_seen"].as_f64().unwrap() < 20.0);

    // Fits the GPU daemon only, through every kind of requirement; several, so that the CPU
    // daemon sees some first.
    let needs_h100 = json!({"device": "cuda", "min_gpu_memory_gb": 40, "labels": {"gpu": "h100"}});
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            app.submit(&spec(&format!("h100 {n}"), needs_h100.clone()))
                .await,
        );
    }
    let needs_zone_a = json!({"labels": {"zone": "a"}});
    let on_cpu = app.submit(&spec("zone a", needs_zone_a)).await;
    for id in ids {
        let detail = app
            .wait_for_status(id, "completed", Duration::from_secs(60))
            .await;
        assert_eq!(detail["jobs"][0]["worker_id"], "gpu-b", "{detail:#}");
        assert!(detail["jobs"][0].get("waiting").is_none());
    }
    let detail = app
        .wait_for_status(on_cpu, "completed", Duration::from_secs(60))
        .await;
    assert_eq!(detail["jobs"][0]["worker_id"], "cpu-a");

    // No daemon has an A100: the job waits, and says why, naming each daemon's lack.
    let waits = app
        .submit(&spec("a100", json!({"labels": {"gpu": "a100"}})))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let response = app.get(&format!("/api/v1/experiments/{waits}")).await;
    let detail: Value = response.json().await.unwrap();
    let job = &detail["jobs"][0];
    assert_eq!(job["status"], "queued", "{detail:#}");
    let why = job["waiting"].as_str().unwrap();
    assert!(why.contains("no active daemon fits"), "{why}");
    assert!(why.contains("label gpu=a100"), "{why}");
    assert!(why.contains("cpu-a: it has no label gpu"), "{why}");
    assert!(
        why.contains("gpu-b: its label gpu is h100, not a100"),
        "{why}"
    );

    // A verl stage goes to no trainer, which says so: only a verl bridge takes it.
    let verl = app
        .submit(&json!({
            "name": "on verl", "model": "path:/models/m",
            "stages": [{"kind": "rl", "name": "rl", "backend": "verl", "dataset": "builtin:easy",
                        "reward": "s1", "learning_rate": 1e-6, "steps": 2,
                        "dynamic_sampling": false}]
        }))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let detail = app.experiment(verl).await;
    let job = &detail["jobs"][0];
    assert_eq!(job["status"], "queued", "{detail:#}");
    let why = job["waiting"].as_str().unwrap();
    assert!(why.contains("the stage needs a verl bridge"), "{why}");
    assert!(why.contains("cpu-a: it runs tch stages, not verl"), "{why}");

    // One that fits starts: the job runs there.
    let a100 = announcing(&app, "gpu-c", "cuda:0", Some(40.0), &[("gpu", "a100")]);
    let detail = app
        .wait_for_status(waits, "completed", Duration::from_secs(60))
        .await;
    assert_eq!(detail["jobs"][0]["worker_id"], "gpu-c");

    // A daemon that stops announcing itself is listed as lost.
    a100.kill();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let listed = workers(&app).await;
        let c = listed.iter().find(|w| w["worker_id"] == "gpu-c").unwrap();
        if c["status"] == "lost" {
            break;
        }
        assert!(Instant::now() < deadline, "{c:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_job_no_daemon_takes_says_so_and_bad_resources_are_refused() {
    let app = TestApp::spawn().await;
    let _eval_only = app.start_configured(DaemonConfig {
        kinds: vec![prl_schema::spec::StageKind::Eval],
        ..app.daemon_config("evaluator", Executor::DryRun)
    });
    app.wait_for_workers(1).await;
    let id = app.submit(&spec("no sft daemon", json!({}))).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let detail: Value = app
            .get(&format!("/api/v1/experiments/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if let Some(why) = detail["jobs"][0]["waiting"].as_str() {
            assert_eq!(why, "no active daemon takes sft jobs (1 active)");
            break;
        }
        assert!(Instant::now() < deadline, "{detail:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for (resources, named) in [
        (json!({"device": "tpu"}), "stages[0].resources.device"),
        (
            json!({"labels": {"gpu": "h 100"}}),
            "stages[0].resources.labels",
        ),
        (
            json!({"min_gpu_memory_gb": -1}),
            "stages[0].resources.min_gpu_memory_gb",
        ),
        (json!({"cores": 4}), "stages[0].resources"),
        (
            json!({"device": "cpu", "min_gpu_memory_gb": 8}),
            "stages[0].resources.min_gpu_memory_gb",
        ),
    ] {
        let response = app.post_experiment(&spec("bad", resources.clone())).await;
        assert_eq!(response.status(), 422, "{resources}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["field"].as_str().unwrap().starts_with(named),
            "{resources}: {body}"
        );
    }
}
