//! The three kinds of stage and their hyperparameters, with the defaults a user gets by leaving a
//! field out. Unknown fields are errors: a typo must not silently fall back to a default.

use super::resources::{JobRoute, Resources};
use super::values::*;
use super::verl::{Backend, VerlSettings};
use serde::{Deserialize, Serialize};

/// How paths of one parallel block see each other (see the reference notes).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Attention {
    /// Plain causal attention and ordinary positions.
    #[default]
    Seen,
    /// Paths are isolated from each other and use multiverse position ids.
    Unseen,
}

/// Whether rollouts fork into parallel paths or stay one sequence (the baselines).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RolloutMode {
    #[default]
    Parallel,
    Sequential,
}

/// The numbers a stage computes in. `bf16` keeps the weights in bfloat16 and the optimiser's
/// master weights and moments in float32 (meant for CUDA; on CPU it works, slowly).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

/// The reward an RL stage optimises.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RewardSchedule {
    /// +1 correct, -1 wrong.
    Accuracy,
    /// The S1 schedule: accuracy only.
    S1,
    /// The S2 schedule: accuracy on 8 of every 10 steps, the tiered parallel reward on the other 2.
    S2,
    /// 1 only if correct, with a block, in a valid format; 0 otherwise.
    ParallelStrict,
}

/// Where a stage's weights come from, when not from the stage before it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InitFrom {
    /// An earlier stage of the same spec that saves checkpoints.
    pub stage: StageName,
    /// The step of that stage's checkpoint; its final checkpoint when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
}

fn d<T: TryFrom<V>, V>(v: V) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(v).expect("defaults are valid")
}

fn two_paths() -> Paths {
    d(2)
}
fn batch_32() -> PositiveCount {
    d(32)
}
fn one() -> PositiveCount {
    d(1)
}
fn warmup() -> Fraction {
    d(0.1)
}
fn grad_clip() -> Positive {
    d(1.0)
}
fn weight_decay() -> NonNegative {
    d(0.01)
}
fn max_length() -> PositiveCount {
    d(512)
}
fn group_8() -> GroupSize {
    d(8)
}
fn prompts_16() -> PositiveCount {
    d(16)
}
fn clip() -> ClipBound {
    d(0.2)
}
fn temperature() -> NonNegative {
    d(1.0)
}
fn top_p() -> Fraction {
    d(1.0)
}
fn zero() -> NonNegative {
    d(0.0)
}
fn mini_batch_64() -> PositiveCount {
    d(64)
}
fn sampling_rounds() -> PositiveCount {
    d(3)
}
fn response_tokens() -> PositiveCount {
    d(256)
}
fn path_tokens() -> PositiveCount {
    d(128)
}
fn max_blocks() -> u32 {
    4
}
fn yes() -> bool {
    true
}
fn k_one() -> EvalK {
    d(1)
}

/// Cold-start supervised fine-tuning on parallel-format (or sequential) solutions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SftStage {
    /// Unique within the spec; names the stage's run and its checkpoints.
    pub name: StageName,
    /// The examples to imitate: a dataset reference (see Datasets below); rows need a `solution`.
    pub dataset: DatasetRef,
    /// Starts from an earlier stage's checkpoint instead of the previous stage's final one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<InitFrom>,
    /// How the paths of a parallel block see each other (`seen` or `unseen`; see Values).
    #[serde(default)]
    pub attention: Attention,
    /// `fp32`, or `bf16` weights with float32 optimiser state (see Values).
    #[serde(default)]
    pub precision: Precision,
    /// What the daemon that runs this stage must have (device, GPU memory, labels); any daemon
    /// when left out.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// Not read by SFT, whose targets already hold their blocks; kept so that every stage kind takes it.
    #[serde(default = "two_paths")]
    pub paths: Paths,
    /// AdamW's peak learning rate, after `warmup_ratio` of the steps, then cosine decay.
    pub learning_rate: LearningRate,
    /// Passes over the dataset.
    #[serde(default = "one")]
    pub epochs: PositiveCount,
    /// Stops early after this many optimiser steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<PositiveCount>,
    /// Examples per micro-batch.
    #[serde(default = "batch_32")]
    pub batch_size: PositiveCount,
    /// Micro-batches per optimiser step.
    #[serde(default = "one")]
    pub grad_accum: PositiveCount,
    /// Share of the steps over which the learning rate rises linearly from 0.
    #[serde(default = "warmup")]
    pub warmup_ratio: Fraction,
    /// Gradients are clipped to this global norm.
    #[serde(default = "grad_clip")]
    pub grad_clip: Positive,
    /// AdamW's decoupled weight decay, applied to matrices only.
    #[serde(default = "weight_decay")]
    pub weight_decay: NonNegative,
    /// Tokens per example, prompt and response; longer ones are cut, and one with no response token left is skipped.
    #[serde(default = "max_length")]
    pub max_length: PositiveCount,
    /// Batches examples of similar length together (shuffled within windows of a few hundred),
    /// so that little of a batch is padding and a step costs about half. Off by default: the
    /// loss is a mean over each batch's tokens, so grouping gives short examples' tokens more
    /// weight, which changes what a short run learns.
    #[serde(default)]
    pub group_by_length: bool,
    /// Saves a checkpoint every this many steps, besides the final one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<PositiveCount>,
}

