//! JSONL and verl-parquet datasets through the stack: a good file is evaluated on; a malformed
//! row fails the job with a reason that names the file and the line or row.

use prl_integration_tests::{TestApp, VerlFixtureRow, training_turn, write_verl_parquet};
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

const SOLUTION: &str =
    "<Parallel><Path>2+3=5</Path><Path>3+2=5</Path></Parallel><Summary>5</Summary> Final Answer: 5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verl_parquet_datasets_are_used_and_bad_rows_are_named_by_file_and_row() {
    let _turn = training_turn().await;
    let app = TestApp::spawn().await;
    let _trainer = app.start_trainer("trainer");
    std::fs::create_dir_all(&app.data_dir).unwrap();
    let row = |question, truth, answer| VerlFixtureRow {
        chat: vec![("system", "Think in parallel."), ("user", question)],
        ground_truth: truth,
        answer,
    };
    let good = app.data_dir.join("good.parquet");
    write_verl_parquet(
        &good,
        &[
            row(
                "Mia has 2 apples and finds 3 more. How many now?",
                Some("5"),
                Some(SOLUTION),
            ),
            row(
                "Leo has 4 cards and gives away 1. How many now?",
                Some("3"),
                None,
            ),
        ],
    );
    let bad = app.data_dir.join("bad.parquet");
    write_verl_parquet(&bad, &[row("q", Some("1"), None), row("q", None, None)]);

    // The rows as the trainer reads them: the last user message, the ground truth, the solution.
    let reference = format!("verl:{}", good.display());
    let tasks = prl_trainer::data::tasks(&reference, None).unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!((tasks[1].id.as_str(), tasks[1].truth.as_str()), ("1", "3"));
    assert!(
        tasks[0].prompt.contains("Mia has 2 apples"),
        "{}",
        tasks[0].prompt
    );
    assert!(!tasks[0].prompt.contains("Think in parallel."));
    let sft = prl_trainer::data::examples(&reference)
        .unwrap_err()
        .to_string();
    assert!(sft.contains("good.parquet row 2: no solution"), "{sft}");

    let eval = |name: &str, path: &std::path::Path| {
        serde_json::json!({
            "name": name, "model": "tiny",
            "stages": [{"kind": "eval", "name": "eval", "dataset": format!("verl:{}", path.display()),
                        "k": 2, "max_response_tokens": 16}]
        })
    };
    let id = app.submit(&eval("good parquet", &good)).await;
    app.wait_for_status(id, "completed", Duration::from_secs(120))
        .await;
    let prompts: i32 = sqlx::query_scalar("SELECT prompts FROM evaluations")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(prompts, 2);

    let id = app.submit(&eval("bad parquet", &bad)).await;
    let detail = app
        .wait_for_status(id, "failed", Duration::from_secs(120))
        .await;
    let reason = detail["jobs"][0]["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("bad.parquet row 2: reward_model.ground_truth"),
        "{reason}"
    );
}
