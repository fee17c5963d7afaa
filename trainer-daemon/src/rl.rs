//! The RL job: each step samples a group of responses per prompt with the rollout engine, scores
//! them with the stage's reward schedule, refills the batch with new prompts while groups carry no
//! signal (DAPO dynamic sampling, up to a cap), and takes GRPO updates over shuffled mini-batches
//! whose log-probabilities come from the distribution that sampled. It reports metrics and every
//! trajectory each step, evaluates every `eval_every` steps, checkpoints every `checkpoint_every`
//! steps with the optimiser state (the last without it), and resumes from its newest checkpoint.

use crate::adamw::AdamW;
use crate::batch::{self, Example};
use crate::data::{self, Task};
use crate::eval::{Protocol, TRAJECTORY_MESSAGE_BYTES, evaluate};
use crate::grpo::{self, PolicyLoss};
use crate::model::LoadedModel;
use crate::presets;
use crate::rollout::{Rollout, RolloutConfig, rollout};
use crate::sampling::{self, Sampler};
use crate::tokenizer::PrlTokenizer;
use crate::training::Outcome;
use crate::training::{self, EpochOrder, Events};
use crate::trajectories::{self, StructureIds};
use anyhow::{Result, bail};
use prl_schema::jobs::{CheckpointRef, JobMessage, WorkerEvent};
use prl_schema::reward::{self, Scored};
use prl_schema::spec::{Attention, RlStage, StageSpec};
use prl_schema::trajectory::{PromptRecord, TrajectoryBatch};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use tokio_util::sync::CancellationToken;

/// Sequences decoded together in one rollout call.
const ROLLOUT_ROWS: usize = 256;

pub async fn run(
    job: &JobMessage,
    reporter: &crate::reporter::Reporter,
    data_dir: &Path,
    stop: &CancellationToken,
) -> Result<Outcome> {
    training::on_thread(train, job, reporter, data_dir, stop).await
}

/// The learning rate at `step` (from 1): a linear warm-up over `warmup_steps`, then constant.
fn learning_rate(stage: &RlStage, step: u64) -> f64 {
    let peak = stage.learning_rate.get();
    match stage.warmup_steps {
        0 => peak,
        warmup => peak * (step.min(warmup) as f64 / warmup as f64),
    }
}

/// The job's body, on the calling thread: events go to `events`.
pub fn train(
    job: &JobMessage,
    data_dir: &Path,
    stop: &CancellationToken,
    events: &Events,
) -> Result<Outcome> {
    let StageSpec::Rl(stage) = &job.stage else {
        bail!("not an RL job")
    };
    let device = crate::device::current();
    let tasks = data::tasks(stage.dataset.as_str(), None, &job.datasets)?;
    let eval_tasks = match &stage.eval_dataset {
        Some(set) => data::tasks(
            set.as_str(),
            stage.eval_max_prompts.map(|m| m.get() as usize),
            &job.datasets,
        )?,
        None => Vec::new(),
    };
    let corpus: Vec<&str> = tasks
        .iter()
        .flat_map(|t| [t.prompt.as_str(), t.truth.as_str()])
        .chain(["Final Answer: 0123456789\n"])
        .collect();
    let (mut model, tok) = presets::load(job, &corpus, device)?;
    // The KL penalty's reference is the policy the stage starts from.
    let reference = (stage.kl_coef.get() > 0.0)
        .then(|| presets::load(job, &corpus, device))
        .transpose()?
        .map(|(m, _)| m);
    let mut optimizer = AdamW::new(&model.vs, stage.weight_decay.get());
    let start = training::resume(&mut model, &mut optimizer, job)?;
    let total = stage.steps.get();
    let config = RolloutConfig::for_stage(&job.stage).expect("an RL stage decodes");
    let mut step_run = Step {
        stage,
        tok: &tok,
        device,
        ids: StructureIds {
            tags: tok.tags,
            open_summary: tok.open_summary,
            close_summary: tok.close_summary,
        },
        order: EpochOrder::new(tasks.len(), job.stage_seed()),
        tasks: &tasks,
        config: config.clone(),
        seed: job.stage_seed(),
    };
    let save =
        |model: &LoadedModel, optimizer: Option<&AdamW>, step: u64| -> Result<CheckpointRef> {
            training::save(model, optimizer, &tok, data_dir, job, step, events)
        };
    let evaluate_at = |model: &LoadedModel, step: u64| -> Result<()> {
        let (Some(set), false) = (&stage.eval_dataset, eval_tasks.is_empty()) else {
            return Ok(());
        };
        let protocol = Protocol {
            k: stage.eval_k.get() as usize,
            greedy: stage.eval_greedy,
            config: config.clone(),
        };
        // Every evaluation of the run samples from the stage's seed (a step's seed is `seed ^
        // step`, step ≥ 1): one repeats, and two differ only by the weights.
        tch::manual_seed(job.stage_seed() as i64);
        evaluate(
            model,
            &tok,
            &eval_tasks,
            set.as_str(),
            step,
            &protocol,
            device,
        )?
        .send(events);
        Ok(())
    };
    if start == 0 && stage.eval_every.is_some() {
        evaluate_at(&model, 0)?;
    }
    for step in start + 1..=total {
        if stop.is_cancelled() {
            let saved = (step > 1)
                .then(|| save(&model, Some(&optimizer), step - 1))
                .transpose()?;
            return Ok(Outcome::Stopped(saved));
        }
        if events.is_closed() {
            bail!("the daemon stopped listening at step {step}");
        }
        tch::manual_seed((step_run.seed ^ step) as i64);
        let report = step_run.run(step, &model, reference.as_ref(), &mut optimizer)?;
        let _ = events.send(WorkerEvent::Metrics {
            step,
            values: report.metrics,
        });
        for batch in report.trajectories {
            let _ = events.send(WorkerEvent::Trajectories(batch));
        }
        if stage
            .eval_every
            .is_some_and(|every| step.is_multiple_of(every.get()) || step == total)
        {
            evaluate_at(&model, step)?;
        }
        if stage
            .checkpoint_every
            .is_some_and(|every| step.is_multiple_of(every.get()))
            && step < total
        {
            save(&model, Some(&optimizer), step)?;
        }
    }
    Ok(Outcome::Finished(Some(save(&model, None, total)?)))
}

