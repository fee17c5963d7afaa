//! Evaluation, the paper's protocol: k sampled responses per held-out prompt (and, when asked, one
//! greedy response), scored with the reference's answer check and reduced to Mean@k and the
//! unbiased Pass@k with their standard errors, the parallel ratio and the mean length. A file that
//! mixes benchmarks (verl's `data_source`) is reported per source, and a prompt the file repeats
//! counts as more samples of one prompt. Every generation is recorded, like RL's trajectories.

use crate::data::Task;
use crate::model::LoadedModel;
use crate::presets;
use crate::reporter::Reporter;
use crate::rollout::{RolloutConfig, rollout};
use crate::sampling::Sampler;
use crate::tokenizer::PrlTokenizer;
use crate::training::{Events, Outcome};
use crate::trajectories::{self, StructureIds};
use anyhow::{Result, bail};
use prl_schema::estimators::estimate;
use prl_schema::jobs::{JobMessage, WorkerEvent};
use prl_schema::reward::{self, Scored};
use prl_schema::spec::{RewardSchedule, StageSpec};
use prl_schema::trajectory::{
    EvaluationResult, PromptRecord, Sampling, Trajectory, TrajectoryBatch,
};
use std::collections::BTreeMap;
use std::path::Path;
use tch::Device;
use tokio_util::sync::CancellationToken;

/// Prompt-samples decoded together.
const BATCH: usize = 128;
/// Text per trajectory message, well under NATS's default 1 MB payload limit.
pub const TRAJECTORY_MESSAGE_BYTES: usize = 384 * 1024;

/// How an evaluation samples.
#[derive(Clone, Debug)]
pub struct Protocol {
    /// Samples per prompt (per copy of a repeated prompt).
    pub k: usize,
    /// Also one greedy response per distinct prompt.
    pub greedy: bool,
    pub config: RolloutConfig,
}

/// What an evaluation reports: a result per benchmark, and every generation.
pub struct Evaluation {
    pub results: Vec<EvaluationResult>,
    pub generations: Vec<TrajectoryBatch>,
}

impl Evaluation {
    pub fn send(self, events: &Events) {
        for batch in self.generations {
            let _ = events.send(WorkerEvent::Trajectories(batch));
        }
        for result in self.results {
            let _ = events.send(WorkerEvent::Evaluation(result));
        }
    }
}

/// One distinct prompt of a benchmark and how often the file repeats it.
struct Problem<'a> {
    task: &'a Task,
    copies: usize,
}

/// Evaluates the model on `tasks`, labelled `benchmark` (a dataset reference; named without its
/// prompt style, so that a sequential baseline's numbers sit in the same column as the parallel
/// runs') and `step`, the training step of the weights.
pub fn evaluate(
    model: &LoadedModel,
    tok: &PrlTokenizer,
    tasks: &[Task],
    benchmark: &str,
    step: u64,
    protocol: &Protocol,
    device: Device,
) -> Result<Evaluation> {
    let benchmark = benchmark.strip_suffix(":sequential").unwrap_or(benchmark);
    let mut sources: BTreeMap<Option<&str>, Vec<Problem>> = BTreeMap::new();
    for task in tasks {
        let problems = sources.entry(task.source.as_deref()).or_default();
        match problems
            .iter_mut()
            .find(|p| p.task.prompt == task.prompt && p.task.truth == task.truth)
        {
            Some(problem) => problem.copies += 1,
            None => problems.push(Problem { task, copies: 1 }),
        }
    }
    let several = sources.len() > 1;
    let mut out = Evaluation {
        results: Vec::new(),
        generations: Vec::new(),
    };
    for (source, problems) in &sources {
        let label = match source {
            Some(source) if several => format!("{benchmark}#{source}"),
            _ => benchmark.to_owned(),
        };
        let sampled = Decoded::run(model, tok, problems, protocol.k, &protocol.config, device)?;
        let greedy = protocol
            .greedy
            .then(|| {
                let config = RolloutConfig {
                    sampler: Sampler {
                        temperature: 0.0,
                        top_p: 1.0,
                    },
                    ..protocol.config.clone()
                };
                let once: Vec<Problem> = problems
                    .iter()
                    .map(|p| Problem {
                        task: p.task,
                        copies: 1,
                    })
                    .collect();
                Decoded::run(model, tok, &once, 1, &config, device)
            })
            .transpose()?;
        out.results.push(sampled.result(
            &label,
            step,
            &protocol.config,
            greedy.as_ref().map(Decoded::accuracy),
        ));
        out.generations
            .extend(sampled.batches(step, &label, problems, tok)?);
        if let Some(greedy) = greedy {
            out.generations.extend(greedy.batches(
                step,
                &format!("{label} (greedy)"),
                problems,
                tok,
            )?);
        }
    }
    Ok(out)
}

/// The scored responses to a benchmark's problems, `samples[p]` for problem `p`.
struct Decoded {
    samples: Vec<Vec<Trajectory>>,
}

