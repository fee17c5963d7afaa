//! The rollout engine must pick exactly the tokens that re-running the whole sequence through the
//! model picks (no cache, no forking, paths decoded one after another), for both attention
//! variants, sequential and parallel modes, several block sizes and prompts of different lengths;
//! with a model that closes its own paths and ends its own responses (also inside a path); and,
//! sampling at a temperature with a fixed seed, token for token where the engine decodes one lane,
//! and inside the distribution training reads where it forks.

use prl_schema::spec::{Attention, RolloutMode};
use prl_trainer::batch::{self, Example};
use prl_trainer::layout::{Layout, TagIds};
use prl_trainer::model::{LoadedModel, ModelConfig};
use prl_trainer::rollout::{Controls, Rollout, RolloutConfig, rollout};
use prl_trainer::sampling::Sampler;
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
    model_that(false)
}

/// `model()`, or with `closes` one that also picks `</Path>` and end-of-sequence by itself: their
/// head rows are copies of rows greedy decoding picks now and then.
fn model_that(closes: bool) -> LoadedModel {
    // The generator is global and tests run in parallel: seed and draw without interleaving.
    let _seeding = SEEDING.lock().unwrap_or_else(|e| e.into_inner());
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
        if closes {
            let ranked = ranked(&model);
            head.get(TAGS.close_path)
                .copy_(&(head.get(ranked[0]) * 1.02));
            head.get(EOS).copy_(&head.get(ranked[7]));
        }
    });
    model
}

/// Tokens by how often greedy decoding picks them, most often first.
fn ranked(model: &LoadedModel) -> Vec<i64> {
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
    let mut tokens: Vec<i64> = (9..VOCAB).collect();
    tokens.sort_by_key(|&t| std::cmp::Reverse(counts[t as usize]));
    tokens
}

/// The token greedy decoding picks most often from a few prompts.
fn most_picked(model: &LoadedModel) -> i64 {
    ranked(model)[0]
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
        sampler: Sampler {
            temperature: 0.0,
            top_p: 1.0,
        },
    }
}

