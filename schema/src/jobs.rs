//! What travels between the API and the trainer daemons: job messages one way, worker events and
//! lease verdicts the other. The subjects they travel on belong to the crates that speak NATS.

use crate::ids::{EventId, ExperimentId, JobId, RunId};
use crate::spec::{ModelRef, StageKind, StageSpec};
use crate::trajectory::{EvaluationResult, TrajectoryBatch};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod decode;

/// A queued attempt of a job, as a daemon receives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobMessage {
    pub job_id: JobId,
    pub run_id: RunId,
    pub experiment_id: ExperimentId,
    pub attempt: u32,
    /// The job stream's version when this attempt was queued: a claim must expect exactly it.
    pub expected_version: i64,
    pub model: ModelRef,
    pub stage: StageSpec,
    /// The experiment's seed.
    #[serde(default = "crate::spec::default_seed")]
    pub seed: u64,
    /// The checkpoint to start from; the model itself when absent.
    pub input_checkpoint: Option<CheckpointRef>,
    /// The newest checkpoint an earlier attempt of this job recorded: a resumed attempt goes on
    /// from it, on whichever host takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<CheckpointRef>,
    /// The registered datasets the stage may name, as resolved when the experiment was accepted.
    #[serde(default)]
    pub datasets: std::collections::BTreeMap<String, crate::datasets::DatasetSplit>,
}

impl JobMessage {
    pub fn kind(&self) -> StageKind {
        self.stage.kind()
    }

    /// The seed of this job's random choices: the experiment's seed mixed with the stage's name,
    /// so that stages draw differently and every attempt of a job the same.
    pub fn stage_seed(&self) -> u64 {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(self.seed.to_le_bytes());
        hash.update(self.stage.name().as_str().as_bytes());
        u64::from_le_bytes(hash.finalize()[..8].try_into().expect("8 bytes"))
    }
}

/// A checkpoint a run saved: a directory in the artifact store (`uri` ends in `/`) whose
/// `manifest.json` has `sha256` and lists every file's hash; `size_bytes` counts its files.
/// Checkpoints recorded before the store are a `file://` URI of the `model.safetensors` file,
/// whose own sha256 it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckpointRef {
    pub uri: String,
    pub step: u64,
    pub sha256: String,
    pub size_bytes: u64,
}

impl CheckpointRef {
    /// The checkpoint's directory when it is on a filesystem (a `file://` store, or a checkpoint
    /// recorded before the store, whose URI is its `model.safetensors`); None in an S3 store.
    pub fn local_dir(&self) -> Option<std::path::PathBuf> {
        let path = self.uri.strip_prefix("file://")?;
        match path.strip_suffix('/') {
            Some(dir) => Some(dir.into()),
            None => std::path::Path::new(path)
                .parent()
                .map(std::path::Path::to_owned),
        }
    }
}

/// What a worker says about the attempt it holds. Every message names its attempt, so that the
/// API can refuse the writes of an attempt that is no longer current (fencing).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerMessage {
    /// Unique per message: a redelivered message carries the same id and is written once.
    pub event_id: EventId,
    pub job_id: JobId,
    pub run_id: RunId,
    pub attempt: u32,
    pub worker_id: String,
    pub sent_at: DateTime<Utc>,
    pub body: WorkerEvent,
}

/// Read by `decode`, which reads the variant straight from the input when `type` comes first.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// Takes the attempt; granted only if the job stream is still at `expected_version`.
    Claim {
        expected_version: i64,
    },
    /// Extends the lease.
    Heartbeat,
    /// Metric values at a training step.
    Metrics {
        step: u64,
        #[serde(with = "crate::tracking::metric_values")]
        values: BTreeMap<String, f64>,
    },
    Checkpoint(CheckpointRef),
    /// Every trajectory of an RL step (or a part of them).
    Trajectories(TrajectoryBatch),
    Evaluation(EvaluationResult),
    Finished {
        checkpoint: Option<CheckpointRef>,
    },
    Failed {
        reason: String,
    },
}

impl WorkerEvent {
    /// The last token of the subject this event is published on.
    pub fn subject_suffix(&self) -> &'static str {
        match self {
            WorkerEvent::Claim { .. } => "claim",
            WorkerEvent::Heartbeat => "heartbeat",
            WorkerEvent::Metrics { .. } => "metrics",
            WorkerEvent::Checkpoint(_) => "checkpoint",
            WorkerEvent::Trajectories(_) => "trajectories",
            WorkerEvent::Evaluation(_) => "evaluation",
            WorkerEvent::Finished { .. } => "finished",
            WorkerEvent::Failed { .. } => "failed",
        }
    }
}

/// The API's answer to a claim or heartbeat, so that a worker learns it lost its lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseVerdict {
    pub job_id: JobId,
    pub attempt: u32,
    pub worker_id: String,
    pub decision: LeaseDecision,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum LeaseDecision {
    Granted {
        lease_until: DateTime<Utc>,
    },
    /// The attempt belongs to someone else or is over; stop without writing more.
    Revoked {
        reason: String,
    },
    /// The experiment was cancelled; save what is worth saving and stop.
    Cancelled,
}

/// A trainer daemon as it announces itself: what it is, what it takes, what it is doing. Daemons
/// write it again every few seconds, busy or idle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub worker_id: String,
    /// The host name it runs on.
    pub host: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// The GPU's memory, for a `cuda` device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_gb: Option<f64>,
    pub labels: BTreeMap<String, String>,
    pub kinds: Vec<crate::spec::StageKind>,
    /// `tch` for a trainer, `verl` for a bridge to a Ray cluster.
    #[serde(default)]
    pub backend: crate::spec::Backend,
    /// The job attempt it holds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<WorkerJob>,
    pub started_at: DateTime<Utc>,
    /// When it last wrote this.
    pub seen_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerJob {
    pub job_id: JobId,
    pub run_id: RunId,
    pub attempt: u32,
}
