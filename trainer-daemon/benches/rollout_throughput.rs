//! Rollout throughput (generated tokens/s), side by side in one run:
//!
//! 1. **Parallel rollouts**: prl's fork engine (Unseen paths share the prefix's cache) against the
//!    reference's way, where every path, every summary and every continuation is a new generation
//!    request whose prompt, the whole text so far, is encoded again (batched across requests, with
//!    a KV cache inside each request and finished requests leaving the batch once they are an
//!    eighth of it, as a serving engine runs them, though without its prefix cache). Same model,
//!    prompts and greedy decoding; the outputs are checked to be identical.
//! 2. **Sequential generation**: prl against HF transformers `generate` (greedy, same model,
//!    batch and device), run by `scripts/bench_generate_hf.py` in the reference venv
//!    (`scripts/python_venv.sh reference`, made on first use).
//! 3. **A decoding step's mask at research lengths**: the engine's way (each lane's layout
//!    extended by one token, the mask computed on the device from the cached columns' group
//!    codes) against rebuilding every lane's layout and mask row on the host each step, as the
//!    engine did before, for the paper's 3,000-token responses.
//!
//!     cargo bench -p prl-trainer --bench rollout_throughput [-- parallel rl hf masks]
//!
//! `PRL_DEVICE=cuda` measures every part on the first GPU (HF `generate` too).
//!
//! Part 1 uses a tiny checkpoint trained with Unseen SFT, so that blocks occur as they do in RL:
//! `tests/fixtures/tiny-sft-unseen` (see `scripts/make_tiny_sft_fixture.sh`), or `PRL_BENCH_MODEL`.

mod common;

use prl_schema::spec::{Attention, RolloutMode};
use prl_trainer::data::BuiltinSet;
use prl_trainer::layout::{CachedGroups, GroupCodes, Layout, attention_mask};
use prl_trainer::model::LoadedModel;
use prl_trainer::presets;
use prl_trainer::rollout::{Controls, RolloutConfig, rollout};
use prl_trainer::sampling::Sampler;
use prl_trainer::tokenizer::PrlTokenizer;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Tensor};

const PROMPTS: usize = 64;
const REPEATS: usize = 3;

fn main() {
    let device = common::device();
    println!("# Rollout throughput, {}", common::describe(device));
    // Parts named on the command line (`-- parallel rl`), else all of them.
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |part: &str| named.is_empty() || named.iter().any(|n| n == part);
    let tiny = Tiny::load(device);
    if run("parallel") {
        parallel_rollouts(&tiny);
    }
    if run("rl") {
        rl_batch(&tiny, RolloutMode::Parallel);
        rl_batch(&tiny, RolloutMode::Sequential);
    }
    if run("hf") {
        sequential_against_hf(device);
    }
    if run("masks") {
        step_masks(&tiny.tok, device);
    }
}

