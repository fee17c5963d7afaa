//! Who runs an RL stage, and what a verl job needs that prl's own fields do not say: the shape of
//! the Ray cluster and verl's engine settings, with the Parallel-R1 reference scripts' values as
//! defaults.

use super::values::{Fraction, PositiveCount};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Who trains an RL stage.
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
pub enum Backend {
    /// prl's own trainer daemons (libtorch).
    #[default]
    Tch,
    /// verl's `main_ppo` on a Ray cluster, submitted and followed by a bridge daemon
    /// (`prl-trainer --ray-address`; docs/verl.md).
    Verl,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Tch => "tch",
            Backend::Verl => "verl",
        }
    }
}

/// The engine verl serves rollouts with (`actor_rollout_ref.rollout.name`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RolloutEngine {
    #[default]
    Vllm,
    Sglang,
}

impl RolloutEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutEngine::Vllm => "vllm",
            RolloutEngine::Sglang => "sglang",
        }
    }
}

/// A stage's verl job settings that prl's own fields do not cover; only with `backend = "verl"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerlSettings {
    /// GPUs per node (`trainer.n_gpus_per_node`).
    #[serde(default = "eight")]
    pub n_gpus_per_node: PositiveCount,
    /// Nodes of the Ray cluster the job spans (`trainer.nnodes`).
    #[serde(default = "one")]
    pub nnodes: PositiveCount,
    /// The longest prompt in tokens (`data.max_prompt_length`); longer ones are cut on the left.
    #[serde(default = "prompt_length")]
    pub max_prompt_length: PositiveCount,
    /// Samples per GPU in one forward-backward pass of the actor.
    #[serde(default = "two")]
    pub micro_batch_size_per_gpu: PositiveCount,
    /// Samples per GPU in one pass that computes log-probabilities.
    #[serde(default = "four")]
    pub log_prob_micro_batch_size_per_gpu: PositiveCount,
    /// Recomputes activations in the backward pass to save memory.
    #[serde(default = "yes")]
    pub gradient_checkpointing: bool,
    /// Keeps FSDP parameters and optimiser state in host memory between uses.
    #[serde(default)]
    pub offload: bool,
    /// `vllm` or `sglang`.
    #[serde(default)]
    pub rollout_engine: RolloutEngine,
    /// GPUs one rollout engine instance spans.
    #[serde(default = "one")]
    pub tensor_parallel_size: PositiveCount,
    /// The share of GPU memory the rollout engine may take.
    #[serde(default = "memory_share")]
    pub gpu_memory_utilization: Fraction,
    /// Concurrent workers of the parallel-thinking agent loop.
    #[serde(default = "agent_workers")]
    pub agent_workers: PositiveCount,
    /// Passes over the training data at most; `steps` ends the job first, as a rule.
    #[serde(default = "epochs")]
    pub total_epochs: PositiveCount,
    /// Further Hydra overrides (`key=value`, `+key=value`), appended last, as the reference
    /// scripts append their arguments: they win over what prl sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<VerlOverride>,
}

impl Default for VerlSettings {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

fn d(v: u64) -> PositiveCount {
    PositiveCount::try_from(v).expect("defaults are valid")
}
fn one() -> PositiveCount {
    d(1)
}
fn two() -> PositiveCount {
    d(2)
}
fn four() -> PositiveCount {
    d(4)
}
fn eight() -> PositiveCount {
    d(8)
}
fn prompt_length() -> PositiveCount {
    d(2000)
}
fn agent_workers() -> PositiveCount {
    d(32)
}
fn epochs() -> PositiveCount {
    d(100)
}
fn memory_share() -> Fraction {
    Fraction::try_from(0.7).expect("defaults are valid")
}
fn yes() -> bool {
    true
}

/// One Hydra override: a dotted key (optionally led by `+`, `++` or `~`), `=`, and a value
/// without line breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VerlOverride {
    key: String,
    value: String,
}

impl VerlOverride {
    /// The key without its `+`, `++` or `~`.
    pub fn key(&self) -> &str {
        self.key.trim_start_matches(['+', '~'])
    }
}

impl TryFrom<String> for VerlOverride {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not key=value"))?;
        let bare = key
            .strip_prefix("++")
            .or_else(|| key.strip_prefix(['+', '~']))
            .unwrap_or(key);
        let key_ok = !bare.is_empty()
            && bare.len() <= 200
            && bare.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !key_ok {
            return Err(format!(
                "{key:?} is not a Hydra key: dotted names of letters, digits, '_' and '-'"
            ));
        }
        if value.len() > 4096 || value.chars().any(char::is_control) {
            return Err(format!(
                "the value of {key:?} must be at most 4096 characters, without control characters"
            ));
        }
        Ok(VerlOverride {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

impl schemars::JsonSchema for VerlOverride {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "VerlOverride".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(\\+\\+|\\+|~)?[A-Za-z0-9_.-]+=[^\\n]*$",
            "examples": ["trainer.save_freq=20", "+actor_rollout_ref.rollout.agent.custom=1"]
        })
    }
}

impl From<VerlOverride> for String {
    fn from(o: VerlOverride) -> String {
        o.to_string()
    }
}

impl fmt::Display for VerlOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_dotted_keys_with_values() {
        for good in [
            "trainer.save_freq=5",
            "+actor_rollout_ref.rollout.agent.custom=1",
            "data.train_files=['a.parquet']",
            "x=",
        ] {
            let o = VerlOverride::try_from(good.to_owned()).unwrap();
            assert_eq!(o.to_string(), good);
        }
        assert_eq!(
            VerlOverride::try_from("++a.b=1".to_owned()).unwrap().key(),
            "a.b"
        );
        for bad in ["no equals", "=1", "a..b=1", "a b=1", "a=1\n2", "a;rm=1"] {
            assert!(VerlOverride::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }
}
