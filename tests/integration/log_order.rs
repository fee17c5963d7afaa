//! Appends that let the log's lock go once their positions are taken (a run's metrics and
//! trajectories) commit out of position order; readers must still see the log in order.

use prl_api::event_log;
use prl_api::store::{Expected, NewEvent, StreamAppend, Visibility, read_after};
use prl_integration_tests::TestApp;
use prl_schema::events::{Event, Metadata, RecordedEvent};
use prl_schema::ids::RunId;
use prl_schema::tracking::TrackedStatus;
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

fn metrics(run: Uuid, expected: Expected, steps: std::ops::RangeInclusive<u64>) -> StreamAppend {
    let events = steps
        .map(|step| {
            NewEvent::new(
                Event::MetricsReported {
                    attempt: 1,
                    step,
                    values: BTreeMap::from([("loss".to_owned(), step as f64)]),
                    time: None,
                },
                Metadata::default(),
            )
        })
        .collect();
    StreamAppend {
        stream_id: run,
        expected,
        events,
    }
}

async fn append(log: &mut prl_api::store::LogTx, append: StreamAppend) -> Vec<RecordedEvent> {
    log.append_many(vec![append])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap()
}

/// The settled events of `runs` after `after`, as (stream, version), in log order.
async fn settled(app: &TestApp, after: i64, runs: &[Uuid]) -> Vec<(Uuid, i64)> {
    let mut conn = app.pool.acquire().await.unwrap();
    read_after(&mut conn, after, 1000, 1 << 20, Visibility::Settled)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| runs.contains(&e.stream_id))
        .map(|e| (e.stream_id, e.version))
        .collect()
}

