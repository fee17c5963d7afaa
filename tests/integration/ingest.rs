use prl_bus::encoding::{self, Encoded};
use prl_integration_tests::{FakeWorker, TestApp, quick_spec};
use prl_schema::jobs::{LeaseDecision, WorkerEvent};
use prl_schema::spec::StageKind;
use std::collections::BTreeMap;
use std::time::Duration;

fn metrics(step: u64) -> WorkerEvent {
    WorkerEvent::Metrics {
        step,
        values: BTreeMap::from([("loss".to_owned(), 1.0 / step as f64)]),
    }
}

#[tokio::test]
async fn a_redelivered_worker_message_is_written_once() {
    let app = TestApp::spawn().await;
    app.submit(&quick_spec("duplicates")).await;
    let (worker, decision) = FakeWorker::take(&app, StageKind::Sft, "fake").await;
    assert!(
        matches!(decision, LeaseDecision::Granted { .. }),
        "{decision:?}"
    );

    let message = worker.message(metrics(1));
    let payload = serde_json::to_vec(&message).unwrap();
    // Twice past NATS's own duplicate check (other message ids), once caught by it.
    worker
        .publish_raw(&app, "metrics", payload.clone(), "first")
        .await;
    worker
        .publish_raw(&app, "metrics", payload.clone(), "second")
        .await;
    worker.publish_raw(&app, "metrics", payload, "second").await;
    let after = worker.message(metrics(2));
    worker
        .publish_raw(
            &app,
            "metrics",
            serde_json::to_vec(&after).unwrap(),
            "third",
        )
        .await;

    app.wait_for_count(
        "SELECT count(*) FROM run_metrics WHERE step = 2",
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'MetricsReported'")
            .await,
        2
    );
    assert_eq!(app.count("SELECT count(*) FROM run_metrics").await, 2);
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM events WHERE stream_type = 'run' ORDER BY version")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(versions, [1, 2], "a duplicate left a gap in the run stream");
}

/// A message that reuses the event id of another job's message is no redelivery: it is parked
/// with a reason naming both jobs, not dropped, and its job's next message is written.
#[tokio::test]
async fn a_message_reusing_another_jobs_event_id_is_parked_not_dropped() {
    let app = TestApp::spawn().await;
    app.submit(&quick_spec("first")).await;
    app.submit(&quick_spec("second")).await;
    let (first, _) = FakeWorker::take(&app, StageKind::Sft, "first").await;
    let (second, _) = FakeWorker::take(&app, StageKind::Sft, "second").await;

    let original = first.message(metrics(1));
    first
        .publish_raw(&app, "metrics", serde_json::to_vec(&original).unwrap(), "a")
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM run_metrics",
        1,
        Duration::from_secs(10),
    )
    .await;
    let reused = prl_schema::jobs::WorkerMessage {
        event_id: original.event_id,
        ..second.message(metrics(1))
    };
    second
        .publish_raw(&app, "metrics", serde_json::to_vec(&reused).unwrap(), "b")
        .await;
    let after = second.message(metrics(2));
    second
        .publish_raw(&app, "metrics", serde_json::to_vec(&after).unwrap(), "c")
        .await;

    app.wait_for_count(
        "SELECT count(*) FROM dead_letters",
        1,
        Duration::from_secs(20),
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM run_metrics",
        2,
        Duration::from_secs(10),
    )
    .await;
    let recorded: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT run_id, step FROM run_metrics ORDER BY step")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        recorded,
        [(first.job.run_id.0, 1), (second.job.run_id.0, 2)]
    );
    let reason: String = sqlx::query_scalar(
        "SELECT payload->>'reason' FROM events WHERE event_type = 'WorkerMessageParked'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    for named in [original.event_id.0, first.job.job_id.0, second.job.job_id.0] {
        assert!(reason.contains(&named.to_string()), "{reason}");
    }
}

