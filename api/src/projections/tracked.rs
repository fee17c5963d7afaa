//! Runs tracked live from other tools: `tracked_runs` (with the experiment and run rows every
//! run has, so lists, charts and comparisons treat them like native ones), the MLflow
//! experiments they are logged into, and stored artifacts.

use crate::domain::status::ExperimentStatus;
use prl_schema::events::{Event, RecordedEvent};
use prl_schema::tracking::TrackedStatus;
use sqlx::PgConnection;
use sqlx::types::Json;

/// The experiment status a tracked run's status shows as.
fn experiment_status(status: TrackedStatus) -> ExperimentStatus {
    match status {
        TrackedStatus::Scheduled => ExperimentStatus::Queued,
        TrackedStatus::Running => ExperimentStatus::Running,
        TrackedStatus::Finished => ExperimentStatus::Completed,
        TrackedStatus::Failed => ExperimentStatus::Failed,
        TrackedStatus::Killed => ExperimentStatus::Cancelled,
    }
}

fn status_text(status: TrackedStatus) -> &'static str {
    match status {
        TrackedStatus::Scheduled => "scheduled",
        TrackedStatus::Running => "running",
        TrackedStatus::Finished => "finished",
        TrackedStatus::Failed => "failed",
        TrackedStatus::Killed => "killed",
    }
}

