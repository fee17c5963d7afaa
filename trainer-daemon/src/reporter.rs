//! Publishes this attempt's events to the worker-events streams. Each message carries a fresh
//! event id as its `Nats-Msg-Id`, so a publish retried after a lost PubAck is stored once. A
//! checkpoint is uploaded to the artifact store before it is reported, so whatever the log
//! records can be fetched by any host.

use crate::checkpoint::Checkpoints;
use anyhow::{Context, Result};
use async_nats::HeaderMap;
use async_nats::jetstream;
use chrono::Utc;
use prl_bus::Topology;
use prl_bus::encoding::Encoded;
use prl_schema::ids::{EventId, JobId, RunId};
use prl_schema::jobs::{CheckpointRef, WorkerEvent, WorkerMessage};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a claim is retried; the daemon then waits longer for its verdict.
const CLAIM_PATIENCE: Duration = Duration::from_secs(10);
/// How long any other message but a heartbeat is retried before the attempt gives up.
const DATA_PATIENCE: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct Reporter {
    pub js: jetstream::Context,
    pub topology: Topology,
    pub job_id: JobId,
    pub run_id: RunId,
    pub attempt: u32,
    pub worker_id: String,
    /// Cancelled when the daemon shuts down: a publish then stops waiting out an outage.
    pub shutdown: CancellationToken,
    pub checkpoints: Checkpoints,
    /// Checkpoints already uploaded, by local URI: the final one is reported twice (saved, then
    /// as the attempt's result).
    pub uploaded: Arc<Mutex<HashMap<String, CheckpointRef>>>,
}

impl Reporter {
    pub async fn send(&self, body: WorkerEvent) -> Result<()> {
        let body = match body {
            WorkerEvent::Checkpoint(local) => WorkerEvent::Checkpoint(self.stored(&local).await?),
            WorkerEvent::Finished {
                checkpoint: Some(local),
            } => WorkerEvent::Finished {
                checkpoint: Some(self.stored(&local).await?),
            },
            other => other,
        };
        let message = WorkerMessage {
            event_id: EventId::new(),
            job_id: self.job_id,
            run_id: self.run_id,
            attempt: self.attempt,
            worker_id: self.worker_id.clone(),
            sent_at: Utc::now(),
            body,
        };
        let subject = self.topology.worker_subject(self.run_id, &message.body);
        // Trajectory messages travel compressed: JetStream holds, and the API reads, a fraction.
        let encoded = Encoded::new(serde_json::to_vec(&message)?);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", message.event_id.to_string().as_str());
        encoded.label(&mut headers);
        let payload = encoded.payload;
        // A lost heartbeat is replaced by the next; anything else is part of the run and waits
        // out a NATS restart (the API judges no lease on what it could not hear).
        let patience = match &message.body {
            WorkerEvent::Heartbeat => Duration::ZERO,
            WorkerEvent::Claim { .. } => CLAIM_PATIENCE,
            _ => DATA_PATIENCE,
        };
        let started = Instant::now();
        let mut wait = Duration::from_millis(200);
        loop {
            let sent = async {
                self.js
                    .publish_with_headers(subject.clone(), headers.clone(), payload.clone().into())
                    .await?
                    .await
            };
            match sent.await {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() < patience && !self.shutdown.is_cancelled() => {
                    tracing::warn!("publishing to {subject}: {e}; retrying in {wait:?}");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e).with_context(|| format!("publishing to {subject}")),
            }
        }
    }

    /// The checkpoint as the store holds it, uploaded the first time it is reported.
    async fn stored(&self, local: &CheckpointRef) -> Result<CheckpointRef> {
        let known = self
            .uploaded
            .lock()
            .expect("not poisoned")
            .get(&local.uri)
            .cloned();
        if let Some(stored) = known.filter(|s| s.sha256 == local.sha256) {
            return Ok(stored);
        }
        let stored = self
            .checkpoints
            .upload(local)
            .await
            .with_context(|| format!("uploading the checkpoint of step {}", local.step))?;
        self.uploaded
            .lock()
            .expect("not poisoned")
            .insert(local.uri.clone(), stored.clone());
        Ok(stored)
    }
}
