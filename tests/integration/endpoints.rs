use prl_integration_tests::TestApp;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn health_reports_both_connections_and_every_background_task() {
    let app = TestApp::spawn().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    assert_eq!(body["nats"], "ok");
    for task in [
        "live-feed",
        "relay",
        "ingester-data",
        "ingester-control",
        "lease-monitor",
        "job-reconciler",
    ] {
        assert_eq!(body["tasks"][task]["running"], true, "{body}");
        assert_eq!(body["tasks"][task]["restarts"], 0, "{body}");
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_that_counts_requests() {
    let app = TestApp::spawn().await;
    app.get("/healthz").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains("prl_http_requests_total{method=\"GET\",status=\"200\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_the_endpoints_and_the_docs_page_is_served() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/experiments",
        "/api/v1/experiments/{id}",
        "/api/v1/experiments/{id}/cancel",
        "/api/v1/events",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is missing");
    }
    // The spec's schemas come from the spec types, bounds and defaults included, and every
    // reference in the document resolves.
    let schemas = &doc["components"]["schemas"];
    let rl = schemas["StageSpec"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["properties"]["kind"]["const"] == "rl")
        .expect("an rl stage schema");
    let group_size = &rl["properties"]["group_size"];
    assert_eq!(
        (
            &group_size["minimum"],
            &group_size["maximum"],
            &group_size["default"]
        ),
        (&json!(2), &json!(1024), &json!(8))
    );
    assert_eq!(schemas["Stages"]["minItems"], 1);
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = &reference[..reference.find('"').unwrap()];
        let name = target.strip_prefix("#/components/schemas/").unwrap();
        assert!(schemas[name].is_object(), "{target} does not resolve");
    }
    let page = app.get("/api/docs/").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("swagger"));
    let index = app.get("/").await.text().await.unwrap();
    assert!(index.contains("<title>prl</title>"));
    // Links into the web UI reload into the app; unknown API paths stay JSON errors.
    let deep = app.get("/compare?experiments=x").await;
    assert_eq!(deep.status(), 200);
    assert!(deep.text().await.unwrap().contains("<title>prl</title>"));
    let stale_asset = app.get("/assets/index-old.js").await;
    assert_eq!(
        stale_asset.status(),
        404,
        "a missing asset is not the app's page"
    );
    let missing = app.get("/api/v1/no-such-endpoint").await;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    // A method an endpoint does not answer: 405, with the ones it does.
    for (method, path, allow) in [
        ("DELETE", "/api/v1/experiments", "GET, POST"),
        (
            "TRACE",
            "/api/v1/experiments/0190c3d2-0000-7000-8000-000000000000",
            "GET",
        ),
        ("PUT", "/api/v1/dead-letters/x/redrive", "POST"),
        ("TRACE", "/healthz", "GET"),
        ("POST", "/compare", "GET, HEAD"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let refused = app
            .http
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 405, "{path}");
        assert_eq!(refused.headers()["allow"], allow, "{path}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed");
    }
}