struct Step<'a> {
    stage: &'a RlStage,
    tok: &'a PrlTokenizer,
    tasks: &'a [Task],
    order: EpochOrder,
    device: Device,
    ids: StructureIds,
    config: RolloutConfig,
    /// The run's seed: sampling and shuffles repeat when a resumed attempt redoes a step.
    seed: u64,
}

struct StepReport {
    metrics: BTreeMap<String, f64>,
    trajectories: Vec<TrajectoryBatch>,
}

/// One sampled response, scored.
struct Sample {
    group: usize,
    index: usize,
    rollout: Rollout,
    text: String,
    scored: Scored,
}

/// What a step sampled: its prompts (one group each), every response, and the groups it trains on.
struct Sampled<'t> {
    picked: Vec<&'t Task>,
    encoded: Vec<Vec<i64>>,
    samples: Vec<Sample>,
    kept: Vec<usize>,
    rounds: u64,
}

impl<'a> Step<'a> {
    fn run(
        &mut self,
        step: u64,
        model: &LoadedModel,
        reference: Option<&LoadedModel>,
        optimizer: &mut AdamW,
    ) -> Result<StepReport> {
        let started = Instant::now();
        let sampled = self.sample(step, model)?;
        let rollout_s = started.elapsed().as_secs_f64();

        let updating = Instant::now();
        let group = self.stage.group_size.get() as usize;
        let mut examples: Vec<(Example, f64)> = Vec::new();
        for &g in &sampled.kept {
            let members = &sampled.samples[g * group..(g + 1) * group];
            let rewards: Vec<f64> = members.iter().map(|s| s.scored.reward).collect();
            let advantages = grpo::advantages(&rewards, group, false);
            for (s, a) in members.iter().zip(advantages) {
                examples.push((example(&sampled.encoded[g], &s.rollout), a.unwrap_or(0.0)));
            }
        }
        examples.shuffle(&mut rand::rngs::StdRng::seed_from_u64(self.seed ^ step));
        let lr = learning_rate(self.stage, step);
        let update = self.update(&examples, model, reference, optimizer, lr);
        let update_s = updating.elapsed().as_secs_f64();

        let mut metrics = self.metrics(&sampled, &update, step, rollout_s, update_s);
        metrics.insert("lr".into(), lr);
        Ok(StepReport {
            metrics,
            trajectories: self.records(step, sampled),
        })
    }

