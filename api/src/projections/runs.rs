//! The run tables fed by workers at volume: `run_metrics`, `checkpoints`, `trajectory_batches`,
//! `evaluations` and the latest values on `runs`. Metrics and trajectories are written with one
//! statement per table per batch.

use prl_schema::events::{Event, RecordedEvent};
use prl_schema::tracking::MetricValue;
use prl_schema::trajectory::{Trajectory, TrajectoryBatch};
use sqlx::PgConnection;
use std::collections::HashMap;
use uuid::Uuid;

/// A `trajectory_batches` row.
struct TrajectoryRow {
    position: i64,
    run: Uuid,
    step: i64,
    attempt: i32,
    count: i32,
    correct: i32,
    parallel: i32,
    benchmark: Option<String>,
    recorded_at: chrono::DateTime<chrono::Utc>,
    words: Option<Vec<u8>>,
}

/// The trajectory events a newer attempt of their steps superseded: their runs and positions,
/// side by side.
#[derive(Default)]
pub struct Superseded {
    pub runs: Vec<Uuid>,
    pub positions: Vec<i64>,
}

#[derive(Default)]
pub struct Bulk {
    metric_run: Vec<Uuid>,
    metric_step: Vec<i64>,
    metric_time: Vec<chrono::DateTime<chrono::Utc>>,
    metric_position: Vec<i64>,
    metric_attempt: Vec<i32>,
    /// Per run: the last step reported and the newest value of each metric, in log order.
    latest: HashMap<Uuid, (i64, serde_json::Map<String, serde_json::Value>)>,
    checkpoints: Vec<RecordedEvent>,
    trajectories: Vec<TrajectoryRow>,
    evaluations: Vec<RecordedEvent>,
}

