//! The RL job: each step samples a group of responses per prompt with the rollout engine, scores
//! them with the stage's reward schedule, and takes GRPO updates over mini-batches. It reports
//! metrics and every trajectory each step, evaluates every `eval_every` steps, checkpoints every
//! `checkpoint_every` steps with the optimiser state, and resumes from its newest checkpoint.

use crate::adamw::AdamW;
use crate::batch::{self, Example};
use crate::data::{self, Task};
use crate::eval::evaluate;
use crate::grpo::{self, PolicyLoss};
use crate::model::LoadedModel;
use crate::presets;
use crate::rollout::{Rollout, RolloutConfig, rollout};
use crate::tokenizer::PrlTokenizer;
use crate::training::Outcome;
use crate::training::{self, EpochOrder, Events};
use crate::trajectories::{self, StructureIds};
use anyhow::{Result, bail};
use prl_schema::jobs::{CheckpointRef, JobMessage, WorkerEvent};
use prl_schema::reward::{self, Scored};
use prl_schema::spec::{RlStage, StageSpec};
use prl_schema::trajectory::{PromptRecord, Trajectory};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use tokio_util::sync::CancellationToken;

/// Sequences decoded together in one rollout call.
const ROLLOUT_ROWS: usize = 256;
/// Text per trajectory message, well under NATS's default 1 MB payload limit.
const TRAJECTORY_MESSAGE_BYTES: usize = 384 * 1024;

pub async fn run(
    job: &JobMessage,
    reporter: &crate::reporter::Reporter,
    data_dir: &Path,
    stop: &CancellationToken,
) -> Result<Outcome> {
    training::on_thread(train, job, reporter, data_dir, stop).await
}

/// The decoding settings of an RL stage's rollouts.
pub fn rollout_config(stage: &RlStage) -> RolloutConfig {
    RolloutConfig {
        attention: stage.attention,
        mode: stage.mode,
        paths: stage.paths.get() as usize,
        path_budget: stage.max_path_tokens.get() as usize,
        max_blocks: stage.max_blocks as usize,
        max_new_tokens: stage.max_response_tokens.get() as usize,
        temperature: stage.temperature.get(),
        top_p: stage.top_p.get(),
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
    let device = Device::cuda_if_available();
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
    let mut optimizer = AdamW::new(&model.vs, 0.0);
    let start = training::resume(&mut model, &mut optimizer, data_dir, job)?;
    let total = stage.steps.get();
    let mut step_run = Step {
        stage,
        tok: &tok,
        device,
        ids: StructureIds {
            tags: tok.tags,
            open_summary: tok.open_summary,
            close_summary: tok.close_summary,
        },
        order: EpochOrder::new(tasks.len()),
        tasks: &tasks,
    };
    let save = |model: &LoadedModel, optimizer: &AdamW, step: u64| -> Result<CheckpointRef> {
        training::save(model, optimizer, &tok, data_dir, job, step, events)
    };
    let evaluate_at = |model: &LoadedModel, step: u64| -> Result<()> {
        let (Some(set), false) = (&stage.eval_dataset, eval_tasks.is_empty()) else {
            return Ok(());
        };
        let config = rollout_config(stage);
        let k = stage.eval_k.get() as usize;
        let result = evaluate(
            model,
            &tok,
            &eval_tasks,
            set.as_str(),
            step,
            k,
            &config,
            device,
        )?;
        let _ = events.send(WorkerEvent::Evaluation(result));
        Ok(())
    };
    if start == 0 && stage.eval_every.is_some() {
        evaluate_at(&model, 0)?;
    }
    for step in start + 1..=total {
        if stop.is_cancelled() {
            let saved = (step > 1)
                .then(|| save(&model, &optimizer, step - 1))
                .transpose()?;
            return Ok(Outcome::Stopped(saved));
        }
        if events.is_closed() {
            bail!("the daemon stopped listening at step {step}");
        }
        tch::manual_seed((job.run_id.0.as_u64_pair().0 ^ step) as i64);
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
            save(&model, &optimizer, step)?;
        }
    }
    Ok(Outcome::Finished(Some(save(&model, &optimizer, total)?)))
}

