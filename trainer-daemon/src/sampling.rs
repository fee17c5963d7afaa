//! The sampling distribution, in one place: rollouts draw tokens from it, and RL's PPO ratio and
//! entropy read log-probabilities from the very same distribution (tempered, then cut to the
//! top-p nucleus and renormalised), so the policy being optimised is the one that sampled.

use crate::batch::IGNORE;
use tch::{Device, Kind, Tensor};

/// How tokens are drawn: greedily at temperature 0, else from the top-p nucleus of the
/// distribution at `temperature`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    pub temperature: f64,
    pub top_p: f64,
}

impl Sampler {
    /// Float logits over the last dimension, divided by the temperature, with every token outside
    /// the nucleus at -inf: the smallest set, in order of probability, whose mass reaches `top_p`
    /// (the most likely token always). At temperature 0 the logits as they are.
    pub fn logits(&self, logits: &Tensor) -> Tensor {
        let logits = logits.to_kind(Kind::Float);
        if self.temperature <= 0.0 {
            return logits;
        }
        let tempered = logits / self.temperature;
        if self.top_p >= 1.0 {
            return tempered;
        }
        let (sorted, order) = tempered.softmax(-1, Kind::Float).sort(-1, true);
        let before = sorted.cumsum(-1, Kind::Float) - &sorted;
        let outside_sorted = before.gt(self.top_p);
        let outside = outside_sorted
            .zeros_like()
            .scatter(-1, &order, &outside_sorted);
        tempered.masked_fill(&outside, f64::NEG_INFINITY)
    }

    /// One token per row of (B, V) logits. `bans` (0 or -inf per row) is added to the logit of
    /// `banned` first.
    pub fn sample(&self, logits: &Tensor, bans: &[f32], banned: i64) -> Vec<i64> {
        let logits = logits.to_kind(Kind::Float);
        if bans.iter().any(|b| *b != 0.0) {
            let mut column = logits.narrow(1, banned, 1);
            column += Tensor::from_slice(bans).view([-1, 1]).to(logits.device());
        }
        let processed = self.logits(&logits);
        let picked = if self.temperature <= 0.0 {
            processed.argmax(-1, false)
        } else {
            draw(&processed.softmax(-1, Kind::Float))
        };
        Vec::<i64>::try_from(picked.to_device(Device::Cpu)).expect("token ids")
    }

    /// The distribution each target of (B, L, V) training logits was sampled from, as logits:
    /// `bans` is (B, L) bool with the token that was banned where each target was sampled, as the
    /// rollout banned it; then tempered and cut to the nucleus as in `logits`. The update passes
    /// (1, N, V): the logits at a mini-batch's N trained tokens only.
    pub fn distribution(&self, logits: &Tensor, bans: Option<(&Tensor, i64)>) -> Tensor {
        let mut logits = logits.to_kind(Kind::Float);
        if let Some((banned, token)) = bans {
            let column = logits.narrow(2, token, 1);
            let blocked = column.masked_fill(&banned.unsqueeze(-1), f64::NEG_INFINITY);
            logits = logits.slice_scatter(&blocked, 2, token, token + 1, 1);
        }
        self.logits(&logits)
    }
}

