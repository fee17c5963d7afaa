//! The process manager: it turns events into the events that must follow them, in the same
//! transaction. Submission queues the first stage; a finished stage queues the next with the
//! checkpoint it needs; an expired lease queues the next attempt; a cancel stops active jobs.

use crate::domain::job::Job;
use crate::domain::status::{ExperimentStatus, JobStatus};
use crate::store::{Expected, NewEvent, StreamAppend};
use prl_schema::events::{Event, Metadata, RecordedEvent};
use prl_schema::ids::{ExperimentId, JobId, RunId};
use prl_schema::jobs::CheckpointRef;
use prl_schema::spec::{ExperimentSpec, StageSpec};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// Follow-up appends for `events`, which the projections already reflect.
pub async fn react(
    conn: &mut PgConnection,
    events: &[RecordedEvent],
) -> Result<Vec<StreamAppend>, sqlx::Error> {
    let mut out = Vec::new();
    for e in events {
        let caused = |event| {
            NewEvent::new(
                event,
                Metadata {
                    correlation_id: e.metadata.correlation_id.or(Some(e.event_id)),
                    causation_id: Some(e.event_id),
                    actor: Some("workflow".into()),
                },
            )
        };
        match &e.event {
            Event::ExperimentSubmitted {
                spec,
                max_attempts,
                start_from,
                ..
            } => {
                out.push(queue_stage(
                    ExperimentId(e.stream_id),
                    spec,
                    0,
                    start_from.clone(),
                    *max_attempts,
                    caused,
                ));
            }
            Event::JobFinished { .. } => {
                let job = load_job(conn, e.stream_id).await?;
                let experiment = experiment(conn, job.experiment_id).await?;
                let spec = match after_finish(&job, experiment.as_ref()) {
                    AfterFinish::Nothing => continue,
                    AfterFinish::Complete => {
                        let completed = caused(Event::ExperimentCompleted {});
                        out.push(on_experiment(job.experiment_id, completed));
                        continue;
                    }
                    AfterFinish::Queue(spec) => spec,
                };
                let next = job.stage + 1;
                match input_for(conn, job.experiment_id, spec, next as usize).await? {
                    Ok(input) => out.push(queue_stage(
                        ExperimentId(job.experiment_id),
                        spec,
                        next,
                        input,
                        job.max_attempts,
                        caused,
                    )),
                    Err(reason) => out.push(on_experiment(
                        job.experiment_id,
                        caused(Event::ExperimentFailed {
                            stage: next,
                            reason,
                        }),
                    )),
                }
            }
            Event::JobFailed { reason, .. } => {
                let job = load_job(conn, e.stream_id).await?;
                let experiment = experiment(conn, job.experiment_id).await?;
                if experiment.is_some_and(|(status, _)| status.is_active()) {
                    let failed = Event::ExperimentFailed {
                        stage: job.stage,
                        reason: reason.clone(),
                    };
                    out.push(on_experiment(job.experiment_id, caused(failed)));
                }
            }
            Event::JobLeaseExpired { .. } => {
                let job = load_job(conn, e.stream_id).await?;
                let newest = newest_checkpoint(conn, job.run_id).await?;
                out.push(StreamAppend {
                    stream_id: e.stream_id,
                    expected: Expected::Exact(e.version),
                    events: vec![caused(after_expiry(&job, newest))],
                });
            }
            Event::ExperimentCancelled { .. } => {
                let active = sqlx::query(
                    "SELECT id, attempt, version FROM jobs
                     WHERE experiment_id = $1 AND status = ANY($2)",
                )
                .bind(e.stream_id)
                .bind(JobStatus::ACTIVE.map(JobStatus::as_str).as_slice())
                .fetch_all(&mut *conn)
                .await?;
                for row in active {
                    let attempt: i32 = row.get(1);
                    out.push(StreamAppend {
                        stream_id: row.get(0),
                        expected: Expected::Exact(row.get(2)),
                        events: vec![caused(Event::JobCancelled {
                            attempt: attempt as u32,
                        })],
                    });
                }
            }
            // Nothing follows these.
            Event::ExperimentCompleted {}
            | Event::ExperimentFailed { .. }
            | Event::ExperimentImported { .. }
            | Event::JobQueued { .. }
            | Event::JobClaimed { .. }
            | Event::JobLeaseExtended { .. }
            | Event::JobCancelled { .. }
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
            | Event::DeadLetterRedriven { .. } => {}
        }
    }
    Ok(out)
}

