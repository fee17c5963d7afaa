//! AdamW with decoupled weight decay (on matrices only: norms' scales and biases are not pulled
//! towards zero) and global-norm gradient clipping. Written out rather than
//! taken from libtorch so that its state (moments and step) can be checkpointed and resumed.
//! Parameters held in a lower precision (bf16) get float32 master weights here: the update is
//! computed on the master and copied back, so small steps are not rounded away.

use anyhow::{Context, Result};
use std::path::Path;
use tch::{Kind, Tensor, nn};

pub struct AdamW {
    params: Vec<(String, Tensor)>,
    /// Whether each parameter is decayed: matrices are, vectors (norms, biases) are not.
    decays: Vec<bool>,
    /// float32 copies of the parameters that are not float32.
    masters: Vec<Option<Tensor>>,
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
        let masters: Vec<Option<Tensor>> = params
            .iter()
            .map(|(_, p)| (p.kind() != Kind::Float).then(|| p.detach().to_kind(Kind::Float)))
            .collect();
        let zeros = |p: &Tensor| p.zeros_like().to_kind(Kind::Float);
        AdamW {
            decays: params.iter().map(|(_, p)| p.dim() >= 2).collect(),
            m: params.iter().map(|(_, p)| zeros(p)).collect(),
            v: params.iter().map(|(_, p)| zeros(p)).collect(),
            masters,
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
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        let total = tch::no_grad(|| Tensor::stack(&norms, 0).norm()).double_value(&[]);
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
                let mut g = p.grad();
                if !g.defined() {
                    continue;
                }
                if self.masters[i].is_some() {
                    g = g.to_kind(Kind::Float);
                }
                // In-place fused forms: fewer temporaries and kernel launches per parameter.
                let _ = self.m[i].lerp_(&g, 1.0 - b1);
                let _ = self.v[i].lerp_(&g.square(), 1.0 - b2);
                let mut denom = self.v[i].sqrt();
                let _ = denom.g_div_scalar_(c2.sqrt()).g_add_scalar_(self.eps);
                let target = self.masters[i].as_mut().unwrap_or(p);
                if self.decays[i] {
                    let _ = target.g_mul_scalar_(1.0 - lr * self.weight_decay);
                }
                let _ = target.addcdiv_(&(&self.m[i] * (-lr / c1)), &denom);
                if let Some(master) = &self.masters[i] {
                    p.copy_(master);
                }
            }
        });
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            named.push((format!("m.{name}"), self.m[i].shallow_clone()));
            named.push((format!("v.{name}"), self.v[i].shallow_clone()));
            if let Some(master) = &self.masters[i] {
                named.push((format!("w.{name}"), master.shallow_clone()));
            }
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
                // A master saved with the state is exact; else the loaded weights are the truth.
                if let Some(master) = &mut self.masters[i] {
                    match saved.get(&format!("w.{name}")) {
                        Some(saved) => master.copy_(saved),
                        None => master.copy_(&self.params[i].1),
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_adamw_steps_match_the_textbook_update_and_decay_only_matrices() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        // A matrix (decayed) and a norm's scale (not decayed), with the same values.
        let w = root.var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]).view([1, 2]));
        let n = root.var_copy("n", &Tensor::from_slice(&[1.0f32, -2.0]));
        let mut opt = AdamW::new(&vs, 0.1);
        let (lr, (b1, b2), eps) = (0.01, opt.betas, opt.eps);
        for _ in 0..2 {
            opt.zero_grad();
            // loss = sum(p^2) / 2 over both, so each gradient is the parameter itself.
            let loss = ((&w * &w).sum(tch::Kind::Float) + (&n * &n).sum(tch::Kind::Float)) / 2.0;
            loss.backward();
            opt.step(lr);
        }
        let textbook = |wd: f64| {
            let mut p = [1.0f64, -2.0];
            let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
            for t in 1..=2 {
                for i in 0..2 {
                    let g = p[i];
                    m[i] = b1 * m[i] + (1.0 - b1) * g;
                    v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                    let mhat = m[i] / (1.0 - b1.powi(t));
                    let vhat = v[i] / (1.0 - b2.powi(t));
                    p[i] = p[i] * (1.0 - lr * wd) - lr * mhat / (vhat.sqrt() + eps);
                }
            }
            p
        };
        for (p, wd) in [(&w, 0.1), (&n, 0.0)] {
            let got: Vec<f32> = Vec::try_from(p.flatten(0, -1)).unwrap();
            let expect = textbook(wd);
            for i in 0..2 {
                assert!(
                    (got[i] as f64 - expect[i]).abs() < 1e-6,
                    "{got:?} vs {expect:?} (weight decay {wd})"
                );
            }
        }
    }

    #[test]
    fn clipping_scales_the_global_norm_down_to_the_limit() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let p = vs.root().var_copy("p", &Tensor::from_slice(&[3.0f32, 4.0]));
        let mut opt = AdamW::new(&vs, 0.0);
        (&p * &p).sum(tch::Kind::Float).backward(); // gradient 2p = (6, 8), norm 10
        assert!((opt.clip_grad_norm(1.0) - 10.0).abs() < 1e-5);
        let g: Vec<f32> = Vec::try_from(&p.grad()).unwrap();
        assert!(
            (g[0] - 0.6).abs() < 1e-4 && (g[1] - 0.8).abs() < 1e-4,
            "{g:?}"
        );
    }

    #[test]
    fn the_schedule_warms_up_then_decays_to_zero() {
        assert!((learning_rate(1.0, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(1.0, 9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!(learning_rate(1.0, 100, 10, 100).abs() < 1e-12);
    }
}
