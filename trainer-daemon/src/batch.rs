//! Training batches: right-padded token ids, positions and masks from each sequence's layout
//! (built on the device from each token's group, not as L × L on the host), and next-token
//! targets on response tokens only (those the model chose, for RL).

use crate::layout::{self, GroupCodes, Layout, TagIds};
use crate::model::CausalLm;
use prl_schema::spec::Attention;
use tch::{Device, Kind, Tensor};

/// Targets that take no part in the loss.
pub const IGNORE: i64 = -100;

#[derive(Clone, Debug)]
pub struct Example {
    /// Prompt and response tokens, the response ending with end-of-sequence.
    pub tokens: Vec<i64>,
    pub prompt_len: usize,
    /// Which tokens the rollout controller inserted: they are inputs but never targets.
    /// Empty when every response token is a target.
    pub forced: Vec<bool>,
    /// Which tokens were sampled with `<Parallel>` banned (see `Rollout::banned`); empty for
    /// SFT examples.
    pub banned: Vec<bool>,
}

impl Example {
    /// Whether any token is a target: a prompt cut by the length limit leaves none, and a batch
    /// of such examples would have a NaN loss.
    pub fn has_targets(&self) -> bool {
        (self.prompt_len.max(1)..self.tokens.len())
            .any(|t| !self.forced.get(t).copied().unwrap_or(false))
    }
}

pub struct Batch {
    pub input_ids: Tensor,
    pub positions: Tensor,
    /// Additive (B, 1, L, L); `None` for Seen, whose right padding plain causal attention handles.
    pub mask: Option<Tensor>,
    pub targets: Tensor,
    /// (B, L) bool: whether the target at each position was sampled with `<Parallel>` banned.
    pub banned: Tensor,
    /// Tokens in the batch, padding excluded.
    pub tokens: usize,
    /// Targets that are not `IGNORE`.
    pub trained: usize,
}

