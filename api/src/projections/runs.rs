//! The run tables fed by workers at volume: `run_metrics`, `checkpoints`, and the latest values
//! on `runs`. They are written with one statement per table per batch.

use prl_schema::events::{Event, RecordedEvent};
use sqlx::PgConnection;
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Default)]
pub struct Bulk {
    metric_run: Vec<Uuid>,
    metric_step: Vec<i64>,
    metric_time: Vec<chrono::DateTime<chrono::Utc>>,
    metric_position: Vec<i64>,
    /// Per run: the last step reported and the newest value of each metric, in log order.
    latest: HashMap<Uuid, (i64, serde_json::Map<String, serde_json::Value>)>,
    checkpoints: Vec<RecordedEvent>,
}

impl Bulk {
    pub fn add(&mut self, e: &RecordedEvent) {
        match &e.event {
            Event::MetricsReported { step, values, .. } => {
                let latest = self.latest.entry(e.stream_id).or_default();
                latest.0 = *step as i64;
                latest.1.extend(
                    values
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::json!(v))),
                );
                self.metric_run.push(e.stream_id);
                self.metric_step.push(*step as i64);
                self.metric_time.push(e.recorded_at);
                self.metric_position.push(e.position);
            }
            Event::CheckpointSaved { .. } => self.checkpoints.push(e.clone()),
            _ => unreachable!("only run events are bulked"),
        }
    }

    pub async fn flush(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if !self.metric_run.is_empty() {
            sqlx::query(
                "INSERT INTO run_metrics (run_id, step, recorded_at, position)
                 SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::timestamptz[], $4::bigint[])",
            )
            .bind(&self.metric_run)
            .bind(&self.metric_step)
            .bind(&self.metric_time)
            .bind(&self.metric_position)
            .execute(&mut *conn)
            .await?;
        }
        if !self.latest.is_empty() {
            let (ids, rest): (Vec<Uuid>, Vec<_>) = self.latest.into_iter().unzip();
            let (steps, values): (Vec<i64>, Vec<serde_json::Value>) = rest
                .into_iter()
                .map(|(s, m)| (s, serde_json::Value::Object(m)))
                .unzip();
            sqlx::query(
                "UPDATE runs r SET last_step = u.step, latest_metrics = r.latest_metrics || u.metrics
                 FROM UNNEST($1::uuid[], $2::bigint[], $3::jsonb[]) AS u(id, step, metrics)
                 WHERE r.id = u.id",
            )
            .bind(&ids)
            .bind(&steps)
            .bind(&values)
            .execute(&mut *conn)
            .await?;
        }
        for e in self.checkpoints {
            let Event::CheckpointSaved { checkpoint, .. } = &e.event else {
                unreachable!()
            };
            sqlx::query(
                "INSERT INTO checkpoints (run_id, step, uri, sha256, size_bytes, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (run_id, step) DO UPDATE
                 SET uri = $3, sha256 = $4, size_bytes = $5, recorded_at = $6",
            )
            .bind(e.stream_id)
            .bind(checkpoint.step as i64)
            .bind(&checkpoint.uri)
            .bind(&checkpoint.sha256)
            .bind(checkpoint.size_bytes as i64)
            .bind(e.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
