//! AdamW with decoupled weight decay (on matrices only: norms' scales and biases are not pulled
//! towards zero) and global-norm gradient clipping. Written out rather than
//! taken from libtorch so that its state (moments and step) can be checkpointed and resumed.
//! Parameters held in a lower precision (bf16) get float32 master weights here: the update is
//! computed on the master and copied back, so small steps are not rounded away.
//!
//! The parameters of one kind and decay live end to end in one buffer (each parameter, and
//! after the first backward its gradient, is a view of it), so clipping and the update are a
//! few kernels per group (per chunk of it, `chunk_len`) rather than per parameter tensor:
//! libtorch's multi-tensor and fused optimiser kernels are not reachable from tch, and on a GPU
//! the per-tensor launches were 16 % of a tiny model's step.

use anyhow::{Context, Result};
use std::path::Path;
use tch::{Kind, Tensor, nn};

/// A parameter's place in its group's buffers.
struct Member {
    name: String,
    param: Tensor,
    offset: i64,
    numel: i64,
}

/// Parameters of one kind and decay, laid out end to end.
struct Group {
    decays: bool,
    members: Vec<Member>,
    params: Tensor,
    grads: Tensor,
    /// float32 copy of `params` when they are not float32.
    master: Option<Tensor>,
    m: Tensor,
    v: Tensor,
}

impl Group {
    fn new(decays: bool, members: Vec<(String, Tensor)>) -> Group {
        let mut offset = 0;
        let members: Vec<Member> = members
            .into_iter()
            .map(|(name, param)| {
                let numel = param.numel() as i64;
                offset += numel;
                Member {
                    name,
                    param,
                    offset: offset - numel,
                    numel,
                }
            })
            .collect();
        let first = &members[0].param;
        let params = Tensor::empty([offset], (first.kind(), first.device()));
        let master =
            (first.kind() != Kind::Float).then(|| params.zeros_like().to_kind(Kind::Float));
        let zeros = || Tensor::zeros([offset], (Kind::Float, first.device()));
        let mut group = Group {
            decays,
            grads: params.zeros_like(),
            m: zeros(),
            v: zeros(),
            master,
            params,
            members,
        };
        group.take_params();
        group
    }

    /// Binds the members to the flat buffers and copies the weights into the float32 master.
    fn take_params(&mut self) {
        self.bind();
        if let Some(master) = &mut self.master {
            tch::no_grad(|| master.copy_(&self.params));
        }
    }

    fn view(flat: &Tensor, member: &Member) -> Tensor {
        flat.narrow(0, member.offset, member.numel)
            .view(member.param.size().as_slice())
    }

    /// Makes every parameter, and every gradient there is, a view of the group's buffers again
    /// where it is not: at the start, after the first backward (which allocates gradients) and
    /// after anything that gave a parameter new storage (loading weights of another kind).
    /// Checking is a pointer comparison per parameter; nothing is launched unless one moved.
    fn bind(&mut self) {
        let elt = self.params.kind().elt_size_in_bytes();
        let (params_at, grads_at) = (
            self.params.data_ptr() as usize,
            self.grads.data_ptr() as usize,
        );
        tch::no_grad(|| {
            for member in &mut self.members {
                let at = member.offset as usize * elt;
                if member.param.data_ptr() as usize != params_at + at {
                    let mut place = Self::view(&self.params, member);
                    place.copy_(&member.param);
                    member.param.set_data(&place);
                }
                let mut grad = member.param.grad();
                if !grad.defined() {
                    // No gradient this step: the update treats it as zero.
                    let _ = Self::view(&self.grads, member).zero_();
                } else if grad.data_ptr() as usize != grads_at + at {
                    let mut place = Self::view(&self.grads, member);
                    place.copy_(&grad);
                    grad.set_data(&place);
                }
            }
        });
    }

    fn has_grads(&self) -> bool {
        self.members.iter().any(|m| m.param.grad().defined())
    }
}

/// Elements updated at a time. The update makes about a dozen passes over its buffers: on a CPU
/// a chunk's buffers stay in cache across them, and no step allocates (or faults in) buffers as
/// large as the model; on a GPU chunks are large, so launches stay few.
fn chunk_len(device: tch::Device) -> i64 {
    if device.is_cuda() { 1 << 24 } else { 1 << 16 }
}

