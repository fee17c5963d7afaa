//! JSONL and verl-parquet datasets through the stack: a good file is evaluated on; a malformed
//! row fails the job with a reason that names the file and the line or row.

use prl_integration_tests::{TOKEN, TestApp, VerlFixtureRow, training_turn, write_verl_parquet};
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
    assert!(reason.contains("bad.jsonl line 2: question"), "{reason}");
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
        data_source: None,
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
    let none = Default::default();
    let tasks = prl_trainer::data::tasks(&reference, None, &none).unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!((tasks[1].id.as_str(), tasks[1].truth.as_str()), ("1", "3"));
    assert!(
        tasks[0].prompt.contains("Mia has 2 apples"),
        "{}",
        tasks[0].prompt
    );
    assert!(!tasks[0].prompt.contains("Think in parallel."));
    let sft = prl_trainer::data::examples(&reference, &none)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_datasets_are_versioned_resolved_at_submission_and_checked_by_hash() {
    let _turn = training_turn().await;
    let app = TestApp::spawn().await;
    let _trainer = app.start_trainer("trainer");
    std::fs::create_dir_all(&app.data_dir).unwrap();
    let test = app.data_dir.join("test.jsonl");
    std::fs::write(
        &test,
        "{\"question\": \"Mia has 2 apples and finds 3 more. How many now?\", \"answer\": 5}\n\
         {\"question\": \"Leo has 4 cards and gives away 1. How many now?\", \"answer\": 3}\n",
    )
    .unwrap();
    let train = app.data_dir.join("train.parquet");
    write_verl_parquet(
        &train,
        &[VerlFixtureRow {
            chat: vec![("user", "1+1?")],
            ground_truth: Some("2"),
            answer: Some("1+1=2. Final Answer: 2"),
            data_source: None,
        }],
    );
    let splits = [
        ("train".to_owned(), train.clone()),
        ("test".to_owned(), test.clone()),
    ];
    let registration = prl_cli::dataset::registration("toy".into(), &splits, "tests".into(), None)
        .await
        .unwrap();
    let body = serde_json::to_value(&registration).unwrap();
    let (status, view) = register(&app, body.clone()).await;
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["version"], 1);
    assert_eq!(view["splits"][1]["rows"], 2);
    assert_eq!(view["splits"][0]["format"], "verl");
    let (status, view) = register(&app, body.clone()).await;
    assert_eq!((status, &view["version"]), (200, &serde_json::json!(1)));
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'DatasetRegistered'")
            .await,
        1
    );
    let mut bad = body.clone();
    bad["splits"][0]["sha256"] = "abc".into();
    let (status, error) = register(&app, bad).await;
    assert_eq!(
        (status, &error["field"]),
        (422, &serde_json::json!("splits[0].sha256"))
    );

    let eval = |dataset: &str| {
        serde_json::json!({
            "name": "registered", "model": "tiny",
            "stages": [{"kind": "eval", "name": "eval", "dataset": dataset, "k": 1,
                        "max_response_tokens": 16}]
        })
    };
    for (dataset, reason) in [
        (
            "registered:nothing",
            "no dataset is registered as 'nothing'",
        ),
        (
            "registered:toy:valid",
            "the dataset 'toy' has no split 'valid'",
        ),
    ] {
        let response = app.post_experiment(&eval(dataset)).await;
        assert_eq!(response.status(), 422, "{dataset}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["field"], "stages[0].dataset");
        assert!(
            error["message"].as_str().unwrap().contains(reason),
            "{error}"
        );
    }

    let id = app.submit(&eval("registered:toy:test")).await;
    app.wait_for_status(id, "completed", Duration::from_secs(120))
        .await;
    let (benchmark, prompts): (String, i32) =
        sqlx::query_as("SELECT benchmark, prompts FROM evaluations")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((benchmark.as_str(), prompts), ("registered:toy:test", 2));

    // A file changed after registration is refused by the trainer, naming it.
    std::fs::write(&test, "{\"question\": \"q\", \"answer\": 1}\n").unwrap();
    let id = app.submit(&eval("registered:toy:test")).await;
    let detail = app
        .wait_for_status(id, "failed", Duration::from_secs(120))
        .await;
    let reason = detail["jobs"][0]["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("test.jsonl changed since dataset toy was registered"),
        "{reason}"
    );

    // Registering the changed file makes version 2; listing shows it.
    let again = prl_cli::dataset::registration("toy".into(), &splits, "tests".into(), None)
        .await
        .unwrap();
    let (status, view) = register(&app, serde_json::to_value(&again).unwrap()).await;
    assert_eq!((status, &view["version"]), (201, &serde_json::json!(2)));
    let list: serde_json::Value = app.get("/api/v1/datasets").await.json().await.unwrap();
    assert_eq!(list[0]["splits"][1]["rows"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_datasets_are_checked_stored_once_by_hash_and_fetched_by_the_daemon() {
    let _turn = training_turn().await;
    let app = TestApp::spawn().await;
    let _trainer = app.start_trainer("trainer");
    // The files are written where no daemon looks, and removed once uploaded.
    let elsewhere = std::env::temp_dir().join(format!("prl-upload-{}", app.namespace));
    std::fs::create_dir_all(&elsewhere).unwrap();
    let test = elsewhere.join("test.jsonl");
    let rows = "{\"question\": \"Mia has 2 apples and finds 3 more. How many now?\", \"answer\": 5}\n\
                {\"question\": \"Leo has 4 cards and gives away 1. How many now?\", \"answer\": 3}\n";
    std::fs::write(&test, rows).unwrap();
    let upload = |body: &str, format: &str| {
        let request = app
            .http
            .post(app.url(&format!("/api/v1/datasets/files?format={format}")))
            .bearer_auth(TOKEN)
            .body(body.to_owned());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    // A bad row is refused, naming its line; so is a format prl does not read.
    let (status, error) = upload(
        "{\"question\": \"q\", \"answer\": 1}\n{\"answer\": 2}\n",
        "jsonl",
    )
    .await;
    assert_eq!(
        (status, &error["field"]),
        (422, &serde_json::json!("body")),
        "{error}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("line 2"),
        "{error}"
    );
    assert!(
        !error["message"].as_str().unwrap().contains(".upload-"),
        "{error}"
    );
    let (status, error) = upload(rows, "csv").await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("format"),
        "{error}"
    );
    let (status, error) = upload("PAR1 not really", "verl").await;
    assert_eq!(status, 422, "{error}");

    let client = prl_cli::client::Client::new(Some(app.address.clone()), Some(TOKEN.into()));
    let splits = [("test".to_owned(), test.clone())];
    let registration =
        prl_cli::dataset::registration("up".into(), &splits, "tests".into(), Some(&client))
            .await
            .unwrap();
    let split = &registration.splits[0];
    let store = app.checkpoints().store;
    let key = format!("datasets/{}.jsonl", split.sha256);
    assert_eq!(split.uri, format!("{}{key}", store.url()));
    assert_eq!(split.rows, 2);
    // The same file again is stored once.
    let (status, again) = upload(rows, "jsonl").await;
    assert_eq!(
        (status, &again["uri"]),
        (200, &serde_json::json!(split.uri))
    );
    std::fs::remove_dir_all(&elsewhere).unwrap();

    // A store URL that is not the uploaded file's, or names nothing stored, is refused.
    let body = serde_json::to_value(&registration).unwrap();
    let mut wrong = body.clone();
    wrong["splits"][0]["uri"] = format!("{}datasets/other.jsonl", store.url()).into();
    let (status, error) = register(&app, wrong).await;
    assert_eq!(
        (status, &error["field"]),
        (422, &serde_json::json!("splits[0].uri")),
        "{error}"
    );
    let mut absent = body.clone();
    let unknown = "0".repeat(64);
    absent["splits"][0]["sha256"] = unknown.clone().into();
    absent["splits"][0]["uri"] = format!("{}datasets/{unknown}.jsonl", store.url()).into();
    let (status, error) = register(&app, absent).await;
    assert_eq!(status, 422, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("holds no such file"),
        "{error}"
    );
    let (status, view) = register(&app, body).await;
    assert_eq!(status, 201, "{view}");

    // The daemon fetches the file into its data directory, checks it and evaluates on it.
    let id = app
        .submit(&serde_json::json!({
            "name": "uploaded", "model": "tiny",
            "stages": [{"kind": "eval", "name": "eval", "dataset": "registered:up:test", "k": 1,
                        "max_response_tokens": 16}]
        }))
        .await;
    app.wait_for_status(id, "completed", Duration::from_secs(120))
        .await;
    let prompts: i32 = sqlx::query_scalar("SELECT prompts FROM evaluations")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(prompts, 2);
    let fetched = app.data_dir.canonicalize().unwrap().join(&key);
    assert_eq!(std::fs::read_to_string(fetched).unwrap(), rows);
}

#[tokio::test]
async fn files_outside_the_daemons_roots_fail_the_job_without_telling_whether_they_exist() {
    let app = TestApp::spawn().await;
    let _daemon = app.start_daemon("daemon", Duration::ZERO);
    let eval = |name: &str, model: &str, dataset: &str| {
        serde_json::json!({
            "name": name, "model": model,
            "stages": [{"kind": "eval", "name": "eval", "dataset": dataset, "k": 1}]
        })
    };
    let mut reasons = vec![];
    for (model, dataset) in [
        ("tiny", "jsonl:/etc/hostname"),
        ("tiny", "jsonl:/etc/no-such-file"),
        ("tiny", "jsonl:/dev/zero"),
        ("path:/etc", "builtin:easy-test"),
    ] {
        let id = app.submit(&eval(dataset, model, dataset)).await;
        let detail = app
            .wait_for_status(id, "failed", Duration::from_secs(60))
            .await;
        reasons.push(
            detail["jobs"][0]["failure_reason"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for reason in &reasons {
        assert!(
            reason.contains("outside the daemon's data roots"),
            "{reason}"
        );
    }
    assert_eq!(
        reasons[0].replace("hostname", "X"),
        reasons[1].replace("no-such-file", "X"),
        "a file that exists and one that does not are refused alike"
    );
}

/// Posts a dataset registration; its status and body.
async fn register(app: &TestApp, body: serde_json::Value) -> (u16, serde_json::Value) {
    let response = app
        .post_raw("/api/v1/datasets", body.to_string(), Some(TOKEN))
        .await;
    let status = response.status().as_u16();
    (status, response.json::<serde_json::Value>().await.unwrap())
}
