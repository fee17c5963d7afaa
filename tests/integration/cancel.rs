use prl_integration_tests::{TestApp, quick_spec};
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn cancelling_a_running_experiment_stops_its_job_and_queues_nothing_more() {
    let app = TestApp::spawn().await;
    let _daemon = app.start_daemon("daemon-a", Duration::from_millis(300));
    let id = app.submit(&quick_spec("to cancel")).await;
    app.wait_for_count(
        "SELECT count(*) FROM run_metrics",
        1,
        Duration::from_secs(20),
    )
    .await;

    let response = app.cancel(id, None).await;
    assert_eq!(response.status(), 200);
    let detail = app
        .wait_for_status(id, "cancelled", Duration::from_secs(5))
        .await;
    assert_eq!(detail["jobs"][0]["status"], "cancelled");
    let events_after_first = app
        .count("SELECT count(*) FROM events WHERE stream_type <> 'run'")
        .await;

    // A second cancel has the same effect as the first: no new event.
    let again = app.cancel(id, None).await;
    assert_eq!(again.status(), 200);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");

    // The daemon stops, saving a checkpoint on its way out, and no later stage is queued.
    app.wait_for_count(
        "SELECT count(*) FROM checkpoints",
        1,
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'JobQueued'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'JobFinished'")
            .await,
        0
    );
    let later = app
        .count("SELECT count(*) FROM events WHERE stream_type <> 'run'")
        .await;
    assert_eq!(later, events_after_first, "{:?}", app.event_types().await);
}

#[tokio::test]
async fn a_cancel_at_a_stale_version_answers_409_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let id = app.submit(&quick_spec("conditional")).await;
    let version = app.experiment(id).await["version"].as_i64().unwrap();

    let stale = app.cancel(id, Some(&format!("\"{}\"", version + 5))).await;
    assert_eq!(stale.status(), 409);
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["error"], "conflict");
    assert_eq!(app.experiment(id).await["status"], "queued");

    let current = app.cancel(id, Some(&version.to_string())).await;
    assert_eq!(current.status(), 200);
    assert_eq!(app.experiment(id).await["status"], "cancelled");
}

#[tokio::test]
async fn cancelling_an_unknown_experiment_answers_404_and_a_bad_id_400() {
    let app = TestApp::spawn().await;
    let response = app.cancel(uuid::Uuid::new_v4(), None).await;
    assert_eq!(response.status(), 404);
    let response = app
        .post_raw(
            "/api/v1/experiments/not-a-uuid/cancel",
            String::new(),
            Some(prl_integration_tests::TOKEN),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["parameter"], "id");
}
