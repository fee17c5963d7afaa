//! The `jobs` table, and the job-driven status of `runs` and `stages`.

use prl_schema::events::{Event, RecordedEvent};
use sqlx::PgConnection;

pub async fn apply(conn: &mut PgConnection, e: &RecordedEvent) -> Result<(), sqlx::Error> {
    let status = match &e.event {
        Event::JobQueued { .. } => return queued(conn, e).await,
        Event::JobClaimed {
            attempt,
            worker_id,
            lease_until,
        } => {
            sqlx::query(
                "UPDATE jobs SET status = 'running', worker_id = $2, lease_until = $3 WHERE id = $1",
            )
            .bind(e.stream_id)
            .bind(worker_id)
            .bind(lease_until)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE runs SET status = 'running', worker_id = $2, attempt = $3,
                        started_at = coalesce(started_at, $4)
                 WHERE job_id = $1",
            )
            .bind(e.stream_id)
            .bind(worker_id)
            .bind(*attempt as i32)
            .bind(e.recorded_at)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE experiments x SET status = 'running', updated_at = $2
                 FROM jobs j WHERE j.id = $1 AND x.id = j.experiment_id AND x.status = 'queued'",
            )
            .bind(e.stream_id)
            .bind(e.recorded_at)
            .execute(&mut *conn)
            .await?;
            "running"
        }
        Event::JobLeaseExtended { lease_until, .. } => {
            sqlx::query("UPDATE jobs SET lease_until = $2 WHERE id = $1")
                .bind(e.stream_id)
                .bind(lease_until)
                .execute(&mut *conn)
                .await?;
            return touch(conn, e).await;
        }
        Event::JobLeaseExpired { .. } => "lease_expired",
        Event::JobFinished { checkpoint, .. } => {
            sqlx::query("UPDATE runs SET checkpoint = $2 WHERE job_id = $1")
                .bind(e.stream_id)
                .bind(
                    checkpoint
                        .as_ref()
                        .map(|c| serde_json::to_value(c).expect("JSON")),
                )
                .execute(&mut *conn)
                .await?;
            "completed"
        }
        Event::JobFailed { reason, .. } => {
            sqlx::query("UPDATE jobs SET failure_reason = $2 WHERE id = $1")
                .bind(e.stream_id)
                .bind(reason)
                .execute(&mut *conn)
                .await?;
            "failed"
        }
        Event::JobCancelled { .. } => "cancelled",
        _ => unreachable!("only job events are routed here"),
    };
    let ends = matches!(status, "completed" | "failed" | "cancelled");
    sqlx::query(
        "UPDATE jobs SET status = $2, lease_until = CASE WHEN $2 = 'running' THEN lease_until END
         WHERE id = $1",
    )
    .bind(e.stream_id)
    .bind(status)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE runs SET status = $2, finished_at = CASE WHEN $3 THEN $4 END WHERE job_id = $1",
    )
    .bind(e.stream_id)
    .bind(status)
    .bind(ends)
    .bind(e.recorded_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE stages s SET status = $2 FROM jobs j
         WHERE j.id = $1 AND s.experiment_id = j.experiment_id AND s.idx = j.stage_idx",
    )
    .bind(e.stream_id)
    .bind(if status == "lease_expired" {
        "queued"
    } else {
        status
    })
    .execute(&mut *conn)
    .await?;
    touch(conn, e).await
}

/// Records the job stream's version on its row.
async fn touch(conn: &mut PgConnection, e: &RecordedEvent) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE jobs SET version = $2, updated_at = $3 WHERE id = $1")
        .bind(e.stream_id)
        .bind(e.version)
        .bind(e.recorded_at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn queued(conn: &mut PgConnection, e: &RecordedEvent) -> Result<(), sqlx::Error> {
    let Event::JobQueued {
        experiment_id,
        stage,
        kind,
        run_id,
        attempt,
        max_attempts,
        input_checkpoint,
    } = &e.event
    else {
        unreachable!()
    };
    let checkpoint = input_checkpoint
        .as_ref()
        .map(|c| serde_json::to_value(c).expect("JSON"));
    sqlx::query(
        "INSERT INTO jobs (id, experiment_id, stage_idx, kind, run_id, status, attempt, max_attempts,
                           input_checkpoint, version, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO UPDATE SET status = 'queued', attempt = $6, worker_id = NULL,
             lease_until = NULL, version = $9, updated_at = $10",
    )
    .bind(e.stream_id)
    .bind(experiment_id.0)
    .bind(*stage as i32)
    .bind(kind.as_str())
    .bind(run_id.0)
    .bind(*attempt as i32)
    .bind(*max_attempts as i32)
    .bind(checkpoint)
    .bind(e.version)
    .bind(e.recorded_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO runs (id, job_id, experiment_id, stage_idx, status, attempt)
         VALUES ($1, $2, $3, $4, 'queued', $5)
         ON CONFLICT (id) DO UPDATE SET status = 'queued', attempt = $5, worker_id = NULL",
    )
    .bind(run_id.0)
    .bind(e.stream_id)
    .bind(experiment_id.0)
    .bind(*stage as i32)
    .bind(*attempt as i32)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE stages SET status = 'queued', job_id = $3, run_id = $4 WHERE experiment_id = $1 AND idx = $2",
    )
    .bind(experiment_id.0)
    .bind(*stage as i32)
    .bind(e.stream_id)
    .bind(run_id.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
