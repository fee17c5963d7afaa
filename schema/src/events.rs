//! The events of prl's log. Each variant is stored as a row of the `events` table: its name in
//! `event_type`, its fields in `payload`. Changing a variant's shape means a new schema version.

use crate::datasets::DatasetSplit;
use crate::ids::{ExperimentId, JobId, RunId};
use crate::jobs::CheckpointRef;
use crate::spec::{ExperimentSpec, StageKind};
use crate::tracking::TrackedStatus;
use crate::trajectory::{EvaluationResult, TrajectoryBatch};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The schema version written with every event of this build.
pub const SCHEMA_VERSION: i32 = 1;

/// The kind of stream an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamType {
    Experiment,
    Job,
    Run,
    DeadLetter,
    Dataset,
    MlflowExperiment,
}

impl StreamType {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamType::Experiment => "experiment",
            StreamType::Job => "job",
            StreamType::Run => "run",
            StreamType::DeadLetter => "dead_letter",
            StreamType::Dataset => "dataset",
            StreamType::MlflowExperiment => "mlflow_experiment",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "event_type", content = "payload")]
pub enum Event {
    // --- experiment stream ---
    /// `max_attempts` is the attempts policy in force when the spec was accepted.
    ExperimentSubmitted {
        spec: ExperimentSpec,
        max_attempts: u32,
        /// The registered datasets the spec names (`registered:...` references), as they were
        /// when it was accepted: later registrations do not change what it trains on.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        datasets: BTreeMap<String, DatasetSplit>,
        /// The checkpoint a `checkpoint:` model names, as recorded when the spec was accepted:
        /// what stages that start from the model start from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_from: Option<crate::jobs::CheckpointRef>,
    },
    ExperimentCancelled {
        reason: String,
    },
    ExperimentCompleted {},
    ExperimentFailed {
        stage: u32,
        reason: String,
    },
    /// A run of another tool brought into prl (`source` says what it was read from); it has
    /// one run, `RunImported`, and no jobs.
    ExperimentImported {
        name: String,
        tags: Vec<String>,
        source: String,
    },
    /// A run of another tool logged while it runs (an MLflow client, a followed verl run, the
    /// Python client): an experiment with one run, `run_id`, and no jobs. Its metrics,
    /// trajectories and artifacts follow on the run's stream; its params and tags on this one.
    ExperimentTracked {
        name: String,
        tags: Vec<String>,
        /// The tool it comes from (`mlflow`, `verl`, `client`).
        source: String,
        run_id: RunId,
        /// The MLflow experiment it was logged into (that stream's id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<Uuid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        started_at: DateTime<Utc>,
    },
    /// The tracked run's name, status or end changed (absent fields did not).
    TrackedRunUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<TrackedStatus>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ended_at: Option<DateTime<Utc>>,
    },
    /// Hyperparameters of a tracked run; once logged, a parameter keeps its value.
    ParamsLogged {
        params: BTreeMap<String, String>,
    },
    TagsSet {
        tags: BTreeMap<String, String>,
    },
    TagDeleted {
        key: String,
    },
    /// The datasets a tracked run read, as its tool describes them.
    InputsLogged {
        #[schema(value_type = Vec<Object>)]
        datasets: Vec<serde_json::Value>,
    },
    TrackedRunDeleted {},
    TrackedRunRestored {},
    /// A batch a live client sent was recorded (its events follow, on the run's stream), and
    /// where the client was then: a follower reads `cursor` back to resume after a restart.
    LiveBatchRecorded {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<Object>)]
        cursor: Option<serde_json::Value>,
    },
    /// An attempt of a stage's job is on the work queue.
    JobQueued {
        experiment_id: ExperimentId,
        stage: u32,
        kind: StageKind,
        run_id: RunId,
        attempt: u32,
        max_attempts: u32,
        input_checkpoint: Option<CheckpointRef>,
        /// Where a later attempt goes on from: the newest checkpoint the earlier ones recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_from: Option<CheckpointRef>,
    },
    JobClaimed {
        attempt: u32,
        worker_id: String,
        lease_until: DateTime<Utc>,
    },
    JobLeaseExtended {
        attempt: u32,
        lease_until: DateTime<Utc>,
    },
    JobLeaseExpired {
        attempt: u32,
        worker_id: Option<String>,
    },
    JobFinished {
        attempt: u32,
        checkpoint: Option<CheckpointRef>,
    },
    JobFailed {
        attempt: u32,
        reason: String,
    },
    JobCancelled {
        attempt: u32,
    },

    // --- run stream ---
    /// The run of an imported experiment; its trajectories and evaluations follow.
    RunImported {
        experiment_id: ExperimentId,
    },
    MetricsReported {
        attempt: u32,
        step: u64,
        #[serde(with = "crate::tracking::metric_values")]
        #[schema(value_type = BTreeMap<String, f64>)]
        values: BTreeMap<String, f64>,
        /// When the tool that logged them measured the values, where it says (MLflow clients
        /// do); otherwise the event's own time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time: Option<DateTime<Utc>>,
    },
    CheckpointSaved {
        attempt: u32,
        checkpoint: CheckpointRef,
    },
    /// Every trajectory of an RL step, nothing sampled away.
    TrajectoriesRecorded {
        attempt: u32,
        #[serde(flatten)]
        batch: TrajectoryBatch,
    },
    EvaluationReported {
        attempt: u32,
        #[serde(flatten)]
        result: EvaluationResult,
    },
    /// A file stored under the run's artifacts (`path` relative to them).
    ArtifactStored {
        path: String,
        size_bytes: u64,
        sha256: String,
        /// Its URL in the artifact store; absent for files stored before the store, which lie
        /// under the API's `files.artifact_dir/<run>/<path>`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uri: Option<String>,
    },

    // --- dataset stream ---
    /// A version of a named dataset: where its splits are, their sizes and content hashes.
    DatasetRegistered {
        name: String,
        source: String,
        splits: Vec<DatasetSplit>,
    },

    // --- dead-letter stream ---
    /// A worker message that could not be decoded, parked in the dead-letter stream.
    WorkerMessageParked {
        subject: String,
        reason: String,
        dead_letter_sequence: u64,
        bytes: usize,
    },
    /// The parked message was published again on its subject, for the ingester to try anew.
    DeadLetterRedriven {
        by: String,
    },

    // --- MLflow experiment stream: the groups MLflow clients log runs into ---
    MlflowExperimentCreated {
        name: String,
        tags: BTreeMap<String, String>,
    },
    MlflowExperimentRenamed {
        name: String,
    },
    MlflowExperimentTagSet {
        key: String,
        value: String,
    },
    MlflowExperimentDeleted {},
    MlflowExperimentRestored {},
}

