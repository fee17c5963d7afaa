//! The analytics tables `trajectories` and `trajectory_blocks`: every recorded trajectory and
//! every parallel block, flattened for SQL. Roles and character offsets come from
//! `prl_schema::analysis`, so a row can always be recomputed from the trajectory's text, which
//! stays in the log only (`response(t)` in SQL reads it from the row's event).

use super::newest_attempts;
use super::runs::Superseded;
use crate::store::copy::{CopyIn, Int4Array};
use prl_schema::analysis::{BlockShape, Role, analyze};
use prl_schema::events::RecordedEvent;
use prl_schema::trajectory::{BlockTokens, PromptRecord, Trajectory, TrajectoryBatch};
use sqlx::PgConnection;
use std::collections::HashMap;
use uuid::Uuid;

/// The trajectories of a batch of events, written with their blocks by binary COPY.
#[derive(Default)]
pub struct Bulk<'a> {
    events: Vec<RecordedBatch<'a>>,
}

/// A `TrajectoriesRecorded` event's batch, with the filters of its texts' words.
struct RecordedBatch<'a> {
    position: i64,
    run: Uuid,
    attempt: u32,
    batch: &'a TrajectoryBatch,
    words: Vec<Option<Vec<u8>>>,
}

impl<'a> Bulk<'a> {
    /// Adds a `TrajectoriesRecorded` event's batch, with the filters of its texts' words.
    pub fn add(
        &mut self,
        e: &RecordedEvent,
        batch: &'a TrajectoryBatch,
        attempt: u32,
        words: Vec<Option<Vec<u8>>>,
    ) {
        self.events.push(RecordedBatch {
            position: e.position,
            run: e.stream_id,
            attempt,
            batch,
            words,
        });
    }

    /// Writes the batch's trajectories, after dropping the rows of `superseded` events (those
    /// whose steps newer attempts recorded again, found by the run tables' flush).
    pub async fn flush(
        self,
        conn: &mut PgConnection,
        superseded: &Superseded,
    ) -> Result<(), sqlx::Error> {
        if self.events.is_empty() {
            return Ok(());
        }
        // By event, each table through its primary key: no index of these tables covers every
        // row of a step (a join on (run_id, step) read both tables in full, 9 s at 10M
        // trajectories).
        if !superseded.positions.is_empty() {
            sqlx::query!(
                "DELETE FROM trajectories t
                 USING UNNEST($1::uuid[], $2::bigint[]) AS s(run_id, position)
                 WHERE t.run_id = s.run_id AND t.position = s.position",
                &superseded.runs,
                &superseded.positions,
            )
            .execute(&mut *conn)
            .await?;
            sqlx::query!(
                "DELETE FROM trajectory_blocks WHERE position = ANY($1)",
                &superseded.positions,
            )
            .execute(&mut *conn)
            .await?;
        }
        let newest = newest_attempts(
            self.events
                .iter()
                .map(|e| (e.run, e.batch.step as i64, e.attempt as i32)),
        );
        let (runs, steps): (Vec<Uuid>, Vec<i64>) = newest.keys().copied().unzip();
        self.copy(conn, &newest, &runs).await?;
        // The steps' rows of the strategy views, from what the steps now hold.
        sqlx::query!("SELECT refresh_strategy_steps($1, $2)", &runs, &steps)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// COPYs the trajectories of the newest attempts of known runs, then their blocks.
    async fn copy(
        &self,
        conn: &mut PgConnection,
        newest: &HashMap<(Uuid, i64), i32>,
        runs: &[Uuid],
    ) -> Result<(), sqlx::Error> {
        let experiments: HashMap<Uuid, Uuid> = sqlx::query!(
            "SELECT id, experiment_id FROM runs WHERE id = ANY($1)",
            runs
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| (r.id, r.experiment_id))
        .collect();
        let kept: Vec<_> = self
            .events
            .iter()
            .filter(|e| {
                newest[&(e.run, e.batch.step as i64)] == e.attempt as i32
                    && experiments.contains_key(&e.run)
                    && !e.batch.trajectories.is_empty()
            })
            .collect();
        if kept.is_empty() {
            return Ok(());
        }
        // Blocks are few beside trajectories' text: they are kept until the trajectories are in.
        let mut blocks = Vec::new();
        let mut copy = CopyIn::start(conn, "trajectories", TRAJECTORY_COLUMNS).await?;
        for e in kept {
            debug_assert_eq!(
                e.words.len(),
                e.batch.trajectories.len(),
                "a filter per trajectory"
            );
            for (idx, (tr, words)) in e.batch.trajectories.iter().zip(&e.words).enumerate() {
                let prompt = e.batch.prompts.get(tr.prompt as usize).unwrap_or(NO_PROMPT);
                let row = Row {
                    position: e.position,
                    idx: idx as i32,
                    run: e.run,
                    experiment: experiments[&e.run],
                    attempt: e.attempt as i32,
                    batch: e.batch,
                    prompt,
                    tr,
                    words: words.as_deref(),
                };
                copy.row().await?;
                row.write(&mut copy, &mut blocks);
            }
        }
        copy.finish().await?;
        if blocks.is_empty() {
            return Ok(());
        }
        let mut copy = CopyIn::start(conn, "trajectory_blocks", BLOCK_COLUMNS).await?;
        for block in blocks {
            copy.row().await?;
            block.write(&mut copy);
        }
        copy.finish().await?;
        Ok(())
    }
}

const NO_PROMPT: &PromptRecord = &PromptRecord {
    id: String::new(),
    group: 0,
    text: String::new(),
    tokens: None,
    truth: String::new(),
};

const TRAJECTORY_COLUMNS: &[&str] = &[
    "position",
    "idx",
    "run_id",
    "experiment_id",
    "step",
    "attempt",
    "prompt_id",
    "group_idx",
    "sample",
    "reward",
    "correct",
    "answer",
    "truth",
    "prompt_tokens",
    "response_tokens",
    "response_chars",
    "format_valid",
    "clipped",
    "blocks",
    "paths",
    "exploration_blocks",
    "verification_blocks",
    "block_share",
    "benchmark",
    "words",
];

const BLOCK_COLUMNS: &[&str] = &[
    "position",
    "idx",
    "block_idx",
    "run_id",
    "step",
    "attempt",
    "start_token",
    "end_token",
    "start_char",
    "end_char",
    "rel_position",
    "paths",
    "path_tokens",
    "path_chars",
    "summary_tokens",
    "summary_chars",
    "role",
    "benchmark",
];

/// One trajectory of a recorded batch, with where it sits in the log.
struct Row<'a> {
    position: i64,
    idx: i32,
    run: Uuid,
    experiment: Uuid,
    attempt: i32,
    batch: &'a TrajectoryBatch,
    prompt: &'a PromptRecord,
    tr: &'a Trajectory,
    words: Option<&'a [u8]>,
}

