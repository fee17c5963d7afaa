//! AdamW with decoupled weight decay and global-norm gradient clipping. Written out rather than
//! taken from libtorch so that its state (moments and step) can be checkpointed and resumed.

use anyhow::{Context, Result};
use std::path::Path;
use tch::{Tensor, nn};

pub struct AdamW {
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub step: i64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamW {
    pub fn new(vs: &nn::VarStore, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |p: &Tensor| p.zeros_like();
        AdamW {
            m: params.iter().map(|(_, p)| zeros(p)).collect(),
            v: params.iter().map(|(_, p)| zeros(p)).collect(),
            params,
            step: 0,
            betas: (0.9, 0.95),
            eps: 1e-8,
            weight_decay,
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Scales gradients so their global norm is at most `max_norm`; returns the norm before.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|(_, p)| p.grad())
            .filter(|g| g.defined())
            .collect();
        let total = tch::no_grad(|| {
            grads
                .iter()
                .map(|g| g.pow_tensor_scalar(2).sum(tch::Kind::Float))
                .fold(Tensor::from(0f32), |a, b| a + b)
                .sqrt()
        })
        .double_value(&[]);
        if total > max_norm {
            let scale = max_norm / (total + 1e-6);
            tch::no_grad(|| {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(scale);
                }
            });
        }
        total
    }

    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let (b1, b2) = self.betas;
        let c1 = 1.0 - b1.powi(self.step as i32);
        let c2 = 1.0 - b2.powi(self.step as i32);
        tch::no_grad(|| {
            for (i, (_, p)) in self.params.iter_mut().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let _ = self.m[i].g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
                let _ = self.v[i].g_mul_scalar_(b2).g_add_(&(&g * &g * (1.0 - b2)));
                let update = (&self.m[i] / c1) / ((&self.v[i] / c2).sqrt() + self.eps);
                let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
                let _ = p.g_sub_(&(update * lr));
            }
        });
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            named.push((format!("m.{name}"), self.m[i].shallow_clone()));
            named.push((format!("v.{name}"), self.v[i].shallow_clone()));
        }
        named.push(("step".into(), Tensor::from(self.step)));
        Tensor::write_safetensors(&named, path)
            .with_context(|| format!("writing {}", path.display()))
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let saved: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .with_context(|| format!("reading {}", path.display()))?
            .into_iter()
            .collect();
        tch::no_grad(|| -> Result<()> {
            for (i, (name, _)) in self.params.iter().enumerate() {
                self.m[i].copy_(
                    saved
                        .get(&format!("m.{name}"))
                        .with_context(|| format!("no m.{name}"))?,
                );
                self.v[i].copy_(
                    saved
                        .get(&format!("v.{name}"))
                        .with_context(|| format!("no v.{name}"))?,
                );
            }
            Ok(())
        })?;
        self.step = saved.get("step").context("no step")?.int64_value(&[]);
        Ok(())
    }
}

/// Linear warmup, then cosine decay to zero.
pub fn learning_rate(peak: f64, step: i64, warmup: i64, total: i64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}
