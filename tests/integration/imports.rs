//! Imports of the reference code's dumps, from fixture folders the test writes: they become an
//! experiment whose run is analysed like a native one; a bad file leaves nothing behind; the
//! same import twice is recorded once.

use prl_cli::import::Sources;
use prl_integration_tests::{TOKEN, TestApp, VerlFixtureRow, write_verl_parquet};
use serde_json::{Value, json};
use std::path::Path;

const PARALLEL: &str = "Half of 10.<Parallel><Path>10/2 = 5</Path><Path>10*0.5 = 5</Path></Parallel><Summary>5</Summary> Final Answer: 5";

/// Steps 1 to 3 of two prompts with two samples each; step 3 uses blocks more.
fn write_rollouts(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for step in 1..=3u32 {
        let lines: Vec<String> = (0..4u32)
            .map(|i| {
                let parallel = i < step;
                json!({
                    "input": format!("<|user|> question {}", i % 2),
                    "output": if parallel { PARALLEL } else { "10/2 = 5. Final Answer: 5" },
                    "score": 1.0, "step": step, "acc": true, "pred": "5"
                })
                .to_string()
            })
            .collect();
        std::fs::write(dir.join(format!("{step}.jsonl")), lines.join("\n")).unwrap();
    }
}

fn write_validation(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let lines = [
        json!({"input": "a", "output": PARALLEL, "score": 1.0, "acc": 1.0, "data_source": "aime"}),
        json!({"input": "a", "output": "Final Answer: 4", "score": 0.0, "acc": 0.0, "data_source": "aime"}),
    ];
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(dir.join("3.jsonl"), text.join("\n")).unwrap();
}

/// A folder under the temp dir, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("prl-import-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn post_import(app: &TestApp, body: &Value) -> (u16, Value) {
    let response = app
        .post_raw("/api/v1/imports", body.to_string(), Some(TOKEN))
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn request(dir: &Path, name: &str) -> Value {
    let sources = Sources {
        rollouts: Some(dir.join("rollouts")),
        validation: Some(dir.join("validation")),
        dataset: None,
    };
    let request =
        prl_cli::import::request(name.into(), sources, None, vec!["reference".into()]).unwrap();
    serde_json::to_value(request).unwrap()
}

