//! MLflow's tracking protocol, driven by the real `mlflow` client (pinned in
//! scripts/requirements-mlflow.txt, in its own venv) through tests/python/mlflow_session.py.

use prl_integration_tests::TestApp;
use serde_json::Value;
use sha2::Digest;
use std::process::Command;
use uuid::Uuid;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Runs the session script against the app; what it saw, as JSON.
async fn client_session(app: &TestApp, experiment: &str) -> Value {
    let python = tokio::task::spawn_blocking(|| prl_integration_tests::python_of("mlflow"))
        .await
        .unwrap();
    let uri = format!("{}/mlflow", app.address);
    let experiment = experiment.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(format!("{ROOT}/tests/python/mlflow_session.py"))
            .arg(experiment)
            .env("MLFLOW_TRACKING_URI", uri)
            .env("MLFLOW_TRACKING_TOKEN", prl_integration_tests::TOKEN)
            .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            .output()
            .expect("the mlflow venv's python runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the MLflow session failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON")
}

#[tokio::test]
async fn an_mlflow_client_session_is_recorded_like_a_native_run() {
    let app = TestApp::spawn().await;
    let seen = client_session(&app, "parallel-r1 sweep").await;

    // What the client read back through MLflow's own API.
    assert_eq!(seen["status"], "FINISHED");
    assert!(seen["end_time"].as_i64().unwrap() > 0);
    assert_eq!(
        seen["params"],
        serde_json::json!({"lr": "1e-5", "rollout_n": "8", "reward": "S1"})
    );
    assert_eq!(seen["tags"]["method"], "parallel-r1");
    assert_eq!(seen["tags"]["mlflow.runName"], "grpo-s1");
    assert_eq!(seen["latest"]["loss"], 0.001);
    assert_eq!(
        seen["latest"]["diverged"],
        Value::Null,
        "NaN survives the round trip"
    );
    assert_eq!(seen["inputs"], serde_json::json!(["gsm8k-train"]));
    let history = seen["history"].as_array().unwrap();
    assert_eq!(history.len(), 1000);
    for (i, point) in history.iter().enumerate() {
        assert_eq!(point[0], i as u64);
        assert_eq!(point[1].as_f64().unwrap(), 1.0 / (1.0 + i as f64));
    }
    let run_id = seen["run_id"].as_str().unwrap();
    assert_eq!(seen["searched"], serde_json::json!([run_id]));
    assert_eq!(seen["not_matching"], 0);
    assert_eq!(
        seen["experiments_found"],
        serde_json::json!(["parallel-r1 sweep"])
    );
    assert_eq!(
        seen["artifacts"],
        serde_json::json!([["rollouts/samples.txt", false, 40]])
    );
    let content = "<Parallel><Path>2+2=4</Path></Parallel>\n";
    assert_eq!(seen["downloaded"], content);
    let errors = &seen["errors"];
    assert!(
        errors["changed_param"]
            .as_str()
            .unwrap()
            .contains("Changing param values is not allowed")
    );
    assert!(
        errors["missing_run"]
            .as_str()
            .unwrap()
            .contains("not found")
    );
    assert!(
        errors["taken_name"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    assert!(
        errors["deleted_run"]
            .as_str()
            .unwrap()
            .contains("'active' state")
    );
    assert_eq!(seen["visible_after_delete"], 0);

    // The same run through prl: an experiment with one run whose metrics are in run_metrics.
    let experiment: Uuid = run_id.parse().unwrap();
    let detail = app.experiment(experiment).await;
    assert_eq!(detail["status"], "completed");
    assert_eq!(detail["model"], "mlflow");
    assert_eq!(detail["name"], "grpo-s1");
    assert!(
        detail["tags"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("mlflow:parallel-r1 sweep"))
    );
    let tracked = &detail["tracked"];
    assert_eq!(tracked["source"], "mlflow");
    assert_eq!(tracked["group"], "parallel-r1 sweep");
    assert_eq!(tracked["params"]["lr"], "1e-5");
    assert_eq!(tracked["tags"]["stage"], "rl");
    let artifact = &tracked["artifacts"][0];
    assert_eq!(artifact["path"], "rollouts/samples.txt");
    let download = app.get(artifact["url"].as_str().unwrap()).await;
    // Served as a download, never rendered in the web UI's origin.
    let header = |name: &str| download.headers()[name].to_str().unwrap().to_owned();
    assert!(header("content-disposition").starts_with("attachment"));
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("content-security-policy"), "sandbox");
    let downloaded = download.text().await.unwrap();
    assert_eq!(downloaded, "<Parallel><Path>2+2=4</Path></Parallel>\n");
    let run = &detail["runs"][0];
    assert_eq!(run["status"], "finished");
    assert_eq!(run["latest_metrics"]["loss"], 0.001);
    assert_eq!(run["last_step"], 999);
    let run_uuid: Uuid = run["id"].as_str().unwrap().parse().unwrap();
    let series: Value = app
        .get(&format!(
            "/api/v1/runs/{run_uuid}/metrics?names=loss&buckets=10"
        ))
        .await
        .json()
        .await
        .unwrap();
    let buckets = series.as_array().unwrap();
    assert_eq!(buckets.len(), 10);
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["count"].as_i64().unwrap())
            .sum::<i64>(),
        1000
    );
    // 1,000 steps of ten metrics, and the NaN logged apart at step 0 with its own timestamp.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM run_metrics WHERE run_id = '{run_uuid}'"
        ))
        .await,
        1001
    );
    let (size, sha, uri): (i64, String, String) =
        sqlx::query_as("SELECT size_bytes, sha256, uri FROM artifacts WHERE run_id = $1")
            .bind(run_uuid)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(size, content.len() as i64);
    assert_eq!(sha, hex::encode(sha2::Sha256::digest(content)));
    // The file is in the artifact store the daemons share, under its run and hash.
    let store = app.checkpoints().store;
    let key = format!("artifacts/{run_uuid}/{sha}");
    assert_eq!(uri, format!("{}{key}", store.url()));
    assert_eq!(
        std::fs::read(app.data_dir.join("store").join(&key)).unwrap(),
        content.as_bytes()
    );

    // Everything is in the log: the read models come back the same from it alone.
    let before = crate::replay::snapshot(&app).await;
    prl_api::projections::replay::replay(&app.pool)
        .await
        .unwrap();
    let after = crate::replay::snapshot(&app).await;
    for ((table, old), (_, new)) in before.iter().zip(&after) {
        assert_eq!(old, new, "{table} differs after replay");
    }
}