impl Bulk {
    pub fn add(&mut self, e: &RecordedEvent) {
        match &e.event {
            Event::MetricsReported {
                step,
                values,
                attempt,
                time,
            } => {
                let latest = self.latest.entry(e.stream_id).or_default();
                latest.0 = latest.0.max(*step as i64);
                latest.1.extend(
                    values
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::json!(MetricValue(*v)))),
                );
                self.metric_run.push(e.stream_id);
                self.metric_step.push(*step as i64);
                self.metric_time.push(time.unwrap_or(e.recorded_at));
                self.metric_position.push(e.position);
                self.metric_attempt.push(*attempt as i32);
            }
            Event::CheckpointSaved { .. } => self.checkpoints.push(e.clone()),
            Event::EvaluationReported { .. } => self.evaluations.push(e.clone()),
            _ => unreachable!("only run events are bulked"),
        }
    }

    /// Adds a `TrajectoriesRecorded` event's row, with the filter of its texts' words.
    pub fn add_trajectories(
        &mut self,
        e: &RecordedEvent,
        batch: &TrajectoryBatch,
        attempt: u32,
        words: Option<Vec<u8>>,
    ) {
        let count =
            |f: fn(&Trajectory) -> bool| batch.trajectories.iter().filter(|t| f(t)).count() as i32;
        self.trajectories.push(TrajectoryRow {
            position: e.position,
            run: e.stream_id,
            step: batch.step as i64,
            attempt: attempt as i32,
            count: batch.trajectories.len() as i32,
            correct: count(|t| t.correct),
            parallel: count(|t| !t.blocks.is_empty()),
            benchmark: batch.benchmark.clone(),
            recorded_at: e.recorded_at,
            words,
        });
    }

    /// Writes the batch's rows; returns the trajectory events that newer attempts of their steps
    /// superseded, whose rows the analytics tables drop too.
    pub async fn flush(self, conn: &mut PgConnection) -> Result<Superseded, sqlx::Error> {
        let mut superseded = Superseded::default();
        if !self.metric_run.is_empty() {
            // A newer attempt's step supersedes what an earlier attempt reported for it.
            sqlx::query!(
                "DELETE FROM run_metrics m
                 USING UNNEST($1::uuid[], $2::bigint[], $3::int[]) AS n(run_id, step, attempt)
                 WHERE m.run_id = n.run_id AND m.step = n.step AND m.attempt < n.attempt",
                &self.metric_run,
                &self.metric_step,
                &self.metric_attempt,
            )
            .execute(&mut *conn)
            .await?;
            let newest = super::newest_attempts(
                self.metric_run
                    .iter()
                    .zip(&self.metric_step)
                    .zip(&self.metric_attempt)
                    .map(|((r, s), a)| (*r, *s, *a)),
            );
            let keep: Vec<bool> = (0..self.metric_run.len())
                .map(|i| {
                    newest[&(self.metric_run[i], self.metric_step[i])] == self.metric_attempt[i]
                })
                .collect();
            sqlx::query!(
                "INSERT INTO run_metrics (run_id, step, recorded_at, position, attempt)
                 SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::timestamptz[], $4::bigint[],
                                      $5::int[])",
                &kept(&self.metric_run, &keep),
                &kept(&self.metric_step, &keep),
                &kept(&self.metric_time, &keep),
                &kept(&self.metric_position, &keep),
                &kept(&self.metric_attempt, &keep),
            )
            .execute(&mut *conn)
            .await?;
        }
        if !self.latest.is_empty() {
            let (ids, rest): (Vec<Uuid>, Vec<_>) = self.latest.into_iter().unzip();
            let (steps, values): (Vec<i64>, Vec<serde_json::Value>) = rest
                .into_iter()
                .map(|(s, m)| (s, serde_json::Value::Object(m)))
                .unzip();
            sqlx::query!(
                "UPDATE runs r SET last_step = greatest(r.last_step, u.step), latest_metrics = r.latest_metrics || u.metrics
                 FROM UNNEST($1::uuid[], $2::bigint[], $3::jsonb[]) AS u(id, step, metrics)
                 WHERE r.id = u.id",
                &ids,
                &steps,
                &values,
            )
            .execute(&mut *conn)
            .await?;
        }
        if !self.trajectories.is_empty() {
            let newest = super::newest_attempts(
                self.trajectories.iter().map(|r| (r.run, r.step, r.attempt)),
            );
            let rows: Vec<TrajectoryRow> = self
                .trajectories
                .into_iter()
                .filter(|r| newest[&(r.run, r.step)] == r.attempt)
                .collect();
            let column = |f: fn(&TrajectoryRow) -> i64| rows.iter().map(f).collect::<Vec<_>>();
            let small = |f: fn(&TrajectoryRow) -> i32| rows.iter().map(f).collect::<Vec<_>>();
            let runs: Vec<Uuid> = rows.iter().map(|r| r.run).collect();
            let times: Vec<_> = rows.iter().map(|r| r.recorded_at).collect();
            // A newer attempt's step supersedes what an earlier attempt recorded for it.
            (superseded.runs, superseded.positions) = sqlx::query!(
                "DELETE FROM trajectory_batches t
                 USING UNNEST($1::uuid[], $2::bigint[], $3::int[]) AS n(run_id, step, attempt)
                 WHERE t.run_id = n.run_id AND t.step = n.step AND t.attempt < n.attempt
                 RETURNING t.run_id, t.position",
                &runs,
                &column(|r| r.step),
                &small(|r| r.attempt),
            )
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| (r.run_id, r.position))
            .unzip();
            sqlx::query!(
                "INSERT INTO trajectory_batches
                   (position, run_id, step, attempt, trajectories, correct, parallel, recorded_at,
                    benchmark, words)
                 SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::bigint[], $4::int[], $5::int[],
                                      $6::int[], $7::int[], $8::timestamptz[], $9::text[],
                                      $10::bytea[])",
                &column(|r| r.position),
                &runs,
                &column(|r| r.step),
                &small(|r| r.attempt),
                &small(|r| r.count),
                &small(|r| r.correct),
                &small(|r| r.parallel),
                &times,
                rows.iter().map(|r| r.benchmark.clone()).collect::<Vec<_>>() as _,
                &rows.iter().map(|r| r.words.as_deref()).collect::<Vec<_>>() as _,
            )
            .execute(&mut *conn)
            .await?;
        }
        for e in self.evaluations {
            let Event::EvaluationReported { result: r, attempt } = &e.event else {
                unreachable!()
            };
            sqlx::query!(
                "DELETE FROM evaluations
                 WHERE run_id = $1 AND step = $2 AND benchmark = $3 AND attempt < $4",
                e.stream_id,
                r.step as i64,
                &r.benchmark,
                *attempt as i32,
            )
            .execute(&mut *conn)
            .await?;
            sqlx::query!(
                "INSERT INTO evaluations (position, run_id, step, attempt, benchmark, k, prompts,
                   mean_at_k, pass_at_k, parallel_ratio, format_valid_ratio, mean_response_tokens,
                   recorded_at, mean_at_k_se, pass_at_k_se, greedy, temperature, top_p,
                   max_response_tokens)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                         $17, $18, $19)",
                e.position,
                e.stream_id,
                r.step as i64,
                *attempt as i32,
                &r.benchmark,
                r.k as i32,
                r.prompts as i32,
                r.mean_at_k,
                r.pass_at_k,
                r.parallel_ratio,
                r.format_valid_ratio,
                r.mean_response_tokens,
                e.recorded_at,
                r.mean_at_k_se,
                r.pass_at_k_se,
                r.greedy,
                r.sampling.as_ref().map(|s| s.temperature),
                r.sampling.as_ref().map(|s| s.top_p),
                r.sampling.as_ref().map(|s| s.max_response_tokens as i32),
            )
            .execute(&mut *conn)
            .await?;
        }
        for e in self.checkpoints {
            let Event::CheckpointSaved { checkpoint, .. } = &e.event else {
                unreachable!()
            };
            sqlx::query!(
                "INSERT INTO checkpoints (run_id, step, uri, sha256, size_bytes, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (run_id, step) DO UPDATE
                 SET uri = $3, sha256 = $4, size_bytes = $5, recorded_at = $6",
                e.stream_id,
                checkpoint.step as i64,
                &checkpoint.uri,
                &checkpoint.sha256,
                checkpoint.size_bytes as i64,
                e.recorded_at,
            )
            .execute(&mut *conn)
            .await?;
        }
        Ok(superseded)
    }
}

/// The entries of `column` whose `keep` is true.
fn kept<T: Copy>(column: &[T], keep: &[bool]) -> Vec<T> {
    column
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(v, _)| *v)
        .collect()
}
