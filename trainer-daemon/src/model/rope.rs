//! Rotary position embeddings for explicit position ids, in HF's rotate-half layout.

use super::ModelConfig;
use tch::{Kind, Tensor};

/// cos and sin for each (batch, position), shaped (B, 1, L, D) to broadcast over heads.
#[derive(Debug)]
pub struct Rotation {
    cos: Tensor,
    sin: Tensor,
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
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        Rotation {
            cos: emb.cos().to_kind(kind).unsqueeze(1),
            sin: emb.sin().to_kind(kind).unsqueeze(1),
        }
    }

    /// Rotates (B, H, L, D) queries or keys.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let half = x.size()[3] / 2;
        let x1 = x.narrow(-1, 0, half);
        let x2 = x.narrow(-1, half, half);
        let rotated = Tensor::cat(&[&x2.neg(), &x1], -1);
        x * &self.cos + rotated * &self.sin
    }
}