/// Part 3: the cost of one decoding step's positions and mask for `lanes` sequences of `length`
/// tokens holding parallel blocks, both ways, and a check that both give the same mask.
fn step_masks(tok: &PrlTokenizer, device: Device) {
    let tags = tok.tags;
    for (lanes, length) in [(128, 500), (256, 3000)] {
        // A prompt, then blocks of two 40-token paths between 60 tokens of main text.
        let block = [tags.open_parallel, tags.open_path]
            .into_iter()
            .chain([7; 40])
            .chain([tags.close_path, tags.open_path])
            .chain([8; 40])
            .chain([tags.close_path, tags.close_parallel])
            .chain([9; 60]);
        let seq: Vec<i64> = [5; 50]
            .into_iter()
            .chain(block.cycle())
            .take(length)
            .collect();
        let keys = length - 1;
        let steps = 8;
        // Before: every step, each lane's layout from its whole sequence and its mask row token
        // by token on the host, then copied to the device.
        let started = Instant::now();
        let mut host = Tensor::new();
        for step in 0..steps {
            let n = keys - steps + step + 1;
            let mut mask = vec![f32::NEG_INFINITY; lanes * (n + 1)];
            let mut positions = vec![0i64; lanes];
            for lane in 0..lanes {
                let layout = Layout::new(&seq[..=n], tags, Attention::Unseen);
                positions[lane] = layout.positions[n];
                for j in 0..=n {
                    if layout.allowed(n, j) {
                        mask[lane * (n + 1) + j] = 0.0;
                    }
                }
            }
            host = Tensor::from_slice(&mask)
                .view([lanes as i64, 1, 1, n as i64 + 1])
                .to_device(device);
        }
        common::sync(device);
        let before = started.elapsed().as_secs_f64() / steps as f64;
        // Now: each lane's layout grows by a token, the mask comes from the cached group codes.
        let prefix = keys - steps + 1;
        let mut layouts = vec![Layout::new(&seq[..prefix], tags, Attention::Unseen); lanes];
        let mut codes = GroupCodes::padding(lanes, prefix);
        for (row, layout) in layouts.iter().enumerate() {
            codes.write(row, 0, layout);
        }
        let mut cached = CachedGroups::new(codes.to_device(device));
        let started = Instant::now();
        let mut computed = Tensor::new();
        for step in 0..steps {
            let n = prefix + step;
            let mut fed = GroupCodes::padding(lanes, 1);
            let mut positions = vec![0i64; lanes];
            for (row, layout) in layouts.iter_mut().enumerate() {
                layout.push(seq[n]);
                positions[row] = layout.positions[n];
                fed.set(row, 0, layout.code(n));
            }
            let fed = fed.to_device(device);
            computed = attention_mask(&fed, &cached.push(&fed));
        }
        common::sync(device);
        let after = started.elapsed().as_secs_f64() / steps as f64;
        assert!(computed.equal(&host), "the two ways disagree");
        println!(
            "a decoding step's mask, {lanes} lanes of {length} tokens: rebuilt on the host {:.1} ms, \
             extended incrementally and computed by tensor operations {:.2} ms, {:.0}x",
            before * 1e3,
            after * 1e3,
            before / after
        );
    }
}

/// Part 1's model: a tiny checkpoint trained with Unseen SFT (`PRL_BENCH_MODEL` or the fixture),
/// its tokenizer and decoding controls.
struct Tiny {
    model: LoadedModel,
    tok: PrlTokenizer,
    controls: Controls,
}

impl Tiny {
    fn load(device: Device) -> Tiny {
        let dir = std::env::var("PRL_BENCH_MODEL")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-sft-unseen")
            });
        let model = LoadedModel::load(&dir, device).expect("the benchmark's model");
        let (tok, _) = PrlTokenizer::load(&dir.join("tokenizer.json"), "<eos>").unwrap();
        let controls = tok.controls().unwrap();
        Tiny {
            model,
            tok,
            controls,
        }
    }

    /// The first `n` held-out hard prompts, each `copies` times in a row.
    fn prompts(&self, n: usize, copies: usize) -> Vec<Vec<i64>> {
        BuiltinSet::parse("builtin:hard-test")
            .unwrap()
            .tasks()
            .iter()
            .take(n)
            .flat_map(|t| std::iter::repeat_n(self.tok.encode(&t.prompt).unwrap(), copies))
            .collect()
    }
}