    /// Rolls out `group_size` samples of `prompts_per_step` new prompts, and with dynamic
    /// sampling again while fewer than `prompts_per_step` groups have differing rewards, up to
    /// `max_sampling_rounds` rounds. Prompts come from a fixed place in the data order per step
    /// and round, so a resumed attempt draws the same ones.
    fn sample(&mut self, step: u64, model: &LoadedModel) -> Result<Sampled<'a>> {
        let stage = self.stage;
        let (per_round, group) = (
            stage.prompts_per_step.get() as usize,
            stage.group_size.get() as usize,
        );
        let rounds = if stage.dynamic_sampling {
            stage.max_sampling_rounds.get()
        } else {
            1
        };
        let controls = self.tok.controls()?;
        let mut sampled = Sampled {
            picked: Vec::new(),
            encoded: Vec::new(),
            samples: Vec::new(),
            kept: Vec::new(),
            rounds: 0,
        };
        while sampled.rounds < rounds && sampled.kept.len() < per_round {
            let base = (((step - 1) * rounds + sampled.rounds) as usize) * per_round;
            let first = sampled.picked.len();
            for i in 0..per_round {
                let task = &self.tasks[self.order.index(base + i)];
                sampled.encoded.push(self.tok.encode(&task.prompt)?);
                sampled.picked.push(task);
            }
            let rows: Vec<(usize, usize)> = (first..sampled.picked.len())
                .flat_map(|g| (0..group).map(move |s| (g, s)))
                .collect();
            for chunk in rows.chunks(ROLLOUT_ROWS) {
                let prompts: Vec<Vec<i64>> = chunk
                    .iter()
                    .map(|&(g, _)| sampled.encoded[g].clone())
                    .collect();
                let outs = rollout(&model.model, &prompts, &controls, &self.config, self.device);
                for (&(g, s), out) in chunk.iter().zip(outs) {
                    let text = self.tok.decode(out.text_tokens(controls.eos))?;
                    let truth = &sampled.picked[g].truth;
                    let scored = reward::score(stage.reward, step, &text, truth);
                    sampled.samples.push(Sample {
                        group: g,
                        index: s,
                        rollout: out,
                        text,
                        scored,
                    });
                }
            }
            for g in first..sampled.picked.len() {
                let rewards = sampled.samples[g * group..(g + 1) * group]
                    .iter()
                    .map(|s| s.scored.reward);
                let (low, high) =
                    rewards.fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(r), h.max(r)));
                if !stage.dynamic_sampling || high - low > 1e-12 {
                    sampled.kept.push(g);
                }
            }
            sampled.rounds += 1;
        }
        sampled.kept.truncate(per_round);
        Ok(sampled)
    }

    /// One PPO epoch over mini-batches of `mini_batch_size` samples, against the log-probabilities
    /// the policy gave before the step, read from the distribution the rollouts sampled from.
    fn update(
        &self,
        examples: &[(Example, f64)],
        model: &LoadedModel,
        reference: Option<&LoadedModel>,
        optimizer: &mut AdamW,
        lr: f64,
    ) -> Update {
        let stage = self.stage;
        let mut update = Update::default();
        if examples.is_empty() {
            return update;
        }
        let sampler = self.config.sampler;
        let banned = self.tok.tags.open_parallel;
        let mini_batches: Vec<Vec<Part>> = examples
            .chunks(stage.mini_batch_size.get() as usize)
            .map(|chunk| {
                let rows: Vec<&(Example, f64)> = chunk.iter().collect();
                batch::by_length(&rows, |(e, _)| e.tokens.len())
                    .iter()
                    .map(|part| Part::new(part, self.tok, stage.attention, self.device))
                    .collect()
            })
            .collect();
        // The policy's log-probabilities at a mini-batch's tokens, noting its entropy there.
        let mut entropy = (0.0, 0usize);
        let mut noting_entropy = |parts: &[Part]| {
            joined(parts, |p| {
                let d = p.distribution(model, sampler, banned);
                let h = sampling::entropy(&d, &p.targets);
                entropy.0 += h.sum(Kind::Double).double_value(&[]);
                entropy.1 += p.batch.trained;
                sampling::target_logprobs(&d, &p.targets)
            })
        };
        // The policy before the step. The first mini-batch's update reads it in its own pass, as
        // the policy has not moved yet; the others' are read now.
        let old: Vec<Option<Tensor>> = (mini_batches.iter().enumerate())
            .map(|(i, parts)| (i > 0).then(|| tch::no_grad(|| noting_entropy(parts))))
            .collect();
        let refs: Option<Vec<Tensor>> = reference.map(|r| {
            (mini_batches.iter())
                .map(|parts| tch::no_grad(|| joined(parts, |p| p.logprobs(r, sampler, banned))))
                .collect()
        });
        for (i, parts) in mini_batches.iter().enumerate() {
            let logp = match i {
                0 => noting_entropy(parts),
                _ => joined(parts, |p| p.logprobs(model, sampler, banned)),
            };
            let old = old[i]
                .as_ref()
                .map_or_else(|| logp.detach(), Tensor::shallow_clone);
            let advantages = joined(parts, |p| p.advantages.shallow_clone());
            let reference = refs.as_ref().map(|r| (&r[i], stage.kl_coef.get()));
            let PolicyLoss {
                loss,
                clip_low_fraction,
                clip_high_fraction,
                approx_kl,
                kl,
            } = grpo::policy_loss(
                &logp,
                &old,
                &advantages,
                (stage.clip_low.get(), stage.clip_high.get()),
                reference,
            );
            loss.backward();
            let grad_norm = optimizer.clip_grad_norm(stage.grad_clip.get());
            optimizer.step(lr);
            optimizer.zero_grad();
            let n = mini_batches.len() as f64;
            update.loss += loss.double_value(&[]) / n;
            update.clip_low += clip_low_fraction / n;
            update.clip_high += clip_high_fraction / n;
            update.approx_kl += approx_kl / n;
            update.kl += kl / n;
            update.grad_norm += grad_norm / n;
            update.tokens += parts.iter().map(|p| p.batch.tokens).sum::<usize>();
            update.mini_batches += 1;
        }
        update.entropy = entropy.0 / entropy.1.max(1) as f64;
        update
    }

    fn metrics(
        &self,
        sampled: &Sampled,
        update: &Update,
        step: u64,
        rollout_s: f64,
        update_s: f64,
    ) -> BTreeMap<String, f64> {
        let samples = &sampled.samples;
        let mean_over = |of: &dyn Fn(&Sample) -> bool, f: &dyn Fn(&Sample) -> f64| {
            let (sum, n) = samples
                .iter()
                .filter(|s| of(s))
                .fold((0.0, 0usize), |(sum, n), s| (sum + f(s), n + 1));
            if n == 0 { f64::NAN } else { sum / n as f64 }
        };
        let mean = |f: &dyn Fn(&Sample) -> f64| mean_over(&|_| true, f);
        let fold = |f: &dyn Fn(&Sample) -> f64, pick: fn(f64, f64) -> f64, init: f64| {
            samples.iter().map(f).fold(init, pick)
        };
        let reward = |s: &Sample| s.scored.reward;
        let length = |s: &Sample| s.rollout.tokens.len() as f64;
        let generated: usize = samples.iter().map(|s| s.rollout.tokens.len()).sum();
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: f64| {
            // JSON has no NaN: a mean over nothing is left out.
            if v.is_finite() {
                m.insert(k.to_owned(), v);
            }
        };
        put("reward/mean", mean(&reward));
        put("reward/max", fold(&reward, f64::max, f64::MIN));
        put("reward/min", fold(&reward, f64::min, f64::MAX));
        put("accuracy", mean(&|s| f64::from(u8::from(s.scored.correct))));
        put(
            "format_valid",
            mean(&|s| f64::from(u8::from(s.scored.format_valid))),
        );
        put(
            "parallel_ratio",
            mean(&|s| f64::from(u8::from(s.scored.blocks > 0))),
        );
        put("blocks/mean", mean(&|s| s.scored.blocks as f64));
        put("response_length/mean", mean(&length));
        put("response_length/max", fold(&length, f64::max, 0.0));
        put("response_length/min", fold(&length, f64::min, f64::MAX));
        put(
            "response_length/correct",
            mean_over(&|s| s.scored.correct, &length),
        );
        put(
            "response_length/wrong",
            mean_over(&|s| !s.scored.correct, &length),
        );
        put(
            "clip_ratio",
            mean(&|s| f64::from(u8::from(s.rollout.clipped))),
        );
        put("groups_sampled", sampled.picked.len() as f64);
        put("groups_kept", sampled.kept.len() as f64);
        put("sampling_rounds", sampled.rounds as f64);
        put("mini_batches", update.mini_batches as f64);
        put("entropy", update.entropy);
        put("policy_loss", update.loss);
        put("clip_fraction", update.clip_low + update.clip_high);
        put("clip_fraction/low", update.clip_low);
        put("clip_fraction/high", update.clip_high);
        put("approx_kl", update.approx_kl);
        put("kl", update.kl);
        put("grad_norm", update.grad_norm);
        put("tokens_per_s", generated as f64 / rollout_s.max(1e-9));
        put(
            "update_tokens_per_s",
            update.tokens as f64 / update_s.max(1e-9),
        );
        put("time/rollout_s", rollout_s);
        put("time/update_s", update_s);
        put(
            "s2_tiered_step",
            f64::from(u8::from(reward::s2_tiered_step(step))),
        );
        put("total_steps", self.stage.steps.get() as f64);
        m
    }

    /// Every sampled response of the step, as the log records them.
    fn records(&self, step: u64, sampled: Sampled) -> Vec<TrajectoryBatch> {
        let prompts = sampled
            .picked
            .iter()
            .zip(&sampled.encoded)
            .enumerate()
            .map(|(g, (task, tokens))| PromptRecord {
                id: task.id.clone(),
                group: g as u32,
                text: task.prompt.clone(),
                tokens: Some(tokens.len() as u32),
                truth: task.truth.clone(),
            })
            .collect();
        let records = sampled
            .samples
            .into_iter()
            .map(|s| {
                trajectories::record(
                    s.group as u32,
                    s.index as u32,
                    &s.rollout,
                    s.text,
                    s.scored,
                    self.ids,
                )
            })
            .collect();
        trajectories::batches(step, None, prompts, records, TRAJECTORY_MESSAGE_BYTES)
    }
}

