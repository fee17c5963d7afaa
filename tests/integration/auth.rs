use prl_integration_tests::{TestApp, quick_spec};

#[tokio::test]
async fn write_endpoints_answer_401_without_the_token() {
    let app = TestApp::spawn().await;
    let body = quick_spec("no token").to_string();
    for token in [None, Some("wrong-token")] {
        let response = app
            .post_raw("/api/v1/experiments", body.clone(), token)
            .await;
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["WWW-Authenticate"], "Bearer");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"], "unauthorized");
    }
    let id = app.submit(&quick_spec("with token")).await;
    let response = app
        .post_raw(
            &format!("/api/v1/experiments/{id}/cancel"),
            String::new(),
            None,
        )
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(app.count("SELECT count(*) FROM experiments").await, 1);
    assert_eq!(app.experiment(id).await["status"], "queued");
}

#[tokio::test]
async fn reads_need_the_token_when_the_deployment_protects_them() {
    let app = TestApp::spawn_with(|s| s.auth.protect_reads = true).await;
    assert_eq!(app.get("/api/v1/experiments").await.status(), 401);
    let response = app
        .http
        .get(app.url("/api/v1/experiments"))
        .bearer_auth(prl_integration_tests::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