fn parallel_rollouts(tiny: &Tiny) {
    let Tiny {
        model,
        tok,
        controls,
    } = tiny;
    let prompts = tiny.prompts(PROMPTS, 1);
    let device = model.vs.device();
    for paths in [2, 4] {
        let config = RolloutConfig {
            attention: Attention::Unseen,
            mode: RolloutMode::Parallel,
            paths,
            path_budget: 96,
            max_blocks: 4,
            max_new_tokens: 384,
            sampler: Sampler {
                temperature: 0.0,
                top_p: 1.0,
            },
        };
        let (mut fork_s, mut reencode_s) = (f64::MAX, f64::MAX);
        let (mut forked, mut reencoded) = (Vec::new(), Vec::new());
        let mut work = Work::default();
        for _ in 0..REPEATS {
            let started = Instant::now();
            forked = rollout(&model.model, &prompts, controls, &config, device)
                .into_iter()
                .map(|r| r.tokens)
                .collect();
            fork_s = fork_s.min(started.elapsed().as_secs_f64());
            let started = Instant::now();
            let mut this = Work::default();
            reencoded = reencode(
                model,
                &prompts,
                controls,
                &config,
                tok.close_summary,
                &mut this,
            );
            let took = started.elapsed().as_secs_f64();
            if took < reencode_s {
                (reencode_s, work) = (took, this);
            }
        }
        let same = forked
            .iter()
            .zip(&reencoded)
            .filter(|(a, b)| a == b)
            .count();
        assert_eq!(
            same,
            prompts.len(),
            "the two ways must produce the same tokens"
        );
        let tokens: usize = forked.iter().map(Vec::len).sum();
        let blocks: usize = forked
            .iter()
            .map(|t| {
                t.iter()
                    .filter(|&&x| x == controls.tags.open_parallel)
                    .count()
            })
            .sum();
        println!(
            "parallel rollouts, {} prompts x {paths} paths ({blocks} blocks, {tokens} tokens, outputs identical): \
             fork {:.0} tokens/s, re-encode {:.0} tokens/s, fork/re-encode = {:.2}x",
            prompts.len(),
            tokens as f64 / fork_s,
            tokens as f64 / reencode_s,
            reencode_s / fork_s
        );
        let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
        // The fork engine's prefill: the same rollout with room for one token.
        let one_token = RolloutConfig {
            max_new_tokens: 1,
            ..config.clone()
        };
        let fork_prefill_s = (0..REPEATS)
            .map(|_| {
                let started = Instant::now();
                rollout(&model.model, &prompts, controls, &one_token, device);
                started.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min);
        println!(
            "  fork: {prompt_tokens} prompt tokens prefilled (and one step taken) in {fork_prefill_s:.2} s, \
             the rest {:.2} s",
            fork_s - fork_prefill_s
        );
        println!(
            "  re-encode: {} phases, {} tokens prefilled ({:.1}x the {prompt_tokens} prompt tokens \
             that the fork engine prefills) in {:.2} s, {} decoding steps in {:.2} s",
            work.phases,
            work.prefilled,
            work.prefilled as f64 / prompt_tokens as f64,
            work.prefill_s,
            work.steps,
            reencode_s - work.prefill_s,
        );
    }
}

/// What the re-encoding side computed in its best run.
#[derive(Default)]
struct Work {
    /// Batched rounds of requests.
    phases: usize,
    /// Prompt tokens encoded, padding left out.
    prefilled: usize,
    prefill_s: f64,
    /// Forward passes of one token per request.
    steps: usize,
}

/// A batch shaped as the demo's RL steps sample it: 16 prompts x 8 responses at temperature 1.0,
/// Unseen, 2 paths of at most 64 tokens, 256 response tokens; the best of 3 seeds. `Sequential`
/// is the batch of the demo's GRPO baseline rows, which open no block.
fn rl_batch(tiny: &Tiny, mode: RolloutMode) {
    let prompts = tiny.prompts(16, 8);
    let config = RolloutConfig {
        attention: Attention::Unseen,
        mode,
        paths: 2,
        path_budget: 64,
        max_blocks: 4,
        max_new_tokens: 256,
        sampler: Sampler {
            temperature: 1.0,
            top_p: 1.0,
        },
    };
    // Each seed draws other responses, of other lengths: the fastest run is kept with its tokens.
    let best = (0..REPEATS as i64)
        .map(|seed| {
            tch::manual_seed(seed);
            let started = Instant::now();
            let out = rollout(
                &tiny.model.model,
                &prompts,
                &tiny.controls,
                &config,
                tiny.model.vs.device(),
            );
            let tokens: usize = out.iter().map(|r| r.tokens.len()).sum();
            (tokens as f64 / started.elapsed().as_secs_f64(), tokens)
        })
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    println!(
        "RL-shaped batch, {mode:?}, {} prompts x 8 samples, T 1.0 ({} tokens): {:.0} tokens/s",
        prompts.len() / 8,
        best.1,
        best.0
    );
}

/// One generation request: decode greedily from `prompt` until a stop token or the budget.
struct Request {
    prompt: Vec<i64>,
    stops: Vec<i64>,
    budget: usize,
    /// `<Parallel>` may not be sampled after this many generated tokens (None: never banned),
    /// so that a block still fits in the response's budget.
    parallel_allowed_until: Option<usize>,
}

/// The reference's rollout: a batched round of requests per phase (main text, then the paths of
/// the blocks opened, then main text again), each request encoding its whole prompt.
fn reencode(
    model: &LoadedModel,
    prompts: &[Vec<i64>],
    c: &Controls,
    config: &RolloutConfig,
    close_summary: i64,
    work: &mut Work,
) -> Vec<Vec<i64>> {
    let tags = c.tags;
    let n = prompts.len();
    let mut seqs: Vec<Vec<i64>> = prompts.to_vec();
    let mut blocks = vec![0usize; n];
    let mut done = vec![false; n];
    let response = |seq: &Vec<i64>, i: usize| seq.len() - prompts[i].len();
    while done.iter().any(|d| !d) {
        // Main text: until end, a block opens, or a summary closes (the reference's requests end
        // there and the next one starts from the whole text).
        let active: Vec<usize> = (0..n).filter(|&i| !done[i]).collect();
        let requests: Vec<Request> = active
            .iter()
            .map(|&i| {
                let length = response(&seqs[i], i);
                Request {
                    prompt: seqs[i].clone(),
                    stops: vec![c.eos, tags.open_parallel, close_summary],
                    budget: config.max_new_tokens - length,
                    parallel_allowed_until: (blocks[i] < config.max_blocks).then(|| {
                        (config.max_new_tokens + 1).saturating_sub(length + 4 + 3 * config.paths)
                    }),
                }
            })
            .collect();
        let outs = decode(model, &requests, c, config.attention, work);
        let mut opened = Vec::new();
        for (&i, out) in active.iter().zip(outs) {
            seqs[i].extend(&out);
            let length = response(&seqs[i], i);
            match out.last() {
                Some(&t) if t == c.eos => done[i] = true,
                Some(&t) if t == tags.open_parallel => opened.push(i),
                _ if length >= config.max_new_tokens => done[i] = true,
                _ => {}
            }
        }
        if opened.is_empty() {
            continue;
        }
        // The paths of every opened block: each a request from the whole prefix.
        let mut requests = Vec::new();
        for &i in &opened {
            blocks[i] += 1;
            let length = response(&seqs[i], i);
            let left = config.max_new_tokens.saturating_sub(length + 3);
            let budget = config.path_budget.min(left / config.paths).max(3);
            for _ in 0..config.paths {
                let mut prompt = seqs[i].clone();
                prompt.push(tags.open_path);
                requests.push(Request {
                    prompt,
                    stops: vec![tags.close_path, c.eos],
                    budget: budget - 2,
                    parallel_allowed_until: None,
                });
            }
        }
        let outs = decode(model, &requests, c, config.attention, work);
        for (k, &i) in opened.iter().enumerate() {
            for out in &outs[k * config.paths..(k + 1) * config.paths] {
                seqs[i].push(tags.open_path);
                let content = match out.last() {
                    Some(&t) if t == tags.close_path || t == c.eos => &out[..out.len() - 1],
                    _ => &out[..],
                };
                seqs[i].extend(content);
                seqs[i].push(tags.close_path);
            }
            seqs[i].push(tags.close_parallel);
            seqs[i].extend(&c.newline);
            seqs[i].push(c.open_summary);
        }
    }
    seqs.iter()
        .zip(prompts)
        .map(|(s, p)| s[p.len()..].to_vec())
        .collect()
}

/// Batched greedy decoding of independent requests with a fresh cache: left-padded prefill of
/// the whole prompts, then a token per step, positions and masks from each sequence's layout;
/// finished requests leave the batch.
fn decode(
    model: &LoadedModel,
    requests: &[Request],
    c: &Controls,
    attention: Attention,
    work: &mut Work,
) -> Vec<Vec<i64>> {
    tch::no_grad(|| {
        work.phases += 1;
        work.prefilled += requests.iter().map(|r| r.prompt.len()).sum::<usize>();
        let started = Instant::now();
        let b = requests.len();
        let width = requests.iter().map(|r| r.prompt.len()).max().unwrap_or(1);
        let mut seqs: Vec<Vec<i64>> = requests.iter().map(|r| r.prompt.clone()).collect();
        let offsets: Vec<usize> = seqs.iter().map(|s| width - s.len()).collect();
        let mut ids = vec![c.pad; b * width];
        let mut positions = vec![0i64; b * width];
        let mut layouts: Vec<Layout> = (seqs.iter())
            .map(|seq| Layout::new(seq, c.tags, attention))
            .collect();
        let mut codes = GroupCodes::padding(b, width);
        for (row, seq) in seqs.iter().enumerate() {
            let off = offsets[row];
            ids[row * width + off..(row + 1) * width].copy_from_slice(seq);
            positions[row * width + off..(row + 1) * width]
                .copy_from_slice(&layouts[row].positions);
            codes.write(row, off, &layouts[row]);
        }
        let device = model.vs.device();
        let prompts = codes.to_device(device);
        let (bi, wi) = (b as i64, width as i64);
        let mut cache = model.model.new_cache();
        let mut last = model.model.forward_cached(
            &Tensor::from_slice(&ids).view([bi, wi]).to_device(device),
            &Tensor::from_slice(&positions)
                .view([bi, wi])
                .to_device(device),
            Some(&attention_mask(&prompts, &prompts)),
            &mut cache,
        );
        work.prefill_s += started.elapsed().as_secs_f64();
        let mut keys = CachedGroups::new(prompts);
        let mut outs: Vec<Vec<i64>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        // The request each row of the cache decodes.
        let mut rows: Vec<usize> = (0..b).collect();
        loop {
            let bans: Vec<f32> = (rows.iter())
                .map(|&r| match requests[r].parallel_allowed_until {
                    Some(until) if outs[r].len() < until => 0.0,
                    _ => f32::NEG_INFINITY,
                })
                .collect();
            let mut column = last.narrow(1, c.tags.open_parallel, 1);
            column += Tensor::from_slice(&bans).view([-1, 1]).to_device(device);
            let picked = Vec::<i64>::try_from(last.argmax(-1, false)).unwrap();
            for (&r, &t) in rows.iter().zip(&picked) {
                if done[r] {
                    continue;
                }
                outs[r].push(t);
                seqs[r].push(t);
                done[r] = requests[r].stops.contains(&t) || outs[r].len() >= requests[r].budget;
            }
            let live: Vec<usize> = rows.iter().copied().filter(|&r| !done[r]).collect();
            if live.is_empty() {
                break;
            }
            // A serving engine's batch drops finished requests: here once they are an eighth of
            // the rows, as prl's engine does.
            if (rows.len() - live.len()) * 8 >= rows.len() {
                let width = cache.len() as usize;
                let sources: Vec<Vec<(usize, usize)>> = (rows.iter().enumerate())
                    .filter(|(_, r)| !done[**r])
                    .map(|(row, _)| (0..width).map(|col| (row, col)).collect())
                    .collect();
                cache.gather(&sources, width);
                let mut codes = GroupCodes::padding(live.len(), width);
                for (row, &r) in live.iter().enumerate() {
                    codes.write(row, offsets[r], &layouts[r]);
                }
                keys = CachedGroups::new(codes.to_device(device));
                rows = live;
            }
            let n = rows.len();
            let mut new_ids = vec![c.pad; n];
            let mut new_positions = vec![0i64; n];
            let mut fed = GroupCodes::padding(n, 1);
            for (row, &r) in rows.iter().enumerate() {
                if done[r] {
                    continue;
                }
                let t = *seqs[r].last().expect("just decoded");
                new_ids[row] = t;
                layouts[r].push(t);
                let me = seqs[r].len() - 1;
                new_positions[row] = layouts[r].positions[me];
                fed.set(row, 0, layouts[r].code(me));
            }
            let fed = fed.to_device(device);
            let ni = n as i64;
            work.steps += 1;
            last = model.model.forward_cached(
                &Tensor::from_slice(&new_ids).view([ni, 1]).to_device(device),
                &Tensor::from_slice(&new_positions)
                    .view([ni, 1])
                    .to_device(device),
                Some(&attention_mask(&fed, &keys.push(&fed))),
                &mut cache,
            );
        }
        outs
    })
}

/// prl's sequential rollouts against HF `generate` on smollm2-135m, greedy, one batch.
fn sequential_against_hf(device: Device) {
    let dir = presets::model_cache().join("smollm2-135m");
    if !dir.join("model.safetensors").exists() {
        println!(
            "sequential vs HF generate: skipped, {} is missing",
            dir.display()
        );
        return;
    }
    let (model, tok) = presets::load_dir(&dir, device).unwrap();
    // Prompts of one length, so that neither side pads.
    let length = 48;
    let prompts: Vec<Vec<i64>> = BuiltinSet::parse("builtin:hard-test:sequential")
        .unwrap()
        .tasks()
        .iter()
        .map(|t| tok.encode(&t.prompt).unwrap())
        .filter(|p| p.len() >= length)
        .take(8)
        .map(|p| p[..length].to_vec())
        .collect();
    let new_tokens = 64;
    let config = RolloutConfig {
        attention: Attention::Seen,
        mode: RolloutMode::Sequential,
        paths: 2,
        path_budget: 3,
        max_blocks: 0,
        max_new_tokens: new_tokens,
        sampler: Sampler {
            temperature: 0.0,
            top_p: 1.0,
        },
    };
    let controls = tok.controls().unwrap();
    let mut best = f64::MAX;
    let mut outputs = Vec::new();
    for _ in 0..REPEATS {
        let started = Instant::now();
        outputs = rollout(&model.model, &prompts, &controls, &config, device);
        best = best.min(started.elapsed().as_secs_f64());
    }
    let tokens: usize = outputs.iter().map(|o| o.tokens.len()).sum();
    let prl = tokens as f64 / best;
    print!(
        "sequential generation, smollm2-135m, {} prompts x {length} tokens, up to {new_tokens} new: prl {prl:.0} tokens/s",
        prompts.len()
    );
    let work = std::env::temp_dir().join(format!("prl-gen-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    model.save(&work).unwrap();
    let flat: Vec<i64> = prompts.concat();
    Tensor::from_slice(&flat)
        .view([prompts.len() as i64, length as i64])
        .write_safetensors_one(&work.join("prompts.safetensors"));
    let answer = common::run_reference(
        "bench_generate_hf.py",
        &[
            work.to_str().unwrap(),
            "--new-tokens",
            &new_tokens.to_string(),
            "--eos",
            &controls.eos.to_string(),
            "--repeats",
            &REPEATS.to_string(),
        ],
        device,
    );
    match answer {
        Ok(line) => {
            let hf: serde_json::Value = serde_json::from_str(&line).unwrap();
            let hf_rate = hf["tokens_per_s"].as_f64().unwrap();
            let hf_outputs: Vec<Vec<i64>> = serde_json::from_value(hf["outputs"].clone()).unwrap();
            let same = outputs
                .iter()
                .zip(&hf_outputs)
                .filter(|(o, h)| o.tokens == **h)
                .count();
            println!(
                ", HF generate {hf_rate:.0} tokens/s, prl/HF = {:.2}x ({same} of {} outputs identical)",
                prl / hf_rate,
                prompts.len()
            );
        }
        Err(why) => println!(", HF generate not measured: {why}"),
    }
    let _ = std::fs::remove_dir_all(&work);
}

trait WriteOne {
    fn write_safetensors_one(&self, path: &std::path::Path);
}

impl WriteOne for Tensor {
    fn write_safetensors_one(&self, path: &std::path::Path) {
        Tensor::write_safetensors(&[("input_ids", self)], path).unwrap();
    }
}
