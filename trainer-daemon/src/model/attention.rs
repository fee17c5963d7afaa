//! Grouped-query self-attention with optional per-head q/k RMSNorm (Qwen3) and a KV cache.

use super::rope::Rotation;
use super::{ModelConfig, RmsNorm, rms_norm};
use tch::Tensor;
use tch::nn::{self, Module};

/// Keys and values of earlier tokens, per layer, after RoPE: (B, KV heads, S, D) held in buffers
/// with room for more columns, so that a decoding step writes its own column instead of copying
/// the whole cache (which made decoding quadratic in the response length).
#[derive(Debug, Default)]
pub struct LayerCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    /// Columns in use; the buffers' third dimension is the capacity.
    len: i64,
}

impl LayerCache {
    /// The cached keys, (B, KV heads, S, D): a view of the buffer.
    pub fn keys(&self) -> Option<Tensor> {
        self.k.as_ref().map(|k| k.narrow(2, 0, self.len))
    }

    /// The cached values, shaped as the keys.
    pub fn values(&self) -> Option<Tensor> {
        self.v.as_ref().map(|v| v.narrow(2, 0, self.len))
    }

    /// Appends the columns of `k` and `v`, growing the buffers geometrically when full.
    fn append(&mut self, k: &Tensor, v: &Tensor) {
        let added = k.size()[2];
        let needed = self.len + added;
        let capacity = self.k.as_ref().map_or(0, |b| b.size()[2]);
        if needed > capacity {
            let grown = needed + needed / 2 + 16;
            for (buffer, like) in [(&mut self.k, k), (&mut self.v, v)] {
                let mut size = like.size();
                size[2] = grown;
                let fresh = Tensor::empty(size, (like.kind(), like.device()));
                if let Some(old) = buffer.as_ref() {
                    fresh
                        .narrow(2, 0, self.len)
                        .copy_(&old.narrow(2, 0, self.len));
                }
                *buffer = Some(fresh);
            }
        }
        for (buffer, new) in [(&self.k, k), (&self.v, v)] {
            let buffer = buffer.as_ref().expect("allocated above");
            buffer.narrow(2, self.len, added).copy_(new);
        }
        self.len = needed;
    }
}

#[derive(Debug)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
}

impl KvCache {
    /// Cached tokens so far.
    pub fn len(&self) -> i64 {
        self.layers.first().map_or(0, |l| l.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows of the batch the cache holds.
    pub fn rows(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.k.as_ref())
            .map_or(0, |k| k.size()[0] as usize)
    }

    /// Rebuilds the cache from entries it holds: new row `i` holds the keys and values cached at
    /// the (row, column) pairs `sources[i]`, in the last of `width` columns; the columns before
    /// them hold anything (no mask opens them). One copy per buffer, room to grow included.
    pub fn gather(&mut self, sources: &[Vec<(usize, usize)>], width: usize) {
        let Some(first) = self.layers.first().and_then(|l| l.k.as_ref()) else {
            return;
        };
        let (_, heads, capacity, dim) = first.size4().expect("(B, H, S, D) cache");
        let device = first.device();
        let (heads, capacity) = (heads as usize, capacity as usize);
        let grown = width + width / 2 + 16;
        // Row `r`, head `h`, column `c` of a contiguous (B, H, capacity, D) buffer seen as
        // (B * H * capacity, D) is entry (r * H + h) * capacity + c: the host writes each
        // source's head-0 entry, the device adds every head's offset; padding reads head h's
        // first entry.
        let mut base = vec![0i64; sources.len() * grown];
        for (row, srcs) in sources.iter().enumerate() {
            let out = &mut base[row * grown + width - srcs.len()..][..srcs.len()];
            for (slot, &(r, c)) in out.iter_mut().zip(srcs) {
                *slot = (r * heads * capacity + c) as i64;
            }
        }
        let head_offsets =
            Tensor::arange(heads as i64, (tch::Kind::Int64, device)) * capacity as i64;
        let index =
            (Tensor::from_slice(&base)
                .to(device)
                .view([sources.len() as i64, 1, grown as i64])
                + head_offsets.view([1, -1, 1]))
            .view([-1]);
        let shape = [sources.len() as i64, heads as i64, grown as i64, dim];
        for layer in &mut self.layers {
            for buffer in [&mut layer.k, &mut layer.v] {
                let old = buffer.take().expect("every layer is filled");
                *buffer = Some(old.view([-1, dim]).index_select(0, &index).view(shape));
            }
            layer.len = width as i64;
        }
    }
}

#[derive(Debug)]
pub struct Attention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    o_proj: nn::Linear,
    /// Qwen3's per-head norms of queries and of keys.
    qk_norm: Option<(RmsNorm, RmsNorm)>,
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
            qk_norm: qk_norm.then(|| {
                (
                    RmsNorm::new(&vs / "q_norm", d, cfg.rms_norm_eps),
                    RmsNorm::new(&vs / "k_norm", d, cfg.rms_norm_eps),
                )
            }),
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
        let (heads, kv_heads, d) = (self.heads, self.kv_heads, self.head_dim);
        // Queries and keys go through their norms and the rotation as one tensor: a decoding
        // step of a small model is bound by the number of kernels, not by their work.
        let qk = Tensor::cat(
            &[
                self.q_proj.forward(x).view([b, l, heads, d]),
                self.k_proj.forward(x).view([b, l, kv_heads, d]),
            ],
            2,
        );
        let qk = match &self.qk_norm {
            Some((q_norm, k_norm)) => {
                let weight = Tensor::cat(
                    &[
                        q_norm.weight.expand([heads, d], false),
                        k_norm.weight.expand([kv_heads, d], false),
                    ],
                    0,
                );
                rms_norm(&qk, &weight, q_norm.eps)
            }
            None => qk,
        };
        let qk = rope.apply(&qk.transpose(1, 2)); // (B, heads + KV heads, L, D)
        let q = qk.narrow(1, 0, heads);
        let mut k = qk.narrow(1, heads, kv_heads);
        let mut v = self
            .v_proj
            .forward(x)
            .view([b, l, kv_heads, d])
            .transpose(1, 2);
        let had_cache = cache.as_ref().is_some_and(|c| c.len > 0);
        if let Some(cache) = cache {
            cache.append(&k, &v);
            k = cache.keys().expect("just appended");
            v = cache.values().expect("just appended");
        }
        // Grouped-query attention inside SDPA (`enable_gqa`): no copies of repeated key heads.
        let gqa = self.heads != self.kv_heads;
        // Without a mask, new tokens see every cached token and the new ones up to themselves.
        // SDPA's own causal flag aligns to the top-left, which is only right without a cache.
        let continued =
            (mask.is_none() && had_cache && l > 1).then(|| causal_after_cache(l, k.size()[2], &q));
        let mask = mask.or(continued.as_ref());
        let causal = mask.is_none() && !had_cache;
        let out = if gqa && l == 1 {
            // One new token: the query heads that share a key head become the rows of one
            // product, which reads that head's cached keys and values once; otherwise the CPU
            // kernel multiplies one vector per (row, query head).
            let group = heads / kv_heads;
            let grouped = q.view([b, kv_heads, group, d]);
            let mask = mask.map(|m| m.expand([b, 1, group, k.size()[2]], false));
            Tensor::scaled_dot_product_attention(
                &grouped,
                &k,
                &v,
                mask.as_ref(),
                0.0,
                false,
                None,
                false,
            )
            // CPU kernels return the block contiguous (a view); CUDA's fused kernels return it
            // transposed, which only a copy can regroup.
            .reshape([b, heads, 1, d])
        } else {
            Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, causal, None, gqa)
        };
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
