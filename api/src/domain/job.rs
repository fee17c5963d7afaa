//! A job's lease, decided from worker messages. The state is the job's projection row, read under
//! the log lock, so it equals the fold of the job stream.

use chrono::{DateTime, Duration, Utc};
use prl_schema::events::Event;
use prl_schema::jobs::{LeaseDecision, WorkerEvent, WorkerMessage};

#[derive(Clone, Debug, PartialEq)]
pub struct JobState {
    pub status: String,
    pub attempt: u32,
    pub worker_id: Option<String>,
    pub version: i64,
    pub lease_until: Option<DateTime<Utc>>,
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

pub fn decide(
    state: &JobState,
    msg: &WorkerMessage,
    now: DateTime<Utc>,
    lease: Duration,
) -> Decision {
    let attempt = msg.attempt;
    let owns =
        state.attempt == attempt && state.worker_id.as_deref() == Some(msg.worker_id.as_str());
    let cancelled = state.status == "cancelled";
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
            } else if state.status != "queued" || state.attempt != attempt {
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
        WorkerEvent::Heartbeat if owns && state.status == "running" => {
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
        WorkerEvent::Metrics { step, values }
            if owns && (state.status == "running" || cancelled) =>
        {
            Decision::run(Event::MetricsReported {
                attempt,
                step: *step,
                values: values.clone(),
            })
        }
        WorkerEvent::Checkpoint(checkpoint) if owns && (state.status == "running" || cancelled) => {
            Decision::run(Event::CheckpointSaved {
                attempt,
                checkpoint: checkpoint.clone(),
            })
        }
        WorkerEvent::Trajectories(batch) if owns && (state.status == "running" || cancelled) => {
            Decision::run(Event::TrajectoriesRecorded {
                attempt,
                batch: batch.clone(),
            })
        }
        WorkerEvent::Evaluation(result) if owns && (state.status == "running" || cancelled) => {
            Decision::run(Event::EvaluationReported {
                attempt,
                result: result.clone(),
            })
        }
        WorkerEvent::Finished { checkpoint } if owns && state.status == "running" => Decision::job(
            Event::JobFinished {
                attempt,
                checkpoint: checkpoint.clone(),
            },
            None,
        ),
        WorkerEvent::Failed { reason } if owns && state.status == "running" => Decision::job(
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

/// Folds a job event into the state, so later messages of the same batch see it.
pub fn apply(state: &mut JobState, event: &Event) {
    state.version += 1;
    match event {
        Event::JobClaimed {
            worker_id,
            lease_until,
            ..
        } => {
            state.status = "running".into();
            state.worker_id = Some(worker_id.clone());
            state.lease_until = Some(*lease_until);
        }
        Event::JobLeaseExtended { lease_until, .. } => state.lease_until = Some(*lease_until),
        Event::JobFinished { .. } => state.status = "completed".into(),
        Event::JobFailed { .. } => state.status = "failed".into(),
        _ => {}
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

    fn queued() -> JobState {
        JobState {
            status: "queued".into(),
            attempt: 1,
            worker_id: None,
            version: 1,
            lease_until: None,
        }
    }

    #[test]
    fn a_claim_at_the_expected_version_is_granted_and_a_second_one_is_not() {
        let now = Utc::now();
        let mut state = queued();
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
        apply(&mut state, &first.job_events[0]);
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
        let state = JobState {
            status: "running".into(),
            attempt: 2,
            worker_id: Some("b".into()),
            version: 5,
            lease_until: None,
        };
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
        let state = JobState {
            status: "cancelled".into(),
            attempt: 1,
            worker_id: Some("a".into()),
            version: 3,
            lease_until: None,
        };
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
