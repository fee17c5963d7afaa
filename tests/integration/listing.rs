use prl_integration_tests::{TestApp, quick_spec};
use serde_json::Value;

#[tokio::test]
async fn experiments_are_listed_newest_first_with_filters_and_keyset_pages() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut spec = quick_spec(&format!("sweep {i}"));
        if i % 2 == 0 {
            spec["tags"] = serde_json::json!(["even"]);
        }
        ids.push(app.submit(&spec).await);
    }
    app.cancel(ids[1], None).await;

    let mut seen = Vec::new();
    let mut url = "/api/v1/experiments?limit=2".to_owned();
    loop {
        let page: Value = app.get(&url).await.json().await.unwrap();
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => url = format!("/api/v1/experiments?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().map(|id| id.to_string()).collect();
    assert_eq!(seen, newest_first);

    let even: Value = app
        .get("/api/v1/experiments?tag=even")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(even["items"].as_array().unwrap().len(), 3);
    let cancelled: Value = app
        .get("/api/v1/experiments?status=cancelled")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["items"][0]["id"], ids[1].to_string());
    let named: Value = app
        .get("/api/v1/experiments?name=SWEEP%203")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(named["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_list_parameters_answer_400_naming_the_parameter() {
    let app = TestApp::spawn().await;
    for (query, parameter) in [
        ("status=sleeping", "status"),
        ("limit=500", "limit"),
        ("cursor=yesterday", "cursor"),
        ("limit=ten", "limit"),
    ] {
        let response = app.get(&format!("/api/v1/experiments?{query}")).await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
    }
    assert_eq!(
        app.get(&format!("/api/v1/experiments/{}", uuid::Uuid::new_v4()))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn each_listed_experiment_carries_its_stages_progress() {
    let app = TestApp::spawn().await;
    let mut spec = quick_spec("progress");
    // The largest step count a spec accepts still lists (it exceeds PostgreSQL's bigint).
    spec["stages"][1]["steps"] = serde_json::json!(u64::MAX);
    let id = app.submit(&spec).await;
    let page: Value = app.get("/api/v1/experiments").await.json().await.unwrap();
    let item = &page["items"][0];
    assert_eq!(item["id"], id.to_string());
    let stages = item["stages"].as_array().unwrap();
    let shape: Vec<(&str, &str, Value)> = stages
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["kind"].as_str().unwrap(),
                s["steps"].clone(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("sft", "sft", serde_json::json!(6)),
            ("rl", "rl", serde_json::json!(i64::MAX)),
            ("eval", "eval", Value::Null),
        ]
    );
    assert!(stages.iter().all(|s| s["last_step"].is_null()));
}
