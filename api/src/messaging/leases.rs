//! The lease monitor: a job whose worker stopped heartbeating gets `JobLeaseExpired`, after which
//! the process manager queues the next attempt or fails the job.
//!
//! Silence proves a worker dead only if what it sent has been read. So the monitor judges a lease
//! only up to a time before which every worker message published, on both lanes, is in the log: it
//! notes each lane's last stream sequence at a moment, and once each ingester's acknowledgement
//! floor has passed it, leases that ran out before that moment may expire. A lease that ran out
//! while NATS could not be reached gets a whole lease from the moment it can be again. So no
//! outage of PostgreSQL or NATS, no API restart and no ingest backlog revokes a worker that kept
//! working, nor one whose `Finished` still waits behind its trajectories.

use crate::event_log;
use crate::store::{Expected, NewEvent, StreamAppend};
use crate::telemetry::Metrics;
use anyhow::Result;
use async_nats::jetstream;
use chrono::{DateTime, Utc};
use prl_bus::{PullConsumer, Topology};
use prl_schema::events::{Event, Metadata};
use sqlx::{PgPool, Row};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct LeaseMonitor {
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub topology: Topology,
    pub period: Duration,
    pub lease: chrono::Duration,
    pub metrics: Metrics,
    pub wake_relay: std::sync::Arc<tokio::sync::Notify>,
}

/// A worker lane's stream and its ingester's consumer.
struct Lane {
    stream: jetstream::stream::Stream,
    consumer: PullConsumer,
}

/// Each lane's last stream sequence at a moment.
struct Mark {
    at: DateTime<Utc>,
    sequences: [u64; 2],
}

impl LeaseMonitor {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut lanes: Option<[Lane; 2]> = None;
        let mut mark: Option<Mark> = None;
        // Since when NATS has been reachable without a break.
        let mut reachable_since: Option<DateTime<Utc>> = None;
        // Every worker message published before this time is in the log.
        let mut read_until: Option<DateTime<Utc>> = None;
        while !super::pause(&shutdown, self.period).await {
            match self.observe(&mut lanes, &mut mark).await {
                Ok(passed) => read_until = passed.or(read_until),
                Err(e) => {
                    tracing::debug!("lease monitor: the worker lanes are out of reach: {e:#}");
                    (lanes, mark, reachable_since) = (None, None, None);
                    continue;
                }
            }
            let since = *reachable_since.get_or_insert_with(Utc::now);
            let Some(until) = read_until else { continue };
            match self.expire(until, since + self.lease).await {
                Ok(0) => {}
                Ok(n) => {
                    self.metrics.leases_expired.inc_by(n);
                    self.wake_relay.notify_one();
                }
                Err(e) => tracing::warn!("lease monitor: {e:#}"),
            }
        }
    }

    /// Notes a mark, or sees the last one passed by both ingesters and returns its time.
    async fn observe(
        &self,
        lanes: &mut Option<[Lane; 2]>,
        mark: &mut Option<Mark>,
    ) -> Result<Option<DateTime<Utc>>> {
        let lanes = match lanes {
            Some(lanes) => lanes,
            None => lanes.insert([
                self.lane(prl_bus::Lane::Data).await?,
                self.lane(prl_bus::Lane::Control).await?,
            ]),
        };
        // The time is taken first: whatever was published before it lies within the sequences.
        let now = Utc::now();
        let (mut acked, mut last) = ([0; 2], [0; 2]);
        for (i, lane) in lanes.iter_mut().enumerate() {
            acked[i] = lane.consumer.info().await?.ack_floor.stream_sequence;
            last[i] = lane.stream.info().await?.state.last_sequence;
        }
        match mark {
            Some(m) if acked[0] >= m.sequences[0] && acked[1] >= m.sequences[1] => {
                let passed = m.at;
                *mark = None;
                Ok(Some(passed))
            }
            Some(_) => Ok(None),
            None => {
                *mark = Some(Mark {
                    at: now,
                    sequences: last,
                });
                Ok(None)
            }
        }
    }

    async fn lane(&self, lane: prl_bus::Lane) -> Result<Lane> {
        Ok(Lane {
            stream: self.topology.open_lane_stream(&self.js, lane).await?,
            consumer: self.topology.lane_consumer(&self.js, lane).await?,
        })
    }

    /// Expires every lease that ran out before `until`, counting none as run out before
    /// `not_before`; returns how many.
    async fn expire(
        &self,
        until: DateTime<Utc>,
        not_before: DateTime<Utc>,
    ) -> Result<u64, sqlx::Error> {
        // A literal status, so that the partial index on running jobs' leases serves it.
        const RUN_OUT: &str =
            "FROM jobs WHERE status = 'running' AND greatest(lease_until, $2) < $1";
        // Most passes find none: they look without the log's lock, which would wait behind
        // every ingest transaction in progress. What they find is looked up again under it.
        let any: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 {RUN_OUT})"
        )))
        .bind(until)
        .bind(not_before)
        .fetch_one(&self.pool)
        .await?;
        if !any {
            return Ok(0);
        }
        let mut log = event_log::begin(&self.pool).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, attempt, worker_id, version {RUN_OUT}"
        )))
        .bind(until)
        .bind(not_before)
        .fetch_all(log.conn())
        .await?;
        if rows.is_empty() {
            log.commit().await?;
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