/// One token per row of (B, V) probabilities, by inverting the row's cumulative distribution at
/// one uniform draw. libtorch's `multinomial` draws one exponential per vocabulary entry instead
/// (B x V random numbers: most of a decoding step's sampling on a CPU, and about 0.75 s a step at
/// 256 rows of a 151,936-token vocabulary). The sums are in f64, so that rounding moves no mass
/// between tokens; a token of probability 0 (banned, or outside the nucleus) is never drawn,
/// since its cumulative sum equals its predecessor's, and the draw is capped at the last token
/// that has mass (the first to reach the row's total) should `u` round up to the total.
fn draw(probs: &Tensor) -> Tensor {
    let cumulative = probs.cumsum(-1, Kind::Double);
    let vocabulary = *cumulative.size().last().expect("(B, V) probabilities");
    let total = cumulative.narrow(-1, vocabulary - 1, 1);
    // As `multinomial` did, fail rather than draw from rows of NaN (a diverged model's logits).
    assert!(
        total.isfinite().all().int64_value(&[]) == 1,
        "sampling from logits that are not finite: the model's outputs hold NaN or infinity"
    );
    let u = Tensor::rand_like(&total) * &total;
    // The first index whose cumulative sum exceeds u.
    u.searchsorted(&cumulative, false, true, "right", None::<Tensor>)
        .squeeze_dim(-1)
        .minimum(&cumulative.argmax(-1, false))
}

/// Log-probabilities of the next-token targets under `distribution` (from
/// `Sampler::distribution`), (B, L); 0 where the target is `IGNORE`. The target's logit minus
/// its row's logsumexp: the backward pass keeps a (B, L) logsumexp, not a (B, L, V) log-softmax.
pub fn target_logprobs(distribution: &Tensor, targets: &Tensor) -> Tensor {
    let picked = distribution
        .gather(2, &targets.clamp_min(0).unsqueeze(-1), false)
        .squeeze_dim(-1)
        - distribution.logsumexp([-1], false);
    // An ignored target's stand-in (token 0) may lie outside the nucleus, at -inf: filled, not
    // multiplied by 0, which would be NaN.
    picked.masked_fill(&targets.eq(IGNORE), 0.0)
}

