//! What travels between the API and the trainer daemons: job messages one way, worker events and
//! lease verdicts the other. The subjects they travel on belong to the crates that speak NATS.

use crate::ids::{EventId, ExperimentId, JobId, RunId};
use crate::spec::{ModelRef, StageKind, StageSpec};
use crate::trajectory::{EvaluationResult, TrajectoryBatch};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// A checkpoint file a run saved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckpointRef {
    pub uri: String,
    pub step: u64,
    pub sha256: String,
    pub size_bytes: u64,
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