#[tokio::test]
async fn appends_that_let_the_lock_go_are_read_in_position_order_and_waited_for() {
    let app = TestApp::spawn().await;
    let (a_run, b_run) = (Uuid::now_v7(), Uuid::now_v7());
    let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    // A takes its positions and lets the log's lock go, but does not commit yet.
    let mut a = event_log::begin(&app.pool).await.unwrap();
    let a_events = append(&mut a, metrics(a_run, Expected::NoStream, 1..=3)).await;
    // So B can begin, append after it and commit first.
    let mut b = tokio::time::timeout(Duration::from_secs(5), event_log::begin(&app.pool))
        .await
        .expect("A let the log's lock go once its positions were taken")
        .unwrap();
    let b_events = append(&mut b, metrics(b_run, Expected::NoStream, 1..=2)).await;
    b.commit().await.unwrap();
    assert!(a_events.last().unwrap().position < b_events[0].position);

    // A tailing reader sees neither A's events nor B's, which come after them.
    assert_eq!(settled(&app, head, &[a_run, b_run]).await, []);

    // C appends to A's stream: it waits for A instead of reading a stale head. Replay waits for
    // C, which holds the log's lock, and then for every append that let it go.
    let pool = app.pool.clone();
    let c = tokio::spawn(async move {
        let mut c = event_log::begin(&pool).await.unwrap();
        let events = append(&mut c, metrics(a_run, Expected::Exact(3), 4..=4)).await;
        c.commit().await.unwrap();
        events
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pool = app.pool.clone();
    let replay = tokio::spawn(async move { prl_api::projections::replay::replay(&pool).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!c.is_finished(), "C went ahead of A on A's stream");
    assert!(!replay.is_finished(), "replay went ahead of A");
    assert_eq!(settled(&app, head, &[a_run, b_run]).await, []);

    a.commit().await.unwrap();
    let c_events = c.await.unwrap();
    replay.await.unwrap().unwrap();
    assert_eq!(c_events[0].version, 4);
    assert!(b_events.last().unwrap().position < c_events[0].position);
    let in_log_order = [
        (a_run, 1),
        (a_run, 2),
        (a_run, 3),
        (b_run, 1),
        (b_run, 2),
        (a_run, 4),
    ];
    assert_eq!(settled(&app, head, &[a_run, b_run]).await, in_log_order);
    let projected: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT run_id, step FROM run_metrics ORDER BY position")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        projected, in_log_order,
        "replay rebuilt the metrics of every append"
    );
}

#[tokio::test]
async fn an_append_that_let_the_lock_go_takes_no_more_positions() {
    let app = TestApp::spawn().await;
    let run = Uuid::now_v7();
    let mut log = event_log::begin(&app.pool).await.unwrap();
    append(&mut log, metrics(run, Expected::NoStream, 1..=1)).await;
    let again = log
        .append_many(vec![metrics(run, Expected::Exact(1), 2..=2)])
        .await;
    assert!(
        again
            .unwrap_err()
            .to_string()
            .contains("let the log's lock go"),
        "a second append after the lock was let go"
    );
}

/// An experiment's queued job and its run, whose row job events and the run's data both write.
async fn queued_job(app: &TestApp) -> (Uuid, Uuid) {
    let experiment = app
        .submit(&serde_json::json!({
            "name": "one job", "model": "tiny",
            "stages": [{"kind": "rl", "name": "rl", "dataset": "builtin:easy", "reward": "s1",
                        "learning_rate": 1e-5, "steps": 4}]
        }))
        .await;
    sqlx::query_as("SELECT id, run_id FROM jobs WHERE experiment_id = $1")
        .bind(experiment)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// A tracked experiment (as MLflow's or a live run's) and its run.
async fn tracked_experiment(app: &TestApp) -> (Uuid, Uuid) {
    let (experiment, run) = (Uuid::now_v7(), RunId::new());
    let mut log = event_log::begin(&app.pool).await.unwrap();
    let tracked = Event::ExperimentTracked {
        name: "tracked".into(),
        tags: vec![],
        source: "client".into(),
        run_id: run,
        group: None,
        user: None,
        started_at: chrono::Utc::now(),
    };
    append(&mut log, one(experiment, tracked)).await;
    log.commit().await.unwrap();
    (experiment, run.0)
}

fn one(stream_id: Uuid, event: Event) -> StreamAppend {
    StreamAppend {
        stream_id,
        expected: Expected::Any,
        events: vec![NewEvent::new(event, Metadata::default())],
    }
}

fn cancelled(job: Uuid) -> StreamAppend {
    one(job, Event::JobCancelled { attempt: 1 })
}

/// `update`, appended while an append of `run`'s metrics that let the log's lock go is open,
/// must wait for it on the run's stream lock, holding no row, and then set the run's status.
async fn waits_for_the_runs_data(app: &TestApp, run: Uuid, update: StreamAppend, status: &str) {
    // A's metrics update the run's row; A lets the log's lock go and stays open.
    let mut a = event_log::begin(&app.pool).await.unwrap();
    append(&mut a, metrics(run, Expected::Any, 1..=2)).await;
    let pool = app.pool.clone();
    let b = tokio::spawn(async move {
        let mut b = event_log::begin(&pool).await.unwrap();
        append(&mut b, update).await;
        b.commit().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !b.is_finished(),
        "the run's row was written ahead of its data"
    );
    // Waiting on A's row lock instead, B could hold another run's row that A's projection
    // waits for (a deadlock). Other tests' databases share the server: only this one's count.
    let waiting: Vec<String> = sqlx::query_scalar(
        "SELECT locktype FROM pg_locks WHERE NOT granted AND pid IN
                 (SELECT pid FROM pg_stat_activity WHERE datname = current_database())",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        !waiting.is_empty() && waiting.iter().all(|t| t == "advisory"),
        "waiting on {waiting:?}"
    );

    a.commit().await.unwrap();
    b.await.unwrap();
    let (shown, last_step): (String, i64) =
        sqlx::query_as("SELECT status, last_step FROM runs WHERE id = $1")
            .bind(run)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((shown.as_str(), last_step), (status, 2));
}

#[tokio::test]
async fn a_jobs_event_waits_for_its_runs_data_before_it_writes_the_runs_row() {
    let app = TestApp::spawn().await;
    let (job, run) = queued_job(&app).await;
    waits_for_the_runs_data(&app, run, cancelled(job), "cancelled").await;
}

#[tokio::test]
async fn a_tracked_runs_status_waits_for_its_data_before_it_writes_the_runs_row() {
    let app = TestApp::spawn().await;
    let (experiment, run) = tracked_experiment(&app).await;
    let finished = Event::TrackedRunUpdated {
        name: None,
        status: Some(TrackedStatus::Finished),
        ended_at: None,
    };
    waits_for_the_runs_data(&app, run, one(experiment, finished), "finished").await;
}

#[tokio::test]
async fn a_transaction_that_appended_a_jobs_event_keeps_the_lock_for_its_data() {
    let app = TestApp::spawn().await;
    let (job, run) = queued_job(&app).await;
    let mut log = event_log::begin(&app.pool).await.unwrap();
    append(&mut log, cancelled(job)).await;
    append(&mut log, metrics(run, Expected::Any, 1..=1)).await;
    let next = tokio::time::timeout(Duration::from_millis(500), event_log::begin(&app.pool)).await;
    assert!(
        next.is_err(),
        "the log's lock was let go with the job's event uncommitted"
    );
    log.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), event_log::begin(&app.pool))
        .await
        .expect("the lock is let go at the commit")
        .unwrap();
}