/// The entropy of `distribution` at each position, (B, L), 0 where the target is `IGNORE`; read
/// without gradients.
pub fn entropy(distribution: &Tensor, targets: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let logp = distribution.log_softmax(-1, Kind::Float);
        // 0 * -inf is NaN: tokens outside the nucleus add nothing.
        let h = -(logp.exp() * logp.nan_to_num(0.0, Some(0.0), Some(0.0))).sum_dim_intlist(
            -1,
            false,
            Kind::Float,
        );
        h.masked_fill(&targets.eq(IGNORE), 0.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_p_keeps_only_the_nucleus_and_bans_apply_per_row() {
        tch::manual_seed(3);
        // Row 0: token 2 holds 0.7 of the mass, so top-p 0.5 always picks it.
        let probs =
            Tensor::from_slice(&[0.1f32, 0.1, 0.7, 0.1, 0.25, 0.25, 0.25, 0.25]).view([2, 4]);
        let logits = probs.log();
        let nucleus = Sampler {
            temperature: 1.0,
            top_p: 0.5,
        };
        for _ in 0..20 {
            let picked = nucleus.sample(&logits, &[0.0, f32::NEG_INFINITY], 3);
            assert_eq!(picked[0], 2);
            assert_ne!(picked[1], 3, "a banned token is never sampled");
        }
        let greedy = Sampler {
            temperature: 0.0,
            top_p: 1.0,
        };
        assert_eq!(greedy.sample(&logits, &[0.0, 0.0], 3)[0], 2);
    }

    #[test]
    fn draws_follow_the_probabilities_and_never_pick_a_token_without_mass() {
        tch::manual_seed(5);
        let n = 200_000;
        // Tokens without mass at the start, in the middle and at the end of the vocabulary; a
        // row whose total is not 1 (a softmax's may miss it by rounding; this one by far).
        for probs in [[0.0f32, 0.2, 0.6, 1.2], [0.25, 0.0, 0.75, 0.0]] {
            let total: f32 = probs.iter().sum();
            let rows = Tensor::from_slice(&probs).view([1, 4]).repeat([n, 1]);
            let counts = draw(&rows).bincount(None::<Tensor>, 4);
            for (token, &p) in probs.iter().enumerate() {
                let share = counts.int64_value(&[token as i64]) as f64 / n as f64;
                let expected = f64::from(p / total);
                if p == 0.0 {
                    assert_eq!(share, 0.0, "token {token} of {probs:?} has no mass");
                } else {
                    // About ten standard errors.
                    assert!(
                        (share - expected).abs() < 0.01,
                        "{share} for {expected} in {probs:?}"
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "not finite")]
    fn logits_of_nan_are_refused_not_sampled() {
        let logits = Tensor::from_slice(&[0.0f32, f32::NAN]).view([1, 2]);
        let sampler = Sampler {
            temperature: 1.0,
            top_p: 1.0,
        };
        sampler.sample(&logits, &[0.0], 0);
    }

    #[test]
    fn an_ignored_target_outside_the_nucleus_has_log_probability_zero_not_nan() {
        // Token 0, the stand-in of an ignored target, holds 0.05 of the mass: outside the top-p
        // 0.5 nucleus, so its logit is -inf there.
        let logits = Tensor::from_slice(&[0.05f32, 0.8, 0.15, 0.05, 0.8, 0.15])
            .log()
            .view([1, 2, 3]);
        let targets = Tensor::from_slice(&[1i64, IGNORE]).view([1, 2]);
        let nucleus = Sampler {
            temperature: 1.0,
            top_p: 0.5,
        }
        .distribution(&logits, None);
        let logp = target_logprobs(&nucleus, &targets);
        assert!(logp.isfinite().all().int64_value(&[]) == 1, "{logp}");
        assert_eq!(logp.double_value(&[0, 1]), 0.0);
        assert!(
            logp.double_value(&[0, 0]).abs() < 1e-6,
            "token 1 is the whole nucleus"
        );
        assert_eq!(entropy(&nucleus, &targets).double_value(&[0, 1]), 0.0);
    }

    #[test]
    fn log_probabilities_are_those_of_the_tempered_nucleus() {
        // Probabilities 0.5, 0.3, 0.2 at temperature 1.
        let logits = Tensor::from_slice(&[0.5f32, 0.3, 0.2])
            .log()
            .view([1, 1, 3]);
        let targets = Tensor::from_slice(&[1i64]).view([1, 1]);
        let logp = |temperature, top_p| {
            let sampler = Sampler { temperature, top_p };
            target_logprobs(&sampler.distribution(&logits, None), &targets).double_value(&[0, 0])
        };
        assert!((logp(1.0, 1.0) - 0.3f64.ln()).abs() < 1e-6);
        // At temperature 2 the probabilities are proportional to their square roots.
        let roots = [0.5f64.sqrt(), 0.3f64.sqrt(), 0.2f64.sqrt()];
        let expected = (roots[1] / roots.iter().sum::<f64>()).ln();
        assert!((logp(2.0, 1.0) - expected).abs() < 1e-6);
        // Top-p 0.7 keeps 0.5 and 0.3, renormalised: 0.3 / 0.8.
        assert!((logp(1.0, 0.7) - (0.3f64 / 0.8).ln()).abs() < 1e-6);
        // The entropy of the nucleus is finite and that of two tokens.
        let nucleus = Sampler {
            temperature: 1.0,
            top_p: 0.7,
        }
        .distribution(&logits, None);
        let entropy = entropy(&nucleus, &targets);
        let (a, b) = (0.5f64 / 0.8, 0.3f64 / 0.8);
        assert!((entropy.double_value(&[0, 0]) + a * a.ln() + b * b.ln()).abs() < 1e-6);
        // A token banned where the target was sampled takes no mass: 0.3 / (0.3 + 0.2).
        let banned = Tensor::from_slice(&[true]).view([1, 1]);
        let plain = Sampler {
            temperature: 1.0,
            top_p: 1.0,
        };
        let picked = target_logprobs(&plain.distribution(&logits, Some((&banned, 0))), &targets);
        assert!((picked.double_value(&[0, 0]) - 0.6f64.ln()).abs() < 1e-6);
    }
}
