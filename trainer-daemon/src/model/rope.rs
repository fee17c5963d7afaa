//! Rotary position embeddings for explicit position ids, in HF's rotate-half layout.

use super::ModelConfig;
use tch::{Kind, Tensor};

/// cos and sin for each (batch, position), shaped (B, 1, L, D) to broadcast over heads; the sin's
/// first half negated, so that rotating needs no negation of its own.
#[derive(Debug)]
pub struct Rotation {
    cos: Tensor,
    signed_sin: Tensor,
}

impl Rotation {
    pub fn new(cfg: &ModelConfig, position_ids: &Tensor, kind: Kind) -> Self {
        let d = cfg.head_dim();
        let device = position_ids.device();
        let inv_freq = Tensor::arange_start_step(0, d, 2, (Kind::Float, device))
            .divide_scalar(d as f64)
            .multiply_scalar(-(cfg.rope_theta().ln()))
            .exp();
        // (B, L, D/2) -> (B, L, D)
        let freqs = position_ids.to_kind(Kind::Float).unsqueeze(-1) * inv_freq.view([1, 1, -1]);
        let (cos, sin) = (freqs.cos(), freqs.sin());
        let halves = |a: &Tensor, b: &Tensor| Tensor::cat(&[a, b], -1).to_kind(kind).unsqueeze(1);
        Rotation {
            cos: halves(&cos, &cos),
            signed_sin: halves(&sin.neg(), &sin),
        }
    }

    /// Rotates (B, H, L, D) queries or keys: x cos + rotate_half(x) sin, where rotate_half(x) is
    /// (-x2, x1); the sign rides on the sin, which changes no bit of the product.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let half = x.size()[3] / 2;
        let swapped = Tensor::cat(&[x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);
        x * &self.cos + swapped * &self.signed_sin
    }
}