#[tokio::test]
async fn an_undecodable_message_is_parked_and_recorded_without_blocking_the_rest() {
    let app = TestApp::spawn().await;
    app.submit(&quick_spec("poison")).await;
    let (worker, _) = FakeWorker::take(&app, StageKind::Sft, "fake").await;

    worker
        .publish_raw(&app, "metrics", b"{not json".to_vec(), "poison")
        .await;
    let good = worker.message(metrics(7));
    worker
        .publish_raw(&app, "metrics", serde_json::to_vec(&good).unwrap(), "good")
        .await;

    app.wait_for_count(
        "SELECT count(*) FROM run_metrics WHERE step = 7",
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'WorkerMessageParked'")
            .await,
        1
    );
    let mut dead = app
        .js
        .get_stream(app.topology.dead_letter_stream())
        .await
        .unwrap();
    assert_eq!(dead.info().await.unwrap().state.messages, 1);
    let sequence: i64 = sqlx::query_scalar("SELECT dead_letter_sequence FROM dead_letters")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let parked = dead.get_raw_message(sequence as u64).await.unwrap();
    assert_eq!(&parked.payload[..], b"{not json");
    // Nothing is left unacknowledged on the events stream.
    let mut events = app
        .js
        .get_stream(app.topology.lane_stream(prl_bus::Lane::Data))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while events.info().await.unwrap().state.messages > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "messages stay on the events stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_workers_cannot_both_own_an_attempt() {
    let app = TestApp::spawn().await;
    app.submit(&quick_spec("contested")).await;
    let (first, granted) = FakeWorker::take(&app, StageKind::Sft, "first").await;
    assert!(matches!(granted, LeaseDecision::Granted { .. }));

    // A second worker replays the same job message's claim.
    let mut second = prl_trainer::reporter::Reporter {
        worker_id: "second".into(),
        ..first.reporter.clone()
    };
    second.attempt = first.job.attempt;
    let mut lease = prl_trainer::lease::Lease::listen(&app.nats, &app.topology, second)
        .await
        .unwrap();
    let refused = lease
        .claim(first.job.expected_version, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        matches!(refused, LeaseDecision::Revoked { .. }),
        "{refused:?}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'JobClaimed'")
            .await,
        1
    );
    let owner: String = sqlx::query_scalar("SELECT worker_id FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(owner, "first");
}

#[tokio::test]
async fn a_message_the_database_refuses_is_parked_alone_and_its_batch_is_written() {
    let app = TestApp::spawn().await;
    app.submit(&quick_spec("refused")).await;
    let (worker, _) = FakeWorker::take(&app, StageKind::Sft, "fake").await;

    // Decodable, but PostgreSQL cannot store a NUL in jsonb. Published in one flush with its
    // neighbours, so that they share the ingester's batch.
    let poison = WorkerEvent::Metrics {
        step: 11,
        values: BTreeMap::from([("loss\u{0}".to_owned(), 1.0)]),
    };
    let bodies = (1..=20).map(|step| {
        if step == 11 {
            poison.clone()
        } else {
            metrics(step)
        }
    });
    let mut acks = Vec::new();
    for body in bodies {
        let message = worker.message(body);
        let subject = app.topology.worker_subject(message.run_id, &message.body);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", message.event_id.to_string().as_str());
        let payload = serde_json::to_vec(&message).unwrap();
        acks.push(
            app.js
                .publish_with_headers(subject, headers, payload.into())
                .await
                .unwrap(),
        );
    }
    for ack in acks {
        ack.await.unwrap();
    }

    app.wait_for_count(
        "SELECT count(*) FROM dead_letters",
        1,
        Duration::from_secs(20),
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM run_metrics",
        19,
        Duration::from_secs(10),
    )
    .await;
    let steps: Vec<i64> = sqlx::query_scalar("SELECT step FROM run_metrics ORDER BY step")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let healthy: Vec<i64> = (1..=20).filter(|&s| s != 11).collect();
    assert_eq!(steps, healthy);
    let reason: String = sqlx::query_scalar(
        "SELECT payload->>'reason' FROM events WHERE event_type = 'WorkerMessageParked'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(reason.contains("refused"), "{reason}");
}

#[tokio::test]
async fn a_dead_letter_is_redriven_through_the_ingester_and_parked_again_if_still_bad() {
    let app = TestApp::spawn().await;
    app.submit(&quick_spec("redrive")).await;
    let (worker, _) = FakeWorker::take(&app, StageKind::Sft, "fake").await;
    worker
        .publish_raw(&app, "metrics", b"{still not json".to_vec(), "poison")
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM dead_letters",
        1,
        Duration::from_secs(10),
    )
    .await;
    let letters: serde_json::Value = app.get("/api/v1/dead-letters").await.json().await.unwrap();
    let id = letters[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(letters[0]["redrives"], 0);

    let redrive = |id: String| {
        app.http
            .post(app.url(&format!("/api/v1/dead-letters/{id}/redrive")))
            .bearer_auth(prl_integration_tests::TOKEN)
            .send()
    };
    let response = redrive(id.clone()).await.unwrap();
    assert_eq!(response.status(), 202);
    let redriven: serde_json::Value = response.json().await.unwrap();
    assert_eq!(redriven["redrives"], 1);
    // Back through the ingester: still undecodable, so parked again with its own record.
    app.wait_for_count(
        "SELECT count(*) FROM dead_letters",
        2,
        Duration::from_secs(10),
    )
    .await;
    let payloads: Vec<i64> = sqlx::query_scalar("SELECT bytes FROM dead_letters")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(payloads, [15, 15]);
    let unknown = redrive(uuid::Uuid::new_v4().to_string()).await.unwrap();
    assert_eq!(unknown.status(), 404);
}

/// Metrics with enough values that the message is compressed on its way.
fn wide_metrics(step: u64, extra: Option<&str>) -> WorkerEvent {
    let mut values: BTreeMap<String, f64> = (0..400)
        .map(|i| (format!("metric_{i:04}"), i as f64 / 7.0))
        .collect();
    if let Some(name) = extra {
        values.insert(name.to_owned(), 1.0);
    }
    WorkerEvent::Metrics { step, values }
}

async fn publish_encoded(app: &TestApp, worker: &FakeWorker, payload: Vec<u8>, encoding: &str) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string().as_str());
    headers.insert(encoding::HEADER, encoding);
    let subject = app
        .topology
        .lane_subject(prl_bus::Lane::Data, worker.job.run_id, "metrics");
    (app.js
        .publish_with_headers(subject, headers, payload.into()))
    .await
    .unwrap()
    .await
    .unwrap();
}

