//! Holding a lease: claim the attempt, heartbeat while working, and stop when the API says the
//! attempt was cancelled or is no longer ours.

use crate::reporter::Reporter;
use anyhow::{Context, Result};
use futures::StreamExt;
use prl_bus::Topology;
use prl_schema::jobs::{LeaseDecision, LeaseVerdict, WorkerEvent};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why the work of an attempt must stop early.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    /// The experiment was cancelled: save a checkpoint, then stop.
    Cancelled,
    /// The attempt is someone else's now: stop without writing.
    Revoked(String),
}

pub struct Lease {
    verdicts: async_nats::Subscriber,
    reporter: Reporter,
}

impl Lease {
    /// Listens for verdicts on the job's lease subject; do this before claiming.
    pub async fn listen(
        nats: &async_nats::Client,
        topology: &Topology,
        reporter: Reporter,
    ) -> Result<Self> {
        let verdicts = nats
            .subscribe(topology.lease_subject(reporter.job_id))
            .await
            .context("subscribing to lease verdicts")?;
        Ok(Lease { verdicts, reporter })
    }

    /// Claims the attempt and waits for the API's answer.
    pub async fn claim(
        &mut self,
        expected_version: i64,
        timeout: Duration,
    ) -> Result<LeaseDecision> {
        self.reporter
            .send(WorkerEvent::Claim { expected_version })
            .await?;
        tokio::time::timeout(timeout, self.next_verdict())
            .await
            .context("no answer to the claim in time")?
            .context("the verdict subscription ended")
    }

    async fn next_verdict(&mut self) -> Option<LeaseDecision> {
        while let Some(message) = self.verdicts.next().await {
            let Ok(verdict) = serde_json::from_slice::<LeaseVerdict>(&message.payload) else {
                continue;
            };
            if verdict.attempt == self.reporter.attempt
                && verdict.worker_id == self.reporter.worker_id
            {
                return Some(verdict.decision);
            }
        }
        None
    }

    /// Heartbeats every `period` until `done` is cancelled. Cancels `stop` and returns why as soon
    /// as the API refuses the lease; cancels `cancelled` too when the experiment was cancelled.
    pub async fn keep(
        mut self,
        period: Duration,
        done: CancellationToken,
        stop: CancellationToken,
        cancelled: CancellationToken,
    ) -> Option<Stop> {
        let mut ticker = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = done.cancelled() => return None,
                _ = ticker.tick() => {
                    if let Err(e) = self.reporter.send(WorkerEvent::Heartbeat).await {
                        tracing::warn!("heartbeat: {e:#}");
                    }
                }
                verdict = self.next_verdict() => {
                    let why = match verdict {
                        Some(LeaseDecision::Granted { .. }) => continue,
                        Some(LeaseDecision::Cancelled) => Stop::Cancelled,
                        Some(LeaseDecision::Revoked { reason }) => Stop::Revoked(reason),
                        None => Stop::Revoked("the verdict subscription ended".into()),
                    };
                    if why == Stop::Cancelled {
                        cancelled.cancel();
                    }
                    stop.cancel();
                    return Some(why);
                }
            }
        }
    }
}
