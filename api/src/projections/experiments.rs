//! The `experiments` and `stages` tables.

use crate::domain::status::ExperimentStatus;
use prl_schema::events::{Event, RecordedEvent};
use sqlx::PgConnection;

pub async fn apply(conn: &mut PgConnection, e: &RecordedEvent) -> Result<(), sqlx::Error> {
    let (status, reason) = match &e.event {
        Event::ExperimentSubmitted { spec, datasets, .. } => {
            return submitted(conn, e, spec, datasets).await;
        }
        Event::ExperimentImported { name, tags, source } => {
            sqlx::query!(
                "INSERT INTO experiments (id, name, tags, model, imported_from, status, version,
                                          submitted_at, updated_at, finished_at)
                 VALUES ($1, $2, $3, 'imported', $4, $7, $5, $6, $6, $6)",
                e.stream_id,
                name,
                tags,
                source,
                e.version,
                e.recorded_at,
                ExperimentStatus::Imported.as_str(),
            )
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        Event::ExperimentCancelled { reason } => {
            (ExperimentStatus::Cancelled, Some(reason.clone()))
        }
        Event::ExperimentCompleted {} => (ExperimentStatus::Completed, None),
        Event::ExperimentFailed { stage, reason } => (
            ExperimentStatus::Failed,
            Some(format!("stage {stage}: {reason}")),
        ),
        _ => unreachable!("only experiment events are routed here"),
    };
    sqlx::query!(
        "UPDATE experiments SET status = $2, status_reason = $3, version = $4, updated_at = $5, finished_at = $5
         WHERE id = $1",
        e.stream_id,
        status.as_str(),
        reason,
        e.version,
        e.recorded_at,
    )
    .execute(&mut *conn)
    .await?;
    if status == ExperimentStatus::Cancelled {
        sqlx::query!(
            "UPDATE stages SET status = 'cancelled'
             WHERE experiment_id = $1 AND status IN ('pending', 'queued', 'running')",
            e.stream_id,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn submitted(
    conn: &mut PgConnection,
    e: &RecordedEvent,
    spec: &prl_schema::spec::ExperimentSpec,
    datasets: &std::collections::BTreeMap<String, prl_schema::datasets::DatasetSplit>,
) -> Result<(), sqlx::Error> {
    let tags: Vec<String> = spec.tags.iter().map(|t| t.to_string()).collect();
    sqlx::query!(
        "INSERT INTO experiments (id, name, tags, model, spec, status, version, submitted_at, updated_at, datasets)
         VALUES ($1, $2, $3, $4, $5, $9, $6, $7, $7, $8)",
        e.stream_id,
        spec.name.as_str(),
        &tags,
        spec.model.to_string(),
        serde_json::to_value(spec).expect("specs are JSON"),
        e.version,
        e.recorded_at,
        sqlx::types::Json(datasets) as _,
        ExperimentStatus::Queued.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    let stages = spec.stages.as_slice();
    let names: Vec<String> = stages.iter().map(|s| s.name().to_string()).collect();
    let kinds: Vec<String> = stages
        .iter()
        .map(|s| s.kind().as_str().to_owned())
        .collect();
    sqlx::query!(
        "INSERT INTO stages (experiment_id, idx, name, kind, status)
         SELECT $1, (n - 1)::int, name, kind, 'pending' FROM UNNEST($2::text[], $3::text[]) WITH ORDINALITY AS u(name, kind, n)",
        e.stream_id,
        &names,
        &kinds,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
