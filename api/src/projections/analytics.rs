//! The analytics tables `trajectories` and `trajectory_blocks`: every recorded trajectory and
//! every parallel block, flattened for SQL. Roles and character offsets come from
//! `prl_schema::analysis`, so a row can always be recomputed from the trajectory's text.

use super::newest_attempts;
use prl_schema::analysis::{Role, analyze};
use prl_schema::events::{Event, RecordedEvent};
use prl_schema::trajectory::{PromptRecord, Trajectory, TrajectoryBatch};
use sqlx::PgConnection;
use uuid::Uuid;

/// Trajectories and blocks of a batch of events, as columns ready for `UNNEST`.
#[derive(Default)]
pub struct Bulk<'a> {
    events: Vec<(i64, Uuid, u32, &'a TrajectoryBatch)>,
}

impl<'a> Bulk<'a> {
    pub fn add(&mut self, e: &'a RecordedEvent) {
        if let Event::TrajectoriesRecorded { attempt, batch } = &e.event {
            self.events.push((e.position, e.stream_id, *attempt, batch));
        }
    }

    pub async fn flush(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.events.is_empty() {
            return Ok(());
        }
        let newest = newest_attempts(
            self.events
                .iter()
                .map(|(_, run, attempt, b)| (*run, b.step as i64, *attempt as i32)),
        );
        let (runs, steps, attempts): (Vec<Uuid>, Vec<i64>, Vec<i32>) = newest
            .iter()
            .map(|((run, step), attempt)| (*run, *step, *attempt))
            .collect();
        for table in ["trajectories", "trajectory_blocks"] {
            // A newer attempt's step supersedes what an earlier attempt recorded for it.
            let delete = format!(
                "DELETE FROM {table} t
                 USING UNNEST($1::uuid[], $2::bigint[], $3::int[]) AS n(run_id, step, attempt)
                 WHERE t.run_id = n.run_id AND t.step = n.step AND t.attempt < n.attempt"
            );
            sqlx::query(sqlx::AssertSqlSafe(delete))
                .bind(&runs)
                .bind(&steps)
                .bind(&attempts)
                .execute(&mut *conn)
                .await?;
        }
        let mut rows = Rows::default();
        for (position, run, attempt, batch) in &self.events {
            if newest[&(*run, batch.step as i64)] == *attempt as i32 {
                rows.add(*position, *run, *attempt, batch);
            }
        }
        rows.insert(conn).await
    }
}

const NO_PROMPT: &PromptRecord = &PromptRecord {
    id: String::new(),
    group: 0,
    text: String::new(),
    tokens: None,
    truth: String::new(),
};

#[derive(Default)]
struct Rows {
    t: TrajectoryColumns,
    b: BlockColumns,
}

#[derive(Default)]
struct TrajectoryColumns {
    position: Vec<i64>,
    idx: Vec<i32>,
    run: Vec<Uuid>,
    step: Vec<i64>,
    attempt: Vec<i32>,
    prompt_id: Vec<String>,
    group: Vec<i32>,
    sample: Vec<i32>,
    reward: Vec<f64>,
    correct: Vec<bool>,
    answer: Vec<Option<String>>,
    truth: Vec<String>,
    prompt_tokens: Vec<Option<i32>>,
    response_tokens: Vec<Option<i32>>,
    response_chars: Vec<i32>,
    format_valid: Vec<bool>,
    clipped: Vec<bool>,
    blocks: Vec<i32>,
    paths: Vec<i32>,
    exploration: Vec<i32>,
    verification: Vec<i32>,
    block_share: Vec<f64>,
    response: Vec<String>,
    benchmark: Vec<Option<String>>,
}

#[derive(Default)]
struct BlockColumns {
    position: Vec<i64>,
    idx: Vec<i32>,
    block: Vec<i32>,
    run: Vec<Uuid>,
    step: Vec<i64>,
    attempt: Vec<i32>,
    start_token: Vec<Option<i32>>,
    end_token: Vec<Option<i32>>,
    start_char: Vec<i32>,
    end_char: Vec<i32>,
    rel_position: Vec<f64>,
    paths: Vec<i32>,
    /// Postgres array literals: UNNEST cannot take an array of arrays.
    path_tokens: Vec<Option<String>>,
    path_chars: Vec<String>,
    summary_tokens: Vec<Option<i32>>,
    summary_chars: Vec<Option<i32>>,
    role: Vec<&'static str>,
    benchmark: Vec<Option<String>>,
}

