//! The GRPO objective with DAPO's refinements: group-normalised advantages, dynamic sampling
//! (groups whose rewards are all equal teach nothing and are dropped), the clipped surrogate with
//! separate lower and upper bounds (clip-higher), token-mean reduction, and an optional KL penalty
//! to a reference policy (the k3 estimator).

use tch::{Kind, Tensor};

/// Added to the group's standard deviation so that near-uniform groups do not explode.
const STD_EPS: f64 = 1e-6;

/// Per sample: `(r - mean) / (std + eps)` within its group of `group` consecutive rewards
/// (sample standard deviation). With `drop_uniform`, groups whose rewards are all equal get
/// `None` (DAPO dynamic sampling); without it they get 0.
pub fn advantages(rewards: &[f64], group: usize, drop_uniform: bool) -> Vec<Option<f64>> {
    rewards
        .chunks(group)
        .flat_map(|g| {
            let n = g.len() as f64;
            let mean = g.iter().sum::<f64>() / n;
            let uniform = g.iter().all(|r| (r - mean).abs() < 1e-12);
            let var = g.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            let std = var.sqrt();
            g.iter().map(move |r| match (uniform, drop_uniform) {
                (true, true) => None,
                (true, false) => Some(0.0),
                _ => Some((r - mean) / (std + STD_EPS)),
            })
        })
        .collect()
}

/// The clipped policy loss of one mini-batch, and what it reports.
pub struct PolicyLoss {
    pub loss: Tensor,
    /// Share of tokens whose ratio was clipped at the lower bound (negative advantage).
    pub clip_low_fraction: f64,
    /// Share of tokens whose ratio was clipped at the upper bound (positive advantage).
    pub clip_high_fraction: f64,
    /// Mean of old - new log-probability: an estimate of KL(old || new).
    pub approx_kl: f64,
    /// The KL penalty to the reference policy (0 without one).
    pub kl: f64,
}