/// GRPO/DAPO reinforcement learning with parallel (or sequential) rollouts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RlStage {
    /// Unique within the spec; names the stage's run and its checkpoints.
    pub name: StageName,
    /// The prompts to roll out, with their answers: a dataset reference (see Datasets below).
    pub dataset: DatasetRef,
    /// Starts from an earlier stage's checkpoint instead of the previous stage's final one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<InitFrom>,
    /// How the paths of a parallel block see each other (`seen` or `unseen`; see Values).
    #[serde(default)]
    pub attention: Attention,
    /// `fp32`, or `bf16` weights with float32 optimiser state (see Values).
    #[serde(default)]
    pub precision: Precision,
    /// What the daemon that runs this stage must have (device, GPU memory, labels); any daemon
    /// when left out.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// `tch`, prl's own trainer daemons, or `verl`: verl's `main_ppo` on a Ray cluster, through
    /// a bridge daemon (docs/verl.md).
    #[serde(default)]
    pub backend: Backend,
    /// The verl job's cluster shape and engine settings (only with `backend = "verl"`; the
    /// reference scripts' values when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verl: Option<Box<VerlSettings>>,
    /// Paths a parallel block forks into.
    #[serde(default = "two_paths")]
    pub paths: Paths,
    /// `parallel` rollouts fork at `<Parallel>`; `sequential` ones never do (the baselines).
    #[serde(default)]
    pub mode: RolloutMode,
    /// What a rollout is rewarded for (see Values).
    pub reward: RewardSchedule,
    /// Samples per prompt: GRPO's advantages compare them.
    #[serde(default = "group_8")]
    pub group_size: GroupSize,
    /// Prompts (groups) trained on per step.
    #[serde(default = "prompts_16")]
    pub prompts_per_step: PositiveCount,
    /// PPO's lower clip bound: the ratio may fall to 1 - `clip_low`.
    #[serde(default = "clip")]
    pub clip_low: ClipBound,
    /// The upper clip bound (clip-higher); at least `clip_low`.
    #[serde(default = "clip")]
    pub clip_high: ClipBound,
    /// AdamW's learning rate, constant after `warmup_steps`.
    pub learning_rate: LearningRate,
    /// RL steps over which the learning rate rises linearly to `learning_rate` (0: none, as
    /// the reference).
    #[serde(default)]
    pub warmup_steps: u64,
    /// AdamW's decoupled weight decay, applied to matrices only (not to norms or biases).
    #[serde(default = "weight_decay")]
    pub weight_decay: NonNegative,
    /// RL steps: each rolls out, rewards and updates once.
    pub steps: PositiveCount,
    /// Samples per optimiser update: a step's kept samples are shuffled and cut into
    /// mini-batches of this size (the last one may be smaller), one PPO epoch.
    #[serde(default = "mini_batch_64")]
    pub mini_batch_size: PositiveCount,
    /// Sampling temperature of the rollouts; the PPO ratio's log-probabilities come from the
    /// same tempered (and top-p-truncated) distribution. Must be above 0.
    #[serde(default = "temperature")]
    pub temperature: NonNegative,
    /// Nucleus sampling: tokens outside the top `top_p` of probability are never drawn.
    #[serde(default = "top_p")]
    pub top_p: Fraction,
    /// Weight of the KL penalty to the stage's starting weights (0: none, as DAPO).
    #[serde(default = "zero")]
    pub kl_coef: NonNegative,
    /// DAPO dynamic sampling: groups whose rewards are all equal teach nothing and are dropped,
    /// and new prompts are rolled out until `prompts_per_step` groups with signal are kept.
    #[serde(default = "yes")]
    pub dynamic_sampling: bool,
    /// The most rounds of `prompts_per_step` prompts dynamic sampling rolls out in one step;
    /// the step trains on what it kept by then.
    #[serde(default = "sampling_rounds")]
    pub max_sampling_rounds: PositiveCount,
    /// The response's length budget: main text, paths and summaries together.
    #[serde(default = "response_tokens")]
    pub max_response_tokens: PositiveCount,
    /// Tokens one path may take, its tags included, before `</Path>` is forced.
    #[serde(default = "path_tokens")]
    pub max_path_tokens: PositiveCount,
    /// Parallel blocks a response may open; later `<Parallel>` tokens are not sampled.
    #[serde(default = "max_blocks")]
    pub max_blocks: u32,
    /// Gradients are clipped to this global norm.
    #[serde(default = "grad_clip")]
    pub grad_clip: Positive,
    /// Saves a checkpoint every this many steps, besides the final one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<PositiveCount>,
    /// Evaluates on `eval_dataset` every this many steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<PositiveCount>,
    /// The held-out set of periodic evaluation (needed with `eval_every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_dataset: Option<DatasetRef>,
    /// Samples per prompt in periodic evaluation (Mean@k, Pass@k).
    #[serde(default = "k_one")]
    pub eval_k: EvalK,
    /// Also decodes every evaluation prompt once greedily and reports that accuracy.
    #[serde(default)]
    pub eval_greedy: bool,
    /// Evaluates on the first this many prompts of `eval_dataset`; all of them when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_max_prompts: Option<PositiveCount>,
}

