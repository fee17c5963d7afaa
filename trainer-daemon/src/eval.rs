//! Evaluation: k sampled responses per held-out prompt, scored for accuracy and format, reduced to
//! Mean@k, the unbiased Pass@k, the parallel ratio and the mean response length.

use crate::data::Task;
use crate::model::LoadedModel;
use crate::presets;
use crate::reporter::Reporter;
use crate::rollout::{RolloutConfig, rollout};
use crate::tokenizer::PrlTokenizer;
use crate::training::Events;
use crate::training::Outcome;
use anyhow::{Result, bail};
use prl_schema::estimators::mean_and_pass_at_k;
use prl_schema::jobs::{JobMessage, WorkerEvent};
use prl_schema::parallel;
use prl_schema::reward::check_answer;
use prl_schema::spec::StageSpec;
use prl_schema::trajectory::EvaluationResult;
use std::path::Path;
use tch::Device;
use tokio_util::sync::CancellationToken;

/// Prompt-samples decoded together.
const BATCH: usize = 64;

/// Scores `k` responses to each task. `step` and `benchmark` (a dataset reference) label the
/// result; the benchmark is named without its prompt style, so that a sequential baseline's
/// numbers sit in the same column as the parallel runs'.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &LoadedModel,
    tok: &PrlTokenizer,
    tasks: &[Task],
    benchmark: &str,
    step: u64,
    k: usize,
    config: &RolloutConfig,
    device: Device,
) -> Result<EvaluationResult> {
    let controls = tok.controls()?;
    let encoded: Vec<Vec<i64>> = tasks
        .iter()
        .map(|t| tok.encode(&t.prompt))
        .collect::<Result<_>>()?;
    // Every (task, sample) pair, decoded in batches.
    let pairs: Vec<usize> = (0..tasks.len())
        .flat_map(|t| std::iter::repeat_n(t, k))
        .collect();
    let mut correct = vec![0usize; tasks.len()];
    let (mut valid, mut parallel_use, mut tokens) = (0usize, 0usize, 0usize);
    for chunk in pairs.chunks(BATCH) {
        let prompts: Vec<Vec<i64>> = chunk.iter().map(|&t| encoded[t].clone()).collect();
        for (&task, out) in
            chunk
                .iter()
                .zip(rollout(&model.model, &prompts, &controls, config, device))
        {
            let text = tok.decode(out.text_tokens(controls.eos))?;
            let parsed = parallel::parse(&text);
            let (right, answer) = check_answer(&text, &tasks[task].truth);
            correct[task] += usize::from(right);
            valid += usize::from(parsed.is_valid() && answer.is_some());
            parallel_use += usize::from(!parsed.blocks.is_empty());
            tokens += out.tokens.len();
        }
    }
    let problems: Vec<(usize, usize)> = correct.iter().map(|&c| (k, c)).collect();
    let (mean_at_k, pass_at_k) = mean_and_pass_at_k(&problems, k);
    let n = pairs.len().max(1) as f64;
    Ok(EvaluationResult {
        step,
        benchmark: benchmark
            .strip_suffix(":sequential")
            .unwrap_or(benchmark)
            .to_owned(),
        k: k as u32,
        prompts: tasks.len() as u32,
        mean_at_k,
        pass_at_k,
        parallel_ratio: parallel_use as f64 / n,
        format_valid_ratio: valid as f64 / n,
        mean_response_tokens: Some(tokens as f64 / n),
    })
}

/// The eval job: evaluates the stage's input model on its dataset and reports the result.
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
    let device = Device::cuda_if_available();
    let max = stage.max_prompts.map(|m| m.get() as usize);
    let tasks = crate::data::tasks(stage.dataset.as_str(), max, &job.datasets)?;
    let corpus: Vec<&str> = tasks.iter().map(|t| t.prompt.as_str()).collect();
    let (model, tok) = presets::load(job, &corpus, device)?;
    let config = RolloutConfig {
        attention: stage.attention,
        mode: stage.mode,
        paths: stage.paths.get() as usize,
        path_budget: stage.max_path_tokens.get() as usize,
        max_blocks: stage.max_blocks as usize,
        max_new_tokens: stage.max_response_tokens.get() as usize,
        temperature: stage.temperature.get(),
        top_p: stage.top_p.get(),
    };
    tch::manual_seed((job.run_id.0.as_u64_pair().0) as i64);
    let step = presets::starting_step(&job.model, job.input_checkpoint.as_ref());
    let k = stage.k.get() as usize;
    let result = evaluate(
        &model,
        &tok,
        &tasks,
        stage.dataset.as_str(),
        step,
        k,
        &config,
        device,
    )?;
    let _ = events.send(WorkerEvent::Evaluation(result));
    Ok(Outcome::Finished(None))
}
