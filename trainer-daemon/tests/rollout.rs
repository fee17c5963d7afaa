//! The rollout engine must pick exactly the tokens that re-running the whole sequence through the
//! model picks (no cache, no forking, paths decoded one after another), for both attention
//! variants, sequential and parallel modes, several block sizes and prompts of different lengths.

use prl_schema::spec::{Attention, RolloutMode};
use prl_trainer::layout::{Layout, TagIds};
use prl_trainer::model::{LoadedModel, ModelConfig};
use prl_trainer::rollout::{Controls, Rollout, RolloutConfig, rollout};
use std::collections::VecDeque;
use std::sync::Mutex;
use tch::{Device, Tensor};

const EOS: i64 = 1;
const NEWLINE: i64 = 2;
const TAGS: TagIds = TagIds {
    open_parallel: 3,
    close_parallel: 4,
    open_path: 5,
    close_path: 6,
};
const OPEN_SUMMARY: i64 = 7;
const VOCAB: i64 = 40;

static SEEDING: Mutex<()> = Mutex::new(());

fn controls() -> Controls {
    Controls {
        tags: TAGS,
        open_summary: OPEN_SUMMARY,
        eos: EOS,
        pad: 0,
        newline: vec![NEWLINE],
    }
}

/// A random model that likes opening blocks: the head row of `<Parallel>` is a scaled copy of a
/// row that greedy decoding often picks, and end-of-sequence and the other tags get zero rows
/// (a logit of 0, below the best of the other random logits), so the controller does the tags.
fn model() -> LoadedModel {
    // The generator is global and tests run in parallel: seed and draw without interleaving.
    let _seeding = SEEDING.lock().unwrap();
    tch::manual_seed(11);
    let config: ModelConfig = serde_json::from_value(serde_json::json!({
        "model_type": "qwen3", "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": false
    }))
    .unwrap();
    let model = LoadedModel::random(config, Device::Cpu);
    let head = model.vs.variables()["lm_head.weight"].shallow_clone();
    let favourite = most_picked(&model);
    tch::no_grad(|| {
        let row = head.get(favourite) * 1.05;
        head.get(TAGS.open_parallel).copy_(&row);
        for t in [EOS, 4, 5, 6, OPEN_SUMMARY, 8] {
            let _ = head.get(t).zero_();
        }
    });
    model
}

/// The token greedy decoding picks most often from a few prompts.
fn most_picked(model: &LoadedModel) -> i64 {
    let mut counts = vec![0; VOCAB as usize];
    for prompt in prompts() {
        for t in reference(
            model,
            &prompt,
            &config(Attention::Seen, RolloutMode::Sequential, 2),
        ) {
            counts[t as usize] += usize::from(t > 8);
        }
    }
    (0..VOCAB).max_by_key(|&t| counts[t as usize]).unwrap()
}

fn prompts() -> Vec<Vec<i64>> {
    vec![
        vec![17, 28, 9],
        vec![30, 12, 25, 38, 11, 20, 22],
        vec![10, 19],
        vec![35, 14, 21, 33],
    ]
}

fn config(attention: Attention, mode: RolloutMode, paths: usize) -> RolloutConfig {
    RolloutConfig {
        attention,
        mode,
        paths,
        path_budget: 6,
        max_blocks: 2,
        max_new_tokens: 64,
        temperature: 0.0,
        top_p: 1.0,
    }
}

/// The greedy next token after `seq`, re-running it whole, with `<Parallel>` banned if asked.
fn greedy(model: &LoadedModel, seq: &[i64], attention: Attention, ban: bool) -> i64 {
    let layout = Layout::new(seq, TAGS, attention);
    let n = seq.len() as i64;
    let mask = Tensor::from_slice(&layout.additive_mask(f32::NEG_INFINITY)).view([1, 1, n, n]);
    let logits = tch::no_grad(|| {
        model.model.forward(
            &Tensor::from_slice(seq).view([1, n]),
            &Tensor::from_slice(&layout.positions).view([1, n]),
            Some(&mask),
        )
    });
    let last = logits.select(1, n - 1).squeeze_dim(0);
    if ban {
        let _ = last.get(TAGS.open_parallel).fill_(f64::NEG_INFINITY);
    }
    last.argmax(-1, false).int64_value(&[])
}