pub fn build(
    examples: &[&Example],
    tags: TagIds,
    attention: Attention,
    pad: i64,
    device: Device,
) -> Batch {
    let b = examples.len();
    let l = examples
        .iter()
        .map(|e| e.tokens.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut ids = vec![pad; b * l];
    let mut positions = vec![0i64; b * l];
    let mut targets = vec![IGNORE; b * l];
    let mut banned = vec![false; b * l];
    let mut codes = (attention == Attention::Unseen).then(|| GroupCodes::padding(b, l));
    let mut trained = 0;
    for (row, e) in examples.iter().enumerate() {
        let n = e.tokens.len();
        let layout = Layout::new(&e.tokens, tags, attention);
        ids[row * l..row * l + n].copy_from_slice(&e.tokens);
        positions[row * l..row * l + n].copy_from_slice(&layout.positions);
        for t in 0..n.saturating_sub(1) {
            if t + 1 >= e.prompt_len && !e.forced.get(t + 1).copied().unwrap_or(false) {
                targets[row * l + t] = e.tokens[t + 1];
                trained += 1;
                banned[row * l + t] = e.banned.get(t + 1).copied().unwrap_or(false);
            }
        }
        if let Some(codes) = codes.as_mut() {
            codes.write(row, 0, &layout);
        }
    }
    let (b, l) = (b as i64, l as i64);
    Batch {
        input_ids: Tensor::from_slice(&ids).view([b, l]).to(device),
        positions: Tensor::from_slice(&positions).view([b, l]).to(device),
        mask: codes.map(|codes| {
            let groups = codes.to_device(device);
            layout::attention_mask(&groups, &groups)
        }),
        targets: Tensor::from_slice(&targets).view([b, l]).to(device),
        banned: Tensor::from_slice(&banned).view([b, l]).to(device),
        tokens: examples.iter().map(|e| e.tokens.len()).sum(),
        trained,
    }
}

/// What one more part costs beyond its tokens, in tokens: the fixed cost of a forward and
/// backward pass, and the smaller kernels of a smaller part.
const PART_COST: usize = 256;

/// Splits a batch's rows into parts of similar length (`tokens` each), so that each can be padded
/// only to its own longest sequence (`build` per part, `token_mean_loss` over all for SFT, the
/// policy loss over all trained tokens for RL): the padding of a batch whose
/// lengths vary is compute spent on nothing. Sorted longest first, the cuts are the ones that
/// minimise the padded tokens plus `PART_COST` per part.
pub fn by_length<T: Clone>(rows: &[T], tokens: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut sorted = rows.to_vec();
    sorted.sort_by_key(|row| std::cmp::Reverse(tokens(row)));
    // best[j]: the least cost of the first j rows, and where their last part starts.
    let mut best = vec![(0usize, 0usize); sorted.len() + 1];
    for j in 1..=sorted.len() {
        best[j] = (0..j)
            .map(|i| (best[i].0 + (j - i) * tokens(&sorted[i]) + PART_COST, i))
            .min()
            .unwrap();
    }
    let mut parts = Vec::new();
    let mut end = sorted.len();
    while end > 0 {
        let start = best[end].1;
        parts.push(sorted[start..end].to_vec());
        end = start;
    }
    parts.reverse();
    parts
}

/// `examples` cut `by_length`, each part built as a batch: what SFT trains on.
pub fn build_by_length(
    examples: &[&Example],
    tags: TagIds,
    attention: Attention,
    pad: i64,
    device: Device,
) -> Vec<Batch> {
    by_length(examples, |e| e.tokens.len())
        .iter()
        .map(|part| build(part, tags, attention, pad, device))
        .collect()
}

/// Token-mean cross-entropy of `model` over the targets of every part (one batch, split by
/// `by_length`), with logits computed at those positions only (`CausalLm::forward_at`).
pub fn token_mean_loss(parts: &[Batch], model: &CausalLm) -> Tensor {
    let trained: usize = parts.iter().map(|b| b.trained).sum();
    let sum = parts
        .iter()
        .map(|b| b.loss_sum(model))
        .reduce(|a, b| a + b)
        .expect("a batch has at least one part");
    sum / trained as f64
}

impl Batch {
    /// Summed cross-entropy of `model` on the targets that are not `IGNORE`.
    fn loss_sum(&self, model: &CausalLm) -> Tensor {
        let trained = self.targets.ne(IGNORE);
        let logits = model.forward_at(
            &self.input_ids,
            &self.positions,
            self.mask.as_ref(),
            &trained,
        );
        logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
            &self.targets.masked_select(&trained),
            None,
            tch::Reduction::Sum,
            IGNORE,
            0.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LoadedModel;
    use crate::presets;

    /// The tags' ids in the tests' vocabulary of 40.
    const TAGS: TagIds = TagIds {
        open_parallel: 30,
        close_parallel: 31,
        open_path: 32,
        close_path: 33,
    };

    #[test]
    fn the_loss_from_logits_at_targets_is_the_loss_over_every_position() {
        tch::manual_seed(5);
        let model = LoadedModel::random(presets::tiny_config(40), Device::Cpu);
        let examples = [
            Example {
                tokens: vec![1, 2, 3, 30, 32, 4, 33, 32, 5, 33, 31, 6, 7],
                prompt_len: 3,
                forced: vec![],
                banned: vec![],
            },
            Example {
                tokens: vec![8, 9, 10, 11, 12],
                prompt_len: 2,
                forced: vec![false, false, false, true, false],
                banned: vec![],
            },
        ];
        let rows: Vec<&Example> = examples.iter().collect();
        let b = build(&rows, TAGS, Attention::Unseen, 0, Device::Cpu);
        let logits = model
            .model
            .forward(&b.input_ids, &b.positions, b.mask.as_ref());
        let v = logits.size()[2];
        let everywhere = logits.view([-1, v]).cross_entropy_loss::<Tensor>(
            &b.targets.view([-1]),
            None,
            tch::Reduction::Mean,
            IGNORE,
            0.0,
        );
        let at_targets = token_mean_loss(&[b], &model.model);
        assert!(
            (at_targets.double_value(&[]) - everywhere.double_value(&[])).abs() < 1e-6,
            "{at_targets} vs {everywhere}"
        );
    }

    #[test]
    fn a_batch_split_by_length_has_the_loss_and_gradients_of_the_padded_batch() {
        tch::manual_seed(7);
        let model = LoadedModel::random(presets::tiny_config(40), Device::Cpu);
        // Two long rows and four short ones, each with a parallel block after its prompt.
        let examples: Vec<Example> = [900, 10, 800, 100, 20, 90]
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut tokens = vec![1, 2, 30, 32, 3, 33, 32, 4, 33, 31];
                tokens.extend((0..n).map(|t| 1 + (t * 7 + i) as i64 % 29));
                Example {
                    tokens,
                    prompt_len: 2,
                    forced: vec![],
                    banned: vec![],
                }
            })
            .collect();
        let rows: Vec<&Example> = examples.iter().collect();
        let parts = by_length(&rows, |e| e.tokens.len());
        let lengths: Vec<Vec<usize>> = parts
            .iter()
            .map(|p| p.iter().map(|e| e.tokens.len()).collect())
            .collect();
        assert_eq!(lengths, [vec![910, 810], vec![110, 100, 30, 20]]);

        let loss_and_grads = |batches: &[Batch]| {
            let loss = token_mean_loss(batches, &model.model);
            (loss.double_value(&[]), model.gradients(&loss))
        };
        let build_one = |rows: &[&Example]| build(rows, TAGS, Attention::Unseen, 0, Device::Cpu);
        let (padded, padded_grads) = loss_and_grads(&[build_one(&rows)]);
        let split: Vec<Batch> = parts.iter().map(|p| build_one(p)).collect();
        let (split, split_grads) = loss_and_grads(&split);
        assert!((padded - split).abs() < 1e-5, "{padded} vs {split}");
        for (a, b) in padded_grads.iter().zip(&split_grads) {
            assert!(a.allclose(b, 1e-4, 1e-6, false), "{a} vs {b}");
        }
    }
}