/// Posts to an MLflow route with the token; the status and the body.
async fn mlflow_post(app: &TestApp, route: &str, body: &str) -> (u16, Value) {
    let response = app
        .http
        .post(format!("{}/mlflow/api/2.0/mlflow/{route}", app.address))
        .bearer_auth(prl_integration_tests::TOKEN)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn mlflow_routes_refuse_bad_input_in_mlflows_words() {
    let app = TestApp::spawn().await;
    let (status, created) = mlflow_post(&app, "runs/create", r#"{"experiment_id": "0"}"#).await;
    assert_eq!(status, 200, "{created}");
    let run = created["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events_before = app.count("SELECT count(*) FROM events").await;

    let too_many: Vec<Value> = (0..1001)
        .map(|i| serde_json::json!({"key": "m", "value": 1.0, "timestamp": 1, "step": i}))
        .collect();
    let cases = [
        (
            "runs/log-batch",
            "{not json".to_owned(),
            400,
            "INVALID_PARAMETER_VALUE",
            "not JSON",
        ),
        (
            "runs/log-batch",
            serde_json::json!({"run_id": run, "metrics": too_many}).to_string(),
            400,
            "INVALID_PARAMETER_VALUE",
            "at most 1000 metrics",
        ),
        (
            "runs/log-metric",
            serde_json::json!({"run_id": run, "key": "../etc", "value": 1.0, "timestamp": 1})
                .to_string(),
            400,
            "INVALID_PARAMETER_VALUE",
            "Invalid metric name",
        ),
        (
            "runs/log-metric",
            serde_json::json!({"run_id": run, "key": "loss", "value": "lots", "timestamp": 1})
                .to_string(),
            400,
            "INVALID_PARAMETER_VALUE",
            "is not a number",
        ),
        (
            "runs/log-metric",
            serde_json::json!({"run_id": run, "key": "loss", "value": 1.0, "step": -3}).to_string(),
            400,
            "INVALID_PARAMETER_VALUE",
            "negative",
        ),
        (
            "runs/log-parameter",
            serde_json::json!({"run_id": run, "key": "p", "value": "a\u{0}b"}).to_string(),
            400,
            "INVALID_PARAMETER_VALUE",
            "NUL",
        ),
        (
            "runs/log-batch",
            serde_json::json!({"run_id": Uuid::new_v4(), "metrics": []}).to_string(),
            404,
            "RESOURCE_DOES_NOT_EXIST",
            "not found",
        ),
        (
            "runs/search",
            serde_json::json!({"experiment_ids": ["0"], "filter": "metrics.loss < 'x'"})
                .to_string(),
            400,
            "INVALID_PARAMETER_VALUE",
            "does not take that value",
        ),
        (
            "runs/create",
            serde_json::json!({"experiment_id": "no-such"}).to_string(),
            404,
            "RESOURCE_DOES_NOT_EXIST",
            "No Experiment",
        ),
        (
            "runs/create",
            serde_json::json!({"experiment_id": "0", "start_time": -300_000_000_000_000i64})
                .to_string(),
            400,
            "INVALID_PARAMETER_VALUE",
            "between the years 1 and 9999",
        ),
        (
            "model-versions/create",
            "{}".to_owned(),
            404,
            "ENDPOINT_NOT_FOUND",
            "tracking API",
        ),
    ];
    for (route, body, status, code, words) in cases {
        let (got, answer) = mlflow_post(&app, route, &body).await;
        assert_eq!(got, status, "{route}: {answer}");
        assert_eq!(answer["error_code"], code, "{route}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(words),
            "{route}: {answer}"
        );
    }

    // prl's cancel does not apply to a run an MLflow client ends.
    let cancel = app.cancel(run.parse().unwrap(), None).await;
    assert_eq!(cancel.status(), 409);

    // Without the token, a write is refused in MLflow's words.
    let anonymous = app
        .http
        .post(format!("{}/mlflow/api/2.0/mlflow/runs/create", app.address))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let answer: Value = anonymous.json().await.unwrap();
    assert_eq!(answer["error_code"], "UNAUTHENTICATED");

    // An artifact path that would leave the run's directory is refused before anything is
    // stored. Sent by hand: HTTP clients remove `..` from URLs before sending them.
    let answer = raw_request(
        &app,
        &format!(
            "PUT /mlflow/api/2.0/mlflow-artifacts/artifacts/0/{run}/artifacts/a/../../x HTTP/1.1"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("would leave"), "{answer}");

    assert_eq!(
        app.count("SELECT count(*) FROM events").await,
        events_before,
        "nothing was recorded for refused requests"
    );
}

/// One request line with the token and a one-byte body, sent as written; the whole answer.
async fn raw_request(app: &TestApp, request_line: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "{request_line}\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
        prl_integration_tests::TOKEN
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}
