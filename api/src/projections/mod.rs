//! Read models, updated in the transaction that appends the events they follow, and rebuilt from
//! the log by `replay`. Each event kind's SQL lives in the module of the table it mainly touches.

mod analytics;
mod experiments;
pub mod jobs;
pub mod replay;
mod runs;
mod tracked;

use prl_schema::events::{Event, RecordedEvent};
use prl_schema::trajectory::TrajectoryBatch;
use prl_schema::word_filter::BatchWords;
use sqlx::PgConnection;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// The words of `TrajectoriesRecorded` events' texts, by event id, found before their append
/// took the log's lock. An event without them has its words found in the transaction.
pub type PreparedWords = HashMap<Uuid, Arc<BatchWords>>;

/// Applies events in log order. High-volume run events are written in bulk at the end; they touch
/// only run tables, which nothing earlier in the batch reads.
pub async fn apply(
    conn: &mut PgConnection,
    events: &[RecordedEvent],
    prepared: &PreparedWords,
) -> Result<(), sqlx::Error> {
    let mut bulk = runs::Bulk::default();
    let mut analytics = analytics::Bulk::default();
    for recorded in events {
        match &recorded.event {
            Event::TrajectoriesRecorded { batch, attempt } => {
                let words = match prepared.get(&recorded.event_id) {
                    Some(words) => words.filters(recorded.position),
                    None => trajectory_words(batch).filters(recorded.position),
                };
                bulk.add_trajectories(recorded, batch, *attempt, words.batch);
                analytics.add(recorded, batch, *attempt, words.trajectories);
            }
            Event::MetricsReported { .. }
            | Event::CheckpointSaved { .. }
            | Event::EvaluationReported { .. } => bulk.add(recorded),
            Event::ExperimentSubmitted { .. }
            | Event::ExperimentCancelled { .. }
            | Event::ExperimentCompleted {}
            | Event::ExperimentFailed { .. }
            | Event::ExperimentImported { .. } => experiments::apply(conn, recorded).await?,
            Event::ExperimentTracked { .. }
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
            | Event::MlflowExperimentRestored {} => tracked::apply(conn, recorded).await?,
            Event::RunImported { experiment_id } => {
                sqlx::query!(
                    "INSERT INTO runs (id, experiment_id, stage_idx, status, attempt, started_at, finished_at)
                     VALUES ($1, $2, 0, 'imported', 1, $3, $3)",
                    recorded.stream_id,
                    experiment_id.0,
                    recorded.recorded_at,
                )
                .execute(&mut *conn)
                .await?;
            }
            Event::DatasetRegistered {
                name,
                source,
                splits,
            } => {
                sqlx::query!(
                    "INSERT INTO datasets (name, stream_id, version, source, splits, registered_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (name) DO UPDATE
                     SET version = $3, source = $4, splits = $5, registered_at = $6",
                    name,
                    recorded.stream_id,
                    recorded.version,
                    source,
                    sqlx::types::Json(splits) as _,
                    recorded.recorded_at,
                )
                .execute(&mut *conn)
                .await?;
            }
            Event::WorkerMessageParked {
                subject,
                reason,
                dead_letter_sequence,
                bytes,
            } => {
                sqlx::query!(
                    "INSERT INTO dead_letters (id, subject, reason, dead_letter_sequence, bytes, recorded_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    recorded.stream_id,
                    subject,
                    reason,
                    *dead_letter_sequence as i64,
                    *bytes as i64,
                    recorded.recorded_at,
                )
                .execute(&mut *conn)
                .await?;
            }
            Event::DeadLetterRedriven { .. } => {
                sqlx::query!(
                    "UPDATE dead_letters SET redrives = redrives + 1, redriven_at = $2 WHERE id = $1",
                    recorded.stream_id,
                    recorded.recorded_at,
                )
                .execute(&mut *conn)
                .await?;
            }
            Event::JobQueued { .. }
            | Event::JobClaimed { .. }
            | Event::JobLeaseExtended { .. }
            | Event::JobLeaseExpired { .. }
            | Event::JobFinished { .. }
            | Event::JobFailed { .. }
            | Event::JobCancelled { .. } => jobs::apply(conn, recorded).await?,
        }
    }
    let superseded = bulk.flush(conn).await?;
    analytics.flush(conn, &superseded).await
}

/// The words of a batch's texts, for its filters.
pub fn trajectory_words(batch: &TrajectoryBatch) -> BatchWords {
    BatchWords::of(batch.trajectories.iter().map(|t| t.text.as_str()))
}

/// The newest attempt of each (run, step) among `(run, step, attempt)` rows: within a batch
/// too, only the newest attempt of a step counts.
fn newest_attempts(rows: impl Iterator<Item = (Uuid, i64, i32)>) -> HashMap<(Uuid, i64), i32> {
    let mut newest = HashMap::new();
    for (run, step, attempt) in rows {
        let a = newest.entry((run, step)).or_insert(attempt);
        *a = (*a).max(attempt);
    }
    newest
}

/// Every projection table, in an order that truncation with CASCADE accepts.
pub const TABLES: &[&str] = &[
    "experiments",
    "stages",
    "jobs",
    "runs",
    "run_metrics",
    "checkpoints",
    "dead_letters",
    "trajectory_batches",
    "evaluations",
    "trajectories",
    "trajectory_blocks",
    "strategy_steps",
    "datasets",
    "tracked_runs",
    "mlflow_experiments",
    "artifacts",
];
