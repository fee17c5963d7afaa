//! The job reconciler: a job that stays queued while its message is no longer in the jobs stream
//! is published again. JetStream can lose a message that it had acknowledged (nats-server syncs
//! its files every two minutes by default; a stream can be purged or recreated), and nothing
//! else would ever notice: the job would stay `queued` for good.
//!
//! Only jobs queued for longer than `requeue_after`, whose `JobQueued` the relay has already
//! published, are looked at, and only when the stream holds no message for that `JobQueued`. A
//! message republished while a daemon was claiming the original is harmless: claims are fenced
//! by the job's version, so the second daemon is refused before it trains.

use super::relay::{JOB_COLUMNS, READER, publish_jobs};
use crate::domain::status::JobStatus;
use crate::store::derived_id;
use crate::telemetry::Metrics;
use anyhow::{Context, Result};
use async_nats::jetstream;
use async_nats::jetstream::stream::RawMessageErrorKind;
use prl_bus::Topology;
use sqlx::{PgPool, Row};
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Beyond this many messages in the jobs stream a scan is skipped (and logged): the queue is then
/// busy, not lost.
const MAX_SCAN: u64 = 10_000;

#[derive(Clone)]
pub struct Reconciler {
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub topology: Topology,
    pub requeue_after: Duration,
    pub metrics: Metrics,
}

impl Reconciler {
    pub async fn run(self, shutdown: CancellationToken) {
        let period =
            (self.requeue_after / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
        while !super::pause(&shutdown, period).await {
            match self.reconcile().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!("republished {n} queued job(s) whose message was lost"),
                Err(e) => tracing::warn!("job reconciler: {e:#}"),
            }
        }
    }

    /// One round; returns how many jobs it published again (NATS dropping none as a duplicate).
    async fn reconcile(&self) -> Result<usize> {
        let waiting = self.queued_too_long().await?;
        if waiting.is_empty() {
            return Ok(0);
        }
        let Some(in_stream) = self.job_messages_in_stream().await? else {
            return Ok(0);
        };
        // Published before the scan began (so a missing message is gone, not yet to come), and
        // still queued after it (a job claimed meanwhile took its message with it).
        let published_before: HashSet<uuid::Uuid> = waiting.iter().map(|row| row.get(1)).collect();
        let lost: Vec<_> = self
            .queued_too_long()
            .await?
            .into_iter()
            .filter(|row| {
                let event_id: uuid::Uuid = row.get(1);
                published_before.contains(&event_id)
                    && !in_stream.contains(&event_id)
                    && !in_stream.contains(&republished_id(event_id))
            })
            .collect();
        let stored = publish_jobs(&self.js, &self.topology, &lost, republished_id).await?;
        self.metrics.jobs_republished.inc_by(stored as u64);
        Ok(stored)
    }

    /// Queued jobs (their latest `JobQueued`, in `JOB_COLUMNS`) that have waited longer than
    /// `requeue_after` since the relay published them.
    async fn queued_too_long(&self) -> Result<Vec<sqlx::postgres::PgRow>> {
        // Built from constants only.
        Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS}
             FROM jobs j
             JOIN LATERAL (SELECT * FROM events
                           WHERE stream_id = j.id AND event_type = 'JobQueued'
                           ORDER BY version DESC LIMIT 1) e ON true
             JOIN experiments x ON x.id = j.experiment_id
             WHERE j.status = $3 AND j.updated_at < now() - make_interval(secs => $1)
               AND e.position <= (SELECT coalesce(max(position), 0)
                                  FROM reader_checkpoints WHERE reader = $2)
             ORDER BY e.position LIMIT 1000"
        )))
        .bind(self.requeue_after.as_secs_f64())
        .bind(READER)
        .bind(JobStatus::Queued)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The message ids of every job message in the stream, or None when there are too many to
    /// scan.
    async fn job_messages_in_stream(&self) -> Result<Option<HashSet<uuid::Uuid>>> {
        let mut stream = self
            .js
            .get_stream(self.topology.jobs_stream())
            .await
            .context("opening the jobs stream")?;
        let state = stream.info().await?.state.clone();
        if state.messages > MAX_SCAN {
            tracing::warn!(
                "job reconciler: {} job messages wait; not scanning for lost ones",
                state.messages
            );
            return Ok(None);
        }
        let mut ids = HashSet::new();
        let mut next = state.first_sequence;
        loop {
            let message = match stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(self.topology.jobs_subject_filter())
                .send()
                .await
            {
                Ok(message) => message,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(e).context("reading the jobs stream"),
            };
            if let Some(id) = message
                .headers
                .get("Nats-Msg-Id")
                .and_then(|id| id.as_str().parse().ok())
            {
                ids.insert(id);
            }
            next = message.sequence + 1;
        }
        Ok(Some(ids))
    }
}

/// The message id of a republished job: its own, so that two rounds (or two API replicas) that
/// both find the job lost publish it once within NATS's duplicate window.
fn republished_id(event_id: uuid::Uuid) -> uuid::Uuid {
    derived_id(&[b"prl republished job ", event_id.as_bytes()])
}
