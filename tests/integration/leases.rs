use prl_integration_tests::{FakeWorker, TestApp, quick_spec};
use prl_schema::jobs::WorkerEvent;
use prl_schema::spec::StageKind;
use std::time::Duration;

#[tokio::test]
async fn a_killed_daemons_lease_expires_and_another_daemon_finishes_the_job() {
    let app = TestApp::spawn().await;
    let slow = app.start_daemon("doomed", Duration::from_millis(400));
    let id = app.submit(&quick_spec("survives a crash")).await;
    app.wait_for_count(
        "SELECT count(*) FROM run_metrics m JOIN events e USING (position) WHERE e.payload->'values' ? 'dry_run/progress'",
        1,
        Duration::from_secs(20),
    )
    .await;
    slow.kill();

    let _rescuer = app.start_daemon("rescuer", Duration::from_millis(10));
    let detail = app
        .wait_for_status(id, "completed", Duration::from_secs(60))
        .await;
    let first_job = &detail["jobs"][0];
    assert_eq!(first_job["attempt"], 2, "{detail:#}");
    assert_eq!(first_job["worker_id"], "rescuer");
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'JobLeaseExpired'")
            .await,
        1
    );
    let attempts: Vec<i64> = sqlx::query_scalar(
        "SELECT (payload->>'attempt')::bigint FROM events WHERE event_type = 'JobQueued' AND stream_id = $1 ORDER BY position",
    )
    .bind(first_job["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(attempts, [1, 2]);
}

#[tokio::test]
async fn writes_from_an_expired_attempt_are_fenced_off() {
    let app = TestApp::spawn().await;
    app.submit(&quick_spec("fenced")).await;
    let (stale, _) = FakeWorker::take(&app, StageKind::Sft, "stale").await;
    // No heartbeats: the lease (2 s) runs out and attempt 2 is queued.
    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE attempt = 2 AND status = 'queued'",
        1,
        Duration::from_secs(10),
    )
    .await;

    let late = stale.message(WorkerEvent::Metrics {
        step: 1,
        values: [("loss".to_owned(), 0.5)].into(),
    });
    stale
        .publish_raw(&app, "metrics", serde_json::to_vec(&late).unwrap(), "late")
        .await;
    let finished = stale.message(WorkerEvent::Finished { checkpoint: None });
    stale
        .publish_raw(
            &app,
            "finished",
            serde_json::to_vec(&finished).unwrap(),
            "late-finish",
        )
        .await;
    let (fresh, _) = FakeWorker::take(&app, StageKind::Sft, "fresh").await;
    assert_eq!(fresh.job.attempt, 2);
    let current = fresh.message(WorkerEvent::Metrics {
        step: 1,
        values: [("loss".to_owned(), 0.4)].into(),
    });
    fresh
        .publish_raw(
            &app,
            "metrics",
            serde_json::to_vec(&current).unwrap(),
            "current",
        )
        .await;

    app.wait_for_count(
        "SELECT count(*) FROM run_metrics",
        1,
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let values: Vec<f64> = sqlx::query_scalar("SELECT (e.payload->'values'->>'loss')::float8 FROM run_metrics m JOIN events e USING (position)")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(values, [0.4]);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'JobFinished'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_job_out_of_attempts_fails_the_experiment_with_a_clear_reason() {
    let app = TestApp::spawn_with(|s| s.jobs.max_attempts = 1).await;
    let id = app.submit(&quick_spec("one chance")).await;
    let (_worker, _) = FakeWorker::take(&app, StageKind::Sft, "vanishing").await;
    let detail = app
        .wait_for_status(id, "failed", Duration::from_secs(10))
        .await;
    let reason = detail["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("lease expired on attempt 1 of 1"),
        "{reason}"
    );
    assert_eq!(detail["jobs"][0]["status"], "failed");
}

#[tokio::test]
async fn a_step_redone_by_a_later_attempt_counts_once_in_its_metric_series() {
    let app = TestApp::spawn().await;
    app.submit(&quick_spec("redone")).await;
    let report = |worker: FakeWorker, steps: [u64; 2], loss: f64| {
        let app = &app;
        async move {
            for step in steps {
                let message = worker.message(WorkerEvent::Metrics {
                    step,
                    values: [("loss".to_owned(), loss)].into(),
                });
                let id = format!("{}-{step}", worker.job.attempt);
                let payload = serde_json::to_vec(&message).unwrap();
                worker.publish_raw(app, "metrics", payload, &id).await;
            }
            app.wait_for_count(
                &format!("SELECT count(*) FROM run_metrics WHERE step = {}", steps[1]),
                1,
                Duration::from_secs(10),
            )
            .await;
        }
    };
    let (first, _) = FakeWorker::take(&app, StageKind::Sft, "first").await;
    report(first, [1, 2], 1.0).await;
    // The first attempt dies after step 2; the second resumes from step 1's checkpoint.
    let (second, _) = FakeWorker::take(&app, StageKind::Sft, "second").await;
    assert_eq!(second.job.attempt, 2);
    report(second, [2, 3], 0.5).await;
    let series: Vec<(i64, i32, f64)> = sqlx::query_as(
        "SELECT m.step, m.attempt, (e.payload->'values'->>'loss')::float8
         FROM run_metrics m JOIN events e USING (position) ORDER BY m.step",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(series, [(1, 1, 1.0), (2, 2, 0.5), (3, 2, 0.5)]);
}