impl Event {
    pub fn stream_type(&self) -> StreamType {
        use Event::*;
        match self {
            ExperimentSubmitted { .. }
            | ExperimentCancelled { .. }
            | ExperimentCompleted {}
            | ExperimentFailed { .. }
            | ExperimentImported { .. }
            | ExperimentTracked { .. }
            | TrackedRunUpdated { .. }
            | ParamsLogged { .. }
            | TagsSet { .. }
            | TagDeleted { .. }
            | InputsLogged { .. }
            | TrackedRunDeleted {}
            | TrackedRunRestored {}
            | LiveBatchRecorded { .. } => StreamType::Experiment,
            JobQueued { .. }
            | JobClaimed { .. }
            | JobLeaseExtended { .. }
            | JobLeaseExpired { .. }
            | JobFinished { .. }
            | JobFailed { .. }
            | JobCancelled { .. } => StreamType::Job,
            RunImported { .. }
            | MetricsReported { .. }
            | CheckpointSaved { .. }
            | TrajectoriesRecorded { .. }
            | EvaluationReported { .. }
            | ArtifactStored { .. } => StreamType::Run,
            WorkerMessageParked { .. } | DeadLetterRedriven { .. } => StreamType::DeadLetter,
            DatasetRegistered { .. } => StreamType::Dataset,
            MlflowExperimentCreated { .. }
            | MlflowExperimentRenamed { .. }
            | MlflowExperimentTagSet { .. }
            | MlflowExperimentDeleted {}
            | MlflowExperimentRestored {} => StreamType::MlflowExperiment,
        }
    }

