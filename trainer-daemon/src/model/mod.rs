//! A decoder-only transformer of the Llama / Qwen2 / Qwen3 family in tch, built from a Hugging
//! Face `config.json`. Parameter paths are nested exactly as HF names them, so `model.safetensors`
//! files move both ways without a mapping table.

mod attention;
mod config;
mod rope;
pub mod weights;

pub use attention::KvCache;
pub use config::ModelConfig;

use anyhow::{Context, Result};
use attention::Attention;
use std::path::Path;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// RMSNorm, computed in fp32 whatever the activations' dtype.
#[derive(Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(vs: nn::Path, size: i64, eps: f64) -> Self {
        RmsNorm {
            weight: vs.ones("weight", &[size]),
            eps,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        rms_norm(x, &self.weight, self.eps)
    }
}

/// RMSNorm over the last dimension with `weight` broadcast over the rest: stacked weights let
/// one call normalise queries and keys together.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    let kind = x.kind();
    let x = x.to_kind(Kind::Float);
    let variance = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
    (weight * (x * (variance + eps).rsqrt()).to_kind(kind)).to_kind(kind)
}

/// The SwiGLU feed-forward block.
#[derive(Debug)]
struct Mlp {
    gate_proj: nn::Linear,
    up_proj: nn::Linear,
    down_proj: nn::Linear,
}

impl Mlp {
    fn new(vs: nn::Path, cfg: &ModelConfig) -> Self {
        let no_bias = nn::LinearConfig {
            bias: false,
            ..Default::default()
        };
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Mlp {
            gate_proj: nn::linear(&vs / "gate_proj", h, i, no_bias),
            up_proj: nn::linear(&vs / "up_proj", h, i, no_bias),
            down_proj: nn::linear(&vs / "down_proj", i, h, no_bias),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.down_proj
            .forward(&(self.gate_proj.forward(x).silu() * self.up_proj.forward(x)))
    }
}

#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(vs: nn::Path, cfg: &ModelConfig) -> Self {
        DecoderLayer {
            input_layernorm: RmsNorm::new(
                &vs / "input_layernorm",
                cfg.hidden_size,
                cfg.rms_norm_eps,
            ),
            self_attn: Attention::new(&vs / "self_attn", cfg),
            post_attention_layernorm: RmsNorm::new(
                &vs / "post_attention_layernorm",
                cfg.hidden_size,
                cfg.rms_norm_eps,
            ),
            mlp: Mlp::new(&vs / "mlp", cfg),
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &rope::Rotation,
        mask: Option<&Tensor>,
        cache: Option<&mut attention::LayerCache>,
    ) -> Tensor {
        let x = x + self
            .self_attn
            .forward(&self.input_layernorm.forward(x), rope, mask, cache);
        &x + self.mlp.forward(&self.post_attention_layernorm.forward(&x))
    }
}

/// The causal language model: embeddings, decoder layers, final norm and LM head.
#[derive(Debug)]
pub struct CausalLm {
    pub config: ModelConfig,
    embed_tokens: nn::Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// Absent when the head is tied to the embeddings.
    lm_head: Option<nn::Linear>,
}

