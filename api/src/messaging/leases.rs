//! The lease monitor: a job whose worker stopped heartbeating gets `JobLeaseExpired`, after which
//! the process manager queues the next attempt or fails the job.

use crate::store::{Expected, LogTx, NewEvent, StreamAppend};
use crate::telemetry::Metrics;
use prl_schema::events::{Event, Metadata};
use sqlx::{PgPool, Row};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct LeaseMonitor {
    pub pool: PgPool,
    pub period: Duration,
    pub metrics: Metrics,
    pub wake_relay: std::sync::Arc<tokio::sync::Notify>,
}

impl LeaseMonitor {
    pub async fn run(self, shutdown: CancellationToken) {
        while !super::pause(&shutdown, self.period).await {
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
