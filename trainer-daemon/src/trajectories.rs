//! Turning rollouts (an RL step's, or an evaluation's) into the trajectory records the log keeps:
//! the parallel structure in token offsets, and batches small enough for one message each.

use crate::layout::TagIds;
use crate::rollout::Rollout;
use prl_schema::reward::Scored;
use prl_schema::trajectory::{BlockTokens, PromptRecord, Trajectory, TrajectoryBatch};

/// The tag ids the structure is read from.
#[derive(Clone, Copy, Debug)]
pub struct StructureIds {
    pub tags: TagIds,
    pub open_summary: i64,
    pub close_summary: i64,
}

/// The blocks of a response, in token offsets: each `<Parallel>` with its paths and the summary
/// that follows it. Malformed responses give what can be read; the text's parse says what is wrong.
pub fn block_tokens(tokens: &[i64], ids: StructureIds) -> Vec<BlockTokens> {
    let tags = ids.tags;
    let mut blocks: Vec<BlockTokens> = Vec::new();
    let mut open: Option<BlockTokens> = None;
    let mut path_start: Option<usize> = None;
    let mut summary_start: Option<usize> = None;
    for (i, &t) in tokens.iter().enumerate() {
        let at = i as u32;
        if t == tags.open_parallel && open.is_none() {
            open = Some(BlockTokens {
                start: at,
                end: tokens.len() as u32,
                paths: Vec::new(),
                summary: 0,
            });
        } else if t == tags.open_path && open.is_some() {
            path_start = Some(i);
        } else if t == tags.close_path {
            if let (Some(block), Some(start)) = (open.as_mut(), path_start.take()) {
                block.paths.push((i - start + 1) as u32);
            }
        } else if t == tags.close_parallel {
            if let Some(mut block) = open.take() {
                block.end = at + 1;
                blocks.push(block);
            }
            path_start = None;
        } else if t == ids.open_summary {
            summary_start = Some(i);
        } else if t == ids.close_summary
            && let (Some(start), Some(last)) = (summary_start.take(), blocks.last_mut())
            && last.summary == 0
            && start as u32 >= last.end
        {
            last.summary = (i - start + 1) as u32;
        }
    }
    blocks.extend(open);
    blocks
}

/// The record of one scored response to prompt `prompt` (an index into its batch's prompts).
pub fn record(
    prompt: u32,
    sample: u32,
    rollout: &Rollout,
    text: String,
    scored: Scored,
    ids: StructureIds,
) -> Trajectory {
    Trajectory {
        prompt,
        sample,
        tokens: Some(rollout.tokens.len() as u32),
        forced: rollout.forced.iter().filter(|f| **f).count() as u32,
        clipped: rollout.clipped,
        blocks: block_tokens(&rollout.tokens, ids),
        text,
        reward: scored.reward,
        accuracy: scored.accuracy,
        correct: scored.correct,
        answer: scored.answer,
        format_valid: scored.format_valid,
    }
}

/// Splits a step's records into batches of whole groups of at most `max_bytes` of text each
/// (at least one group per batch), re-indexing prompts within each batch.
pub fn batches(
    step: u64,
    benchmark: Option<&str>,
    prompts: Vec<PromptRecord>,
    trajectories: Vec<Trajectory>,
    max_bytes: usize,
) -> Vec<TrajectoryBatch> {
    let mut by_prompt: Vec<Vec<Trajectory>> = vec![Vec::new(); prompts.len()];
    for t in trajectories {
        by_prompt[t.prompt as usize].push(t);
    }
    let mut out: Vec<TrajectoryBatch> = Vec::new();
    let mut size = usize::MAX;
    for (prompt, group) in prompts.into_iter().zip(by_prompt) {
        let bytes: usize =
            prompt.text.len() + group.iter().map(|t| t.text.len() + 256).sum::<usize>();
        if size.saturating_add(bytes) > max_bytes || out.is_empty() {
            out.push(TrajectoryBatch {
                step,
                benchmark: benchmark.map(str::to_owned),
                prompts: Vec::new(),
                trajectories: Vec::new(),
            });
            size = 0;
        }
        let batch = out.last_mut().expect("pushed above");
        let index = batch.prompts.len() as u32;
        batch.prompts.push(prompt);
        batch
            .trajectories
            .extend(group.into_iter().map(|t| Trajectory { prompt: index, ..t }));
        size += bytes;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: StructureIds = StructureIds {
        tags: TagIds {
            open_parallel: 3,
            close_parallel: 4,
            open_path: 5,
            close_path: 6,
        },
        open_summary: 7,
        close_summary: 8,
    };

    #[test]
    fn blocks_are_read_in_token_offsets() {
        // x x <P> <p> a b </p> <p> c </p> </P> \n <S> s </S> x <P> <p> d
        let tokens = [9, 9, 3, 5, 10, 11, 6, 5, 12, 6, 4, 2, 7, 13, 8, 9, 3, 5, 14];
        let blocks = block_tokens(&tokens, IDS);
        assert_eq!(
            blocks,
            vec![
                BlockTokens {
                    start: 2,
                    end: 11,
                    paths: vec![4, 3],
                    summary: 3
                },
                // Unclosed: runs to the end; its open path is not counted.
                BlockTokens {
                    start: 16,
                    end: 19,
                    paths: vec![],
                    summary: 0
                },
            ]
        );
        assert!(block_tokens(&[9, 6, 4, 8], IDS).is_empty());
    }

    fn trajectory(prompt: u32, text: &str) -> Trajectory {
        Trajectory {
            prompt,
            sample: 0,
            text: text.into(),
            tokens: Some(1),
            forced: 0,
            clipped: false,
            reward: 0.0,
            accuracy: -1.0,
            correct: false,
            answer: None,
            format_valid: true,
            blocks: vec![],
        }
    }

    #[test]
    fn batches_hold_whole_groups_under_the_size_limit() {
        let prompts: Vec<PromptRecord> = (0..3)
            .map(|i| PromptRecord {
                id: format!("p{i}"),
                group: i,
                text: "q".into(),
                tokens: Some(1),
                truth: "1".into(),
            })
            .collect();
        let trajectories: Vec<Trajectory> = (0..3)
            .flat_map(|p| [trajectory(p, &"x".repeat(300)), trajectory(p, "y")])
            .collect();
        // Each group counts 814 bytes: two fit in 2,000.
        let out = batches(7, None, prompts, trajectories, 2000);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].prompts.len(), 2);
        assert_eq!(out[1].prompts.len(), 1);
        assert_eq!(out[1].prompts[0].id, "p2");
        assert!(out[1].trajectories.iter().all(|t| t.prompt == 0));
        assert_eq!(out.iter().map(|b| b.trajectories.len()).sum::<usize>(), 6);
        assert!(out.iter().all(|b| b.step == 7));
    }
}