/// Evaluation: Mean@k and Pass@k on a benchmark split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalStage {
    /// Unique within the spec; names the stage's run and its checkpoints.
    pub name: StageName,
    /// The benchmark: a dataset reference (see Datasets below); rows need an answer.
    pub dataset: DatasetRef,
    /// Starts from an earlier stage's checkpoint instead of the previous stage's final one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<InitFrom>,
    /// How the paths of a parallel block see each other (`seen` or `unseen`; see Values).
    #[serde(default)]
    pub attention: Attention,
    /// `fp32`, or `bf16` weights with float32 optimiser state (see Values).
    #[serde(default)]
    pub precision: Precision,
    /// What the daemon that runs this stage must have (device, GPU memory, labels); any daemon
    /// when left out.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// Paths a parallel block forks into.
    #[serde(default = "two_paths")]
    pub paths: Paths,
    /// `parallel` decoding forks at `<Parallel>`; `sequential` never does.
    #[serde(default)]
    pub mode: RolloutMode,
    /// Samples per prompt: Mean@k averages their accuracy, Pass@k counts a prompt solved by any.
    #[serde(default = "k_one")]
    pub k: EvalK,
    /// Also decodes every prompt once greedily and reports that accuracy beside Mean@k, as an
    /// extra column.
    #[serde(default)]
    pub greedy: bool,
    /// 0 decodes greedily.
    #[serde(default = "temperature")]
    pub temperature: NonNegative,
    /// Nucleus sampling: tokens outside the top `top_p` of probability are never drawn.
    #[serde(default = "top_p")]
    pub top_p: Fraction,
    /// The response's length budget: main text, paths and summaries together.
    #[serde(default = "response_tokens")]
    pub max_response_tokens: PositiveCount,
    /// Tokens one path may take, its tags included, before `</Path>` is forced.
    #[serde(default = "path_tokens")]
    pub max_path_tokens: PositiveCount,
    /// Parallel blocks a response may open; later `<Parallel>` tokens are not sampled.
    #[serde(default = "max_blocks")]
    pub max_blocks: u32,
    /// Evaluates the first this many prompts; all of them when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prompts: Option<PositiveCount>,
}

/// One stage of an experiment. Serialised flat, with `kind` naming the variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StageSpec {
    Sft(SftStage),
    Rl(RlStage),
    Eval(EvalStage),
}

/// The job kinds, one per stage kind; also the suffix of the NATS subject a job travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Sft,
    Rl,
    Eval,
}

impl StageKind {
    pub const ALL: [StageKind; 3] = [StageKind::Sft, StageKind::Rl, StageKind::Eval];

    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Sft => "sft",
            StageKind::Rl => "rl",
            StageKind::Eval => "eval",
        }
    }
}

