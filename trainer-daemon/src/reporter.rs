//! Publishes this attempt's events to the worker-events stream. Each message carries a fresh
//! event id as its `Nats-Msg-Id`, so a publish retried after a lost PubAck is stored once.

use anyhow::{Context, Result};
use async_nats::HeaderMap;
use async_nats::jetstream;
use chrono::Utc;
use prl_bus::Topology;
use prl_schema::ids::{EventId, JobId, RunId};
use prl_schema::jobs::{WorkerEvent, WorkerMessage};

#[derive(Clone)]
pub struct Reporter {
    pub js: jetstream::Context,
    pub topology: Topology,
    pub job_id: JobId,
    pub run_id: RunId,
    pub attempt: u32,
    pub worker_id: String,
}

impl Reporter {
    pub async fn send(&self, body: WorkerEvent) -> Result<()> {
        let message = WorkerMessage {
            event_id: EventId::new(),
            job_id: self.job_id,
            run_id: self.run_id,
            attempt: self.attempt,
            worker_id: self.worker_id.clone(),
            sent_at: Utc::now(),
            body,
        };
        let subject = self
            .topology
            .worker_event_subject(self.run_id, message.body.subject_suffix());
        let payload = serde_json::to_vec(&message)?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", message.event_id.to_string().as_str());
        for attempt in 0..3 {
            let sent = async {
                self.js
                    .publish_with_headers(subject.clone(), headers.clone(), payload.clone().into())
                    .await?
                    .await
            };
            match sent.await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 2 => tracing::warn!("publishing to {subject}: {e}; retrying"),
                Err(e) => return Err(e).with_context(|| format!("publishing to {subject}")),
            }
        }
        unreachable!("the loop returns")
    }
}
