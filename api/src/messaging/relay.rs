//! The outbox relay: the events table is the outbox. It tails committed `JobQueued` events and
//! publishes each as a job message with `Nats-Msg-Id` = event id, so NATS drops a re-publish,
//! and it moves its checkpoint only after every PubAck of a batch has arrived.
//!
//! The leader's lock, its reads and its checkpoint writes share one database session: when that
//! session is lost (a database restart), so is the lock, and the next query fails: a deposed relay
//! publishes at most the batch it was sending (NATS drops its repeats by message id). The
//! checkpoint only moves forward.

use crate::telemetry::Metrics;
use anyhow::{Context, Result};
use async_nats::HeaderMap;
use async_nats::jetstream;
use prl_bus::Topology;
use prl_schema::events::Event;
use prl_schema::ids::{ExperimentId, JobId, RunId};
use prl_schema::jobs::JobMessage;
use prl_schema::spec::ExperimentSpec;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::pause;

pub(super) const READER: &str = "outbox";
const BATCH: i64 = 500;

#[derive(Clone)]
pub struct Relay {
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub topology: Topology,
    pub wake: Arc<Notify>,
    pub metrics: Metrics,
}

impl Relay {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.lead(&shutdown).await {
                tracing::warn!("outbox relay: {e:#}; retrying");
            }
            if pause(&shutdown, Duration::from_secs(1)).await {
                return;
            }
        }
    }

    /// Takes the relay lock, then publishes until shut down.
    async fn lead(&self, shutdown: &CancellationToken) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(crate::advisory_locks::RELAY)
                .fetch_one(&mut *conn)
                .await?;
            if got {
                break;
            }
            if pause(shutdown, Duration::from_secs(1)).await {
                return Ok(());
            }
        }
        let result = self.publish_loop(&mut conn, shutdown).await;
        if result.is_err() {
            // The session may be broken: closing it is the one sure way to release the lock.
            conn.detach();
            return result;
        }
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(crate::advisory_locks::RELAY)
            .execute(&mut *conn)
            .await?;
        result
    }

    async fn publish_loop(
        &self,
        conn: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        loop {
            let published = self.publish_batch(conn).await?;
            if published < BATCH as usize {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    stop = pause(shutdown, Duration::from_millis(250)) => if stop { return Ok(()) },
                }
            }
        }
    }

    /// Publishes the next batch on the leader's session; returns how many messages it sent.
    async fn publish_batch(&self, conn: &mut PgConnection) -> Result<usize> {
        let checkpoint: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(position), 0) FROM reader_checkpoints WHERE reader = $1",
        )
        .bind(READER)
        .fetch_one(&mut *conn)
        .await?;
        // Built from constants only.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS}
             FROM events e JOIN experiments x ON x.id = (e.payload->>'experiment_id')::uuid
             WHERE e.event_type = 'JobQueued' AND e.position > $1
               AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY e.position LIMIT $2"
        )))
        .bind(checkpoint)
        .bind(BATCH)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(0);
        };
        let last_position: i64 = last.get(0);

        let stored = publish_jobs(&self.js, &self.topology, &rows, |event_id| event_id).await?;
        sqlx::query!(
            "INSERT INTO reader_checkpoints (reader, position) VALUES ($1, $2)
             ON CONFLICT (reader) DO UPDATE
             SET position = greatest(reader_checkpoints.position, $2)",
            READER,
            last_position,
        )
        .execute(&mut *conn)
        .await?;
        self.metrics.published.inc_by(stored as u64);
        Ok(rows.len())
    }
}

/// The columns `job_message` reads: `e` is a `JobQueued` event, `x` its experiment.
pub(super) const JOB_COLUMNS: &str =
    "e.position, e.event_id, e.stream_id, e.version, e.payload, x.spec, x.datasets";

/// Publishes a job message for each row of `JOB_COLUMNS`, with the message id `msg_id` makes of
/// the `JobQueued` event's id, and waits for every PubAck. Returns how many the stream stored
/// (the others it dropped as duplicates of a message id it had seen within its window).
pub(super) async fn publish_jobs(
    js: &jetstream::Context,
    topology: &Topology,
    rows: &[PgRow],
    msg_id: impl Fn(uuid::Uuid) -> uuid::Uuid,
) -> Result<usize> {
    let mut acks = Vec::with_capacity(rows.len());
    for row in rows {
        let (message, kind) = job_message(row)?;
        let subject = topology.job_subject(kind, message.stage.route());
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id(row.get(1)).to_string().as_str());
        let payload = serde_json::to_vec(&message)?;
        let ack = js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .context("publishing a job")?;
        acks.push(ack);
    }
    let mut stored = 0;
    for ack in acks {
        stored += usize::from(!ack.await.context("waiting for a PubAck")?.duplicate);
    }
    Ok(stored)
}

fn job_message(row: &PgRow) -> Result<(JobMessage, prl_schema::spec::StageKind)> {
    let event = Event::from_parts("JobQueued", row.get(4)).context("decoding JobQueued")?;
    let Event::JobQueued {
        experiment_id,
        stage,
        kind,
        run_id,
        attempt,
        input_checkpoint,
        resume_from,
        ..
    } = event
    else {
        unreachable!("the query selects JobQueued only")
    };
    let spec: ExperimentSpec = serde_json::from_value(row.get(5)).context("decoding a spec")?;
    let message = JobMessage {
        job_id: JobId(row.get(2)),
        run_id: RunId(run_id.0),
        experiment_id: ExperimentId(experiment_id.0),
        attempt,
        expected_version: row.get(3),
        model: spec.model.clone(),
        stage: spec.stages.as_slice()[stage as usize].clone(),
        seed: spec.seed,
        input_checkpoint,
        resume_from,
        datasets: serde_json::from_value(row.get(6)).context("decoding resolved datasets")?,
    };
    Ok((message, kind))
}