    /// Splits the event into its stored `event_type` and `payload`.
    pub fn to_parts(&self) -> (String, serde_json::Value) {
        let (event_type, payload) = self.to_json_parts();
        let payload = serde_json::from_slice(&payload).expect("the payload is JSON");
        (event_type, payload)
    }

    /// Splits the event into its `event_type` and its payload as JSON text, serialised once and
    /// never held as a JSON tree: what the log writes, at volume.
    pub fn to_json_parts(&self) -> (String, Vec<u8>) {
        // Adjacently tagged: serde writes `{"event_type":"T","payload":P}`, or `{"event_type":"T"}`
        // for a variant without content. Variant names need no escapes.
        const HEAD: &[u8] = b"{\"event_type\":\"";
        const PAYLOAD: &[u8] = b"\",\"payload\":";
        let mut tagged = serde_json::to_vec(self).expect("events serialise to JSON");
        let name_len = tagged[HEAD.len()..]
            .iter()
            .position(|&b| b == b'"')
            .expect("serde writes the tag first, as a string");
        let event_type = std::str::from_utf8(&tagged[HEAD.len()..HEAD.len() + name_len])
            .expect("variant names are UTF-8")
            .to_owned();
        let rest = HEAD.len() + name_len;
        if !tagged[rest..].starts_with(PAYLOAD) {
            return (event_type, b"{}".to_vec());
        }
        tagged.truncate(tagged.len() - 1); // the closing brace of the tagged object
        tagged.drain(..rest + PAYLOAD.len());
        (event_type, tagged)
    }

    /// Rebuilds an event from its stored parts.
    pub fn from_parts(event_type: &str, payload: serde_json::Value) -> serde_json::Result<Self> {
        serde_json::from_value(serde_json::json!({ "event_type": event_type, "payload": payload }))
    }
}

/// Who caused an event, and what it answers: written to the `metadata` column.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// An event as read back from the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordedEvent {
    pub position: i64,
    pub stream_type: StreamType,
    pub stream_id: Uuid,
    pub version: i64,
    pub event_id: Uuid,
    pub schema_version: i32,
    #[serde(flatten)]
    pub event: Event,
    pub metadata: Metadata,
    pub recorded_at: DateTime<Utc>,
}

impl From<JobId> for Uuid {
    fn from(id: JobId) -> Uuid {
        id.0
    }
}
impl From<RunId> for Uuid {
    fn from(id: RunId) -> Uuid {
        id.0
    }
}
impl From<ExperimentId> for Uuid {
    fn from(id: ExperimentId) -> Uuid {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_into_type_and_payload_and_back() {
        let event = Event::JobLeaseExpired {
            attempt: 2,
            worker_id: Some("w1".into()),
        };
        let (event_type, payload) = event.to_parts();
        assert_eq!(event_type, "JobLeaseExpired");
        assert_eq!(payload["attempt"], 2);
        assert_eq!(Event::from_parts(&event_type, payload).unwrap(), event);
        let (t, p) = Event::ExperimentCompleted {}.to_parts();
        assert_eq!(
            Event::from_parts(&t, p).unwrap(),
            Event::ExperimentCompleted {}
        );
    }

    #[test]
    fn the_json_parts_are_the_tagged_serialisation_split() {
        let events = [
            Event::JobLeaseExpired {
                attempt: 2,
                worker_id: Some("a \"quoted\" worker}".into()),
            },
            Event::ExperimentCompleted {},
        ];
        for event in events {
            let (event_type, payload) = event.to_json_parts();
            let tagged = serde_json::to_value(&event).unwrap();
            assert_eq!(tagged["event_type"], event_type.as_str());
            let payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(tagged.get("payload").cloned().unwrap_or_default(), payload);
        }
    }
}
