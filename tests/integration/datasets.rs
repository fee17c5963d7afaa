//! JSONL datasets through the stack: a good file is evaluated on; a malformed row fails the job
//! with a reason that names the file and the line.

use prl_integration_tests::{TestApp, training_turn};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_datasets_are_used_and_bad_rows_are_named_by_file_and_line() {
    let _turn = training_turn().await;
    let app = TestApp::spawn().await;
    let _trainer = app.start_trainer("trainer");
    std::fs::create_dir_all(&app.data_dir).unwrap();
    let good = app.data_dir.join("good.jsonl");
    std::fs::write(
        &good,
        "{\"question\": \"Mia has 2 apples and finds 3 more. How many now?\", \"answer\": 5}\n\
         {\"id\": \"two\", \"question\": \"Leo has 4 cards and gives away 1. How many now?\", \"answer\": \"3\"}\n",
    )
    .unwrap();
    let bad = app.data_dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"question\": \"q\", \"answer\": 1}\n{\"question\": 7}\n",
    )
    .unwrap();
    let eval = |name: &str, path: &std::path::Path| {
        serde_json::json!({
            "name": name, "model": "tiny",
            "stages": [{"kind": "eval", "name": "eval", "dataset": format!("jsonl:{}", path.display()),
                        "k": 2, "max_response_tokens": 16}]
        })
    };
    let id = app.submit(&eval("good file", &good)).await;
    app.wait_for_status(id, "completed", Duration::from_secs(120))
        .await;
    let (benchmark, prompts, k): (String, i32, i32) =
        sqlx::query_as("SELECT benchmark, prompts, k FROM evaluations")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((prompts, k), (2, 2));
    assert!(benchmark.ends_with("good.jsonl"), "{benchmark}");

    let id = app.submit(&eval("bad file", &bad)).await;
    let detail = app
        .wait_for_status(id, "failed", Duration::from_secs(120))
        .await;
    let reason = detail["jobs"][0]["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("bad.jsonl:2:") && reason.contains("question"),
        "{reason}"
    );
}
