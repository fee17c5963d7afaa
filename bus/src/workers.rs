//! Daemons' presence. Each daemon keeps its [`WorkerInfo`] under a key of its own in the
//! JetStream key-value bucket `<NS>_WORKERS` and writes it again every [`PRESENCE_PERIOD`],
//! busy or idle; the API lists the bucket. An entry not written for [`LOST_AFTER`] is a daemon
//! that is gone (it died, or cannot reach NATS); the bucket forgets it after a day.

use crate::Topology;
use anyhow::{Context, Result};
use async_nats::jetstream::{self, kv, stream};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use prl_schema::jobs::WorkerInfo;
use std::time::Duration;

pub const PRESENCE_PERIOD: Duration = Duration::from_secs(5);
pub const LOST_AFTER: Duration = Duration::from_secs(20);
const FORGOTTEN_AFTER: Duration = Duration::from_secs(24 * 3600);

impl Topology {
    /// The bucket of daemons' presence, made if missing, on `replicas` servers (a bucket made
    /// with another count is changed, as the streams are).
    pub async fn workers(&self, js: &jetstream::Context) -> Result<kv::Store> {
        let bucket = self.stream_name("WORKERS");
        // The bucket's stream as NATS lays out a key-value bucket (ADR-8), made directly:
        // `create_key_value` first asks for the account's limits, in a shape nats-server 2.9
        // (Debian's) does not answer.
        let stream = js
            .get_or_create_stream(stream::Config {
                name: format!("KV_{bucket}"),
                description: Some("prl trainer daemons' presence".into()),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_age: FORGOTTEN_AFTER,
                num_replicas: self.replicas,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating the bucket {bucket}"))?;
        let current = &stream.cached_info().config;
        if current.num_replicas != self.replicas {
            js.update_stream(stream::Config {
                num_replicas: self.replicas,
                ..current.clone()
            })
            .await
            .with_context(|| format!("setting the replicas of the bucket {bucket}"))?;
        }
        js.get_key_value(&bucket)
            .await
            .with_context(|| format!("opening the bucket {bucket}"))
    }
}

/// Whether a daemon is gone: not heard from for `LOST_AFTER`.
pub fn is_lost(worker: &WorkerInfo, now: DateTime<Utc>) -> bool {
    (now - worker.seen_at).as_seconds_f64() > LOST_AFTER.as_secs_f64()
}

/// A worker id as a key: ids may hold characters keys may not, so keys are the id in hex.
pub fn key(worker_id: &str) -> String {
    hex::encode(worker_id)
}

/// Every daemon the bucket remembers, by worker id.
pub async fn list(store: &kv::Store) -> Result<Vec<WorkerInfo>> {
    let keys: Vec<String> = store
        .keys()
        .await
        .context("listing workers")?
        .try_collect()
        .await
        .context("listing workers")?;
    let mut workers = Vec::with_capacity(keys.len());
    for key in keys {
        let entry = store.entry(&key).await.context("reading a worker")?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            continue; // deleted meanwhile
        };
        match serde_json::from_slice::<WorkerInfo>(&entry.value) {
            // When NATS stored it, not the daemon's own clock, which may be off.
            Ok(info) => {
                workers.push(WorkerInfo {
                    seen_at: DateTime::from_timestamp_nanos(
                        entry.created.unix_timestamp_nanos() as i64
                    ),
                    ..info
                })
            }
            Err(e) => tracing::warn!("skipping a worker entry that does not decode: {e}"),
        }
    }
    workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    Ok(workers)
}
