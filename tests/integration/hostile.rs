//! Careless or hostile input: every body is refused with a JSON error that names what is wrong,
//! and nothing is recorded for it.

use prl_integration_tests::{TOKEN, TestApp, quick_spec};
use serde_json::{Value, json};

async fn post(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let response = app.post_raw(path, body.to_string(), Some(TOKEN)).await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON error body"))
}

#[tokio::test]
async fn a_nul_or_control_character_answers_422_naming_the_field_and_records_nothing() {
    let app = TestApp::spawn().await;
    let events = app.count("SELECT count(*) FROM events").await;

    let mut spec = quick_spec("nul");
    spec["name"] = json!("bad\u{0}name");
    let (status, error) = post(&app, "/api/v1/experiments", &spec).await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("name")),
        "{error}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("NUL"),
        "{error}"
    );

    let mut spec = quick_spec("escape");
    spec["stages"][0]["dataset"] = json!("builtin:easy\u{1b}[2J");
    let (status, error) = post(&app, "/api/v1/experiments", &spec).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "stages[0].dataset");

    let toml = "name = \"t\\u0000\"\nmodel = \"tiny\"\n";
    let response = app
        .http
        .post(app.url("/api/v1/experiments"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/toml")
        .body(toml)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["field"], "name", "{error}");

    let registration = json!({"name": "d\u{0}", "splits": []});
    let (status, error) = post(&app, "/api/v1/datasets", &registration).await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("name")),
        "{error}"
    );

    let import = json!({"name": "i", "rollouts": [{"name": "1.jsonl", "content": "{\"output\": \"a\u{0}\"}"}]});
    let (status, error) = post(&app, "/api/v1/imports", &import).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "rollouts[0].content");
    // Escaped in the line's own JSON: found when the line is read.
    let escaped = json!({"name": "i", "rollouts": [{"name": "1.jsonl",
        "content": "{\"input\": \"q\", \"output\": \"a\\u0000\", \"score\": 1.0}"}]});
    let (status, error) = post(&app, "/api/v1/imports", &escaped).await;
    assert_eq!(status, 422, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("`output` holds a NUL"),
        "{error}"
    );
    let response = app.get("/api/v1/experiments?name=a%00b").await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["parameter"], "name", "{error}");

    assert_eq!(app.count("SELECT count(*) FROM events").await, events);
}

#[tokio::test]
async fn a_cancel_with_a_bad_body_is_refused_rather_than_ignored() {
    let app = TestApp::spawn().await;
    let id = app.submit(&quick_spec("cancel me")).await;
    let path = format!("/api/v1/experiments/{id}/cancel");

    let response = app.post_raw(&path, "{not json".into(), Some(TOKEN)).await;
    assert_eq!(response.status(), 400);
    let (status, error) = post(&app, &path, &json!({"reason": "nul\u{0}"})).await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("reason")),
        "{error}"
    );
    assert_eq!(app.experiment(id).await["status"], "queued");

    let (status, _) = post(&app, &path, &json!({"reason": "enough"})).await;
    assert_eq!(status, 200);
    assert_eq!(app.experiment(id).await["status"], "cancelled");
}

#[tokio::test]
async fn a_dataset_registration_over_the_body_limit_answers_413_in_json() {
    let app = TestApp::spawn().await;
    let source = "x".repeat(128 * 1024);
    let (status, error) = post(
        &app,
        "/api/v1/datasets",
        &json!({"name": "d", "source": source, "splits": []}),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(error["error"], "too_large");
}
