use futures::StreamExt;
use prl_integration_tests::{TestApp, quick_spec};
use prl_schema::spec::StageKind;
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_outbox_publishes_every_job_once_even_when_its_checkpoint_is_lost() {
    let app = TestApp::spawn().await;
    let submissions = (0..40).map(|i| {
        let app = &app;
        async move { app.submit(&quick_spec(&format!("outbox {i}"))).await }
    });
    futures::future::join_all(submissions).await;
    app.wait_for_count(
        "SELECT coalesce(max(position), 0) FROM reader_checkpoints",
        80,
        Duration::from_secs(10),
    )
    .await;

    // As if the relay crashed after publishing but before saving its checkpoint.
    sqlx::query("UPDATE reader_checkpoints SET position = 0")
        .execute(&app.pool)
        .await
        .unwrap();
    app.wait_for_count(
        "SELECT coalesce(max(position), 0) FROM reader_checkpoints",
        80,
        Duration::from_secs(10),
    )
    .await;

    let expected: HashSet<String> =
        sqlx::query_scalar("SELECT event_id::text FROM events WHERE event_type = 'JobQueued'")
            .fetch_all(&app.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(expected.len(), 40);

    let consumer = app
        .topology
        .job_consumer_for(&app.js, StageKind::Sft, prl_schema::spec::JobRoute::Any)
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut batch = consumer
        .fetch()
        .max_messages(100)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    while let Some(message) = batch.next().await {
        let message = message.unwrap();
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .unwrap()
            .to_string();
        received.push(id);
        message.ack().await.unwrap();
    }
    let unique: HashSet<String> = received.iter().cloned().collect();
    assert_eq!(received.len(), unique.len(), "a job was published twice");
    assert_eq!(unique, expected, "a job was skipped");
}

#[tokio::test]
async fn a_queued_job_whose_message_was_lost_is_published_again_once_and_completes() {
    let app = TestApp::spawn_with(|s| s.jobs.requeue_after_seconds = 2).await;
    let id = app.submit(&quick_spec("lost job message")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting(&app).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the relay never published the job"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // As if nats-server lost a message it had acknowledged (its files are synced every 2 min).
    let stream = app.js.get_stream(app.topology.jobs_stream()).await.unwrap();
    stream.purge().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while waiting(&app).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the lost job was never published again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // While its message waits for a daemon, the job is not published again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(waiting(&app).await, 1, "a waiting job was published twice");

    let _daemon = app.start_daemon("worker", Duration::from_millis(5));
    app.wait_for_status(id, "completed", Duration::from_secs(60))
        .await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    // Once: the wait above found one message, and the reconciler counts only what NATS stored.
    assert!(
        metrics.lines().any(|l| l == "prl_jobs_republished_total 1"),
        "{metrics}"
    );
}

/// How many job messages the jobs stream holds.
async fn waiting(app: &TestApp) -> u64 {
    let mut stream = app.js.get_stream(app.topology.jobs_stream()).await.unwrap();
    stream.info().await.unwrap().state.messages
}
