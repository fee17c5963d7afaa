//! Foundation benchmarks: event append throughput (single and batched), end-to-end ingest of
//! worker events from NATS into PostgreSQL with projections on, read-endpoint latency under
//! concurrent load, and an MLflow artifact of `PRL_BENCH_ARTIFACT_MB` (1,024) uploaded through
//! the API into its `file://` store and downloaded back. Run with `cargo bench -p
//! prl-integration-tests --bench foundation`.

use futures::StreamExt;
use prl_api::store::{Expected, NewEvent, StreamAppend};
use prl_bus::encoding::Encoded;
use prl_integration_tests::{FakeWorker, TOKEN, TestApp, publish_until, quick_spec};
use prl_schema::events::{Event, Metadata};
use prl_schema::jobs::WorkerEvent;
use prl_schema::spec::StageKind;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// About 1 KB of metric values once serialised.
fn values(step: u64) -> BTreeMap<String, f64> {
    (0..18)
        .map(|i| {
            (
                format!("bench/metric_{i:02}_component"),
                step as f64 / (i + 1) as f64,
            )
        })
        .collect()
}

#[tokio::main]
async fn main() {
    prl_api::telemetry::init_logging();
    // The fake worker does not heartbeat, so its lease must outlast the run.
    let app = TestApp::spawn_with(|s| {
        s.database.max_connections = 24;
        s.jobs.lease_seconds = 3600;
    })
    .await;
    println!("# prl foundation benchmark (2 cores unless stated otherwise)");
    if std::env::var("PRL_BENCH_ONLY_INGEST").is_err() {
        append_batched(&app, 2_000, 1).await;
        append_batched(&app, 100, 500).await;
    }
    ingest(&app, 100_000).await;
    if std::env::var("PRL_BENCH_ONLY_INGEST").is_err() {
        read_latency(&app, 16, 300).await;
        let megabytes = std::env::var("PRL_BENCH_ARTIFACT_MB")
            .map(|v| v.parse().expect("PRL_BENCH_ARTIFACT_MB is a number"))
            .unwrap_or(1024);
        artifact_round_trip(&app, megabytes).await;
    }
}

/// An MLflow client's `log_artifact` of a large file and its download, through the API.
async fn artifact_round_trip(app: &TestApp, megabytes: u64) {
    let created: serde_json::Value = app
        .http
        .post(app.url("/mlflow/api/2.0/mlflow/runs/create"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"experiment_id": "0"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = created["run"]["info"]["run_id"].as_str().unwrap();
    let url = app.url(&format!(
        "/mlflow/api/2.0/mlflow-artifacts/artifacts/0/{run}/artifacts/model.safetensors"
    ));
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let body: Vec<u8> = (0..megabytes << 17)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    let bytes = body.len() as u64;
    let started = Instant::now();
    let sent = app
        .http
        .put(&url)
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_success(), "{}", sent.text().await.unwrap());
    let up = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let response = app.http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert!(response.status().is_success());
    let mut chunks = response.bytes_stream();
    let mut received = 0u64;
    while let Some(chunk) = chunks.next().await {
        received += chunk.unwrap().len() as u64;
    }
    assert_eq!(received, bytes);
    let down = started.elapsed().as_secs_f64();
    let gb = bytes as f64 / 1e9;
    println!(
        "MLflow artifact of {megabytes} MB through the API: upload {up:.2} s ({:.2} GB/s), download {down:.2} s ({:.2} GB/s)",
        gb / up,
        gb / down
    );
}

fn metrics_event(step: u64) -> NewEvent {
    NewEvent::new(
        Event::MetricsReported {
            attempt: 1,
            step,
            values: values(step),
            time: None,
        },
        Metadata::default(),
    )
}

async fn append_batched(app: &TestApp, batches: u64, size: u64) {
    let run = Uuid::now_v7();
    let started = Instant::now();
    for b in 0..batches {
        let mut log = prl_api::event_log::begin(&app.pool).await.unwrap();
        let events = (0..size).map(|i| metrics_event(b * size + i + 1)).collect();
        let append = StreamAppend {
            stream_id: run,
            expected: Expected::Exact((b * size) as i64),
            events,
        };
        log.append_many(vec![append])
            .await
            .unwrap()
            .pop()
            .unwrap()
            .unwrap();
        log.commit().await.unwrap();
    }
    let n = batches * size;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "append, {size} events per transaction: {n} events in {secs:.2} s = {:.0} events/s",
        n as f64 / secs
    );
}

async fn ingest(app: &TestApp, n: u64) {
    app.submit(&quick_spec("ingest bench")).await;
    let (worker, _) = FakeWorker::take(app, StageKind::Sft, "bench").await;
    let before = app.count("SELECT count(*) FROM run_metrics").await;
    let size = serde_json::to_vec(&worker.message(WorkerEvent::Metrics {
        step: 1,
        values: values(1),
    }))
    .unwrap()
    .len();

    let subject = app
        .topology
        .lane_subject(prl_bus::Lane::Data, worker.job.run_id, "metrics");
    let messages: Vec<(String, Encoded)> = (1..=n)
        .map(|step| {
            let body = WorkerEvent::Metrics {
                step,
                values: values(step),
            };
            (
                subject.clone(),
                Encoded::new(serde_json::to_vec(&worker.message(body)).unwrap()),
            )
        })
        .collect();
    let ingested = publish_until(
        app,
        messages,
        512,
        "SELECT count(*) FROM run_metrics",
        before + n as i64,
        Duration::from_secs(600),
    )
    .await;
    let secs = ingested.total.as_secs_f64();
    let published = ingested.publishing.as_secs_f64();
    println!(
        "ingest, NATS -> PostgreSQL with projections: {n} worker events of {size} bytes in {secs:.2} s = {:.0} events/s \
         (publishing alone took {published:.2} s on the same cores)",
        n as f64 / secs
    );
}

async fn read_latency(app: &TestApp, clients: usize, per_client: usize) {
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(app.submit(&quick_spec(&format!("latency {i}"))).await);
    }
    let endpoints = [
        (
            "GET /api/v1/experiments?limit=50",
            "/api/v1/experiments?limit=50".to_owned(),
        ),
        (
            "GET /api/v1/experiments/{id}",
            format!("/api/v1/experiments/{}", ids[100]),
        ),
        (
            "GET /api/v1/events?after=0&limit=100",
            "/api/v1/events?after=0&limit=100".to_owned(),
        ),
    ];
    for (name, path) in endpoints {
        let url = app.url(&path);
        let started = Instant::now();
        let tasks = (0..clients).map(|_| {
            let http = app.http.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let t = Instant::now();
                    let response = http.get(&url).send().await.unwrap();
                    assert!(response.status().is_success());
                    response.bytes().await.unwrap();
                    latencies.push(t.elapsed());
                }
                latencies
            })
        });
        let mut all: Vec<Duration> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .flat_map(|r| r.unwrap())
            .collect();
        let secs = started.elapsed().as_secs_f64();
        all.sort();
        let pct =
            |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
        println!(
            "{name}: {clients} concurrent clients, {} requests, p50 {:.2} ms, p99 {:.2} ms, {:.0} requests/s",
            all.len(),
            pct(0.50),
            pct(0.99),
            all.len() as f64 / secs
        );
    }
}