/// What follows a job's success.
#[derive(Debug, PartialEq)]
enum AfterFinish<'a> {
    /// The experiment ended meanwhile (cancelled, failed) or is an import.
    Nothing,
    /// It was the last stage.
    Complete,
    /// The next stage of this spec is queued.
    Queue(&'a ExperimentSpec),
}

fn after_finish<'a>(
    job: &Job,
    experiment: Option<&'a (ExperimentStatus, ExperimentSpec)>,
) -> AfterFinish<'a> {
    match experiment {
        Some((status, spec)) if status.is_active() => {
            if job.stage as usize + 1 < spec.stages.as_slice().len() {
                AfterFinish::Queue(spec)
            } else {
                AfterFinish::Complete
            }
        }
        _ => AfterFinish::Nothing,
    }
}

/// What follows a job's expired lease: its next attempt, which goes on from the newest checkpoint
/// the run recorded, or its failure when none is left.
fn after_expiry(job: &Job, newest: Option<CheckpointRef>) -> Event {
    let attempt = job.attempt;
    if attempt < job.max_attempts {
        Event::JobQueued {
            experiment_id: ExperimentId(job.experiment_id),
            stage: job.stage,
            kind: job.kind,
            run_id: RunId(job.run_id),
            attempt: attempt + 1,
            max_attempts: job.max_attempts,
            input_checkpoint: job.input_checkpoint.clone(),
            resume_from: newest,
        }
    } else {
        Event::JobFailed {
            attempt,
            reason: format!(
                "the worker's lease expired on attempt {attempt} of {}; no attempts are left",
                job.max_attempts
            ),
        }
    }
}

/// The run's newest recorded checkpoint. Once a lease has expired its worker's writes are
/// refused, so this is the newest one any attempt can have reported.
async fn newest_checkpoint(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> Result<Option<CheckpointRef>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT uri, step, sha256, size_bytes FROM checkpoints
         WHERE run_id = $1 ORDER BY step DESC LIMIT 1",
    )
    .bind(run_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| CheckpointRef {
        uri: row.get(0),
        step: row.get::<i64, _>(1) as u64,
        sha256: row.get(2),
        size_bytes: row.get::<i64, _>(3) as u64,
    }))
}

async fn load_job(conn: &mut PgConnection, id: Uuid) -> Result<Job, sqlx::Error> {
    crate::projections::jobs::load(conn, &[id])
        .await?
        .remove(&id)
        .ok_or(sqlx::Error::RowNotFound)
}

fn on_experiment(experiment_id: Uuid, event: NewEvent) -> StreamAppend {
    StreamAppend {
        stream_id: experiment_id,
        expected: Expected::Any,
        events: vec![event],
    }
}

fn queue_stage(
    experiment_id: ExperimentId,
    spec: &ExperimentSpec,
    stage: u32,
    input_checkpoint: Option<CheckpointRef>,
    max_attempts: u32,
    caused: impl Fn(Event) -> NewEvent,
) -> StreamAppend {
    let kind = spec.stages.as_slice()[stage as usize].kind();
    StreamAppend {
        stream_id: JobId::new().0,
        expected: Expected::NoStream,
        events: vec![caused(Event::JobQueued {
            experiment_id,
            stage,
            kind,
            run_id: RunId::new(),
            attempt: 1,
            max_attempts,
            input_checkpoint,
            resume_from: None,
        })],
    }
}

/// The checkpoint stage `idx` starts from: the one its `init_from` names, else the final one of
/// the nearest earlier training stage, else the model's (a `checkpoint:` model's; none for the
/// others, which daemons load themselves).
async fn input_for(
    conn: &mut PgConnection,
    experiment_id: Uuid,
    spec: &ExperimentSpec,
    idx: usize,
) -> Result<Result<Option<CheckpointRef>, String>, sqlx::Error> {
    let stages = spec.stages.as_slice();
    let (source, step) = match stages[idx].init_from() {
        Some(init) => {
            let source = stages
                .iter()
                .position(|s| *s.name() == init.stage)
                .expect("specs are valid");
            (source, init.step)
        }
        None => match stages[..idx].iter().rposition(StageSpec::saves_checkpoints) {
            Some(source) => (source, None),
            None => return Ok(Ok(model_checkpoint(conn, experiment_id).await?)),
        },
    };
    let row = sqlx::query(
        "SELECT CASE WHEN $3::bigint IS NULL THEN r.checkpoint
                     ELSE (SELECT jsonb_build_object('uri', c.uri, 'step', c.step, 'sha256', c.sha256,
                                                     'size_bytes', c.size_bytes)
                           FROM checkpoints c WHERE c.run_id = r.id AND c.step = $3) END
         FROM stages s JOIN runs r ON r.id = s.run_id
         WHERE s.experiment_id = $1 AND s.idx = $2",
    )
    .bind(experiment_id)
    .bind(source as i32)
    .bind(step.map(|s| s as i64))
    .fetch_optional(&mut *conn)
    .await?;
    let found: Option<serde_json::Value> = row.and_then(|r| r.get(0));
    let name = stages[source].name();
    Ok(match found.map(serde_json::from_value::<CheckpointRef>) {
        Some(Ok(checkpoint)) => Ok(Some(checkpoint)),
        _ => Err(match step {
            Some(step) => format!("stage '{name}' left no checkpoint at step {step}"),
            None => format!("stage '{name}' finished without a checkpoint"),
        }),
    })
}