#[tokio::test]
async fn a_compressed_message_is_written_and_parked_and_redriven_as_it_came() {
    let app = TestApp::spawn().await;
    app.submit(&quick_spec("compressed")).await;
    let (worker, _) = FakeWorker::take(&app, StageKind::Sft, "fake").await;

    // Through the worker's own reporter, which compresses what is large.
    let good = worker.message(wide_metrics(1, None));
    assert_eq!(
        Encoded::new(serde_json::to_vec(&good).unwrap()).encoding,
        Some(encoding::ZSTD)
    );
    worker.reporter.send(wide_metrics(1, None)).await.unwrap();
    // Decodable once expanded, but PostgreSQL cannot store a NUL in jsonb.
    let refused = worker.message(wide_metrics(2, Some("loss\u{0}")));
    let refused = Encoded::new(serde_json::to_vec(&refused).unwrap());
    publish_encoded(&app, &worker, refused.payload.clone(), encoding::ZSTD).await;
    // Hostile: an encoding nobody named, and a few kilobytes that expand past any batch.
    publish_encoded(&app, &worker, b"{}".to_vec(), "br").await;
    let bomb = Encoded::new(vec![b' '; encoding::MAX_DECODED + 1]);
    assert!(bomb.payload.len() < 64 << 10);
    publish_encoded(&app, &worker, bomb.payload, encoding::ZSTD).await;

    app.wait_for_count(
        "SELECT count(*) FROM dead_letters",
        3,
        Duration::from_secs(20),
    )
    .await;
    let values = app
        .count(
            "SELECT count(*) FROM events WHERE event_type = 'MetricsReported'
               AND (SELECT count(*) FROM jsonb_object_keys(payload->'values')) = 400",
        )
        .await;
    assert_eq!(values, 1, "the compressed metrics were not written whole");
    let reasons: Vec<String> = sqlx::query_scalar("SELECT reason FROM dead_letters")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for expected in ["refused", "unknown Content-Encoding \"br\"", "expands past"] {
        let found = reasons.iter().filter(|r| r.contains(expected)).count();
        assert_eq!(found, 1, "{expected}: {reasons:?}");
    }

    // The refused one is parked as it came, compressed and labelled, and redriven so.
    let dead = app
        .js
        .get_stream(app.topology.dead_letter_stream())
        .await
        .unwrap();
    let parked_as_it_came = |message: &async_nats::jetstream::message::StreamMessage| {
        message.payload[..] == refused.payload[..]
            && message.headers.get(encoding::HEADER).map(|v| v.as_str()) == Some(encoding::ZSTD)
    };
    let first: i64 = sqlx::query_scalar(
        "SELECT dead_letter_sequence FROM dead_letters WHERE reason LIKE '%refused%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(parked_as_it_came(
        &dead.get_raw_message(first as u64).await.unwrap()
    ));
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM dead_letters WHERE reason LIKE '%refused%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let response = app
        .http
        .post(app.url(&format!("/api/v1/dead-letters/{id}/redrive")))
        .bearer_auth(prl_integration_tests::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    app.wait_for_count(
        "SELECT count(*) FROM dead_letters WHERE reason LIKE '%refused%'",
        2,
        Duration::from_secs(20),
    )
    .await;
    let again: i64 = sqlx::query_scalar(
        "SELECT max(dead_letter_sequence) FROM dead_letters WHERE reason LIKE '%refused%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(again > first);
    assert!(parked_as_it_came(
        &dead.get_raw_message(again as u64).await.unwrap()
    ));
    assert_eq!(app.count("SELECT count(*) FROM run_metrics").await, 1);
}