struct Step<'a> {
    stage: &'a RlStage,
    tok: &'a PrlTokenizer,
    tasks: &'a [Task],
    order: EpochOrder,
    device: Device,
    ids: StructureIds,
}

struct StepReport {
    metrics: BTreeMap<String, f64>,
    trajectories: Vec<prl_schema::trajectory::TrajectoryBatch>,
}

/// One sampled response, scored.
struct Sample {
    group: usize,
    index: usize,
    rollout: Rollout,
    text: String,
    scored: Scored,
}

impl Step<'_> {
    fn run(
        &mut self,
        step: u64,
        model: &LoadedModel,
        reference: Option<&LoadedModel>,
        optimizer: &mut AdamW,
    ) -> Result<StepReport> {
        let stage = self.stage;
        let (prompts_per_step, group) = (
            stage.prompts_per_step.get() as usize,
            stage.group_size.get() as usize,
        );
        let started = Instant::now();
        let picked: Vec<&Task> = (0..prompts_per_step)
            .map(|i| &self.tasks[self.order.index((step as usize - 1) * prompts_per_step + i)])
            .collect();
        let encoded: Vec<Vec<i64>> = picked
            .iter()
            .map(|t| self.tok.encode(&t.prompt))
            .collect::<Result<_>>()?;

        // Rollouts: `group` samples of every prompt.
        let rows: Vec<(usize, usize)> = (0..picked.len())
            .flat_map(|g| (0..group).map(move |s| (g, s)))
            .collect();
        let controls = self.tok.controls()?;
        let config = rollout_config(stage);
        let mut samples = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(ROLLOUT_ROWS) {
            let prompts: Vec<Vec<i64>> = chunk.iter().map(|&(g, _)| encoded[g].clone()).collect();
            let outs = rollout(&model.model, &prompts, &controls, &config, self.device);
            for (&(g, s), out) in chunk.iter().zip(outs) {
                let text = self.tok.decode(out.text_tokens(controls.eos))?;
                let scored = reward::score(stage.reward, step, &text, &picked[g].truth);
                samples.push(Sample {
                    group: g,
                    index: s,
                    rollout: out,
                    text,
                    scored,
                });
            }
        }
        let rollout_s = started.elapsed().as_secs_f64();

        // The update, on the groups whose rewards differ.
        let updating = Instant::now();
        let rewards: Vec<f64> = samples.iter().map(|s| s.scored.reward).collect();
        let advantages = grpo::advantages(&rewards, group, stage.dynamic_sampling);
        let kept: Vec<(Example, f64)> = samples
            .iter()
            .zip(&advantages)
            .filter_map(|(s, a)| {
                let prompt = &encoded[s.group];
                let mut tokens = prompt.clone();
                tokens.extend(&s.rollout.tokens);
                let mut forced = vec![false; prompt.len()];
                forced.extend(&s.rollout.forced);
                a.map(|a| {
                    (
                        Example {
                            tokens,
                            prompt_len: prompt.len(),
                            forced,
                        },
                        a,
                    )
                })
            })
            .collect();
        let update = self.update(&kept, model, reference, optimizer);
        let update_s = updating.elapsed().as_secs_f64();

        let metrics = self.metrics(&samples, &kept, &update, step, rollout_s, update_s);
        let (prompts, trajectories) = self.records(&picked, &encoded, samples);
        Ok(StepReport {
            metrics,
            trajectories: trajectories::batches(
                step,
                prompts,
                trajectories,
                TRAJECTORY_MESSAGE_BYTES,
            ),
        })
    }

    /// One PPO epoch over `mini_batches` mini-batches, against the log-probabilities the policy
    /// gave before the step.
    fn update(
        &self,
        kept: &[(Example, f64)],
        model: &LoadedModel,
        reference: Option<&LoadedModel>,
        optimizer: &mut AdamW,
    ) -> Update {
        let stage = self.stage;
        let mut update = Update::default();
        if kept.is_empty() {
            return update;
        }
        let per_batch = kept.len().div_ceil(stage.mini_batches.get() as usize);
        let batches: Vec<(batch::Batch, Tensor)> = kept
            .chunks(per_batch)
            .map(|chunk| {
                let rows: Vec<&Example> = chunk.iter().map(|(e, _)| e).collect();
                let advantages: Vec<f32> = chunk.iter().map(|(_, a)| *a as f32).collect();
                let batch = batch::build(
                    &rows,
                    self.tok.tags,
                    stage.attention,
                    self.tok.pad,
                    self.device,
                );
                (batch, Tensor::from_slice(&advantages).to(self.device))
            })
            .collect();
        let logprobs = |m: &LoadedModel, b: &batch::Batch| {
            tch::no_grad(|| {
                let logits = m.model.forward(&b.input_ids, &b.positions, b.mask.as_ref());
                grpo::token_logprobs(&logits, &b.targets)
            })
        };
        let old: Vec<Tensor> = batches.iter().map(|(b, _)| logprobs(model, b)).collect();
        let refs: Option<Vec<Tensor>> =
            reference.map(|r| batches.iter().map(|(b, _)| logprobs(r, b)).collect());
        for (i, (b, advantages)) in batches.iter().enumerate() {
            let logits = model
                .model
                .forward(&b.input_ids, &b.positions, b.mask.as_ref());
            let logp = grpo::token_logprobs(&logits, &b.targets);
            let mask = b.targets.ne(batch::IGNORE).to_kind(Kind::Float);
            let reference = refs.as_ref().map(|r| (&r[i], stage.kl_coef.get()));
            let PolicyLoss {
                loss,
                clip_fraction,
                approx_kl,
                kl,
            } = grpo::policy_loss(
                &logp,
                &old[i],
                advantages,
                &mask,
                (stage.clip_low.get(), stage.clip_high.get()),
                reference,
            );
            loss.backward();
            let grad_norm = optimizer.clip_grad_norm(stage.grad_clip.get());
            optimizer.step(stage.learning_rate.get());
            optimizer.zero_grad();
            let n = batches.len() as f64;
            update.loss += loss.double_value(&[]) / n;
            update.clip_fraction += clip_fraction / n;
            update.approx_kl += approx_kl / n;
            update.kl += kl / n;
            update.grad_norm += grad_norm / n;
            update.tokens += b.tokens;
        }
        update
    }

    fn metrics(
        &self,
        samples: &[Sample],
        kept: &[(Example, f64)],
        update: &Update,
        step: u64,
        rollout_s: f64,
        update_s: f64,
    ) -> BTreeMap<String, f64> {
        let n = samples.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Sample) -> f64| samples.iter().map(f).sum::<f64>() / n;
        let fold = |f: &dyn Fn(&Sample) -> f64, pick: fn(f64, f64) -> f64, init: f64| {
            samples.iter().map(f).fold(init, pick)
        };
        let reward = |s: &Sample| s.scored.reward;
        let length = |s: &Sample| s.rollout.tokens.len() as f64;
        let generated: usize = samples.iter().map(|s| s.rollout.tokens.len()).sum();
        let group = self.stage.group_size.get() as usize;
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: f64| {
            m.insert(k.to_owned(), v);
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
            "clip_ratio",
            mean(&|s| f64::from(u8::from(s.rollout.clipped))),
        );
        put("groups_kept", (kept.len() / group) as f64);
        put("policy_loss", update.loss);
        put("clip_fraction", update.clip_fraction);
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
        put("lr", self.stage.learning_rate.get());
        put(
            "s2_tiered_step",
            f64::from(u8::from(reward::s2_tiered_step(step))),
        );
        put("total_steps", self.stage.steps.get() as f64);
        m
    }

    /// The step's prompts and trajectories as the log records them.
    fn records(
        &self,
        picked: &[&Task],
        encoded: &[Vec<i64>],
        samples: Vec<Sample>,
    ) -> (Vec<PromptRecord>, Vec<Trajectory>) {
        let prompts = picked
            .iter()
            .zip(encoded)
            .enumerate()
            .map(|(g, (task, tokens))| PromptRecord {
                id: task.id.clone(),
                group: g as u32,
                text: task.prompt.clone(),
                tokens: Some(tokens.len() as u32),
                truth: task.truth.clone(),
            })
            .collect();
        let trajectories = samples
            .into_iter()
            .map(|s| Trajectory {
                prompt: s.group as u32,
                sample: s.index as u32,
                tokens: Some(s.rollout.tokens.len() as u32),
                forced: s.rollout.forced.iter().filter(|f| **f).count() as u32,
                clipped: s.rollout.clipped,
                blocks: trajectories::block_tokens(&s.rollout.tokens, self.ids),
                text: s.text,
                reward: s.scored.reward,
                accuracy: s.scored.accuracy,
                correct: s.scored.correct,
                answer: s.scored.answer,
                format_valid: s.scored.format_valid,
            })
            .collect();
        (prompts, trajectories)
    }
}