/// The checkpoint the experiment's `checkpoint:` model named when it was accepted.
async fn model_checkpoint(
    conn: &mut PgConnection,
    experiment_id: Uuid,
) -> Result<Option<CheckpointRef>, sqlx::Error> {
    let found: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT payload->'start_from' FROM events
         WHERE stream_id = $1 AND event_type = 'ExperimentSubmitted'",
    )
    .bind(experiment_id)
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    Ok(found.and_then(|v| serde_json::from_value(v).ok()))
}

/// The experiment's status and spec; None for an imported experiment, which has no spec.
async fn experiment(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(ExperimentStatus, ExperimentSpec)>, sqlx::Error> {
    let row =
        sqlx::query("SELECT status, spec FROM experiments WHERE id = $1 AND spec IS NOT NULL")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|r| {
        let spec = serde_json::from_value(r.get(1)).map_err(|e| sqlx::Error::Decode(e.into()))?;
        Ok((r.try_get(0)?, spec))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prl_schema::spec::StageKind;

    fn job(stage: u32, attempt: u32) -> Job {
        Job {
            experiment_id: Uuid::now_v7(),
            stage,
            kind: StageKind::Rl,
            run_id: Uuid::now_v7(),
            status: JobStatus::LeaseExpired,
            attempt,
            max_attempts: 3,
            input_checkpoint: Some(checkpoint(4)),
            worker_id: None,
            lease_until: None,
            failure_reason: None,
            version: 3,
        }
    }

    fn checkpoint(step: u64) -> CheckpointRef {
        CheckpointRef {
            uri: format!("file:///c/step-{step}/"),
            step,
            sha256: "00".into(),
            size_bytes: 1,
        }
    }

    fn two_stages() -> ExperimentSpec {
        serde_json::from_value(serde_json::json!({
            "name": "two", "model": "tiny",
            "stages": [
                {"kind": "sft", "name": "sft", "dataset": "builtin:easy", "learning_rate": 1e-3},
                {"kind": "eval", "name": "eval", "dataset": "builtin:easy-test", "k": 1}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn an_expired_lease_queues_the_same_run_again_until_the_attempts_run_out() {
        let given = job(0, 1);
        let Event::JobQueued {
            attempt,
            run_id,
            input_checkpoint,
            resume_from,
            ..
        } = after_expiry(&given, Some(checkpoint(9)))
        else {
            panic!("a second attempt is queued")
        };
        assert_eq!((attempt, run_id.0), (2, given.run_id));
        assert_eq!(input_checkpoint, given.input_checkpoint);
        assert_eq!(resume_from, Some(checkpoint(9)));

        let last = job(0, 3);
        let Event::JobFailed { attempt, reason } = after_expiry(&last, None) else {
            panic!("the last attempt fails the job")
        };
        assert_eq!(attempt, 3);
        assert!(reason.contains("no attempts are left"), "{reason}");
    }

    #[test]
    fn a_finished_stage_queues_the_next_or_completes_the_experiment_while_it_is_active() {
        let spec = two_stages();
        let running = (ExperimentStatus::Running, spec.clone());
        assert_eq!(
            after_finish(&job(0, 1), Some(&running)),
            AfterFinish::Queue(&spec)
        );
        assert_eq!(
            after_finish(&job(1, 1), Some(&running)),
            AfterFinish::Complete
        );
        let cancelled = (ExperimentStatus::Cancelled, spec.clone());
        assert_eq!(
            after_finish(&job(0, 1), Some(&cancelled)),
            AfterFinish::Nothing
        );
        // An imported experiment has no spec, and nothing follows its jobs.
        assert_eq!(after_finish(&job(0, 1), None), AfterFinish::Nothing);
    }
}