impl Decoded {
    fn run(
        model: &LoadedModel,
        tok: &PrlTokenizer,
        problems: &[Problem],
        k: usize,
        config: &RolloutConfig,
        device: Device,
    ) -> Result<Decoded> {
        let controls = tok.controls()?;
        let ids = StructureIds {
            tags: tok.tags,
            open_summary: tok.open_summary,
            close_summary: tok.close_summary,
        };
        let encoded: Vec<Vec<i64>> = problems
            .iter()
            .map(|p| tok.encode(&p.task.prompt))
            .collect::<Result<_>>()?;
        let pairs: Vec<usize> = (0..problems.len())
            .flat_map(|p| std::iter::repeat_n(p, problems[p].copies * k))
            .collect();
        let mut samples: Vec<Vec<Trajectory>> = vec![Vec::new(); problems.len()];
        for chunk in pairs.chunks(BATCH) {
            let prompts: Vec<Vec<i64>> = chunk.iter().map(|&p| encoded[p].clone()).collect();
            for (&p, out) in
                chunk
                    .iter()
                    .zip(rollout(&model.model, &prompts, &controls, config, device))
            {
                let text = tok.decode(out.text_tokens(controls.eos))?;
                let scored: Scored =
                    reward::score(RewardSchedule::Accuracy, 1, &text, &problems[p].task.truth);
                let sample = samples[p].len() as u32;
                samples[p].push(trajectories::record(
                    p as u32, sample, &out, text, scored, ids,
                ));
            }
        }
        Ok(Decoded { samples })
    }

    fn accuracy(&self) -> f64 {
        let counts = self.counts();
        estimate(&counts, 1).mean_at_k
    }

    /// (samples, correct) per problem.
    fn counts(&self) -> Vec<(usize, usize)> {
        self.samples
            .iter()
            .map(|s| (s.len(), s.iter().filter(|t| t.correct).count()))
            .collect()
    }

    fn result(
        &self,
        benchmark: &str,
        step: u64,
        config: &RolloutConfig,
        greedy: Option<f64>,
    ) -> EvaluationResult {
        let counts = self.counts();
        let k = counts.iter().map(|c| c.0).min().unwrap_or(1);
        let e = estimate(&counts, k);
        let all: Vec<&Trajectory> = self.samples.iter().flatten().collect();
        let n = all.len().max(1) as f64;
        let share =
            |f: &dyn Fn(&Trajectory) -> bool| all.iter().filter(|t| f(t)).count() as f64 / n;
        EvaluationResult {
            step,
            benchmark: benchmark.to_owned(),
            k: k as u32,
            prompts: counts.len() as u32,
            mean_at_k: e.mean_at_k,
            pass_at_k: e.pass_at_k,
            mean_at_k_se: Some(e.mean_at_k_se),
            pass_at_k_se: Some(e.pass_at_k_se),
            greedy,
            sampling: Some(Sampling {
                temperature: config.sampler.temperature,
                top_p: config.sampler.top_p,
                max_response_tokens: config.max_new_tokens as u32,
            }),
            parallel_ratio: share(&|t| !t.blocks.is_empty()),
            format_valid_ratio: share(&|t| t.format_valid && t.answer.is_some()),
            mean_response_tokens: Some(
                all.iter()
                    .map(|t| t.tokens.unwrap_or(0) as f64)
                    .sum::<f64>()
                    / n,
            ),
        }
    }

    fn batches(
        self,
        step: u64,
        benchmark: &str,
        problems: &[Problem],
        tok: &PrlTokenizer,
    ) -> Result<Vec<TrajectoryBatch>> {
        let prompts = problems
            .iter()
            .enumerate()
            .map(|(g, p)| {
                Ok(PromptRecord {
                    id: p.task.id.clone(),
                    group: g as u32,
                    text: p.task.prompt.clone(),
                    tokens: Some(tok.encode(&p.task.prompt)?.len() as u32),
                    truth: p.task.truth.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(trajectories::batches(
            step,
            Some(benchmark),
            prompts,
            self.samples.into_iter().flatten().collect(),
            TRAJECTORY_MESSAGE_BYTES,
        ))
    }
}

/// The eval job: evaluates the stage's input model on its dataset and reports the results and the
/// generations.
pub async fn run(
    job: &JobMessage,
    reporter: &Reporter,
    data_dir: &Path,
    stop: &CancellationToken,
) -> Result<Outcome> {
    crate::training::on_thread(eval_job, job, reporter, data_dir, stop).await
}

fn eval_job(
    job: &JobMessage,
    _data_dir: &Path,
    _stop: &CancellationToken,
    events: &Events,
) -> Result<Outcome> {
    let StageSpec::Eval(stage) = &job.stage else {
        bail!("not an eval job")
    };
    let device = crate::device::current();
    let max = stage.max_prompts.map(|m| m.get() as usize);
    let tasks = crate::data::tasks(stage.dataset.as_str(), max, &job.datasets)?;
    let corpus: Vec<&str> = tasks.iter().map(|t| t.prompt.as_str()).collect();
    let (model, tok) = presets::load(job, &corpus, device)?;
    let protocol = Protocol {
        k: stage.k.get() as usize,
        greedy: stage.greedy,
        config: RolloutConfig::for_stage(&job.stage).expect("an eval stage decodes"),
    };
    tch::manual_seed(job.stage_seed() as i64);
    let step = presets::starting_step(&job.model, job.input_checkpoint.as_ref());
    evaluate(
        &model,
        &tok,
        &tasks,
        stage.dataset.as_str(),
        step,
        &protocol,
        device,
    )?
    .send(events);
    Ok(Outcome::Finished(None))
}