/// A `trajectory_blocks` row.
struct BlockRow<'a> {
    position: i64,
    idx: i32,
    block: i32,
    run: Uuid,
    step: i64,
    attempt: i32,
    by_token: Option<&'a BlockTokens>,
    shape: BlockShape,
    rel_position: f64,
    benchmark: Option<&'a str>,
}

impl<'a> Row<'a> {
    /// Writes the trajectory's fields, in `TRAJECTORY_COLUMNS` order, and adds its blocks' rows.
    fn write(&self, copy: &mut CopyIn<'_>, blocks: &mut Vec<BlockRow<'a>>) {
        let tr = self.tr;
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
        let paths: usize = analysis.blocks.iter().map(|b| b.path_chars.len()).sum();
        let step = self.batch.step as i64;
        let benchmark = self.batch.benchmark.as_deref();
        copy.field(self.position)
            .field(self.idx)
            .field(self.run)
            .field(self.experiment)
            .field(step)
            .field(self.attempt)
            .field(self.prompt.id.as_str())
            .field(self.prompt.group as i32)
            .field(tr.sample as i32)
            .field(tr.reward)
            .field(tr.correct)
            .field(tr.answer.as_deref())
            .field(self.prompt.truth.as_str())
            .field(self.prompt.tokens.map(|n| n as i32))
            .field(tr.tokens.map(|n| n as i32))
            .field(analysis.chars as i32)
            .field(tr.format_valid)
            .field(tr.clipped)
            .field(analysis.blocks.len() as i32)
            .field(paths as i32)
            .field(count(Role::Exploration))
            .field(count(Role::Verification))
            .field(block_share)
            .field(benchmark)
            .field(self.words);
        let chars = analysis.chars;
        for (i, shape) in analysis.blocks.into_iter().enumerate() {
            let by_token = token_blocks.map(|blocks| &blocks[i]);
            let rel_position = match (by_token, tokens) {
                (Some(bt), Some(n)) => bt.start as f64 / n as f64,
                _ => shape.chars.start as f64 / chars.max(1) as f64,
            };
            blocks.push(BlockRow {
                position: self.position,
                idx: self.idx,
                block: i as i32,
                run: self.run,
                step,
                attempt: self.attempt,
                by_token,
                shape,
                rel_position,
                benchmark,
            });
        }
    }
}

impl BlockRow<'_> {
    /// Writes the block's fields, in `BLOCK_COLUMNS` order.
    fn write(&self, copy: &mut CopyIn<'_>) {
        let (shape, by_token) = (&self.shape, self.by_token);
        let path_tokens = by_token.map(|bt| Int4Array(bt.paths.iter().map(|&p| p as i32)));
        copy.field(self.position)
            .field(self.idx)
            .field(self.block)
            .field(self.run)
            .field(self.step)
            .field(self.attempt)
            .field(by_token.map(|bt| bt.start as i32))
            .field(by_token.map(|bt| bt.end as i32))
            .field(shape.chars.start as i32)
            .field(shape.chars.end as i32)
            .field(self.rel_position)
            .field(shape.path_chars.len() as i32)
            .field(path_tokens)
            .field(Int4Array(shape.path_chars.iter().map(|&n| n as i32)))
            .field(by_token.map(|bt| bt.summary as i32).filter(|&n| n > 0))
            .field(shape.summary_chars.map(|n| n as i32))
            .field(shape.role.as_str())
            .field(self.benchmark);
    }
}