/// The training example of a response to an encoded prompt.
fn example(prompt: &[i64], rollout: &Rollout) -> Example {
    let mut tokens = prompt.to_vec();
    tokens.extend(&rollout.tokens);
    let mut forced = vec![false; prompt.len()];
    forced.extend(&rollout.forced);
    let mut banned = vec![false; prompt.len()];
    banned.extend(&rollout.banned);
    Example {
        tokens,
        prompt_len: prompt.len(),
        forced,
        banned,
    }
}

/// A part of a mini-batch (`batch::by_length`), and its trained tokens: `targets`, `banned` and
/// `advantages` are (1, N), in the order `CausalLm::forward_at` gives their logits. The update
/// reads nothing else.
struct Part {
    batch: batch::Batch,
    /// (B, L): the positions with a target.
    at: Tensor,
    targets: Tensor,
    banned: Tensor,
    advantages: Tensor,
}

impl Part {
    fn new(
        rows: &[&(Example, f64)],
        tok: &PrlTokenizer,
        attention: Attention,
        device: Device,
    ) -> Part {
        let examples: Vec<&Example> = rows.iter().map(|(e, _)| e).collect();
        let batch = batch::build(&examples, tok.tags, attention, tok.pad, device);
        let at = batch.targets.ne(batch::IGNORE);
        let at_tokens = |t: &Tensor| t.masked_select(&at).unsqueeze(0);
        let per_row: Vec<f32> = rows.iter().map(|(_, a)| *a as f32).collect();
        let per_row = Tensor::from_slice(&per_row).to(device).unsqueeze(-1);
        Part {
            targets: at_tokens(&batch.targets),
            banned: at_tokens(&batch.banned),
            advantages: at_tokens(&per_row.expand_as(&batch.targets)),
            at,
            batch,
        }
    }