/// The next token after `seq` as `sampler` draws it, re-running the sequence whole, with
/// `<Parallel>` banned if asked.
fn next(model: &LoadedModel, seq: &[i64], c: &RolloutConfig, ban: bool) -> i64 {
    let attention = c.attention;
    let layout = Layout::new(seq, TAGS, attention);
    let n = seq.len() as i64;
    // Built here from `allowed` token by token, independently of the engine's device masks.
    let open: Vec<f32> = (0..seq.len())
        .flat_map(|i| (0..seq.len()).map(move |j| (i, j)))
        .map(|(i, j)| {
            if layout.allowed(i, j) {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let mask = Tensor::from_slice(&open).view([1, 1, n, n]);
    let logits = tch::no_grad(|| {
        model.model.forward(
            &Tensor::from_slice(seq).view([1, n]),
            &Tensor::from_slice(&layout.positions).view([1, n]),
            Some(&mask),
        )
    });
    let last = logits.select(1, n - 1);
    let bans = [if ban { f32::NEG_INFINITY } else { 0.0 }];
    c.sampler.sample(&last, &bans, TAGS.open_parallel)[0]
}

/// The engine draws a sample for every token it feeds, even one the controller then forces in its
/// place; the reference draws (and drops) one too, from the same sampler, so both use the
/// generator alike.
fn burn(c: &RolloutConfig) {
    let uniform = Tensor::zeros([1, VOCAB], (tch::Kind::Float, Device::Cpu));
    c.sampler.sample(&uniform, &[0.0], TAGS.open_parallel);
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
        let token = match queue.pop_front() {
            Some(forced) => {
                burn(c);
                forced
            }
            None => next(model, &seq, c, ban),
        };
        seq.push(token);
        if token == EOS {
            break;
        }
        if token == TAGS.open_parallel {
            blocks += 1;
            let left = c.max_new_tokens.saturating_sub(seq.len() - start + 3);
            let budget = c.path_budget.min(left / c.paths).max(3);
            for _ in 0..c.paths {
                burn(c);
                seq.push(TAGS.open_path);
                let mut closed = false;
                for _ in 0..budget - 2 {
                    let t = next(model, &seq, c, true);
                    if t == EOS || t == TAGS.close_path {
                        closed = true;
                        break;
                    }
                    seq.push(t);
                }
                if !closed {
                    burn(c);
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
    for (attention, paths, blocks) in check_against_recomputation(&model()) {
        assert!(
            blocks >= 3,
            "{attention:?} x{paths} opened only {blocks} blocks"
        );
    }
}

#[test]
fn a_model_that_closes_its_own_paths_and_ends_its_own_responses_is_followed_exactly() {
    let model = model_that(true);
    check_against_recomputation(&model);
    // The cases this model exists for did occur: paths the model closed (a sampled `</Path>`),
    // end-of-sequence inside a path (a path closed early by a forced `</Path>`), and responses
    // that ended before their budget.
    let (mut closed_by_model, mut closed_early, mut ended) = (0, 0, 0);
    for attention in [Attention::Seen, Attention::Unseen] {
        for paths in [2, 3] {
            let config = config(attention, RolloutMode::Parallel, paths);
            for out in rollout(&model.model, &prompts(), &controls(), &config, Device::Cpu) {
                let mut path_length = 0;
                for (t, forced) in out.tokens.iter().zip(&out.forced) {
                    match (*t, *forced) {
                        (t, false) if t == TAGS.close_path => closed_by_model += 1,
                        (t, true)
                            if t == TAGS.close_path && path_length + 2 < config.path_budget =>
                        {
                            closed_early += 1
                        }
                        _ => {}
                    }
                    path_length = if *t == TAGS.open_path {
                        1
                    } else {
                        path_length + 1
                    };
                }
                ended += usize::from(out.tokens.last() == Some(&EOS) && !out.clipped);
            }
        }
    }
    assert!(
        closed_by_model > 0 && closed_early > 0 && ended > 0,
        "closed by the model {closed_by_model}, early {closed_early}, ended {ended}"
    );
}

/// The blocks a response opened.
fn blocks_in(tokens: &[i64]) -> usize {
    tokens.iter().filter(|&&t| t == TAGS.open_parallel).count()
}

/// Checks every mode; returns the blocks opened per parallel configuration.
fn check_against_recomputation(model: &LoadedModel) -> Vec<(Attention, usize, usize)> {
    let prompts = prompts();
    let mut opened = Vec::new();
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
                let expected = reference(model, prompt, &config);
                assert_eq!(
                    out.tokens, expected,
                    "{attention:?} {mode:?} x{paths} {prompt:?}"
                );
                blocks += blocks_in(&out.tokens);
            }
            if mode == RolloutMode::Parallel {
                opened.push((attention, paths, blocks));
            }
        }
    }
    opened
}

/// As RL and evaluation batch them: many prompts, each several times. Identical prompts share
/// one prefill, blocks wait to fork and merge together (one lane's block is far fewer than an
/// eighth of the lanes), and finished lanes leave the batch, without a block to fork in
/// sequential rollouts; yet every response is the one recomputation gives.
#[test]
fn a_large_batch_of_repeated_prompts_gives_each_prompt_its_own_rollout() {
    let model = model_that(true);
    let distinct: Vec<Vec<i64>> = (0..24)
        .map(|i| (0..2 + i % 7).map(|j| 9 + (i * 7 + j * 3) % 31).collect())
        .collect();
    let batch: Vec<Vec<i64>> = (0..3).flat_map(|_| distinct.clone()).collect();
    for (attention, mode, paths) in [
        (Attention::Unseen, RolloutMode::Parallel, 2),
        (Attention::Unseen, RolloutMode::Parallel, 3),
        (Attention::Seen, RolloutMode::Parallel, 2),
        (Attention::Seen, RolloutMode::Sequential, 2),
    ] {
        let config = config(attention, mode, paths);
        let got = rollout(&model.model, &batch, &controls(), &config, Device::Cpu);
        let expected: Vec<Vec<i64>> = distinct
            .iter()
            .map(|p| reference(&model, p, &config))
            .collect();
        let mut blocks = 0;
        for (i, out) in got.iter().enumerate() {
            assert_eq!(
                out.tokens,
                expected[i % distinct.len()],
                "{attention:?} {mode:?} x{paths} lane {i}"
            );
            blocks += blocks_in(&out.tokens);
        }
        if mode == RolloutMode::Parallel {
            assert!(
                blocks >= distinct.len(),
                "{attention:?} x{paths}: only {blocks} blocks"
            );
        } else {
            // An eighth of the lanes finished while others decoded on (a sequential response's
            // length is its decoding steps), so the batch dropped finished lanes on the way.
            let longest = got.iter().map(|o| o.tokens.len()).max().unwrap_or(0);
            let early = got.iter().filter(|o| o.tokens.len() < longest).count();
            assert!(
                early * 8 >= got.len(),
                "{early} of {} responses ended before the longest",
                got.len()
            );
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
        sampler: Sampler {
            temperature: 1.0,
            top_p: 0.9,
        },
        ..config(Attention::Unseen, RolloutMode::Parallel, 2)
    };
    let run = |seed| {
        let _seeding = SEEDING.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(seed);
        rollout(&model.model, &prompts(), &controls(), &config, Device::Cpu)
    };
    let (a, b, c) = (run(5), run(5), run(6));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

/// At a temperature, with one lane decoding (one prompt; Seen paths stay in the main lane), the
/// engine draws from the generator exactly as token-by-token recomputation does.
#[test]
fn sampling_at_a_temperature_follows_recomputation_token_for_token() {
    let model = model_that(true);
    for (mode, top_p) in [
        (RolloutMode::Sequential, 1.0),
        (RolloutMode::Parallel, 1.0),
        (RolloutMode::Parallel, 0.8),
    ] {
        let config = RolloutConfig {
            sampler: Sampler {
                temperature: 1.3,
                top_p,
            },
            ..config(Attention::Seen, mode, 2)
        };
        for (i, prompt) in prompts().into_iter().enumerate() {
            let _seeding = SEEDING.lock().unwrap_or_else(|e| e.into_inner());
            tch::manual_seed(40 + i as i64);
            let got = rollout(
                &model.model,
                std::slice::from_ref(&prompt),
                &controls(),
                &config,
                Device::Cpu,
            );
            tch::manual_seed(40 + i as i64);
            let expected = reference(&model, &prompt, &config);
            assert_eq!(got[0].tokens, expected, "{mode:?} top-p {top_p} {prompt:?}");
        }
    }
}

/// Where Unseen paths fork into lanes sampled side by side, every token the engine sampled lies in
/// the distribution that training reads for it (the same positions, masks, temperature, nucleus and
/// bans): its log-probability there is finite, while tokens outside the nucleus are not.
#[test]
fn forked_samples_lie_in_the_distribution_training_reads() {
    let model = model_that(true);
    let sampler = Sampler {
        temperature: 1.3,
        top_p: 0.6,
    };
    for attention in [Attention::Seen, Attention::Unseen] {
        let config = RolloutConfig {
            sampler,
            ..config(attention, RolloutMode::Parallel, 2)
        };
        let _seeding = SEEDING.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(3);
        let outs = rollout(&model.model, &prompts(), &controls(), &config, Device::Cpu);
        let examples: Vec<Example> = prompts()
            .iter()
            .zip(&outs)
            .map(|(prompt, out)| {
                let pad = vec![false; prompt.len()];
                Example {
                    tokens: [prompt.clone(), out.tokens.clone()].concat(),
                    prompt_len: prompt.len(),
                    forced: [pad.clone(), out.forced.clone()].concat(),
                    banned: [pad, out.banned.clone()].concat(),
                }
            })
            .collect();
        let rows: Vec<&Example> = examples.iter().collect();
        let b = batch::build(&rows, TAGS, attention, 0, Device::Cpu);
        let logits = tch::no_grad(|| {
            model
                .model
                .forward(&b.input_ids, &b.positions, b.mask.as_ref())
        });
        let distribution = sampler.distribution(&logits, Some((&b.banned, TAGS.open_parallel)));
        let logp = prl_trainer::sampling::target_logprobs(&distribution, &b.targets);
        let targets = b.targets.ne(batch::IGNORE);
        let sampled = targets.sum(tch::Kind::Int64).int64_value(&[]);
        let finite = logp
            .isfinite()
            .logical_and(&targets)
            .sum(tch::Kind::Int64)
            .int64_value(&[]);
        assert!(sampled > 50, "{attention:?}: only {sampled} sampled tokens");
        assert_eq!(
            finite, sampled,
            "{attention:?}: sampled outside the nucleus"
        );
        // The check has teeth: at these settings the nucleus leaves most of the vocabulary out.
        let outside = sampler
            .logits(&logits)
            .isinf()
            .sum(tch::Kind::Int64)
            .int64_value(&[]);
        assert!(
            outside > logits.numel() as i64 / 4,
            "{attention:?}: {outside}"
        );
    }
}
