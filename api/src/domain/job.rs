//! A job: the fold of its stream (`Job::apply`, the one place its state machine is written), and
//! the lease decisions taken from worker messages against it. The `jobs` row is the fold's
//! snapshot, written by the projection in the appending transaction and read back under the log
//! lock, so a decision sees exactly the state the log implies.

use super::status::JobStatus;
use chrono::{DateTime, Duration, Utc};
use prl_schema::events::Event;
use prl_schema::jobs::{CheckpointRef, LeaseDecision, WorkerEvent, WorkerMessage};
use prl_schema::spec::StageKind;
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub experiment_id: Uuid,
    pub stage: u32,
    pub kind: StageKind,
    pub run_id: Uuid,
    pub status: JobStatus,
    pub attempt: u32,
    pub max_attempts: u32,
    pub input_checkpoint: Option<CheckpointRef>,
    pub worker_id: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
    /// The stream's version: how many events have been folded.
    pub version: i64,
}

impl Job {
    /// The state before a job stream's first event, which must be `JobQueued`; None for any other.
    pub fn before(first: &Event) -> Option<Job> {
        let Event::JobQueued {
            experiment_id,
            stage,
            kind,
            run_id,
            max_attempts,
            input_checkpoint,
            ..
        } = first
        else {
            return None;
        };
        Some(Job {
            experiment_id: experiment_id.0,
            stage: *stage,
            kind: *kind,
            run_id: run_id.0,
            status: JobStatus::Queued,
            attempt: 0,
            max_attempts: *max_attempts,
            input_checkpoint: input_checkpoint.clone(),
            worker_id: None,
            lease_until: None,
            failure_reason: None,
            version: 0,
        })
    }

    /// Folds the stream's next event. Every event kind is named here, so that a new one does not
    /// compile until it says what it does to a job.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::JobQueued { attempt, .. } => {
                self.status = JobStatus::Queued;
                self.attempt = *attempt;
                self.worker_id = None;
                self.lease_until = None;
            }
            Event::JobClaimed {
                worker_id,
                lease_until,
                ..
            } => {
                self.status = JobStatus::Running;
                self.worker_id = Some(worker_id.clone());
                self.lease_until = Some(*lease_until);
            }
            Event::JobLeaseExtended { lease_until, .. } => self.lease_until = Some(*lease_until),
            Event::JobLeaseExpired { .. } => self.end(JobStatus::LeaseExpired),
            Event::JobFinished { .. } => self.end(JobStatus::Completed),
            Event::JobFailed { reason, .. } => {
                self.end(JobStatus::Failed);
                self.failure_reason = Some(reason.clone());
            }
            Event::JobCancelled { .. } => self.end(JobStatus::Cancelled),
            // Other streams' events (the projections route by stream type, so none comes here).
            Event::ExperimentSubmitted { .. }
            | Event::ExperimentCancelled { .. }
            | Event::ExperimentCompleted {}
            | Event::ExperimentFailed { .. }
            | Event::ExperimentImported { .. }
            | Event::RunImported { .. }
            | Event::MetricsReported { .. }
            | Event::CheckpointSaved { .. }
            | Event::TrajectoriesRecorded { .. }
            | Event::EvaluationReported { .. }
            | Event::DatasetRegistered { .. }
            | Event::WorkerMessageParked { .. }
            | Event::ExperimentTracked { .. }
            | Event::TrackedRunUpdated { .. }
            | Event::ParamsLogged { .. }
            | Event::TagsSet { .. }
            | Event::TagDeleted { .. }
            | Event::InputsLogged { .. }
            | Event::TrackedRunDeleted {}
            | Event::TrackedRunRestored {}
            | Event::LiveBatchRecorded { .. }
            | Event::ArtifactStored { .. }
            | Event::MlflowExperimentCreated { .. }
            | Event::MlflowExperimentRenamed { .. }
            | Event::MlflowExperimentTagSet { .. }
            | Event::MlflowExperimentDeleted {}
            | Event::MlflowExperimentRestored {}
            | Event::DeadLetterRedriven { .. } => return,
        }
        self.version += 1;
    }

    fn end(&mut self, status: JobStatus) {
        self.status = status;
        self.lease_until = None;
    }

    /// Whether `msg` comes from the worker holding the current attempt.
    fn owned_by(&self, msg: &WorkerMessage) -> bool {
        self.attempt == msg.attempt && self.worker_id.as_deref() == Some(msg.worker_id.as_str())
    }

    /// What the worker that sent `msg` would be told now; the answer to a redelivered claim or
    /// heartbeat.
    pub fn current_verdict(&self, msg: &WorkerMessage) -> LeaseDecision {
        match (self.status, self.lease_until) {
            (JobStatus::Cancelled, _) if self.owned_by(msg) => LeaseDecision::Cancelled,
            (JobStatus::Running, Some(lease_until)) if self.owned_by(msg) => {
                LeaseDecision::Granted { lease_until }
            }
            _ => LeaseDecision::Revoked {
                reason: "the attempt is no longer held by this worker".into(),
            },
        }
    }
}

