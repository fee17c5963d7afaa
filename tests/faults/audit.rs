//! What a fault scenario is judged by: every data message a worker published is in the log, every
//! step of the run holds its trajectories and metrics exactly once, the streams are drained, and
//! the experiment finished on the attempts it should have needed.

use futures::StreamExt;
use prl_bus::{Lane, encoding};
use prl_integration_tests::TestApp;
use prl_schema::jobs::WorkerMessage;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A plain NATS subscription beside the data lane's stream: it sees each message a worker
/// publishes, so the audit can look for every one of them in the log.
pub struct Tap {
    ids: Arc<Mutex<HashSet<Uuid>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    pub async fn start(app: &TestApp) -> Tap {
        let subject = app.topology.lane_subject_filter(Lane::Data);
        let mut messages = app.nats.subscribe(subject).await.unwrap();
        app.nats.flush().await.unwrap();
        let ids = Arc::new(Mutex::new(HashSet::new()));
        let seen = ids.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                if let Ok(json) = encoding::decode(message.headers.as_ref(), &message.payload)
                    && let Ok(message) = serde_json::from_slice::<WorkerMessage>(&json)
                {
                    seen.lock().unwrap().insert(message.event_id.0);
                }
            }
        });
        Tap { ids, task }
    }

    /// How many distinct messages it has seen so far.
    pub fn seen(&self) -> usize {
        self.ids.lock().unwrap().len()
    }

    fn ids(&self) -> Vec<Uuid> {
        self.ids.lock().unwrap().iter().copied().collect()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
pub struct Audit {
    status: String,
    published: usize,
    lost: usize,
    steps: u64,
    /// Steps whose trajectory count in the read model is not `per_step`, with their count.
    wrong_trajectory_steps: Vec<(i64, i64)>,
    /// Steps whose metric rows are not exactly one, with their count.
    wrong_metric_steps: Vec<(i64, i64)>,
    trajectories: i64,
    attempts: i32,
    parked: i64,
    left_in_streams: u64,
}

impl Audit {
    /// Waits for the experiment to end and the streams to drain, then takes the figures of its
    /// first stage's run.
    pub async fn of(
        app: &TestApp,
        tap: &Tap,
        experiment: Uuid,
        steps: u64,
        per_step: u64,
    ) -> Audit {
        Audit::of_stage(app, tap, experiment, 0, steps, per_step).await
    }

    /// The same, of the run of stage `stage`.
    pub async fn of_stage(
        app: &TestApp,
        tap: &Tap,
        experiment: Uuid,
        stage: i32,
        steps: u64,
        per_step: u64,
    ) -> Audit {
        let status = wait_until_ended(app, experiment).await;
        let left_in_streams = wait_until_drained(app).await;
        let run: Uuid =
            sqlx::query_scalar("SELECT id FROM runs WHERE experiment_id = $1 AND stage_idx = $2")
                .bind(experiment)
                .bind(stage)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let published = tap.ids();
        let in_log: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE event_id = ANY($1)")
                .bind(&published)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let per_step_counts = |sql: &'static str| {
            let pool = app.pool.clone();
            async move {
                sqlx::query_as::<_, (i64, i64)>(sql)
                    .bind(run)
                    .fetch_all(&pool)
                    .await
                    .unwrap()
            }
        };
        let trajectories = per_step_counts(
            "SELECT step, count(*) FROM trajectories WHERE run_id = $1 GROUP BY step",
        )
        .await;
        let metrics = per_step_counts(
            "SELECT step, count(*) FROM run_metrics WHERE run_id = $1 GROUP BY step",
        )
        .await;
        let wrong = |counts: &[(i64, i64)], expected: i64| {
            (1..=steps as i64)
                .map(|step| {
                    let n = counts.iter().find(|c| c.0 == step).map_or(0, |c| c.1);
                    (step, n)
                })
                .chain(
                    counts
                        .iter()
                        .copied()
                        .filter(|c| c.0 < 1 || c.0 > steps as i64),
                )
                .filter(|&(_, n)| n != expected)
                .collect::<Vec<_>>()
        };
        Audit {
            status,
            published: published.len(),
            lost: published.len() - in_log as usize,
            steps,
            wrong_trajectory_steps: wrong(&trajectories, per_step as i64),
            wrong_metric_steps: wrong(&metrics, 1),
            trajectories: trajectories.iter().map(|c| c.1).sum(),
            attempts: sqlx::query_scalar("SELECT attempt FROM jobs WHERE run_id = $1")
                .bind(run)
                .fetch_one(&app.pool)
                .await
                .unwrap(),
            parked: app.count("SELECT count(*) FROM dead_letters").await,
            left_in_streams,
        }
    }

    pub fn print(&self, scenario: &str) {
        println!(
            "audit [{scenario}]: experiment {}; data messages published {}, lost {}; {} trajectories \
             over {} steps, steps with a wrong count {:?}; metric steps counted other than once {:?}; \
             attempts used {}; parked {}; left in the streams {}",
            self.status,
            self.published,
            self.lost,
            self.trajectories,
            self.steps,
            self.wrong_trajectory_steps,
            self.wrong_metric_steps,
            self.attempts,
            self.parked,
            self.left_in_streams,
        );
    }

    /// Fails unless the worker published after `before` messages: the fault came mid-job.
    pub fn assert_published_after(&self, before: usize) {
        assert!(
            self.published > before,
            "the job had published all {before} messages before the fault ended: {self:?}"
        );
    }

    pub fn assert_clean(&self, attempts: i32) {
        assert_eq!(self.status, "completed", "{self:?}");
        assert!(self.published > 0, "the tap saw no message: {self:?}");
        assert_eq!(self.lost, 0, "{self:?}");
        assert!(self.wrong_trajectory_steps.is_empty(), "{self:?}");
        assert!(self.wrong_metric_steps.is_empty(), "{self:?}");
        assert_eq!(self.parked, 0, "{self:?}");
        assert_eq!(self.left_in_streams, 0, "{self:?}");
        assert_eq!(self.attempts, attempts, "{self:?}");
    }
}

async fn wait_until_ended(app: &TestApp, experiment: Uuid) -> String {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let response = app.get(&format!("/api/v1/experiments/{experiment}")).await;
        if response.status().is_success() {
            let detail: serde_json::Value = response.json().await.unwrap();
            let status = detail["status"].as_str().unwrap_or_default().to_owned();
            if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
                return status;
            }
        }
        assert!(Instant::now() < deadline, "the experiment did not end");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Messages still in the two worker lanes' streams once they had a few seconds to drain.
async fn wait_until_drained(app: &TestApp) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut left = 0;
        for lane in [Lane::Data, Lane::Control] {
            let mut stream = app
                .js
                .get_stream(app.topology.lane_stream(lane))
                .await
                .unwrap();
            left += stream.info().await.unwrap().state.messages;
        }
        if left == 0 || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