    /// The sampling distribution of `model` at the trained tokens, (1, N, V), with
    /// `<Parallel>` (`open_parallel`) blocked where the rollout banned it.
    fn distribution(&self, model: &LoadedModel, sampler: Sampler, open_parallel: i64) -> Tensor {
        let b = &self.batch;
        let logits =
            (model.model).forward_at(&b.input_ids, &b.positions, b.mask.as_ref(), &self.at);
        sampler.distribution(&logits.unsqueeze(0), Some((&self.banned, open_parallel)))
    }

    /// Log-probabilities of the trained tokens under `model`, (1, N).
    fn logprobs(&self, model: &LoadedModel, sampler: Sampler, open_parallel: i64) -> Tensor {
        sampling::target_logprobs(
            &self.distribution(model, sampler, open_parallel),
            &self.targets,
        )
    }
}

/// A mini-batch's values at its trained tokens, (1, N): its parts' one after another.
fn joined(parts: &[Part], of: impl FnMut(&Part) -> Tensor) -> Tensor {
    Tensor::cat(&parts.iter().map(of).collect::<Vec<_>>(), 1)
}

/// Means over a step's mini-batches.
#[derive(Default)]
struct Update {
    loss: f64,
    clip_low: f64,
    clip_high: f64,
    approx_kl: f64,
    kl: f64,
    grad_norm: f64,
    /// Mean entropy of the sampling distribution over the step's response tokens.
    entropy: f64,
    tokens: usize,
    mini_batches: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::tiny_config;
    use prl_schema::spec::ModelRef;

    fn stage() -> RlStage {
        serde_json::from_value(serde_json::json!({
            "name": "rl", "dataset": "builtin:hard", "reward": "accuracy", "learning_rate": 3e-3,
            "steps": 1, "mini_batch_size": 2
        }))
        .unwrap()
    }

    fn step<'a>(stage: &'a RlStage, tok: &'a PrlTokenizer, temperature: f64) -> Step<'a> {
        let job = StageSpec::Rl(stage.clone());
        let mut config = RolloutConfig::for_stage(&job).unwrap();
        config.sampler = Sampler {
            temperature,
            top_p: 1.0,
        };
        Step {
            stage,
            tok,
            tasks: &[],
            order: EpochOrder::new(1, 0),
            device: Device::Cpu,
            ids: StructureIds {
                tags: tok.tags,
                open_summary: tok.open_summary,
                close_summary: tok.close_summary,
            },
            config,
            seed: 0,
        }
    }

