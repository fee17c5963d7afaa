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

/// The trajectories of one RL step, or an evaluation's generations (or one part of them, when
/// there are too many for one message).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrajectoryBatch {
    pub step: u64,
    /// The benchmark (as `EvaluationResult::benchmark`, with ` (greedy)` for its greedy pass)
    /// when these are an evaluation's generations at `step`; absent for RL rollouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benchmark: Option<String>,
    pub prompts: Vec<PromptRecord>,
    pub trajectories: Vec<Trajectory>,
}

/// How an evaluation sampled. Results with different settings (or a different `k`) are
/// different protocols, which tables and charts keep apart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sampling {
    /// 0 is greedy decoding.
    pub temperature: f64,
    pub top_p: f64,
    pub max_response_tokens: u32,
}

/// Evaluation of one model state on one benchmark.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvaluationResult {
    /// The training step of the evaluated weights (0 for a model that was not trained).
    pub step: u64,
    /// The dataset reference evaluated on (without its prompt style), followed by `#source` for
    /// one `data_source` of a file that holds several.
    pub benchmark: String,
    /// Samples per prompt: the stage's k times how often the prompt is repeated in the file.
    pub k: u32,
    /// Distinct prompts.
    pub prompts: u32,
    /// Mean accuracy over all k samples of every prompt.
    pub mean_at_k: f64,
    /// The unbiased Pass@k estimate.
    pub pass_at_k: f64,
    /// Standard errors over prompts (absent in evaluations older than them, and imports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_at_k_se: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_at_k_se: Option<f64>,
    /// Accuracy of one greedy response per prompt, when the evaluation asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy: Option<f64>,
    /// How Mean@k and Pass@k were sampled; unknown for imports and older evaluations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
    /// Share of responses with at least one block.
    pub parallel_ratio: f64,
    /// Share of responses in a valid format that give a `Final Answer:`.
    pub format_valid_ratio: f64,
    /// Unknown for imported evaluations, whose dumps hold no token counts.
    pub mean_response_tokens: Option<f64>,
}