impl CausalLm {
    /// Builds the model's variables under `vs` (initialised randomly until weights are loaded).
    pub fn new(vs: &nn::Path, config: ModelConfig) -> Self {
        let model = vs / "model";
        let embed_tokens = nn::embedding(
            &model / "embed_tokens",
            config.vocab_size,
            config.hidden_size,
            Default::default(),
        );
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::new(&model / "layers" / i, &config))
            .collect();
        let norm = RmsNorm::new(&model / "norm", config.hidden_size, config.rms_norm_eps);
        let lm_head = (!config.tie_word_embeddings).then(|| {
            nn::linear(
                vs / "lm_head",
                config.hidden_size,
                config.vocab_size,
                nn::LinearConfig {
                    bias: false,
                    ..Default::default()
                },
            )
        });
        CausalLm {
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
        }
    }

    /// Logits for every position: `input_ids` and `position_ids` are (B, L); `mask` is an
    /// additive (B, 1, L, L) mask, plain causal attention when absent. Returns (B, L, V).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        mask: Option<&Tensor>,
    ) -> Tensor {
        self.logits(&self.hidden(input_ids, position_ids, mask, None))
    }

    /// Logits (N, V) at the N positions where `at` (B, L bool) is set, in row-major order: the
    /// head, the model's largest matrix for a real vocabulary, runs on those positions only (a
    /// loss's targets, not its prompts and padding).
    pub fn forward_at(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        mask: Option<&Tensor>,
        at: &Tensor,
    ) -> Tensor {
        let hidden = self.hidden(input_ids, position_ids, mask, None);
        let width = hidden.size()[2];
        self.logits(&hidden.masked_select(&at.unsqueeze(-1)).view([-1, width]))
    }

    /// The next token's logits, (B, V), after the last of the new tokens given the cache of
    /// earlier ones: `mask` is (B, 1, T, S) over the cached and new keys, causal over the new ones
    /// when absent. The head runs at that last position only: a prefill of B prompts of T tokens
    /// would otherwise hold B x T x V logits (gigabytes at a real vocabulary). Appends the new
    /// keys and values in place, so it is for decoding under `no_grad`: a backward pass through
    /// it would find the cache it read changed.
    pub fn forward_cached(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Tensor {
        let hidden = self.hidden(input_ids, position_ids, mask, Some(cache));
        self.logits(&hidden.select(1, -1))
    }

    /// The last layer's output, before the final norm.
    fn hidden(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor {
        let mut x = self.embed_tokens.forward(input_ids);
        let rope = rope::Rotation::new(&self.config, position_ids, x.kind());
        // Attention wants an additive mask in the activations' dtype (bf16 models).
        let converted = mask
            .filter(|m| m.kind() != x.kind())
            .map(|m| m.to_kind(x.kind()));
        let mask = converted.as_ref().or(mask);
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(&x, &rope, mask, layer_cache);
        }
        x
    }

    fn logits(&self, hidden: &Tensor) -> Tensor {
        let x = self.norm.forward(hidden);
        match &self.lm_head {
            Some(head) => head.forward(&x),
            None => x.matmul(&self.embed_tokens.ws.tr()),
        }
    }

    /// An empty cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: (0..self.layers.len())
                .map(|_| attention::LayerCache::default())
                .collect(),
        }
    }
}

/// A model with its variables, loaded from or saved to an HF-style directory.
pub struct LoadedModel {
    pub vs: nn::VarStore,
    pub model: CausalLm,
}

impl LoadedModel {
    /// The gradients `loss` alone gives the trainable variables (earlier ones zeroed first), in
    /// `trainable_variables` order: for tests that compare two ways of computing one loss.
    #[cfg(test)]
    pub fn gradients(&self, loss: &Tensor) -> Vec<Tensor> {
        for mut grad in self.vs.trainable_variables().iter().map(Tensor::grad) {
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
        loss.backward();
        (self.vs.trainable_variables().iter())
            .map(|v| v.grad().copy())
            .collect()
    }

    /// A randomly initialised model (the `tiny` preset starts this way): matrices drawn from
    /// N(0, 0.02) as HF's `initializer_range` does, norms at 1. tch's own defaults (N(0, 1)
    /// embeddings) make a tied head's first logits so large that training starts far off.
    pub fn random(config: ModelConfig, device: Device) -> Self {
        let LoadedModel { vs, model } = Self::unfilled(config, device);
        // In name order: the variable map's own order changes from process to process, and the
        // same seed must give the same weights.
        let mut variables: Vec<_> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| {
            for (_, mut var) in variables {
                if var.dim() == 2 {
                    let _ = var.normal_(0.0, 0.02);
                }
            }
        });
        LoadedModel { vs, model }
    }

    /// The model's variables as tch initialises them: for weights about to be loaded over them
    /// (drawing them as `random` does would cost a pass over the whole model for nothing).
    fn unfilled(config: ModelConfig, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let model = CausalLm::new(&vs.root(), config);
        LoadedModel { vs, model }
    }

    /// Loads `config.json` and the weights (one file or shards) from `dir`.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        Self::load_with_vocab(dir, device, 0)
    }

    /// Loads `dir` with at least `vocab` token rows: rows beyond the files' (tokens added to
    /// the tokenizer, such as prl's tags) start as the mean of the files' rows.
    pub fn load_with_vocab(dir: &Path, device: Device, vocab: i64) -> Result<Self> {
        let mut config = ModelConfig::from_file(&dir.join("config.json"))?;
        let in_files = config.vocab_size;
        config.vocab_size = in_files.max(vocab);
        let files = weights::files(dir)?;
        let loaded = Self::unfilled(config, device);
        weights::load_into(loaded.vs.variables(), &files, in_files)?;
        Ok(loaded)
    }

    /// Writes `config.json` and `model.safetensors` under HF names.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        self.model.config.save(&dir.join("config.json"))?;
        let weights = dir.join(weights::SINGLE_FILE);
        self.vs
            .save(&weights)
            .with_context(|| format!("writing {}", weights.display()))?;
        Ok(())
    }
}
