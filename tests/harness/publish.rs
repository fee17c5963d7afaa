//! The benchmarks' way to push worker messages through the real ingest path and time it.

use crate::TestApp;
use async_nats::jetstream;
use futures::{Stream, StreamExt};
use prl_bus::encoding::Encoded;
use std::time::{Duration, Instant};

/// How long ingesting `messages` (subject, payload) took, end to end and publishing alone.
pub struct Ingested {
    pub total: Duration,
    pub publishing: Duration,
}

/// Publishes `messages` with `in_flight` unacknowledged at most, and returns once `count_sql`
/// reaches `target` (it panics after `timeout`).
pub async fn publish_until(
    app: &TestApp,
    messages: Vec<(String, Encoded)>,
    in_flight: usize,
    count_sql: &str,
    target: i64,
    timeout: Duration,
) -> Ingested {
    let started = Instant::now();
    let js = app.js.clone();
    let publisher = tokio::spawn(async move {
        publish_acked(js, futures::stream::iter(messages), in_flight).await;
        started.elapsed()
    });
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let done = app.count(count_sql).await;
        if done >= target {
            break;
        }
        assert!(started.elapsed() < timeout, "ingest stalled at {done}");
    }
    Ingested {
        total: started.elapsed(),
        publishing: publisher.await.unwrap(),
    }
}

/// Publishes each (subject, payload) of `messages` as it comes, its encoding named in its
/// headers as a worker's reporter does, at most `in_flight` of them unacknowledged, and returns
/// once JetStream has acknowledged them all.
pub async fn publish_acked(
    js: jetstream::Context,
    messages: impl Stream<Item = (String, Encoded)>,
    in_flight: usize,
) {
    messages
        .map(|(subject, encoded)| {
            let js = js.clone();
            let mut headers = async_nats::HeaderMap::new();
            encoded.label(&mut headers);
            async move {
                js.publish_with_headers(subject, headers, encoded.payload.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(in_flight)
        .for_each(|_| async {})
        .await;
}