/// The method's rollout written plainly: paths one after another in one sequence, the whole
/// sequence recomputed for every token.
fn reference(model: &LoadedModel, prompt: &[i64], c: &RolloutConfig) -> Vec<i64> {
    let mut seq = prompt.to_vec();
    let start = seq.len();
    let (mut blocks, mut queue) = (0, VecDeque::new());
    loop {
        let length = seq.len() - start;
        if length > 0 && length >= c.max_new_tokens {
            break;
        }
        // No block opens without room for its tags and a token per path.
        let ban = c.mode == RolloutMode::Sequential
            || blocks >= c.max_blocks
            || length + 4 + 3 * c.paths > c.max_new_tokens;
        let next = queue
            .pop_front()
            .unwrap_or_else(|| greedy(model, &seq, c.attention, ban));
        seq.push(next);
        if next == EOS {
            break;
        }
        if next == TAGS.open_parallel {
            blocks += 1;
            let left = c.max_new_tokens.saturating_sub(seq.len() - start + 3);
            let budget = c.path_budget.min(left / c.paths).max(3);
            for _ in 0..c.paths {
                seq.push(TAGS.open_path);
                for _ in 0..budget - 2 {
                    let t = greedy(model, &seq, c.attention, true);
                    if t == EOS || t == TAGS.close_path {
                        break;
                    }
                    seq.push(t);
                }
                seq.push(TAGS.close_path);
            }
            queue.extend([TAGS.close_parallel, NEWLINE, OPEN_SUMMARY]);
        }
    }
    seq[start..].to_vec()
}

#[test]
fn rollouts_match_full_recomputation_in_every_mode() {
    let model = model();
    let prompts = prompts();
    for attention in [Attention::Seen, Attention::Unseen] {
        for (mode, paths) in [
            (RolloutMode::Sequential, 2),
            (RolloutMode::Parallel, 2),
            (RolloutMode::Parallel, 3),
        ] {
            let config = config(attention, mode, paths);
            let got = rollout(&model.model, &prompts, &controls(), &config, Device::Cpu);
            let mut blocks = 0;
            for (prompt, out) in prompts.iter().zip(&got) {
                let expected = reference(&model, prompt, &config);
                assert_eq!(
                    out.tokens, expected,
                    "{attention:?} {mode:?} x{paths} {prompt:?}"
                );
                blocks += out
                    .tokens
                    .iter()
                    .filter(|&&t| t == TAGS.open_parallel)
                    .count();
            }
            if mode == RolloutMode::Parallel {
                assert!(
                    blocks >= 3,
                    "{attention:?} x{paths} opened only {blocks} blocks"
                );
            }
        }
    }
}

#[test]
fn controller_tokens_are_flagged_as_forced() {
    let model = model();
    let config = config(Attention::Unseen, RolloutMode::Parallel, 2);
    let got: Vec<Rollout> = rollout(&model.model, &prompts(), &controls(), &config, Device::Cpu);
    let mut checked = 0;
    for out in &got {
        for (i, (t, forced)) in out.tokens.iter().zip(&out.forced).enumerate() {
            // Tags, and the newline after `</Parallel>`, come from the controller (the model's
            // head cannot pick them); everything else was sampled.
            let inserted = [4, 5, 6, OPEN_SUMMARY].contains(t)
                || (*t == NEWLINE && i > 0 && out.tokens[i - 1] == 4);
            assert_eq!(*forced, inserted, "token {i} ({t}): {out:?}");
            checked += usize::from(inserted);
        }
        assert_eq!(out.clipped, out.tokens.last() != Some(&EOS));
    }
    assert!(checked > 0);
}

#[test]
fn sampling_is_reproducible_for_a_seed() {
    let model = model();
    let config = RolloutConfig {
        temperature: 1.0,
        top_p: 0.9,
        ..config(Attention::Unseen, RolloutMode::Parallel, 2)
    };
    let run = |seed| {
        let _seeding = SEEDING.lock().unwrap();
        tch::manual_seed(seed);
        rollout(&model.model, &prompts(), &controls(), &config, Device::Cpu)
    };
    let (a, b, c) = (run(5), run(5), run(6));
    assert_eq!(a, b);
    assert_ne!(a, c);
}