#[tokio::test]
async fn the_live_stream_sends_a_notice_per_committed_event_and_resumes() {
    let app = TestApp::spawn().await;
    // The stream starts at the log's end, so only events committed after connecting arrive.
    let before = app
        .submit(&prl_integration_tests::quick_spec("before"))
        .await;
    app.wait_for_count("SELECT count(*) FROM events", 2, Duration::from_secs(10))
        .await;
    let connect = tokio::spawn(app.http.get(app.url("/api/v1/events/stream")).send());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = app
        .submit(&prl_integration_tests::quick_spec("streamed"))
        .await;
    let mut response = connect.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut text = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !text.contains("event: JobQueued") {
        assert!(
            std::time::Instant::now() < deadline,
            "no notice came: {text}"
        );
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("a notice in time")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(!text.contains(&before.to_string()), "{text}");
    let notice = text
        .split("\n\n")
        .find(|m| m.contains("event: ExperimentSubmitted"))
        .expect("the submission's notice");
    assert!(
        notice.contains(&format!("\"stream_id\":\"{id}\"")),
        "{notice}"
    );
    let position: i64 = notice
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .parse()
        .unwrap();

    // A reconnecting client names the last id it saw and continues right after it.
    let mut resumed = app
        .http
        .get(app.url("/api/v1/events/stream"))
        .header("Last-Event-ID", (position - 1).to_string())
        .send()
        .await
        .unwrap();
    let mut resumed_text = String::new();
    while !resumed_text.contains("event: ") {
        let chunk = resumed.chunk().await.unwrap().unwrap();
        resumed_text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    // It opens by saying where it starts, then the first notice is the next position.
    let expected = format!("id: {}\n\nid: {position}\nevent: ", position - 1);
    assert!(resumed_text.starts_with(&expected), "{resumed_text}");

    let bad = app.get("/api/v1/events/stream?after=soon").await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["parameter"], "after");
}

#[tokio::test]
async fn the_event_feed_pages_through_the_log_in_order() {
    let app = TestApp::spawn().await;
    for i in 0..3 {
        app.submit(&prl_integration_tests::quick_spec(&format!("feed {i}")))
            .await;
    }
    let pages = feed_pages(&app, 2, |pages| {
        pages.iter().map(Vec::len).sum::<usize>() >= 6
    })
    .await;
    assert!(
        pages.iter().all(|page| page.len() <= 2),
        "a page holds at most `limit` events"
    );
    let positions: Vec<i64> = pages
        .iter()
        .flatten()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions.len(), 6);
    assert!(positions.windows(2).all(|w| w[0] < w[1]));

    for (query, parameter) in [
        ("after=-1", "after"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
    ] {
        let response = app.get(&format!("/api/v1/events?{query}")).await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
    }
}

#[tokio::test]
async fn an_event_feed_page_stops_at_four_mebibytes_of_payload() {
    use prl_integration_tests::FakeWorker;
    use prl_integration_tests::seeds::{answered, trajectory};
    use prl_schema::jobs::WorkerEvent;
    use prl_schema::trajectory::{PromptRecord, TrajectoryBatch};

    let app = TestApp::spawn().await;
    app.submit(&serde_json::json!({
        "name": "large trajectories", "model": "tiny",
        "stages": [{"kind": "rl", "name": "rl", "dataset": "builtin:easy", "reward": "s1",
                    "learning_rate": 1e-5, "steps": 8}]
    }))
    .await;
    let (worker, _) = FakeWorker::take(&app, prl_schema::spec::StageKind::Rl, "big").await;
    for step in 1..=8 {
        let batch = TrajectoryBatch {
            step,
            benchmark: None,
            prompts: vec![PromptRecord {
                id: "p0".into(),
                group: 0,
                text: "What is half of 10?".into(),
                tokens: Some(12),
                truth: "5".into(),
            }],
            // About 0.7 MB each: eight of them are past one page's budget.
            trajectories: vec![trajectory(
                0,
                answered(&"x".repeat(700_000), 5),
                true,
                vec![],
            )],
        };
        worker
            .reporter
            .send(WorkerEvent::Trajectories(batch))
            .await
            .unwrap();
    }
    app.wait_for_count(
        "SELECT count(*) FROM trajectories",
        8,
        Duration::from_secs(60),
    )
    .await;

    let trajectory_events = |pages: &[Vec<Value>]| {
        pages
            .iter()
            .flatten()
            .filter(|e| e["event_type"] == "TrajectoriesRecorded")
            .count()
    };
    let pages = feed_pages(&app, 1000, |pages| trajectory_events(pages) >= 8).await;
    for page in &pages {
        let sizes: Vec<usize> = page
            .iter()
            .map(|e| e["payload"].to_string().len())
            .collect();
        let before_last: usize = sizes[..sizes.len() - 1].iter().sum();
        assert!(
            before_last < 4 << 20,
            "a page went on past 4 MiB: {sizes:?}"
        );
    }
    let (trajectory_events, pages) = (trajectory_events(&pages), pages.len());
    assert_eq!(trajectory_events, 8, "every event is served once");
    assert!(pages >= 2, "5.6 MB of events came in {pages} page(s)");
}

#[tokio::test]
async fn live_streams_are_capped_and_each_open_one_gets_every_notice() {
    let app = TestApp::spawn_with(|s| s.http.max_live_streams = 3).await;
    let open = || app.http.get(app.url("/api/v1/events/stream")).send();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let response = open().await.unwrap();
        assert_eq!(response.status(), 200);
        streams.push(response);
    }
    let refused = open().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "unavailable", "{body}");

    // A closed stream frees its place, at the latest when a keep-alive (every 15 s) or the one
    // after finds the connection gone.
    streams.pop();
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let reopened = loop {
        let response = open().await.unwrap();
        if response.status() == 200 {
            break response;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    streams.push(reopened);

    // One broadcast serves them all: each sees the submission's notices.
    let id = app
        .submit(&prl_integration_tests::quick_spec("watched"))
        .await;
    for mut stream in streams {
        let mut text = String::new();
        while !text.contains("event: JobQueued") {
            let chunk = tokio::time::timeout(Duration::from_secs(20), stream.chunk())
                .await
                .expect("a notice in time")
                .unwrap()
                .expect("the stream stays open");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        assert!(text.contains(&format!("\"stream_id\":\"{id}\"")), "{text}");
    }
}

/// Pages of `GET /events` from the start, `limit` at a time, until `enough` says so. The feed
/// serves only settled positions (below every open transaction of the cluster, which other tests
/// share), so an empty page means "nothing settled yet", and reading goes on.
async fn feed_pages(
    app: &TestApp,
    limit: usize,
    enough: impl Fn(&[Vec<Value>]) -> bool,
) -> Vec<Vec<Value>> {
    let (mut after, mut pages) = (0, Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !enough(&pages) {
        assert!(
            std::time::Instant::now() < deadline,
            "the feed stopped short"
        );
        let page: Value = app
            .get(&format!("/api/v1/events?after={after}&limit={limit}"))
            .await
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        after = page["last_position"].as_i64().unwrap();
        pages.push(events);
    }
    pages
}
