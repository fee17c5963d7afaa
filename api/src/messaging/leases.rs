//! The lease monitor: a job whose worker stopped heartbeating gets `JobLeaseExpired`, after which
//! the process manager queues the next attempt or fails the job.
//!
//! Silence proves a worker dead only if its heartbeats could have been heard. So leases are judged
//! only once the control lane has been reachable for a whole lease with nothing waiting in it:
//! after an API start, a NATS outage, or while heartbeats wait out a database outage, no lease
//! expires, and a worker that kept working keeps its attempt.

use crate::store::{Expected, LogTx, NewEvent, StreamAppend};
use crate::telemetry::Metrics;
use anyhow::Result;
use async_nats::jetstream;
use prl_bus::{Lane, PullConsumer, Topology};
use prl_schema::events::{Event, Metadata};
use sqlx::{PgPool, Row};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub struct LeaseMonitor {
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub topology: Topology,
    pub period: Duration,
    pub lease: Duration,
    pub metrics: Metrics,
    pub wake_relay: std::sync::Arc<tokio::sync::Notify>,
}

impl LeaseMonitor {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut control: Option<PullConsumer> = None;
        // Since when the control lane has been reachable without a break.
        let mut heard_since: Option<Instant> = None;
        while !super::pause(&shutdown, self.period).await {
            match self.control_backlog(&mut control).await {
                Ok(0) => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!("lease monitor: the control lane is out of reach: {e:#}");
                    (control, heard_since) = (None, None);
                    continue;
                }
            }
            if heard_since.get_or_insert_with(Instant::now).elapsed() < self.lease {
                continue;
            }
            match self.expire().await {
                Ok(0) => {}
                Ok(n) => {
                    self.metrics.leases_expired.inc_by(n);
                    self.wake_relay.notify_one();
                }
                Err(e) => tracing::warn!("lease monitor: {e:#}"),
            }
        }
    }

    /// Claims and heartbeats published but not yet written to the log.
    async fn control_backlog(&self, control: &mut Option<PullConsumer>) -> Result<u64> {
        let consumer = match control {
            Some(consumer) => consumer,
            None => control.insert(
                self.topology
                    .ingest_consumer(&self.js, Lane::Control)
                    .await?,
            ),
        };
        let info = consumer.info().await?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// Expires every lease that has run out; returns how many.
    pub async fn expire(&self) -> Result<u64, sqlx::Error> {
        let mut log = LogTx::begin(&self.pool).await?;
        let rows = sqlx::query(
            "SELECT id, attempt, worker_id, version FROM jobs
             WHERE status = 'running' AND lease_until < now()",
        )
        .fetch_all(log.conn())
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let appends = rows
            .iter()
            .map(|r| {
                let attempt: i32 = r.get(1);
                let event = Event::JobLeaseExpired {
                    attempt: attempt as u32,
                    worker_id: r.get(2),
                };
                let metadata = Metadata {
                    actor: Some("lease-monitor".into()),
                    ..Default::default()
                };
                StreamAppend {
                    stream_id: r.get(0),
                    expected: Expected::Exact(r.get(3)),
                    events: vec![NewEvent::new(event, metadata)],
                }
            })
            .collect();
        for result in log.append_many(appends).await? {
            if let Err(e) = result {
                tracing::warn!("expiring a lease: {e}");
            }
        }
        log.commit().await?;
        for r in &rows {
            let id: uuid::Uuid = r.get(0);
            tracing::info!(job = %id, "lease expired");
        }
        Ok(rows.len() as u64)
    }
}