#[tokio::test]
async fn a_reference_run_is_imported_once_and_analysed_like_a_native_one() {
    let app = TestApp::spawn_with(|s| s.http.import_limit_bytes = 1 << 20).await;
    let dir = TempDir::new();
    write_rollouts(&dir.path().join("rollouts"));
    write_validation(&dir.path().join("validation"));
    let body = request(dir.path(), "Parallel-R1 (reference)");

    let (status, imported) = post_import(&app, &body).await;
    assert_eq!(status, 201, "{imported}");
    assert_eq!(imported["trajectories"], 12);
    assert_eq!(imported["steps"], 3);
    assert_eq!(imported["evaluations"], 1);
    let run = imported["run_id"].as_str().unwrap();
    let experiment = imported["experiment_id"].as_str().unwrap();

    let series: Value = app
        .get(&format!("/api/v1/analytics/strategy?runs={run}"))
        .await
        .json()
        .await
        .unwrap();
    let ratios: Vec<f64> = series
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["parallel_ratio"].as_f64().unwrap())
        .collect();
    assert_eq!(ratios, [0.25, 0.5, 0.75]);
    assert_eq!(series[0]["exploration_share"], 1.0);

    let main: Vec<(String, f64, f64)> =
        sqlx::query_as("SELECT benchmark, mean_at_k, pass_at_k FROM main_table ORDER BY benchmark")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(main, [("Avg".into(), 0.5, 1.0), ("aime".into(), 0.5, 1.0)]);
    let detail: Value = app
        .get(&format!("/api/v1/experiments/{experiment}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["status"], "imported");
    assert!(detail["spec"].is_null());
    assert_eq!(detail["runs"][0]["id"], run);
    let cancel = app.cancel(experiment.parse().unwrap(), None).await;
    assert_eq!(cancel.status(), 409);

    let events = app.count("SELECT count(*) FROM events").await;
    let (again, answer) = post_import(&app, &body).await;
    assert_eq!(again, 200, "{answer}");
    assert_eq!(answer["already_imported"], true);
    assert_eq!(app.count("SELECT count(*) FROM events").await, events);
    assert_eq!(app.count("SELECT count(*) FROM trajectories").await, 12);
}

#[tokio::test]
async fn a_bad_line_names_its_file_and_line_and_nothing_is_recorded() {
    let app = TestApp::spawn_with(|s| s.http.import_limit_bytes = 1 << 20).await;
    let dir = TempDir::new();
    write_rollouts(&dir.path().join("rollouts"));
    write_validation(&dir.path().join("validation"));
    let broken = dir.path().join("rollouts/2.jsonl");
    let mut text = std::fs::read_to_string(&broken).unwrap();
    text.push_str("\n{\"input\": \"q\", \"score\": 1.0}");
    std::fs::write(&broken, text).unwrap();

    let (status, error) = post_import(&app, &request(dir.path(), "broken")).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "rollouts[1]");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("2.jsonl line 5: missing field `output`"),
        "{message}"
    );
    assert_eq!(app.count("SELECT count(*) FROM events").await, 0);

    let (status, error) = post_import(&app, &json!({"name": "x"})).await;
    assert_eq!(status, 422);
    assert_eq!(error["field"], "rollouts");
    let (status, error) = post_import(&app, &json!({"name": "x", "rollout": []})).await;
    assert_eq!(status, 400, "{error}");
    assert!(error["message"].as_str().unwrap().contains("rollout"));
    assert!(prl_cli::import::request("x".into(), Sources::default(), None, vec![]).is_err());
}

#[tokio::test]
async fn a_verl_cold_start_dataset_is_analysed_like_trajectories() {
    let app = TestApp::spawn_with(|s| s.http.import_limit_bytes = 1 << 20).await;
    let dir = TempDir::new();
    let path = dir.path().join("cold-start.parquet");
    let row = |question, answer| VerlFixtureRow {
        chat: vec![("user", question)],
        ground_truth: Some("5"),
        answer: Some(answer),
        data_source: None,
    };
    const VERIFYING: &str = "Half of 10: 10/2 = 5.<Parallel><Path>5+5 = 10, so 5</Path><Path>2*5 = 10, so 5</Path></Parallel><Summary>5</Summary> Final Answer: 5";
    write_verl_parquet(
        &path,
        &[
            row("q1", PARALLEL),
            row("q2", VERIFYING),
            row("q3", "10/2 = 4. Final Answer: 4"),
        ],
    );
    let sources = Sources {
        dataset: Some(path.clone()),
        ..Sources::default()
    };
    let body = prl_cli::import::request("cold start".into(), sources, None, vec![]).unwrap();
    let (status, imported) = post_import(&app, &serde_json::to_value(body).unwrap()).await;
    assert_eq!(status, 201, "{imported}");
    assert_eq!(imported["trajectories"], 3);
    let roles: Vec<String> = sqlx::query_scalar("SELECT role FROM trajectory_blocks ORDER BY idx")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(roles, ["exploration", "verification"]);
    let (correct, steps): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE correct), count(DISTINCT step) FROM trajectories",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((correct, steps), (2, 1));

    // A row without a solution is named before anything is sent.
    let unsolved = VerlFixtureRow {
        chat: vec![("user", "q2")],
        ground_truth: Some("1"),
        answer: None,
        data_source: None,
    };
    write_verl_parquet(&path, &[row("q1", PARALLEL), unsolved]);
    let sources = Sources {
        dataset: Some(path),
        ..Sources::default()
    };
    let Err(err) = prl_cli::import::request("x".into(), sources, None, vec![]) else {
        panic!("a row without a solution was accepted")
    };
    assert!(
        err.to_string()
            .contains("cold-start.parquet row 2: no solution"),
        "{err}"
    );
}