/// Means over a step's mini-batches.
#[derive(Default)]
struct Update {
    loss: f64,
    clip_fraction: f64,
    approx_kl: f64,
    kl: f64,
    grad_norm: f64,
    tokens: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::tiny_config;

    fn stage() -> RlStage {
        serde_json::from_value(serde_json::json!({
            "name": "rl", "dataset": "builtin:hard", "reward": "accuracy", "learning_rate": 3e-3,
            "steps": 1, "mini_batches": 2
        }))
        .unwrap()
    }

    /// log p(response | prompt) of each example under `model`, summed over its targets.
    fn logprob(model: &LoadedModel, tok: &PrlTokenizer, e: &Example) -> f64 {
        let b = batch::build(&[e], tok.tags, stage().attention, tok.pad, Device::Cpu);
        tch::no_grad(|| {
            let logits = model
                .model
                .forward(&b.input_ids, &b.positions, b.mask.as_ref());
            grpo::token_logprobs(&logits, &b.targets)
                .sum(Kind::Double)
                .double_value(&[])
        })
    }

    #[test]
    fn updates_move_probability_towards_the_better_samples_and_skip_forced_tokens() {
        let tok = PrlTokenizer::characters(["abxy<Path>"]).unwrap();
        tch::manual_seed(0);
        let model = LoadedModel::random(tiny_config(tok.vocab_size()), Device::Cpu);
        let mut optimizer = AdamW::new(&model.vs, 0.0);
        let stage = stage();
        let ids = StructureIds {
            tags: tok.tags,
            open_summary: tok.open_summary,
            close_summary: tok.close_summary,
        };
        let step = Step {
            stage: &stage,
            tok: &tok,
            tasks: &[],
            order: EpochOrder::new(1),
            device: Device::Cpu,
            ids,
        };
        let enc = |s: &str| tok.encode(s).unwrap();
        let example = |response: &str, forced: bool| {
            let mut tokens = enc("ab");
            tokens.extend(enc(response));
            let mut mask = vec![false; tokens.len()];
            if forced {
                *mask.last_mut().unwrap() = true;
            }
            Example {
                tokens,
                prompt_len: 2,
                forced: mask,
            }
        };
        let good = example("xx", false);
        let bad = example("yy", false);
        // Only its first `y` is the model's: the controller inserted the second.
        let bad_forced = example("yy", true);
        let kept = vec![
            (good.clone(), 1.0),
            (bad.clone(), -1.0),
            (good.clone(), 1.0),
            (bad_forced.clone(), -1.0),
        ];
        let before = (logprob(&model, &tok, &good), logprob(&model, &tok, &bad));
        let mut update = Update::default();
        for _ in 0..5 {
            update = step.update(&kept, &model, None, &mut optimizer);
        }
        let after = (logprob(&model, &tok, &good), logprob(&model, &tok, &bad));
        assert!(after.0 > before.0 + 0.5, "{before:?} -> {after:?}");
        assert!(after.1 < before.1 - 0.5, "{before:?} -> {after:?}");
        // Two mini-batches per update: the second sees a policy the first moved, so its ratio
        // differs from 1 and reports a non-zero KL estimate.
        assert!(update.approx_kl != 0.0);
        assert!(update.tokens > 0);
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
}