    /// log p(response | prompt) of an example under `model` at temperature 1, summed.
    fn logprob(model: &LoadedModel, tok: &PrlTokenizer, e: &Example) -> f64 {
        let b = batch::build(&[e], tok.tags, stage().attention, tok.pad, Device::Cpu);
        let sampler = Sampler {
            temperature: 1.0,
            top_p: 1.0,
        };
        tch::no_grad(|| {
            let logits = model
                .model
                .forward(&b.input_ids, &b.positions, b.mask.as_ref());
            sampling::target_logprobs(&sampler.distribution(&logits, None), &b.targets)
                .sum(Kind::Double)
                .double_value(&[])
        })
    }

    fn example_of(tok: &PrlTokenizer, response: &str, forced_last: bool) -> Example {
        let enc = |s: &str| tok.encode(s).unwrap();
        let mut tokens = enc("ab");
        tokens.extend(enc(response));
        let mut forced = vec![false; tokens.len()];
        if forced_last {
            *forced.last_mut().unwrap() = true;
        }
        Example {
            banned: vec![false; tokens.len()],
            tokens,
            prompt_len: 2,
            forced,
        }
    }

    #[test]
    fn updates_move_probability_towards_the_better_samples_and_skip_forced_tokens() {
        let tok = PrlTokenizer::characters(["abxy<Path>"]).unwrap();
        tch::manual_seed(0);
        let model = LoadedModel::random(tiny_config(tok.vocab_size()), Device::Cpu);
        let mut optimizer = AdamW::new(&model.vs, 0.0);
        let stage = stage();
        let step = step(&stage, &tok, 1.0);
        let good = example_of(&tok, "xx", false);
        let bad = example_of(&tok, "yy", false);
        // Only its first `y` is the model's: the controller inserted the second.
        let bad_forced = example_of(&tok, "yy", true);
        let kept = vec![
            (good.clone(), 1.0),
            (bad.clone(), -1.0),
            (good.clone(), 1.0),
            (bad_forced.clone(), -1.0),
        ];
        let before = (logprob(&model, &tok, &good), logprob(&model, &tok, &bad));
        let mut update = Update::default();
        for _ in 0..5 {
            update = step.update(&kept, &model, None, &mut optimizer, 3e-3);
        }
        let after = (logprob(&model, &tok, &good), logprob(&model, &tok, &bad));
        assert!(after.0 > before.0 + 0.5, "{before:?} -> {after:?}");
        assert!(after.1 < before.1 - 0.5, "{before:?} -> {after:?}");
        // Mini-batches of 2 samples: the second sees a policy the first moved, so its ratio
        // differs from 1 and reports a non-zero KL estimate.
        assert_eq!(update.mini_batches, 2);
        assert!(update.approx_kl != 0.0);
        assert!(update.tokens > 0 && update.entropy > 0.0);
        // The forced token is an input but not a target.
        let forced_targets = batch::build(
            &[&bad_forced],
            tok.tags,
            stage.attention,
            tok.pad,
            Device::Cpu,
        )
        .targets
        .ne(batch::IGNORE)
        .sum(Kind::Int64)
        .int64_value(&[]);
        assert_eq!(forced_targets, 1);
    }

    #[test]
    fn a_mini_batch_split_by_length_has_the_policy_gradient_of_the_padded_one() {
        let tok = PrlTokenizer::characters(["abxy<Path>"]).unwrap();
        tch::manual_seed(3);
        let model = LoadedModel::random(tiny_config(tok.vocab_size()), Device::Cpu);
        let sampler = Sampler {
            temperature: 1.0,
            top_p: 1.0,
        };
        let open = tok.tags.open_parallel;
        // One long response, with `<Parallel>` banned at some of its tokens, and three short
        // ones; each sample has its own advantage.
        let mut long = example_of(&tok, &"x".repeat(400), false);
        long.banned[5..9].fill(true);
        let advantages = [1.5f32, -1.0, 0.5, -0.25];
        let kept: Vec<(Example, f64)> = [
            long,
            example_of(&tok, "y", false),
            example_of(&tok, "xy", false),
            example_of(&tok, "yyx", false),
        ]
        .into_iter()
        .zip(advantages.map(f64::from))
        .collect();
        let grads = |logp: &Tensor, adv: &Tensor| {
            let loss = grpo::policy_loss(logp, &logp.detach(), adv, (0.2, 0.28), None).loss;
            (loss.double_value(&[]), model.gradients(&loss))
        };

        let rows: Vec<&(Example, f64)> = kept.iter().collect();
        let parts: Vec<Part> = batch::by_length(&rows, |(e, _)| e.tokens.len())
            .iter()
            .map(|part| Part::new(part, &tok, Attention::Unseen, Device::Cpu))
            .collect();
        assert_eq!(parts.len(), 2);
        let (split, split_grads) = grads(
            &joined(&parts, |p| p.logprobs(&model, sampler, open)),
            &joined(&parts, |p| p.advantages.shallow_clone()),
        );

        // The padded mini-batch, in its own order, with logits at every position.
        let examples: Vec<&Example> = kept.iter().map(|(e, _)| e).collect();
        let b = batch::build(&examples, tok.tags, Attention::Unseen, tok.pad, Device::Cpu);
        let at = b.targets.ne(batch::IGNORE);
        let logits = model
            .model
            .forward(&b.input_ids, &b.positions, b.mask.as_ref());
        let d = sampler.distribution(&logits, Some((&b.banned, open)));
        let adv = Tensor::from_slice(&advantages).unsqueeze(-1);
        let (padded, padded_grads) = grads(
            &sampling::target_logprobs(&d, &b.targets).masked_select(&at),
            &adv.expand_as(&b.targets).masked_select(&at),
        );
        assert!((split - padded).abs() < 1e-6, "{split} vs {padded}");
        for (a, b) in split_grads.iter().zip(&padded_grads) {
            assert!(a.allclose(b, 1e-4, 1e-6, false), "{a} vs {b}");
        }
    }