/// `-min(r A, clip(r, 1 - low, 1 + high) A)` averaged over the tokens, plus `kl_coef` times the
/// k3 KL estimate to `reference` when given. Every argument holds one value per trained token,
/// in the same shape (each token carries its sample's advantage).
pub fn policy_loss(
    logp: &Tensor,
    old: &Tensor,
    advantages: &Tensor,
    (low, high): (f64, f64),
    reference: Option<(&Tensor, f64)>,
) -> PolicyLoss {
    assert!(
        old.size() == logp.size() && advantages.size() == logp.size(),
        "one value per trained token in each argument"
    );
    // An empty mini-batch has a loss of 0, not the NaN of a mean over nothing.
    let tokens = logp.numel().max(1) as f64;
    let token_mean = |t: &Tensor| t.sum(Kind::Float) / tokens;
    let ratio = (logp - old).exp();
    let unclipped = &ratio * advantages;
    let clipped = ratio.clamp(1.0 - low, 1.0 + high) * advantages;
    let surrogate = unclipped.minimum(&clipped);
    let policy = -token_mean(&surrogate);
    let (clip_low_fraction, clip_high_fraction) = tch::no_grad(|| {
        let bound = clipped.lt_tensor(&unclipped);
        let share = |side: Tensor| {
            token_mean(&bound.logical_and(&side).to_kind(Kind::Float)).double_value(&[])
        };
        (share(advantages.lt(0.0)), share(advantages.gt(0.0)))
    });
    let approx_kl = tch::no_grad(|| token_mean(&(old - logp)).double_value(&[]));
    let (loss, kl) = match reference {
        Some((reference, coef)) => {
            let delta = reference - logp;
            let k3 = token_mean(&(delta.exp() - &delta - 1.0));
            let kl = tch::no_grad(|| k3.double_value(&[]));
            (policy + k3 * coef, kl)
        }
        None => (policy, 0.0),
    };
    PolicyLoss {
        loss,
        clip_low_fraction,
        clip_high_fraction,
        approx_kl,
        kl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantages_are_normalised_within_each_group() {
        let adv = advantages(&[1.0, -1.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0], 4, true);
        // Mean 0, sample std sqrt(4/3).
        let unit = 1.0 / (4.0f64 / 3.0).sqrt();
        for (got, want) in adv[..4].iter().zip([unit, -unit, unit, -unit]) {
            assert!((got.unwrap() - want).abs() < 1e-5);
        }
        assert_eq!(&adv[4..], &[None; 4], "a uniform group is dropped");
        let kept = advantages(&[0.5; 4], 4, false);
        assert_eq!(kept, vec![Some(0.0); 4]);
    }

    #[test]
    fn the_loss_is_the_token_mean_of_the_advantage_at_ratio_one() {
        // Two samples: advantage 2 with two tokens, -1 with one.
        let logp = Tensor::from_slice(&[-1.0f32, -2.0, -3.0]);
        let adv = Tensor::from_slice(&[2.0f32, 2.0, -1.0]);
        let out = policy_loss(&logp, &logp, &adv, (0.2, 0.28), None);
        // Tokens: 2, 2, -1 -> mean 1 -> loss -1.
        assert!((out.loss.double_value(&[]) + 1.0).abs() < 1e-6);
        assert_eq!((out.clip_low_fraction, out.clip_high_fraction), (0.0, 0.0));
        assert!(out.approx_kl.abs() < 1e-9);
    }

    #[test]
    fn clip_higher_bounds_the_ratio_asymmetrically() {
        // Ratios e^0.3 = 1.35 and e^-0.3 = 0.74.
        let old = Tensor::from_slice(&[-1.0f32, -1.0]).view([1, 2]);
        let logp = Tensor::from_slice(&[-0.7f32, -1.3]).view([1, 2]);
        let (r1, r2) = (0.3f64.exp(), (-0.3f64).exp());
        for (adv, bounds, clipped, loss) in [
            // A positive advantage is capped at 1 + high: 1.28 < 1.35.
            (1.0f32, (0.2, 0.28), (0.0, 0.5), -(1.28 + r2) / 2.0),
            // A higher upper bound leaves 1.35 alone.
            (1.0, (0.2, 0.4), (0.0, 0.0), -(r1 + r2) / 2.0),
            // A negative advantage is capped at 1 - low: 0.74 becomes 0.8.
            (-1.0, (0.2, 0.28), (0.5, 0.0), (r1 + 0.8) / 2.0),
        ] {
            let a = Tensor::from_slice(&[adv, adv]).view([1, 2]);
            let out = policy_loss(&logp, &old, &a, bounds, None);
            assert_eq!(
                (out.clip_low_fraction, out.clip_high_fraction),
                clipped,
                "{adv} {bounds:?}"
            );
            assert!(
                (out.loss.double_value(&[]) - loss).abs() < 1e-5,
                "{adv} {bounds:?}"
            );
        }
    }

    #[test]
    fn a_positive_advantage_raises_the_log_probability() {
        let logits =
            Tensor::zeros([1, 1, 4], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let targets = Tensor::from_slice(&[2i64]).view([1, 1]);
        let sampler = crate::sampling::Sampler {
            temperature: 1.0,
            top_p: 1.0,
        };
        let logp = crate::sampling::target_logprobs(&sampler.distribution(&logits, None), &targets);
        let old = logp.detach();
        let adv = Tensor::from_slice(&[1.0f32]).view([1, 1]);
        let out = policy_loss(&logp, &old, &adv, (0.2, 0.2), None);
        out.loss.backward();
        let grad = logits.grad().view([4]);
        assert!(
            grad.double_value(&[2]) < 0.0,
            "descent raises the chosen logit"
        );
        assert!(grad.double_value(&[0]) > 0.0);
    }

    #[test]
    fn the_kl_penalty_is_zero_at_the_reference_and_positive_elsewhere() {
        let logp = Tensor::from_slice(&[-1.0f32, -2.0]).view([1, 2]);
        let zero = Tensor::zeros([1, 2], (Kind::Float, tch::Device::Cpu));
        let same = policy_loss(&logp, &logp, &zero, (0.2, 0.2), Some((&logp, 0.1)));
        assert!(same.kl.abs() < 1e-9);
        let other = logp.shallow_clone() - 0.5;
        let off = policy_loss(&logp, &logp, &zero, (0.2, 0.2), Some((&other, 0.1)));
        assert!(off.kl > 0.0);
        assert!((off.loss.double_value(&[]) - 0.1 * off.kl).abs() < 1e-6);
    }
}
