//! The `jobs` table, a snapshot of each job's fold (`domain::job::Job`), and the job-driven
//! status of `runs` and `stages`.

use crate::domain::job::Job;
use crate::domain::status::{ExperimentStatus, JobStatus};
use prl_schema::events::{Event, RecordedEvent};
use sqlx::{PgConnection, Row};
use std::collections::HashMap;
use uuid::Uuid;

/// Folds a job event into its job's snapshot, then moves the run and stage along.
pub async fn apply(conn: &mut PgConnection, e: &RecordedEvent) -> Result<(), sqlx::Error> {
    let mut job = match load(conn, &[e.stream_id]).await?.remove(&e.stream_id) {
        Some(job) => job,
        None => Job::before(&e.event).ok_or_else(|| {
            sqlx::Error::Protocol(format!(
                "job stream {} starts with {}, not JobQueued",
                e.stream_id,
                e.event.to_parts().0
            ))
        })?,
    };
    job.apply(&e.event);
    if job.version != e.version {
        // The log is the truth; a snapshot that drifted from it is corrected, and said so.
        tracing::warn!(
            "job {}: the snapshot folded to version {}, the log is at {}",
            e.stream_id,
            job.version,
            e.version
        );
        job.version = e.version;
    }
    save(conn, e.stream_id, &job, e).await?;
    match &e.event {
        Event::JobQueued { .. } => queued(conn, e.stream_id, &job).await,
        // Only the lease moved.
        Event::JobLeaseExtended { .. } => Ok(()),
        Event::JobClaimed { .. } => {
            sqlx::query!(
                "UPDATE runs SET worker_id = $2, started_at = coalesce(started_at, $3)
                 WHERE job_id = $1",
                e.stream_id,
                job.worker_id.as_deref(),
                e.recorded_at,
            )
            .execute(&mut *conn)
            .await?;
            sqlx::query!(
                "UPDATE experiments SET status = $3, updated_at = $2
                 WHERE id = $1 AND status = $4",
                job.experiment_id,
                e.recorded_at,
                ExperimentStatus::Running.as_str(),
                ExperimentStatus::Queued.as_str(),
            )
            .execute(&mut *conn)
            .await?;
            follow(conn, e, &job).await
        }
        Event::JobFinished { checkpoint, .. } => {
            sqlx::query!(
                "UPDATE runs SET checkpoint = $2 WHERE job_id = $1",
                e.stream_id,
                checkpoint
                    .as_ref()
                    .map(|c| serde_json::to_value(c).expect("JSON")),
            )
            .execute(&mut *conn)
            .await?;
            follow(conn, e, &job).await
        }
        _ => follow(conn, e, &job).await,
    }
}

/// The run and the stage take the job's status; a stage whose lease expired waits again.
async fn follow(conn: &mut PgConnection, e: &RecordedEvent, job: &Job) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE runs SET status = $2, attempt = $3, finished_at = CASE WHEN $4 THEN $5::timestamptz END
         WHERE job_id = $1",
        e.stream_id,
        job.status.as_str(),
        job.attempt as i32,
        job.status.is_final(),
        e.recorded_at,
    )
    .execute(&mut *conn)
    .await?;
    let stage = match job.status {
        JobStatus::LeaseExpired => JobStatus::Queued,
        status => status,
    };
    sqlx::query!(
        "UPDATE stages SET status = $3 WHERE experiment_id = $1 AND idx = $2",
        job.experiment_id,
        job.stage as i32,
        stage.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A new attempt's run row (made on the first) and its stage.
async fn queued(conn: &mut PgConnection, id: Uuid, job: &Job) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO runs (id, job_id, experiment_id, stage_idx, status, attempt)
         VALUES ($1, $2, $3, $4, 'queued', $5)
         ON CONFLICT (id) DO UPDATE SET status = 'queued', attempt = $5, worker_id = NULL",
        job.run_id,
        id,
        job.experiment_id,
        job.stage as i32,
        job.attempt as i32,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE stages SET status = 'queued', job_id = $3, run_id = $4
         WHERE experiment_id = $1 AND idx = $2",
        job.experiment_id,
        job.stage as i32,
        id,
        job.run_id,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes the snapshot.
async fn save(
    conn: &mut PgConnection,
    id: Uuid,
    job: &Job,
    e: &RecordedEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO jobs (id, experiment_id, stage_idx, kind, run_id, status, attempt, max_attempts,
                           input_checkpoint, worker_id, lease_until, failure_reason, version, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (id) DO UPDATE SET status = $6, attempt = $7, worker_id = $10,
             lease_until = $11, failure_reason = $12, version = $13, updated_at = $14",
        id,
        job.experiment_id,
        job.stage as i32,
        job.kind.as_str(),
        job.run_id,
        job.status.as_str(),
        job.attempt as i32,
        job.max_attempts as i32,
        job.input_checkpoint  .as_ref()  .map(|c| serde_json::to_value(c).expect("JSON")),
        job.worker_id.as_deref(),
        job.lease_until,
        job.failure_reason.as_deref(),
        job.version,
        e.recorded_at,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The snapshots of the jobs `ids` that exist. Read under the log lock, they are the fold of
/// each job's stream.
pub async fn load(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Job>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, experiment_id, stage_idx, kind, run_id, status, attempt, max_attempts,
                input_checkpoint, worker_id, lease_until, failure_reason, version
         FROM jobs WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let decode = |e: serde_json::Error| sqlx::Error::Decode(e.into());
    rows.iter()
        .map(|r| {
            let kind: String = r.get(3);
            let input: Option<serde_json::Value> = r.get(8);
            let job = Job {
                experiment_id: r.get(1),
                stage: r.get::<i32, _>(2) as u32,
                kind: serde_json::from_value(serde_json::Value::String(kind)).map_err(decode)?,
                run_id: r.get(4),
                status: r.try_get(5)?,
                attempt: r.get::<i32, _>(6) as u32,
                max_attempts: r.get::<i32, _>(7) as u32,
                input_checkpoint: input
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(decode)?,
                worker_id: r.get(9),
                lease_until: r.get(10),
                failure_reason: r.get(11),
                version: r.get(12),
            };
            Ok((r.get(0), job))
        })
        .collect()
}
