//! Grouped-query self-attention with optional per-head q/k RMSNorm (Qwen3) and a KV cache.

use super::rope::Rotation;
use super::{ModelConfig, RmsNorm};
use tch::Tensor;
use tch::nn::{self, Module};

/// Keys and values of earlier tokens, per layer, after RoPE: (B, KV heads, S, D).
#[derive(Debug, Default)]
pub struct LayerCache {
    pub k: Option<Tensor>,
    pub v: Option<Tensor>,
}

#[derive(Debug)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
}

impl KvCache {
    /// Cached tokens so far.
    pub fn len(&self) -> i64 {
        self.layers
            .first()
            .and_then(|l| l.k.as_ref())
            .map(|k| k.size()[2])
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
pub struct Attention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    o_proj: nn::Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    pub fn new(vs: nn::Path, cfg: &ModelConfig) -> Self {
        let (h, d) = (cfg.hidden_size, cfg.head_dim());
        let (heads, kv_heads) = (cfg.num_attention_heads, cfg.num_key_value_heads());
        let qkv = nn::LinearConfig {
            bias: cfg.attention_bias(),
            ..Default::default()
        };
        let no_bias = nn::LinearConfig {
            bias: false,
            ..Default::default()
        };
        let qk_norm = cfg.has_qk_norm();
        Attention {
            q_proj: nn::linear(&vs / "q_proj", h, heads * d, qkv),
            k_proj: nn::linear(&vs / "k_proj", h, kv_heads * d, qkv),
            v_proj: nn::linear(&vs / "v_proj", h, kv_heads * d, qkv),
            o_proj: nn::linear(&vs / "o_proj", heads * d, h, no_bias),
            q_norm: qk_norm.then(|| RmsNorm::new(&vs / "q_norm", d, cfg.rms_norm_eps)),
            k_norm: qk_norm.then(|| RmsNorm::new(&vs / "k_norm", d, cfg.rms_norm_eps)),
            heads,
            kv_heads,
            head_dim: d,
        }
    }

    /// `x` is (B, L, H); `mask` additive (B, 1, L, S) or causal when absent.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &Rotation,
        mask: Option<&Tensor>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor {
        let (b, l, _) = x.size3().expect("(B, L, H) activations");
        let split = |t: Tensor, heads: i64, norm: &Option<RmsNorm>| {
            let t = t.view([b, l, heads, self.head_dim]);
            let t = match norm {
                Some(norm) => norm.forward(&t),
                None => t,
            };
            t.transpose(1, 2) // (B, heads, L, D)
        };
        let q = rope.apply(&split(self.q_proj.forward(x), self.heads, &self.q_norm));
        let mut k = rope.apply(&split(self.k_proj.forward(x), self.kv_heads, &self.k_norm));
        let mut v = split(self.v_proj.forward(x), self.kv_heads, &None);
        let had_cache = cache.as_ref().is_some_and(|c| c.k.is_some());
        if let Some(cache) = cache {
            if let (Some(pk), Some(pv)) = (&cache.k, &cache.v) {
                k = Tensor::cat(&[pk, &k], 2);
                v = Tensor::cat(&[pv, &v], 2);
            }
            cache.k = Some(k.shallow_clone());
            cache.v = Some(v.shallow_clone());
        }
        // Grouped-query attention inside SDPA (`enable_gqa`): no copies of repeated key heads.
        let gqa = self.heads != self.kv_heads;
        // Without a mask, new tokens see every cached token and the new ones up to themselves.
        // SDPA's own causal flag aligns to the top-left, which is only right without a cache.
        let continued =
            (mask.is_none() && had_cache && l > 1).then(|| causal_after_cache(l, k.size()[2], &q));
        let mask = mask.or(continued.as_ref());
        let causal = mask.is_none() && !had_cache;
        let out = Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, causal, None, gqa);
        self.o_proj.forward(&out.transpose(1, 2).contiguous().view([
            b,
            l,
            self.heads * self.head_dim,
        ]))
    }
}

/// Additive (1, 1, L, S) mask: new token i sees the S - L cached tokens and new tokens up to i.
fn causal_after_cache(l: i64, s: i64, like: &Tensor) -> Tensor {
    let allowed = Tensor::ones([l, s], (tch::Kind::Bool, like.device())).tril(s - l);
    Tensor::zeros([l, s], (like.kind(), like.device()))
        .masked_fill(&allowed.logical_not(), f64::NEG_INFINITY)
        .view([1, 1, l, s])
}