/// What a worker message leads to.
#[derive(Debug, PartialEq)]
pub struct Decision {
    /// Appended to the job stream, at the version the state had.
    pub job_events: Vec<Event>,
    /// Appended to the run stream.
    pub run_events: Vec<Event>,
    /// Sent back to the worker, for claims and heartbeats and refused writes.
    pub verdict: Option<LeaseDecision>,
}

impl Decision {
    fn refuse(verdict: LeaseDecision) -> Self {
        Decision {
            job_events: vec![],
            run_events: vec![],
            verdict: Some(verdict),
        }
    }
    fn job(event: Event, verdict: Option<LeaseDecision>) -> Self {
        Decision {
            job_events: vec![event],
            run_events: vec![],
            verdict,
        }
    }
    fn run(event: Event) -> Self {
        Decision {
            job_events: vec![],
            run_events: vec![event],
            verdict: None,
        }
    }
}

fn revoked(reason: String) -> LeaseDecision {
    LeaseDecision::Revoked { reason }
}

pub fn decide(state: &Job, msg: &WorkerMessage, now: DateTime<Utc>, lease: Duration) -> Decision {
    let attempt = msg.attempt;
    let owns = state.owned_by(msg);
    let cancelled = state.status == JobStatus::Cancelled;
    let running = state.status == JobStatus::Running;
    let stale = || {
        revoked(format!(
            "attempt {attempt} by {} is not the job's current attempt ({} by {}, {})",
            msg.worker_id,
            state.attempt,
            state.worker_id.as_deref().unwrap_or("nobody"),
            state.status
        ))
    };
    match &msg.body {
        WorkerEvent::Claim { expected_version } => {
            if cancelled {
                Decision::refuse(LeaseDecision::Cancelled)
            } else if state.status != JobStatus::Queued || state.attempt != attempt {
                Decision::refuse(stale())
            } else if state.version != *expected_version {
                Decision::refuse(revoked(format!(
                    "the job is at version {}, the claim expected {expected_version}",
                    state.version
                )))
            } else {
                let lease_until = now + lease;
                let event = Event::JobClaimed {
                    attempt,
                    worker_id: msg.worker_id.clone(),
                    lease_until,
                };
                Decision::job(event, Some(LeaseDecision::Granted { lease_until }))
            }
        }
        WorkerEvent::Heartbeat if owns && running => {
            let lease_until = now + lease;
            Decision::job(
                Event::JobLeaseExtended {
                    attempt,
                    lease_until,
                },
                Some(LeaseDecision::Granted { lease_until }),
            )
        }
        // A cancelled owner may still save what it has before it stops.
        WorkerEvent::Metrics { step, values } if owns && (running || cancelled) => {
            Decision::run(Event::MetricsReported {
                attempt,
                step: *step,
                values: values.clone(),
                time: None,
            })
        }
        WorkerEvent::Checkpoint(checkpoint) if owns && (running || cancelled) => {
            Decision::run(Event::CheckpointSaved {
                attempt,
                checkpoint: checkpoint.clone(),
            })
        }
        WorkerEvent::Trajectories(batch) if owns && (running || cancelled) => {
            Decision::run(Event::TrajectoriesRecorded {
                attempt,
                batch: batch.clone(),
            })
        }
        WorkerEvent::Evaluation(result) if owns && (running || cancelled) => {
            Decision::run(Event::EvaluationReported {
                attempt,
                result: result.clone(),
            })
        }
        WorkerEvent::Finished { checkpoint } if owns && running => Decision::job(
            Event::JobFinished {
                attempt,
                checkpoint: checkpoint.clone(),
            },
            None,
        ),
        WorkerEvent::Failed { reason } if owns && running => Decision::job(
            Event::JobFailed {
                attempt,
                reason: reason.clone(),
            },
            None,
        ),
        _ if owns && cancelled => Decision::refuse(LeaseDecision::Cancelled),
        _ => Decision::refuse(stale()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prl_schema::ids::{EventId, JobId, RunId};

    fn msg(worker: &str, attempt: u32, body: WorkerEvent) -> WorkerMessage {
        WorkerMessage {
            event_id: EventId::new(),
            job_id: JobId::new(),
            run_id: RunId::new(),
            attempt,
            worker_id: worker.into(),
            sent_at: Utc::now(),
            body,
        }
    }

    fn job(status: JobStatus, attempt: u32, worker: Option<&str>, version: i64) -> Job {
        Job {
            experiment_id: Uuid::nil(),
            stage: 0,
            kind: StageKind::Sft,
            run_id: Uuid::nil(),
            status,
            attempt,
            max_attempts: 3,
            input_checkpoint: None,
            worker_id: worker.map(str::to_owned),
            lease_until: None,
            failure_reason: None,
            version,
        }
    }

    #[test]
    fn the_fold_of_a_job_stream_follows_its_attempts() {
        use prl_schema::ids::ExperimentId;
        let queued = |attempt| Event::JobQueued {
            experiment_id: ExperimentId(Uuid::nil()),
            stage: 1,
            kind: StageKind::Rl,
            run_id: RunId(Uuid::nil()),
            attempt,
            max_attempts: 3,
            input_checkpoint: None,
            resume_from: None,
        };
        assert_eq!(Job::before(&Event::JobCancelled { attempt: 1 }), None);
        let mut job = Job::before(&queued(1)).unwrap();
        let lease_until = Utc::now();
        for event in [
            queued(1),
            Event::JobClaimed {
                attempt: 1,
                worker_id: "a".into(),
                lease_until,
            },
            Event::JobLeaseExtended {
                attempt: 1,
                lease_until,
            },
        ] {
            job.apply(&event);
        }
        assert_eq!(
            (job.status, job.version, job.lease_until),
            (JobStatus::Running, 3, Some(lease_until))
        );
        job.apply(&Event::JobLeaseExpired {
            attempt: 1,
            worker_id: Some("a".into()),
        });
        job.apply(&queued(2));
        assert_eq!(
            (
                job.status,
                job.attempt,
                job.worker_id.as_deref(),
                job.lease_until
            ),
            (JobStatus::Queued, 2, None, None)
        );
        job.apply(&Event::JobFailed {
            attempt: 2,
            reason: "out of memory".into(),
        });
        assert_eq!(job.status, JobStatus::Failed);
        assert!(job.status.is_final());
        assert_eq!(job.failure_reason.as_deref(), Some("out of memory"));
        assert_eq!(job.version, 6);
    }

    #[test]
    fn a_claim_at_the_expected_version_is_granted_and_a_second_one_is_not() {
        let now = Utc::now();
        let mut state = job(JobStatus::Queued, 1, None, 1);
        let first = decide(
            &state,
            &msg(
                "a",
                1,
                WorkerEvent::Claim {
                    expected_version: 1,
                },
            ),
            now,
            Duration::seconds(5),
        );
        assert!(matches!(first.verdict, Some(LeaseDecision::Granted { .. })));
        state.apply(&first.job_events[0]);
        let second = decide(
            &state,
            &msg(
                "b",
                1,
                WorkerEvent::Claim {
                    expected_version: 1,
                },
            ),
            now,
            Duration::seconds(5),
        );
        assert!(second.job_events.is_empty());
        assert!(matches!(
            second.verdict,
            Some(LeaseDecision::Revoked { .. })
        ));
    }

    #[test]
    fn writes_from_a_stale_attempt_are_fenced() {
        let state = job(JobStatus::Running, 2, Some("b"), 5);
        let metrics = WorkerEvent::Metrics {
            step: 3,
            values: Default::default(),
        };
        let stale = decide(
            &state,
            &msg("a", 1, metrics.clone()),
            Utc::now(),
            Duration::seconds(5),
        );
        assert!(stale.run_events.is_empty() && stale.job_events.is_empty());
        let current = decide(
            &state,
            &msg("b", 2, metrics),
            Utc::now(),
            Duration::seconds(5),
        );
        assert_eq!(current.run_events.len(), 1);
    }

    #[test]
    fn a_cancelled_job_tells_its_owner_to_stop_but_keeps_its_checkpoint() {
        let state = job(JobStatus::Cancelled, 1, Some("a"), 3);
        let beat = decide(
            &state,
            &msg("a", 1, WorkerEvent::Heartbeat),
            Utc::now(),
            Duration::seconds(5),
        );
        assert_eq!(beat.verdict, Some(LeaseDecision::Cancelled));
        let ckpt = prl_schema::jobs::CheckpointRef {
            uri: "file:///c".into(),
            step: 3,
            sha256: "00".into(),
            size_bytes: 1,
        };
        let saved = decide(
            &state,
            &msg("a", 1, WorkerEvent::Checkpoint(ckpt)),
            Utc::now(),
            Duration::seconds(5),
        );
        assert_eq!(saved.run_events.len(), 1);
    }
}
