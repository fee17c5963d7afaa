//! Batched decoding with a KV cache. Positions and attention come from each sequence's layout as
//! it grows, so Unseen models generate with the same multiverse positions and path isolation they
//! were trained with.
//!
//! With `ParallelControl`, the controller shapes blocks the way the method does: after a
//! `<Parallel>` it opens exactly `paths` paths one after another, forces `</Path>` when a path
//! reaches its budget, and closes with `</Parallel>`, a newline and `<Summary>`. Under Unseen
//! attention a path cannot see its siblings, so it cannot tell on its own whether another path
//! follows; the controller decides. (Forking the paths to decode side by side over a shared
//! prefix is the rollout engine's job; the tokens are the same.)

use crate::layout::{Layout, TagIds};
use crate::model::CausalLm;
use prl_schema::spec::Attention;
use std::collections::VecDeque;
use tch::{Device, Kind, Tensor};

/// The token ids decoding needs besides the model.
#[derive(Clone, Debug)]
pub struct Controls {
    pub tags: TagIds,
    pub open_summary: i64,
    pub eos: i64,
    pub pad: i64,
    /// What goes between `</Parallel>` and `<Summary>`.
    pub newline: Vec<i64>,
}

#[derive(Clone, Debug)]
pub struct ParallelControl {
    pub paths: usize,
    /// Tokens a path may take before `</Path>` is forced.
    pub path_budget: usize,
}

#[derive(Clone, Debug)]
pub struct Sampling {
    /// 0 decodes greedily.
    pub temperature: f64,
    pub max_new_tokens: usize,
    pub parallel: Option<ParallelControl>,
}

/// The generated tokens of each prompt, up to and without end-of-sequence.
pub fn generate(
    model: &CausalLm,
    prompts: &[Vec<i64>],
    controls: &Controls,
    attention: Attention,
    sampling: &Sampling,
    device: Device,
) -> Vec<Vec<i64>> {
    let (tags, pad) = (controls.tags, controls.pad);
    tch::no_grad(|| {
        let b = prompts.len();
        let width = prompts.iter().map(Vec::len).max().unwrap_or(1);
        // Left padding, so every row's next token lands in the same column.
        let offsets: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
        let mut sequences: Vec<Vec<i64>> = prompts.to_vec();
        let mut ids = vec![pad; b * width];
        let mut positions = vec![0i64; b * width];
        let mut mask = vec![f32::NEG_INFINITY; b * width * width];
        for (row, prompt) in prompts.iter().enumerate() {
            let layout = Layout::new(prompt, tags, attention);
            let off = offsets[row];
            ids[row * width + off..(row + 1) * width].copy_from_slice(prompt);
            positions[row * width + off..(row + 1) * width].copy_from_slice(&layout.positions);
            for i in 0..width {
                for j in 0..=i {
                    let open = match (i.checked_sub(off), j.checked_sub(off)) {
                        (Some(qi), Some(kj)) => layout.allowed(qi, kj),
                        (None, _) => i == j,
                        (Some(_), None) => false,
                    };
                    if open {
                        mask[(row * width + i) * width + j] = 0.0;
                    }
                }
            }
        }
        let (bi, wi) = (b as i64, width as i64);
        let mut cache = model.new_cache();
        let logits = model.forward_cached(
            &Tensor::from_slice(&ids).view([bi, wi]).to(device),
            &Tensor::from_slice(&positions).view([bi, wi]).to(device),
            Some(&Tensor::from_slice(&mask).view([bi, 1, wi, wi]).to(device)),
            &mut cache,
        );
        let mut last = logits.select(1, wi - 1);
        let mut done = vec![false; b];
        let mut outputs = vec![Vec::new(); b];
        // The controller starts from where each prompt leaves the block structure.
        let mut shapers: Vec<Shaper> = prompts
            .iter()
            .map(|prompt| {
                let mut shaper = Shaper::default();
                if let Some(control) = &sampling.parallel {
                    for &token in prompt {
                        shaper.observe(token, controls, control);
                    }
                }
                shaper
            })
            .collect();
        for step in 0..sampling.max_new_tokens {
            let sampled = pick(&last, sampling.temperature);
            let sampled: Vec<i64> =
                Vec::<i64>::try_from(sampled.to_device(Device::Cpu)).expect("token ids");
            let mut new_ids = vec![pad; b];
            let mut new_positions = vec![0i64; b];
            let keys = width + step + 1;
            let mut row_mask = vec![f32::NEG_INFINITY; b * keys];
            for row in 0..b {
                let next = shapers[row].forced.pop_front().unwrap_or(sampled[row]);
                if !done[row] && next == controls.eos {
                    done[row] = true;
                }
                if done[row] {
                    row_mask[row * keys + keys - 1] = 0.0;
                    continue;
                }
                if let Some(control) = &sampling.parallel {
                    shapers[row].after(next, controls, control);
                }
                outputs[row].push(next);
                sequences[row].push(next);
                new_ids[row] = next;
                let layout = Layout::new(&sequences[row], tags, attention);
                let me = sequences[row].len() - 1;
                new_positions[row] = layout.positions[me];
                // Key k of the cache holds prompt column k (left-padded), then generated tokens.
                for k in 0..keys {
                    let token = if k < width {
                        k.checked_sub(offsets[row])
                    } else {
                        Some(prompts[row].len() + (k - width))
                    };
                    if token.is_some_and(|t| layout.allowed(me, t)) {
                        row_mask[row * keys + k] = 0.0;
                    }
                }
            }
            if done.iter().all(|d| *d) {
                break;
            }
            let logits = model.forward_cached(
                &Tensor::from_slice(&new_ids).view([bi, 1]).to(device),
                &Tensor::from_slice(&new_positions).view([bi, 1]).to(device),
                Some(
                    &Tensor::from_slice(&row_mask)
                        .view([bi, 1, 1, keys as i64])
                        .to(device),
                ),
                &mut cache,
            );
            last = logits.select(1, 0);
        }
        outputs
    })
}

