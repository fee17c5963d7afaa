//! What an RL step and an evaluation report: every trajectory with its score and parallel
//! structure, and evaluation results. Field names are short because every trajectory of every
//! step is stored; the docs on each field say what it holds.

use serde::{Deserialize, Serialize};

/// The prompts of one batch; trajectories point at them by index, so each prompt is sent once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PromptRecord {
    /// The problem's id in its dataset.
    pub id: String,
    /// The group index within the step: the samples of one prompt form one group.
    pub group: u32,
    pub text: String,
    /// Tokens of the prompt; unknown for imported runs.
    pub tokens: Option<u32>,
    /// The ground-truth answer.
    pub truth: String,
}

/// One parallel block of a response, in response-token offsets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BlockTokens {
    /// Offset of `<Parallel>`.
    pub start: u32,
    /// One past `</Parallel>`, or the response end when unclosed.
    pub end: u32,
    /// Tokens of each path, tags included.
    pub paths: Vec<u32>,
    /// Tokens of the summary, tags included; 0 when it has none.
    pub summary: u32,
}

/// One sampled response and how it was scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Trajectory {
    /// Index into the batch's prompts.
    pub prompt: u32,
    /// The sample's index within its group.
    pub sample: u32,
    /// The response text, special tokens included.
    pub text: String,
    /// Tokens of the response; unknown for imported runs.
    pub tokens: Option<u32>,
    /// Tokens the rollout controller inserted (forced tags), which take no part in the loss.
    pub forced: u32,
    /// Whether the response hit the length budget before ending.
    pub clipped: bool,
    pub reward: f64,
    /// The accuracy component: +1 correct, -1 wrong.
    pub accuracy: f64,
    pub correct: bool,
    pub answer: Option<String>,
    pub format_valid: bool,
    pub blocks: Vec<BlockTokens>,
}

/// The trajectories of one RL step (or one part of them, when a step is too large for one message).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrajectoryBatch {
    pub step: u64,
    pub prompts: Vec<PromptRecord>,
    pub trajectories: Vec<Trajectory>,
}

/// Evaluation of one model state on one benchmark split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvaluationResult {
    /// The training step of the evaluated weights (0 for a model that was not trained).
    pub step: u64,
    /// The dataset reference evaluated on.
    pub benchmark: String,
    pub k: u32,
    pub prompts: u32,
    /// Mean accuracy over all k samples of every prompt.
    pub mean_at_k: f64,
    /// The unbiased Pass@k estimate.
    pub pass_at_k: f64,
    /// Share of responses with at least one block.
    pub parallel_ratio: f64,
    /// Share of responses in a valid format that give a `Final Answer:`.
    pub format_valid_ratio: f64,
    /// Unknown for imported evaluations, whose dumps hold no token counts.
    pub mean_response_tokens: Option<f64>,
}