    #[test]
    fn the_update_reads_the_tempered_distribution_the_rollouts_sampled() {
        // The same model and samples at two temperatures: the policy the update reads is flatter
        // at T=2 than at T=0.5 (raw logits would give both the same entropy), and against its
        // own old log-probabilities a single mini-batch has a ratio of exactly 1.
        let (model, tok) = tiny_base();
        let stage: RlStage = serde_json::from_value(serde_json::json!({
            "name": "rl", "dataset": "builtin:hard", "reward": "accuracy", "learning_rate": 1e-9,
            "steps": 1, "mini_batch_size": 8
        }))
        .unwrap();
        let entropy = |temperature: f64| {
            let mut optimizer = AdamW::new(&model.vs, 0.0);
            let step = step(&stage, &tok, temperature);
            let kept = vec![
                (example_of(&tok, "12+30=42.", false), 1.0),
                (example_of(&tok, "12+30=43.", false), -1.0),
            ];
            let update = step.update(&kept, &model, None, &mut optimizer, 1e-9);
            assert!(update.approx_kl.abs() < 1e-6, "T={temperature}");
            assert_eq!(update.clip_low + update.clip_high, 0.0);
            update.entropy
        };
        let (cold, hot) = (entropy(0.5), entropy(2.0));
        assert!(
            hot > 2.0 * cold + 0.1,
            "entropy {cold} at T=0.5, {hot} at T=2"
        );
    }