pub struct AdamW {
    groups: Vec<Group>,
    pub step: i64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamW {
    pub fn new(vs: &nn::VarStore, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        // Matrices are decayed, vectors (norms, biases) are not.
        let key = |p: &Tensor| (p.kind(), p.dim() >= 2);
        let mut keys: Vec<(Kind, bool)> = Vec::new();
        for (_, param) in &params {
            if !keys.contains(&key(param)) {
                keys.push(key(param));
            }
        }
        AdamW {
            groups: keys
                .into_iter()
                .map(|k| {
                    let members = params.iter().filter(|(_, p)| key(p) == k);
                    let members = members.map(|(n, p)| (n.clone(), p.shallow_clone()));
                    Group::new(k.1, members.collect())
                })
                .collect(),
            step: 0,
            betas: (0.9, 0.95),
            eps: 1e-8,
            weight_decay,
        }
    }

    pub fn zero_grad(&mut self) {
        for group in &mut self.groups {
            group.bind();
            let _ = group.grads.zero_();
        }
    }

    /// Scales gradients so their global norm is at most `max_norm`; returns the norm before.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        if !self.groups.iter().any(Group::has_grads) {
            return 0.0;
        }
        for group in &mut self.groups {
            group.bind();
        }
        let norms: Vec<Tensor> = self
            .groups
            .iter()
            .map(|g| g.grads.norm().to_kind(Kind::Float))
            .collect();
        let total = tch::no_grad(|| Tensor::stack(&norms, 0).norm()).double_value(&[]);
        if total > max_norm {
            let scale = max_norm / (total + 1e-6);
            tch::no_grad(|| {
                for group in &mut self.groups {
                    let _ = group.grads.g_mul_scalar_(scale);
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
        for group in &mut self.groups {
            group.bind();
        }
        let (eps, decay) = (self.eps, 1.0 - lr * self.weight_decay);
        tch::no_grad(|| {
            for group in &mut self.groups {
                let total = group.params.numel() as i64;
                let chunk = chunk_len(group.params.device()).min(total);
                let buffer = || Tensor::empty([chunk], (Kind::Float, group.params.device()));
                // A chunk's gradient in float32 (for lower-precision groups), and its update.
                let (wide, update) = (buffer(), buffer());
                for start in (0..total).step_by(chunk as usize) {
                    let len = chunk.min(total - start);
                    let part = |t: &Tensor| t.narrow(0, start, len);
                    let g = match group.master {
                        Some(_) => {
                            let mut g = wide.narrow(0, 0, len);
                            g.copy_(&part(&group.grads));
                            g
                        }
                        None => part(&group.grads),
                    };
                    let mut u = update.narrow(0, 0, len);
                    let _ = part(&group.m).lerp_(&g, 1.0 - b1);
                    u.copy_(&g);
                    let _ = u.g_mul_(&g);
                    let _ = part(&group.v).lerp_(&u, 1.0 - b2);
                    u.copy_(&part(&group.v));
                    let _ = u.sqrt_().g_div_scalar_(c2.sqrt()).g_add_scalar_(eps);
                    let _ = part(&group.m).div_out(&u, &u);
                    let _ = u.g_mul_scalar_(-lr / c1);
                    let mut target = part(group.master.as_ref().unwrap_or(&group.params));
                    if group.decays {
                        let _ = target.g_mul_scalar_(decay);
                    }
                    let _ = target.g_add_(&u);
                }
                if let Some(master) = &group.master {
                    group.params.copy_(master);
                }
            }
        });
    }

    /// Each parameter's state under its own name, as checkpoints hold it.
    fn named_state(&self) -> impl Iterator<Item = (&Group, &Member)> {
        self.groups
            .iter()
            .flat_map(|g| g.members.iter().map(move |m| (g, m)))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (group, member) in self.named_state() {
            let name = &member.name;
            named.push((format!("m.{name}"), Group::view(&group.m, member)));
            named.push((format!("v.{name}"), Group::view(&group.v, member)));
            if let Some(master) = &group.master {
                named.push((format!("w.{name}"), Group::view(master, member)));
            }
        }
        named.push(("step".into(), Tensor::from(self.step)));
        Tensor::write_safetensors(&named, path)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Takes the model's weights as they are now (loaded after this optimiser was made, from a
    /// checkpoint without optimiser state) as the float32 masters; the moments stay fresh.
    pub fn take_weights(&mut self) {
        for group in &mut self.groups {
            group.take_params();
        }
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let saved: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .with_context(|| format!("reading {}", path.display()))?
            .into_iter()
            .collect();
        for group in &mut self.groups {
            group.bind();
        }
        tch::no_grad(|| -> Result<()> {
            for (group, member) in self.named_state() {
                let name = &member.name;
                let get = |key: String| saved.get(&key).with_context(|| format!("no {key}"));
                Group::view(&group.m, member).copy_(get(format!("m.{name}"))?);
                Group::view(&group.v, member).copy_(get(format!("v.{name}"))?);
                // A master saved with the state is exact; else the loaded weights are the truth.
                if let Some(master) = &group.master {
                    let mut place = Group::view(master, member);
                    match saved.get(&format!("w.{name}")) {
                        Some(saved) => place.copy_(saved),
                        None => place.copy_(&member.param),
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
    fn bf16_weights_loaded_after_the_optimiser_are_its_masters_once_taken() {
        let mut vs = nn::VarStore::new(tch::Device::Cpu);
        let mut p = vs
            .root()
            .var_copy("p", &Tensor::from_slice(&[1.0f32, -2.0]));
        vs.bfloat16();
        assert_eq!(p.kind(), Kind::BFloat16);
        let mut opt = AdamW::new(&vs, 0.0);
        // As resuming from a checkpoint without optimiser state does: weights copied in place.
        tch::no_grad(|| p.copy_(&Tensor::from_slice(&[3.0f32, 4.0])));
        opt.take_weights();
        opt.zero_grad();
        (&p * &p).sum(Kind::Float).backward();
        opt.step(0.1);
        // Adam's first step moves each weight by the learning rate against its gradient, from
        // the loaded weights, not from the ones the optimiser was made with.
        let got: Vec<f32> = Vec::try_from(p.to_kind(Kind::Float)).unwrap();
        assert!(
            (got[0] - 2.9).abs() < 2e-2 && (got[1] - 3.9).abs() < 2e-2,
            "{got:?}"
        );
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
    fn a_parameter_given_new_storage_is_trained_where_it_now_lives() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        let mut p = root.var_copy("p", &Tensor::from_slice(&[1.0f32, -2.0]));
        let q = root.var_copy("q", &Tensor::from_slice(&[5.0f32]));
        let mut opt = AdamW::new(&vs, 0.0);
        // As loading weights of another kind does: the variable gets storage of its own.
        tch::no_grad(|| p.set_data(&Tensor::from_slice(&[3.0f32, 4.0])));
        for expect in [[2.9f32, 3.9], [2.8, 3.8]] {
            opt.zero_grad();
            (&p * &p).sum(Kind::Float).backward();
            opt.step(0.1);
            // Adam's first steps move each weight by the learning rate against its gradient.
            let got: Vec<f32> = Vec::try_from(&p).unwrap();
            assert!(
                (got[0] - expect[0]).abs() < 1e-3 && (got[1] - expect[1]).abs() < 1e-3,
                "{got:?} vs {expect:?}"
            );
        }
        // `q` had no gradient: it is updated as with a zero one, which leaves it in place.
        assert_eq!(Vec::<f32>::try_from(&q).unwrap(), [5.0]);
    }

    #[test]
    fn a_group_larger_than_a_chunk_is_updated_everywhere() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let n = 2 * chunk_len(tch::Device::Cpu) + 3;
        let start = (Tensor::arange(n, (Kind::Float, tch::Device::Cpu)).remainder(7.0)) - 3.0;
        let w = vs.root().var_copy("w", &start);
        let mut opt = AdamW::new(&vs, 0.0);
        ((&w * &w).sum(Kind::Float) / 2.0).backward();
        opt.step(0.1);
        // Adam's first step moves each weight by the learning rate against its gradient (w).
        let expected = &start - start.sign() * 0.1;
        let error = (&w - expected).abs().max().double_value(&[]);
        assert!(error < 1e-5, "largest error {error}");
    }

    #[test]
    fn the_schedule_warms_up_then_decays_to_zero() {
        assert!((learning_rate(1.0, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(1.0, 9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!(learning_rate(1.0, 100, 10, 100).abs() < 1e-12);
    }
}