fn array_literal(values: impl Iterator<Item = usize>) -> String {
    let inner: Vec<String> = values.map(|v| v.to_string()).collect();
    format!("{{{}}}", inner.join(","))
}

impl Rows {
    fn add(&mut self, position: i64, run: Uuid, attempt: u32, batch: &TrajectoryBatch) {
        for (idx, tr) in batch.trajectories.iter().enumerate() {
            let prompt = batch.prompts.get(tr.prompt as usize).unwrap_or(NO_PROMPT);
            self.add_one(position, idx as i32, run, attempt, batch, prompt, tr);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_one(
        &mut self,
        position: i64,
        idx: i32,
        run: Uuid,
        attempt: u32,
        batch: &TrajectoryBatch,
        prompt: &PromptRecord,
        tr: &Trajectory,
    ) {
        let step = batch.step;
        let analysis = analyze(&tr.text);
        let tokens = tr.tokens.filter(|&n| n > 0);
        // Token offsets are used when the trainer counted the same blocks the text shows.
        let token_blocks =
            (tokens.is_some() && tr.blocks.len() == analysis.blocks.len()).then_some(&tr.blocks);
        let block_share = match (tokens, token_blocks) {
            (Some(n), Some(blocks)) => {
                let inside: u32 = blocks.iter().map(|b| b.end.saturating_sub(b.start)).sum();
                (inside as f64 / n as f64).min(1.0)
            }
            _ => analysis.block_share(),
        };
        let count = |role| analysis.blocks.iter().filter(|b| b.role == role).count() as i32;
        let t = &mut self.t;
        t.position.push(position);
        t.idx.push(idx);
        t.run.push(run);
        t.step.push(step as i64);
        t.attempt.push(attempt as i32);
        t.prompt_id.push(prompt.id.clone());
        t.group.push(prompt.group as i32);
        t.sample.push(tr.sample as i32);
        t.reward.push(tr.reward);
        t.correct.push(tr.correct);
        t.answer.push(tr.answer.clone());
        t.truth.push(prompt.truth.clone());
        t.prompt_tokens.push(prompt.tokens.map(|n| n as i32));
        t.response_tokens.push(tr.tokens.map(|n| n as i32));
        t.response_chars.push(analysis.chars as i32);
        t.format_valid.push(tr.format_valid);
        t.clipped.push(tr.clipped);
        t.blocks.push(analysis.blocks.len() as i32);
        t.paths.push(
            analysis
                .blocks
                .iter()
                .map(|b| b.path_chars.len())
                .sum::<usize>() as i32,
        );
        t.exploration.push(count(Role::Exploration));
        t.verification.push(count(Role::Verification));
        t.block_share.push(block_share);
        t.response.push(tr.text.clone());
        t.benchmark.push(batch.benchmark.clone());

        for (i, shape) in analysis.blocks.iter().enumerate() {
            let by_token = token_blocks.map(|blocks| &blocks[i]);
            let rel_position = match (by_token, tokens) {
                (Some(bt), Some(n)) => bt.start as f64 / n as f64,
                _ => shape.chars.start as f64 / analysis.chars.max(1) as f64,
            };
            let b = &mut self.b;
            b.position.push(position);
            b.idx.push(idx);
            b.block.push(i as i32);
            b.run.push(run);
            b.step.push(step as i64);
            b.attempt.push(attempt as i32);
            b.start_token.push(by_token.map(|bt| bt.start as i32));
            b.end_token.push(by_token.map(|bt| bt.end as i32));
            b.start_char.push(shape.chars.start as i32);
            b.end_char.push(shape.chars.end as i32);
            b.rel_position.push(rel_position);
            b.paths.push(shape.path_chars.len() as i32);
            b.path_tokens
                .push(by_token.map(|bt| array_literal(bt.paths.iter().map(|&p| p as usize))));
            b.path_chars
                .push(array_literal(shape.path_chars.iter().copied()));
            b.summary_tokens
                .push(by_token.map(|bt| bt.summary as i32).filter(|&n| n > 0));
            b.summary_chars.push(shape.summary_chars.map(|n| n as i32));
            b.role.push(shape.role.as_str());
            b.benchmark.push(batch.benchmark.clone());
        }
    }

    async fn insert(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let t = self.t;
        sqlx::query!(
            "INSERT INTO trajectories
               (position, idx, run_id, experiment_id, step, attempt, prompt_id, group_idx, sample,
                reward, correct, answer, truth, prompt_tokens, response_tokens, response_chars,
                format_valid, clipped, blocks, paths, exploration_blocks, verification_blocks,
                block_share, response, benchmark)
             SELECT u.position, u.idx, u.run_id, r.experiment_id, u.step, u.attempt, u.prompt_id,
                    u.group_idx, u.sample, u.reward, u.correct, u.answer, u.truth, u.prompt_tokens,
                    u.response_tokens, u.response_chars, u.format_valid, u.clipped, u.blocks,
                    u.paths, u.exploration, u.verification, u.block_share, u.response, u.benchmark
             FROM UNNEST($1::bigint[], $2::int[], $3::uuid[], $4::bigint[], $5::int[], $6::text[],
                         $7::int[], $8::int[], $9::float8[], $10::bool[], $11::text[], $12::text[],
                         $13::int[], $14::int[], $15::int[], $16::bool[], $17::bool[], $18::int[],
                         $19::int[], $20::int[], $21::int[], $22::float8[], $23::text[],
                         $24::text[])
                  AS u(position, idx, run_id, step, attempt, prompt_id, group_idx, sample, reward,
                       correct, answer, truth, prompt_tokens, response_tokens, response_chars,
                       format_valid, clipped, blocks, paths, exploration, verification,
                       block_share, response, benchmark)
             JOIN runs r ON r.id = u.run_id",
            &t.position,
            &t.idx,
            &t.run,
            &t.step,
            &t.attempt,
            &t.prompt_id,
            &t.group,
            &t.sample,
            &t.reward,
            &t.correct,
            &t.answer as _,
            &t.truth,
            &t.prompt_tokens as _,
            &t.response_tokens as _,
            &t.response_chars,
            &t.format_valid,
            &t.clipped,
            &t.blocks,
            &t.paths,
            &t.exploration,
            &t.verification,
            &t.block_share,
            &t.response,
            &t.benchmark as _,
        )
        .execute(&mut *conn)
        .await?;
        let b = self.b;
        if b.position.is_empty() {
            return Ok(());
        }
        sqlx::query!(
            "INSERT INTO trajectory_blocks
               (position, idx, block_idx, run_id, step, attempt, start_token, end_token, start_char,
                end_char, rel_position, paths, path_tokens, path_chars, summary_tokens,
                summary_chars, role, benchmark)
             SELECT position, idx, block_idx, run_id, step, attempt, start_token, end_token,
                    start_char, end_char, rel_position, paths, path_tokens::int[],
                    path_chars::int[], summary_tokens, summary_chars, role, benchmark
             FROM UNNEST($1::bigint[], $2::int[], $3::int[], $4::uuid[], $5::bigint[], $6::int[],
                         $7::int[], $8::int[], $9::int[], $10::int[], $11::float8[], $12::int[],
                         $13::text[], $14::text[], $15::int[], $16::int[], $17::text[],
                         $18::text[])
                  AS u(position, idx, block_idx, run_id, step, attempt, start_token, end_token,
                       start_char, end_char, rel_position, paths, path_tokens, path_chars,
                       summary_tokens, summary_chars, role, benchmark)",
            &b.position,
            &b.idx,
            &b.block,
            &b.run,
            &b.step,
            &b.attempt,
            &b.start_token as _,
            &b.end_token as _,
            &b.start_char,
            &b.end_char,
            &b.rel_position,
            &b.paths,
            &b.path_tokens as _,
            &b.path_chars,
            &b.summary_tokens as _,
            &b.summary_chars as _,
            &b.role as _,
            &b.benchmark as _,
        )
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