    #[test]
    fn the_learning_rate_warms_up_linearly() {
        let mut stage = stage();
        stage.warmup_steps = 4;
        let lrs: Vec<f64> = (1..=6).map(|s| learning_rate(&stage, s)).collect();
        let peak = stage.learning_rate.get();
        assert_eq!(lrs, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0].map(|f| f * peak));
    }

    /// The tiny base and its tokenizer.
    fn tiny_base() -> (LoadedModel, PrlTokenizer) {
        let dir = presets::tiny_base_dir().unwrap();
        let model = LoadedModel::load(&dir, Device::Cpu).unwrap();
        let (tok, _) =
            PrlTokenizer::load(&dir.join("tokenizer.json"), crate::tokenizer::EOS).unwrap();
        (model, tok)
    }

    #[test]
    fn dynamic_sampling_refills_the_batch_with_new_prompts_up_to_its_cap() {
        let (model, tok) = tiny_base();
        let stage = |dataset: &str, dynamic: bool| -> RlStage {
            serde_json::from_value(serde_json::json!({
                "name": "rl", "dataset": dataset, "mode": "sequential", "reward": "accuracy",
                "learning_rate": 1e-5, "steps": 1, "prompts_per_step": 4, "group_size": 4,
                "dynamic_sampling": dynamic, "max_sampling_rounds": 3,
                "max_response_tokens": 96
            }))
            .unwrap()
        };
        let run = |stage: &RlStage, temperature: f64| {
            let tasks = data::tasks(stage.dataset.as_str(), None, &Default::default()).unwrap();
            let mut step = step(stage, &tok, temperature);
            step.tasks = &tasks;
            step.order = EpochOrder::new(tasks.len(), 9);
            tch::manual_seed(9);
            let sampled = step.sample(1, &model).unwrap();
            let group = 4;
            let uniform = |g: usize| {
                let r: Vec<f64> = sampled.samples[g * group..(g + 1) * group]
                    .iter()
                    .map(|s| s.scored.reward)
                    .collect();
                r.iter().all(|x| *x == r[0])
            };
            let prompts: std::collections::HashSet<&str> =
                sampled.picked.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(
                prompts.len(),
                sampled.picked.len(),
                "each round draws new prompts"
            );
            assert_eq!(sampled.samples.len(), sampled.picked.len() * group);
            (
                sampled.rounds,
                sampled.picked.len(),
                sampled.kept.clone(),
                (0..sampled.picked.len()).map(uniform).collect::<Vec<_>>(),
            )
        };
        // Decoded greedily, a group's samples are all the same: no group has signal, so every
        // round is rolled out, 12 prompts in all, and nothing is kept.
        let (rounds, picked, kept, _) = run(&stage("builtin:hard:sequential", true), 0.0);
        assert_eq!((rounds, picked, kept.len()), (3, 12, 0));
        // On the hard ones groups differ: only those are kept, at most 4, refilled while short.
        let (rounds, picked, kept, uniform) = run(&stage("builtin:hard:sequential", true), 1.0);
        assert!(!kept.is_empty() && kept.len() <= 4, "{kept:?}");
        assert!(kept.iter().all(|&g| !uniform[g]));
        let first_round_kept = (0..4).filter(|&g| !uniform[g]).count();
        assert_eq!(rounds > 1, first_round_kept < 4, "refilled only when short");
        assert_eq!(picked, rounds as usize * 4);
        // Without dynamic sampling one round is taken whole.
        let (rounds, picked, kept, _) = run(&stage("builtin:hard:sequential", false), 1.0);
        assert_eq!((rounds, picked, kept), (1, 4, vec![0, 1, 2, 3]));
    }

    #[test]
    fn a_stage_that_starts_from_another_runs_checkpoint_starts_a_fresh_optimiser() {
        // The mid-training switch: a new stage from a checkpoint that carries its optimiser state
        // starts from the weights only, as the reference's scaffold does.
        let data_dir = std::env::temp_dir().join(format!("prl-switch-{}", std::process::id()));
        let job = |run: u128, model: ModelRef| JobMessage {
            job_id: prl_schema::ids::JobId::new(),
            run_id: prl_schema::ids::RunId(uuid::Uuid::from_u128(run)),
            experiment_id: prl_schema::ids::ExperimentId::new(),
            attempt: 1,
            expected_version: 0,
            model,
            stage: StageSpec::Rl(
                serde_json::from_value(serde_json::json!({
                    "name": "rl", "dataset": "builtin:hard:sequential", "mode": "sequential",
                    "reward": "accuracy", "learning_rate": 1e-5, "steps": 2, "prompts_per_step": 2,
                    "group_size": 2, "mini_batch_size": 4, "dynamic_sampling": false,
                    "max_response_tokens": 48, "checkpoint_every": 1
                }))
                .unwrap(),
            ),
            seed: 1,
            input_checkpoint: None,
            resume_from: None,
            datasets: Default::default(),
        };
        let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        // Trains `job`; returns its last checkpoint, and its first step's directory with the
        // optimiser steps recorded there.
        let run = |job: &JobMessage| {
            let outcome = train(job, &data_dir, &stop, &events).unwrap();
            let Outcome::Finished(Some(last)) = outcome else {
                panic!("{outcome:?}")
            };
            let dir = crate::checkpoint::local_dir(&last).unwrap();
            assert!(
                !dir.join("optimizer.safetensors").exists(),
                "the stage's last checkpoint carries no optimiser state"
            );
            let first = crate::checkpoint::step_dir(&data_dir, job, 1);
            let state = Tensor::read_safetensors(first.join("optimizer.safetensors")).unwrap();
            let step = state.iter().find(|(name, _)| name == "step").unwrap();
            (last, first, step.1.int64_value(&[]))
        };
        let base = ModelRef::Preset(prl_schema::spec::ModelPreset::TinyBase);
        let mut first_job = job(1, base);
        let (last, first, steps) = run(&first_job);
        assert_eq!(steps, 1);
        let (_, _, steps) = run(&job(2, ModelRef::Path(first.display().to_string())));
        assert_eq!(
            steps, 1,
            "the optimiser started afresh, not from the first run's state"
        );
        // An attempt that resumes from the last checkpoint (its finish was not recorded) has no
        // step left: it saves the checkpoint again and finishes.
        first_job.attempt = 2;
        first_job.resume_from = Some(last);
        while received.try_recv().is_ok() {}
        let outcome = train(&first_job, &data_dir, &stop, &events).unwrap();
        while let Ok(event) = received.try_recv() {
            assert!(
                !matches!(event, WorkerEvent::Metrics { .. }),
                "a step was taken after the last: {event:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&data_dir);
        let Outcome::Finished(Some(again)) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(again.step, 2);
    }
}
