//! The process manager: it turns events into the events that must follow them, in the same
//! transaction. Submission queues the first stage; a finished stage queues the next with the
//! checkpoint it needs; an expired lease queues the next attempt; a cancel stops active jobs.

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
                spec, max_attempts, ..
            } => {
                out.push(queue_stage(
                    ExperimentId(e.stream_id),
                    spec,
                    0,
                    None,
                    *max_attempts,
                    caused,
                ));
            }
            Event::JobFinished { .. } => {
                let job = JobRow::load(conn, e.stream_id).await?;
                let Some((status, spec)) = experiment(conn, job.experiment_id).await? else {
                    continue;
                };
                if status != "running" && status != "queued" {
                    continue;
                }
                let next = job.stage + 1;
                let stages = spec.stages.as_slice();
                if next as usize >= stages.len() {
                    out.push(on_experiment(
                        job.experiment_id,
                        caused(Event::ExperimentCompleted {}),
                    ));
                    continue;
                }
                match input_for(conn, job.experiment_id, &spec, next as usize).await? {
                    Ok(input) => out.push(queue_stage(
                        ExperimentId(job.experiment_id),
                        &spec,
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
                let job = JobRow::load(conn, e.stream_id).await?;
                let Some((status, _)) = experiment(conn, job.experiment_id).await? else {
                    continue;
                };
                if status == "running" || status == "queued" {
                    let failed = Event::ExperimentFailed {
                        stage: job.stage,
                        reason: reason.clone(),
                    };
                    out.push(on_experiment(job.experiment_id, caused(failed)));
                }
            }
            Event::JobLeaseExpired { attempt, .. } => {
                let job = JobRow::load(conn, e.stream_id).await?;
                let event = if *attempt < job.max_attempts {
                    Event::JobQueued {
                        experiment_id: ExperimentId(job.experiment_id),
                        stage: job.stage,
                        kind: job.kind,
                        run_id: RunId(job.run_id),
                        attempt: attempt + 1,
                        max_attempts: job.max_attempts,
                        input_checkpoint: job.input_checkpoint,
                    }
                } else {
                    Event::JobFailed {
                        attempt: *attempt,
                        reason: format!(
                            "the worker's lease expired on attempt {attempt} of {}; no attempts are left",
                            job.max_attempts
                        ),
                    }
                };
                out.push(StreamAppend {
                    stream_id: e.stream_id,
                    expected: Expected::Exact(e.version),
                    events: vec![caused(event)],
                });
            }
            Event::ExperimentCancelled { .. } => {
                let active = sqlx::query(
                    "SELECT id, attempt, version FROM jobs
                     WHERE experiment_id = $1 AND status IN ('queued', 'running', 'lease_expired')",
                )
                .bind(e.stream_id)
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
            _ => {}
        }
    }
    Ok(out)
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
        })],
    }
}

/// The checkpoint stage `idx` starts from: the one its `init_from` names, else the final one of
/// the nearest earlier training stage, else none (the base model).
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
            None => return Ok(Ok(None)),
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

struct JobRow {
    experiment_id: Uuid,
    stage: u32,
    kind: prl_schema::spec::StageKind,
    run_id: Uuid,
    max_attempts: u32,
    input_checkpoint: Option<CheckpointRef>,
}

impl JobRow {
    async fn load(conn: &mut PgConnection, id: Uuid) -> Result<Self, sqlx::Error> {
        let row = sqlx::query(
            "SELECT experiment_id, stage_idx, kind, run_id, max_attempts, input_checkpoint FROM jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
        let kind: String = row.get(2);
        let input: Option<serde_json::Value> = row.get(5);
        Ok(JobRow {
            experiment_id: row.get(0),
            stage: row.get::<i32, _>(1) as u32,
            kind: serde_json::from_value(serde_json::Value::String(kind))
                .map_err(|e| sqlx::Error::Decode(e.into()))?,
            run_id: row.get(3),
            max_attempts: row.get::<i32, _>(4) as u32,
            input_checkpoint: input
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| sqlx::Error::Decode(e.into()))?,
        })
    }
}

/// The experiment's status and spec; None for an imported experiment, which has no spec.
async fn experiment(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(String, ExperimentSpec)>, sqlx::Error> {
    let row =
        sqlx::query("SELECT status, spec FROM experiments WHERE id = $1 AND spec IS NOT NULL")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|r| {
        let spec = serde_json::from_value(r.get(1)).map_err(|e| sqlx::Error::Decode(e.into()))?;
        Ok((r.get(0), spec))
    })
    .transpose()
}
