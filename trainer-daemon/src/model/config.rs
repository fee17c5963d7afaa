//! The subset of a Hugging Face `config.json` that the Llama / Qwen2 / Qwen3 architectures need.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// `llama`, `qwen2` or `qwen3`.
    pub model_type: String,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<i64>,
    /// Per-head size; hidden_size / heads when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<i64>,
    pub rms_norm_eps: f64,
    /// transformers 5 writes it inside `rope_parameters` instead; see `rope_theta()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    // Read only to refuse what the architecture here does not implement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
}

fn default_max_positions() -> i64 {
    4096
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: ModelConfig = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a model config", path.display()))?;
        config
            .check()
            .with_context(|| format!("{} describes a model prl cannot run", path.display()))?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        if !matches!(self.model_type.as_str(), "llama" | "qwen2" | "qwen3") {
            bail!(
                "model_type {:?} is not one of llama, qwen2, qwen3",
                self.model_type
            );
        }
        if let Some(act) = self.hidden_act.as_deref()
            && act != "silu"
        {
            bail!("hidden_act {act:?} is not supported (only \"silu\")");
        }
        if self.mlp_bias == Some(true) {
            bail!("mlp_bias = true is not supported");
        }
        if self.use_sliding_window == Some(true) {
            bail!("use_sliding_window = true is not supported");
        }
        if self.rope_scaling.as_ref().is_some_and(|s| !s.is_null()) {
            bail!("rope_scaling is not supported");
        }
        if let Some(kind) = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p["rope_type"].as_str())
            && kind != "default"
        {
            bail!("rope_type {kind:?} is not supported");
        }
        if self.num_attention_heads % self.num_key_value_heads() != 0 {
            bail!("num_attention_heads must be a multiple of num_key_value_heads");
        }
        if self.head_dim() % 2 != 0 {
            bail!("head_dim must be even for rotary embeddings");
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// RoPE's base, from either place transformers writes it.
    pub fn rope_theta(&self) -> f64 {
        self.rope_theta
            .or_else(|| {
                self.rope_parameters
                    .as_ref()
                    .and_then(|p| p["rope_theta"].as_f64())
            })
            .unwrap_or(10_000.0)
    }

    pub fn head_dim(&self) -> i64 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub fn num_key_value_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Qwen2 puts biases on q, k and v; the others only when `attention_bias` says so.
    pub fn attention_bias(&self) -> bool {
        self.attention_bias.unwrap_or(self.model_type == "qwen2")
    }

    /// Qwen3 normalises each head's queries and keys.
    pub fn has_qk_norm(&self) -> bool {
        self.model_type == "qwen3"
    }
}
