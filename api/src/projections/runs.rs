//! The run tables fed by workers at volume: `run_metrics`, `checkpoints`, `trajectory_batches`,
//! `evaluations` and the latest values on `runs`. Metrics and trajectories are written with one
//! statement per table per batch.

use prl_schema::events::{Event, RecordedEvent};
use prl_schema::trajectory::Trajectory;
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
    trajectories: Vec<(i64, Uuid, i64, i32, i32, i32, chrono::DateTime<chrono::Utc>)>,
    evaluations: Vec<RecordedEvent>,
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
            Event::TrajectoriesRecorded { batch, .. } => {
                let count = |f: fn(&Trajectory) -> bool| {
                    batch.trajectories.iter().filter(|t| f(t)).count() as i32
                };
                self.trajectories.push((
                    e.position,
                    e.stream_id,
                    batch.step as i64,
                    batch.trajectories.len() as i32,
                    count(|t| t.correct),
                    count(|t| !t.blocks.is_empty()),
                    e.recorded_at,
                ));
            }
            Event::EvaluationReported { .. } => self.evaluations.push(e.clone()),
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
        if !self.trajectories.is_empty() {
            let mut columns = (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
            for (position, run, step, count, correct, parallel, at) in self.trajectories {
                columns.0.push(position);
                columns.1.push(run);
                columns.2.push(step);
                columns.3.push(count);
                columns.4.push(correct);
                columns.5.push(parallel);
                columns.6.push(at);
            }
            sqlx::query(
                "INSERT INTO trajectory_batches
                   (position, run_id, step, trajectories, correct, parallel, recorded_at)
                 SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::bigint[], $4::int[], $5::int[],
                                      $6::int[], $7::timestamptz[])",
            )
            .bind(&columns.0)
            .bind(&columns.1)
            .bind(&columns.2)
            .bind(&columns.3)
            .bind(&columns.4)
            .bind(&columns.5)
            .bind(&columns.6)
            .execute(&mut *conn)
            .await?;
        }
        for e in self.evaluations {
            let Event::EvaluationReported { result: r, .. } = &e.event else {
                unreachable!()
            };
            sqlx::query(
                "INSERT INTO evaluations (position, run_id, step, benchmark, k, prompts, mean_at_k,
                   pass_at_k, parallel_ratio, format_valid_ratio, mean_response_tokens, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(e.position)
            .bind(e.stream_id)
            .bind(r.step as i64)
            .bind(&r.benchmark)
            .bind(r.k as i32)
            .bind(r.prompts as i32)
            .bind(r.mean_at_k)
            .bind(r.pass_at_k)
            .bind(r.parallel_ratio)
            .bind(r.format_valid_ratio)
            .bind(r.mean_response_tokens)
            .bind(e.recorded_at)
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
