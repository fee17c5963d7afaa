//! Live runs: the Python client (clients/python) from a real Python process, and the batch
//! protocol's promises (a named batch recorded once, the cursor read back, a finished run
//! closed, bad lines refused naming file and line).

use prl_integration_tests::{TOKEN, TestApp};
use serde_json::{Value, json};
use std::process::Command;
use uuid::Uuid;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(app.url(path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_python_client_logs_metrics_and_trajectories_of_a_custom_loop() {
    let app = TestApp::spawn().await;
    let address = app.address.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(format!("{ROOT}/tests/python/client_session.py"))
            .env("PYTHONPATH", format!("{ROOT}/clients/python"))
            .env("PRL_API_URL", address)
            .env("PRL_TOKEN", TOKEN)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the client session failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(seen["status"], "finished");
    let experiment: Uuid = seen["experiment_id"].as_str().unwrap().parse().unwrap();
    let run: Uuid = seen["run_id"].as_str().unwrap().parse().unwrap();

    let detail = app.experiment(experiment).await;
    assert_eq!(detail["status"], "completed");
    assert_eq!(detail["tracked"]["source"], "client");
    assert_eq!(detail["tracked"]["params"]["lr"], "1e-05");
    assert_eq!(detail["runs"][0]["last_step"], 39);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM run_metrics WHERE run_id = '{run}'"
        ))
        .await,
        40
    );
    // Ten steps of 4 prompts x 2 samples, analysed like native trajectories: every response
    // has one block of two paths.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM trajectories WHERE run_id = '{run}'"
        ))
        .await,
        80
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM trajectory_blocks WHERE run_id = '{run}' AND paths = 2"
        ))
        .await,
        80
    );
    let strategy: Value = app
        .get(&format!("/api/v1/analytics/strategy?runs={run}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(strategy.as_array().unwrap().len(), 10, "{strategy}");
}

#[tokio::test]
async fn a_named_batch_is_recorded_once_and_its_cursor_read_back() {
    let app = TestApp::spawn().await;
    let (status, started) = post(
        &app,
        "/api/v1/live-runs",
        json!({"name": "follower", "source": "verl", "key": "follow:demo"}),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let id = started["experiment_id"].as_str().unwrap().to_owned();
    // The same key finds the same run.
    let (status, again) = post(
        &app,
        "/api/v1/live-runs",
        json!({"name": "follower", "source": "verl", "key": "follow:demo"}),
    )
    .await;
    assert_eq!(
        (status, &again["experiment_id"]),
        (200, &started["experiment_id"])
    );

    let line = |step: u64, score: f64| {
        json!({"input": "What is 2 + 2?", "output": "Final Answer: 4", "score": score,
               "step": step, "gts": 4, "acc": score > 0.0})
        .to_string()
    };
    let batch = json!({
        "batch": "1.jsonl:0-2",
        "metrics": [{"step": 1, "values": {"loss": 0.5, "diverged": "NaN"}}],
        "rollouts": [{"name": "1.jsonl", "content": format!("{}\n{}\n", line(1, 1.0), line(1, 0.0))}],
        "cursor": {"1.jsonl": 2},
    });
    let path = format!("/api/v1/live-runs/{id}/batches");
    let (status, first) = post(&app, &path, batch.clone()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["trajectories"], 2);
    assert_eq!(first["already_recorded"], false);
    let events = app.count("SELECT count(*) FROM events").await;
    let (status, second) = post(&app, &path, batch).await;
    assert_eq!((status, &second["already_recorded"]), (200, &json!(true)));
    assert_eq!(app.count("SELECT count(*) FROM events").await, events);
    let run: Value = app
        .get(&format!("/api/v1/live-runs/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(run["cursor"], json!({"1.jsonl": 2}));
    assert_eq!(run["last_step"], 1);
    let truth: String = sqlx::query_scalar("SELECT truth FROM trajectories LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(truth, "4", "a numeric gts is kept as its text");

    // A bad line is refused naming its file and line; nothing is recorded.
    let (status, refused) = post(
        &app,
        &path,
        json!({"rollouts": [{"name": "2.jsonl", "content": format!("{}\n{{\"input\": 1}}\n", line(2, 1.0))}]}),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["field"], "rollouts[0]");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("2.jsonl line 2"),
        "{refused}"
    );
    let (status, refused) = post(&app, &path, json!({"metric": []})).await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `metric`")
    );
    assert_eq!(app.count("SELECT count(*) FROM events").await, events);

    // A batch must start where the run's cursor is: a second follower is refused.
    let (status, other) = post(
        &app,
        &path,
        json!({"after": {"1.jsonl": 1}, "metrics": [{"step": 2, "values": {"x": 1}}]}),
    )
    .await;
    assert_eq!(status, 409, "{other}");
    assert!(
        other["message"]
            .as_str()
            .unwrap()
            .contains("another client"),
        "{other}"
    );
    let (status, _) = post(&app, &path, json!({"attempt": 0, "metrics": []})).await;
    assert_eq!(status, 422);
    let (status, next) = post(
        &app,
        &path,
        json!({"after": {"1.jsonl": 2}, "cursor": {"1.jsonl": 3}, "attempt": 2,
               "metrics": [{"step": 1, "values": {"loss": 0.25}}]}),
    )
    .await;
    assert_eq!(status, 200, "{next}");
    // Step 1 again under attempt 2 supersedes its first report.
    let loss: Vec<f64> = sqlx::query_scalar(
        "SELECT (e.payload->'values'->>'loss')::float8 FROM run_metrics m
         JOIN events e ON e.position = m.position WHERE m.step = 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(loss, vec![0.25]);

    // Finished, it takes no more batches; finishing again changes nothing.
    let (status, finished) = post(
        &app,
        &format!("/api/v1/live-runs/{id}/finish"),
        json!({"status": "failed"}),
    )
    .await;
    assert_eq!((status, &finished["status"]), (200, &json!("failed")));
    let (status, _) = post(&app, &format!("/api/v1/live-runs/{id}/finish"), json!({})).await;
    assert_eq!(status, 200);
    let (status, late) = post(
        &app,
        &path,
        json!({"metrics": [{"step": 2, "values": {"x": 1}}]}),
    )
    .await;
    assert_eq!(status, 409, "{late}");
    assert_eq!(
        app.experiment(id.parse().unwrap()).await["status"],
        "failed"
    );
}
