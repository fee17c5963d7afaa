use prl_integration_tests::{TestApp, quick_spec};
use std::time::Duration;

#[tokio::test]
async fn a_submitted_experiment_is_queued_claimed_reported_and_completed() {
    let app = TestApp::spawn().await;
    let id = app.submit(&quick_spec("end to end")).await;

    // The submission and the first stage's job are in the log, and the job is on the stream.
    assert_eq!(
        app.event_types().await,
        ["ExperimentSubmitted", "JobQueued"]
    );
    let mut consumer = app
        .topology
        .job_consumer_for(
            &app.js,
            prl_schema::spec::StageKind::Sft,
            prl_schema::spec::JobRoute::Any,
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while consumer.info().await.unwrap().num_pending == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never reached the stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let _daemon = app.start_daemon("daemon-a", Duration::from_millis(10));
    let detail = app
        .wait_for_status(id, "completed", Duration::from_secs(60))
        .await;

    let stages = detail["stages"].as_array().unwrap();
    assert!(
        stages.iter().all(|s| s["status"] == "completed"),
        "{detail:#}"
    );
    let runs = detail["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert!(
        runs.iter()
            .all(|r| r["worker_id"] == "daemon-a" && r["status"] == "completed")
    );
    // SFT stops at max_steps 6, RL after 4 steps, eval after 1.
    let steps: Vec<i64> = runs
        .iter()
        .map(|r| r["last_step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [6, 4, 1]);
    assert_eq!(
        app.count("SELECT count(*) FROM run_metrics m JOIN events e USING (position) WHERE e.payload->'values' ? 'dry_run/progress'")
            .await,
        11
    );

    // The RL stage started from the SFT stage's final checkpoint, as recorded.
    let sft_checkpoint = &runs[0]["checkpoint"];
    let rl_input: serde_json::Value =
        sqlx::query_scalar("SELECT input_checkpoint FROM jobs WHERE stage_idx = 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(&rl_input, sft_checkpoint);
    assert_eq!(sft_checkpoint["step"], 6);

    let types = app.event_types().await;
    for expected in [
        "JobClaimed",
        "JobLeaseExtended",
        "MetricsReported",
        "CheckpointSaved",
        "JobFinished",
        "ExperimentCompleted",
    ] {
        assert!(
            types.iter().any(|t| t == expected),
            "no {expected} in {types:?}"
        );
    }
    assert_eq!(types.iter().filter(|t| *t == "JobFinished").count(), 3);
}

#[tokio::test]
async fn a_retried_submission_with_the_same_idempotency_key_creates_one_experiment() {
    let app = TestApp::spawn().await;
    let key = uuid::Uuid::new_v4().to_string();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let response = app
            .http
            .post(app.url("/api/v1/experiments"))
            .bearer_auth(prl_integration_tests::TOKEN)
            .header("Idempotency-Key", &key)
            .json(&quick_spec("once"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids[0], ids[1]);
    assert_eq!(app.count("SELECT count(*) FROM experiments").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'ExperimentSubmitted'")
            .await,
        1
    );
}

#[tokio::test]
async fn an_idempotency_key_is_bound_to_its_body_and_cannot_name_another_event() {
    let app = TestApp::spawn().await;
    let submit = |key: String, name: &'static str| {
        let app = &app;
        async move {
            let response = app
                .http
                .post(app.url("/api/v1/experiments"))
                .bearer_auth(prl_integration_tests::TOKEN)
                .header("Idempotency-Key", key)
                .json(&quick_spec(name))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let key = uuid::Uuid::new_v4().to_string();
    let (status, _) = submit(key.clone(), "first").await;
    assert_eq!(status, 201);
    let (status, error) = submit(key, "another spec").await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"], "idempotency_key_reused");
    assert_eq!(error["parameter"], "Idempotency-Key");

    // A key equal to an event already in the log is just a new key.
    let event: uuid::Uuid = sqlx::query_scalar("SELECT event_id FROM events LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let (status, created) = submit(event.to_string(), "second").await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(app.count("SELECT count(*) FROM experiments").await, 2);
}