pub async fn apply(conn: &mut PgConnection, e: &RecordedEvent) -> Result<(), sqlx::Error> {
    let id = e.stream_id;
    let at = e.recorded_at;
    match &e.event {
        Event::ExperimentTracked {
            name,
            tags,
            source,
            run_id,
            group,
            user,
            started_at,
        } => {
            sqlx::query!(
                "INSERT INTO experiments (id, name, tags, model, status, version, submitted_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                id,
                name,
                tags,
                source,
                ExperimentStatus::Running.as_str(),
                e.version,
                started_at,
            )
            .execute(&mut *conn)
            .await?;
            sqlx::query!(
                "INSERT INTO runs (id, experiment_id, stage_idx, status, attempt, started_at)
                 VALUES ($1, $2, 0, 'running', 1, $3)",
                run_id.0,
                id,
                started_at,
            )
            .execute(&mut *conn)
            .await?;
            sqlx::query!(
                "INSERT INTO tracked_runs (experiment_id, run_id, source, mlflow_experiment, name,
                                           user_id, status, started_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8)",
                id,
                run_id.0,
                source,
                *group,
                name,
                user.as_deref(),
                started_at,
                at,
            )
            .execute(&mut *conn)
            .await?;
        }
        Event::TrackedRunUpdated {
            name,
            status,
            ended_at,
        } => {
            let ended = status
                .is_some_and(|s| !matches!(s, TrackedStatus::Running | TrackedStatus::Scheduled));
            sqlx::query!(
                "UPDATE tracked_runs SET name = coalesce($2, name), status = coalesce($3, status),
                        ended_at = CASE WHEN $4 THEN coalesce($5, ended_at, $6)
                                        WHEN $3::text IS NULL THEN coalesce($5, ended_at)
                                        ELSE NULL END,
                        updated_at = $6
                 WHERE experiment_id = $1",
                id,
                name.as_deref(),
                status.map(status_text),
                ended,
                *ended_at,
                at,
            )
            .execute(&mut *conn)
            .await?;
            let shown = status.map(|s| experiment_status(s).as_str());
            sqlx::query!(
                "UPDATE experiments SET name = coalesce($2, experiments.name),
                        status = coalesce($3, experiments.status),
                        finished_at = t.ended_at, version = $4, updated_at = $5
                 FROM tracked_runs t WHERE t.experiment_id = $1 AND experiments.id = $1",
                id,
                name.as_deref(),
                shown,
                e.version,
                at,
            )
            .execute(&mut *conn)
            .await?;
            sqlx::query!(
                "UPDATE runs SET status = coalesce($2, runs.status), finished_at = t.ended_at
                 FROM tracked_runs t WHERE t.experiment_id = $1 AND runs.id = t.run_id",
                id,
                status.map(status_text),
            )
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        Event::ParamsLogged { params } => {
            sqlx::query!(
                "UPDATE tracked_runs SET params = params || $2, updated_at = $3 WHERE experiment_id = $1",
                id,
                Json(params) as _,
                at,
            )
            .execute(&mut *conn)
            .await?;
        }
        Event::TagsSet { tags } => {
            sqlx::query!(
                "UPDATE tracked_runs SET tags = tags || $2, updated_at = $3 WHERE experiment_id = $1",
                id,
                Json(tags) as _,
                at,
            )
            .execute(&mut *conn)
            .await?;
        }
        Event::TagDeleted { key } => {
            sqlx::query!(
                "UPDATE tracked_runs SET tags = tags - $2, updated_at = $3 WHERE experiment_id = $1",
                id,
                key,
                at,
            )
            .execute(&mut *conn)
            .await?;
        }
        Event::InputsLogged { datasets } => {
            sqlx::query!(
                "UPDATE tracked_runs SET inputs = inputs || $2, updated_at = $3 WHERE experiment_id = $1",
                id,
                Json(datasets) as _,
                at,
            )
            .execute(&mut *conn)
            .await?;
        }
        Event::LiveBatchRecorded { cursor, .. } => {
            sqlx::query!(
                "UPDATE tracked_runs SET cursor = coalesce($2, cursor), updated_at = $3
                 WHERE experiment_id = $1",
                id,
                cursor.as_ref(),
                at,
            )
            .execute(&mut *conn)
            .await?;
        }
        Event::TrackedRunDeleted {} | Event::TrackedRunRestored {} => {
            let deleted = matches!(e.event, Event::TrackedRunDeleted {});
            sqlx::query!(
                "UPDATE tracked_runs SET deleted = $2, updated_at = $3 WHERE experiment_id = $1",
                id,
                deleted,
                at,
            )
            .execute(&mut *conn)
            .await?;
        }
        Event::ArtifactStored {
            path,
            size_bytes,
            sha256,
            uri,
        } => {
            sqlx::query!(
                "INSERT INTO artifacts (run_id, path, size_bytes, sha256, recorded_at, uri)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (run_id, path) DO UPDATE
                 SET size_bytes = $3, sha256 = $4, recorded_at = $5, uri = $6",
                id,
                path,
                *size_bytes as i64,
                sha256,
                at,
                uri.as_deref(),
            )
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        Event::MlflowExperimentCreated { name, tags } => {
            sqlx::query!(
                "INSERT INTO mlflow_experiments (id, name, tags, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $4)",
                id,
                name,
                Json(tags) as _,
                at,
            )
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        Event::MlflowExperimentRenamed { name } => {
            sqlx::query!(
                "UPDATE mlflow_experiments SET name = $2, updated_at = $3 WHERE id = $1",
                id,
                name,
                at,
            )
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        Event::MlflowExperimentTagSet { key, value } => {
            sqlx::query!(
                "UPDATE mlflow_experiments SET tags = tags || jsonb_build_object($2::text, $3::text),
                        updated_at = $4
                 WHERE id = $1",
                id,
                key,
                value,
                at,
            )
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        Event::MlflowExperimentDeleted {} | Event::MlflowExperimentRestored {} => {
            let deleted = matches!(e.event, Event::MlflowExperimentDeleted {});
            sqlx::query!(
                "UPDATE mlflow_experiments SET deleted = $2, updated_at = $3 WHERE id = $1",
                id,
                deleted,
                at,
            )
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        _ => unreachable!("only tracked-run and MLflow events are routed here"),
    }
    // An event on the experiment's stream: its version moves.
    sqlx::query!(
        "UPDATE experiments SET version = $2, updated_at = $3 WHERE id = $1",
        id,
        e.version,
        at,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