/// One row's place in the block structure, and the tokens the controller will insert next.
#[derive(Default)]
struct Shaper {
    state: Place,
    forced: VecDeque<i64>,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum Place {
    #[default]
    Main,
    /// In a block, `done` paths finished, the next one not yet opened.
    Between {
        done: usize,
    },
    InPath {
        done: usize,
        len: usize,
    },
    /// After `</Parallel>`, until `<Summary>` has been emitted.
    Closing,
}

impl Shaper {
    /// Follows a token the controller did not choose (the prompt's): a queued token it does not
    /// match is dropped.
    fn observe(&mut self, token: i64, c: &Controls, control: &ParallelControl) {
        if self.forced.front() == Some(&token) {
            self.forced.pop_front();
        } else {
            self.forced.clear();
        }
        self.after(token, c, control);
    }

    /// Updates the place after `token` and queues what must follow it.
    fn after(&mut self, token: i64, c: &Controls, control: &ParallelControl) {
        let tags = c.tags;
        self.state = match self.state {
            Place::Main if token == tags.open_parallel => {
                self.forced.push_back(tags.open_path);
                Place::Between { done: 0 }
            }
            Place::Between { done } if token == tags.open_path => Place::InPath { done, len: 0 },
            Place::InPath { done, .. } if token == tags.close_path => {
                if done + 1 < control.paths {
                    self.forced.push_back(tags.open_path);
                    Place::Between { done: done + 1 }
                } else {
                    self.forced.push_back(tags.close_parallel);
                    self.forced.extend(&c.newline);
                    self.forced.push_back(c.open_summary);
                    Place::Closing
                }
            }
            Place::InPath { done, len } => {
                if len + 1 >= control.path_budget && self.forced.is_empty() {
                    self.forced.push_back(tags.close_path);
                }
                Place::InPath { done, len: len + 1 }
            }
            Place::Closing if token == c.open_summary => Place::Main,
            other => other,
        };
    }
}

fn pick(logits: &Tensor, temperature: f64) -> Tensor {
    if temperature <= 0.0 {
        logits.argmax(-1, false)
    } else {
        (logits.to_kind(Kind::Float) / temperature)
            .softmax(-1, Kind::Float)
            .multinomial(1, true)
            .squeeze_dim(-1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Controls = Controls {
        tags: TagIds {
            open_parallel: 3,
            close_parallel: 4,
            open_path: 5,
            close_path: 6,
        },
        open_summary: 7,
        eos: 1,
        pad: 0,
        newline: Vec::new(),
    };

    /// What the controller emits when the model would always say `proposal`.
    fn drive(prompt: &[i64], proposal: i64, control: &ParallelControl, steps: usize) -> Vec<i64> {
        let controls = Controls {
            newline: vec![2],
            ..C
        };
        let mut shaper = Shaper::default();
        for &t in prompt {
            shaper.observe(t, &controls, control);
        }
        (0..steps)
            .map(|_| {
                let next = shaper.forced.pop_front().unwrap_or(proposal);
                shaper.after(next, &controls, control);
                next
            })
            .collect()
    }

    #[test]
    fn a_block_gets_its_paths_budgets_and_closing_from_the_controller() {
        let control = ParallelControl {
            paths: 3,
            path_budget: 2,
        };
        let out = drive(&[9, 3], 9, &control, 16);
        assert_eq!(out, [5, 9, 9, 6, 5, 9, 9, 6, 5, 9, 9, 6, 4, 2, 7, 9]);
    }

    #[test]
    fn a_path_the_model_closes_itself_is_followed_by_the_next() {
        let control = ParallelControl {
            paths: 2,
            path_budget: 8,
        };
        // The model would close every path at once.
        let out = drive(&[3], 6, &control, 6);
        assert_eq!(out, [5, 6, 5, 6, 4, 2]);
    }
}
