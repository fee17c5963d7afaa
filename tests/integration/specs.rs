use prl_integration_tests::{TestApp, quick_spec};
use serde_json::{Value, json};

/// An edit that breaks a valid spec.
type Change = Box<dyn FnOnce(&mut Value)>;

/// Applies `change` to a valid spec, submits it, and returns the status and body.
async fn submit_changed(app: &TestApp, change: impl FnOnce(&mut Value)) -> (u16, Value) {
    let mut spec = quick_spec("bad");
    change(&mut spec);
    let response = app.post_experiment(&spec).await;
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn each_kind_of_bad_spec_answers_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, Change)> = vec![
        (
            "stages[0].epochz",
            Box::new(|s| s["stages"][0]["epochz"] = json!(3)),
        ),
        ("shape", Box::new(|s| s["shape"] = json!("round"))),
        (
            "stages[0].batch_size",
            Box::new(|s| s["stages"][0]["batch_size"] = json!("large")),
        ),
        ("tags", Box::new(|s| s["tags"] = json!("one"))),
        ("stages", Box::new(|s| s["stages"] = json!([]))),
        (
            "stages[0].learning_rate",
            Box::new(|s| s["stages"][0]["learning_rate"] = json!(-0.001)),
        ),
        (
            "stages[1].group_size",
            Box::new(|s| s["stages"][1]["group_size"] = json!(1)),
        ),
        ("stages[2].k", Box::new(|s| s["stages"][2]["k"] = json!(0))),
        (
            "stages[1].init_from.stage",
            Box::new(|s| s["stages"][1]["init_from"] = json!({"stage": "nowhere"})),
        ),
        (
            "stages[1].init_from.stage",
            Box::new(|s| s["stages"][1]["init_from"] = json!({"stage": "eval"})),
        ),
        (
            "stages[1].init_from.step",
            Box::new(|s| s["stages"][1]["init_from"] = json!({"stage": "sft", "step": 3})),
        ),
        (
            "stages[0].kind",
            Box::new(|s| s["stages"][0]["kind"] = json!("pretrain")),
        ),
        ("model", Box::new(|s| s["model"] = json!("gpt-9"))),
        (
            "stages[0].dataset",
            Box::new(|s| s["stages"][0]["dataset"] = json!("builtin:eazy")),
        ),
        (
            "stages[2].dataset",
            Box::new(|s| s["stages"][2]["dataset"] = json!("hf:gsm8k")),
        ),
        (
            "name",
            Box::new(|s| {
                s.as_object_mut()
                    .unwrap()
                    .remove("name")
                    .map(drop)
                    .unwrap_or(())
            }),
        ),
    ];
    for (field, change) in cases {
        let (status, body) = submit_changed(&app, change).await;
        assert_eq!(status, 422, "{field}: {body}");
        assert_eq!(body["error"], "invalid_spec");
        assert_eq!(body["field"], field, "{body}");
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        app.count("SELECT count(*) FROM events").await,
        0,
        "a refused spec recorded something"
    );
}

#[tokio::test]
async fn malformed_json_answers_400_and_an_oversized_body_413() {
    let app = TestApp::spawn().await;
    let response = app
        .post_raw(
            "/api/v1/experiments",
            "{\"name\": ".into(),
            Some(prl_integration_tests::TOKEN),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "malformed");

    let mut spec = quick_spec("huge");
    spec["tags"] = json!(vec!["x".repeat(60); 2000]);
    let response = app.post_experiment(&spec).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "too_large");
    assert_eq!(app.count("SELECT count(*) FROM events").await, 0);
}

#[tokio::test]
async fn where_the_daemons_share_the_apis_files_a_missing_file_is_refused_at_the_door() {
    let app = TestApp::spawn_with(|s| s.files.shared_with_daemons = true).await;
    let dir = std::env::temp_dir().join(format!("prl-shared-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("train.jsonl");
    std::fs::write(&data, "{\"question\": \"1 + 1?\", \"answer\": \"2\"}\n").unwrap();
    let missing = dir.join("nothing.jsonl");
    let cases: Vec<(&str, Change)> = vec![
        (
            "stages[2].dataset",
            Box::new(move |s| {
                s["stages"][2]["dataset"] = json!(format!("jsonl:{}", missing.display()))
            }),
        ),
        (
            "model",
            Box::new(|s| s["model"] = json!("path:/no/such/model")),
        ),
    ];
    for (field, change) in cases {
        let (status, body) = submit_changed(&app, change).await;
        assert_eq!(status, 422, "{field}: {body}");
        assert_eq!(body["field"], field, "{body}");
    }
    let present = format!("jsonl:{}", data.display());
    let (status, body) = submit_changed(&app, |s| s["stages"][2]["dataset"] = json!(present)).await;
    assert_eq!(status, 201, "{body}");
    std::fs::remove_dir_all(dir).unwrap();
}