impl StageSpec {
    pub fn name(&self) -> &StageName {
        match self {
            StageSpec::Sft(s) => &s.name,
            StageSpec::Rl(s) => &s.name,
            StageSpec::Eval(s) => &s.name,
        }
    }

    pub fn kind(&self) -> StageKind {
        match self {
            StageSpec::Sft(_) => StageKind::Sft,
            StageSpec::Rl(_) => StageKind::Rl,
            StageSpec::Eval(_) => StageKind::Eval,
        }
    }

    /// The datasets the stage reads, each with its field's name.
    pub fn datasets(&self) -> Vec<(&'static str, &DatasetRef)> {
        match self {
            StageSpec::Sft(s) => vec![("dataset", &s.dataset)],
            StageSpec::Rl(s) => std::iter::once(("dataset", &s.dataset))
                .chain(s.eval_dataset.as_ref().map(|d| ("eval_dataset", d)))
                .collect(),
            StageSpec::Eval(s) => vec![("dataset", &s.dataset)],
        }
    }

    pub fn init_from(&self) -> Option<&InitFrom> {
        match self {
            StageSpec::Sft(s) => s.init_from.as_ref(),
            StageSpec::Rl(s) => s.init_from.as_ref(),
            StageSpec::Eval(s) => s.init_from.as_ref(),
        }
    }

    pub fn resources(&self) -> &Resources {
        match self {
            StageSpec::Sft(s) => &s.resources,
            StageSpec::Rl(s) => &s.resources,
            StageSpec::Eval(s) => &s.resources,
        }
    }

    /// The daemons its jobs go to: verl bridges, or trainers with the device it needs.
    pub fn route(&self) -> JobRoute {
        match (self.backend(), self.resources().device_kind()) {
            (Backend::Verl, _) => JobRoute::Verl,
            (Backend::Tch, Some(device)) => JobRoute::Device(device),
            (Backend::Tch, None) => JobRoute::Any,
        }
    }

    /// Whether `worker` can run this stage; if not, what it lacks.
    pub fn fits(&self, worker: &crate::jobs::WorkerInfo) -> Result<(), String> {
        if worker.backend != self.backend() {
            return Err(format!(
                "it runs {} stages, not {}",
                worker.backend.as_str(),
                self.backend().as_str()
            ));
        }
        self.resources().fits(worker)
    }

    /// Who runs the stage: only RL stages can go to verl.
    pub fn backend(&self) -> Backend {
        match self {
            StageSpec::Rl(s) => s.backend,
            StageSpec::Sft(_) | StageSpec::Eval(_) => Backend::Tch,
        }
    }

    pub fn precision(&self) -> Precision {
        match self {
            StageSpec::Sft(s) => s.precision,
            StageSpec::Rl(s) => s.precision,
            StageSpec::Eval(s) => s.precision,
        }
    }

    /// Whether the stage trains, and so leaves checkpoints behind.
    pub fn saves_checkpoints(&self) -> bool {
        !matches!(self, StageSpec::Eval(_))
    }

    /// Whether a checkpoint at `step` will exist once the stage has finished, when that can be
    /// known from the spec alone (an SFT stage's length depends on its dataset unless capped).
    pub fn will_have_checkpoint_at(&self, step: u64) -> Result<(), String> {
        let (total, every) = match self {
            StageSpec::Eval(_) => return Err("an eval stage saves no checkpoints".into()),
            StageSpec::Rl(s) => (Some(s.steps.get()), s.checkpoint_every),
            StageSpec::Sft(s) => (s.max_steps.map(PositiveCount::get), s.checkpoint_every),
        };
        if step == 0 {
            return Err("checkpoints are numbered from step 1".into());
        }
        if let Some(total) = total {
            if step > total {
                return Err(format!(
                    "the stage runs for {total} steps, so step {step} never happens"
                ));
            }
            if step == total {
                return Ok(());
            }
        }
        match every {
            Some(every) if step.is_multiple_of(every.get()) => Ok(()),
            Some(every) => Err(format!(
                "the stage saves checkpoints every {} steps and at its last step, not at step {step}",
                every.get()
            )),
            None => Err(format!(
                "the stage saves only its final checkpoint (set checkpoint_every to keep step {step})"
            )),
        }
    }
}
