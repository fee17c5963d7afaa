//! What the examples share: an SFT job run in-process, and greedy decoding of a held-out set.

use anyhow::Result;
use prl_schema::ids::{ExperimentId, JobId, RunId};
use prl_schema::jobs::{JobMessage, WorkerEvent};
use prl_schema::spec::{Attention, ModelRef, RolloutMode, StageSpec};
use prl_schema::trajectory::{EvaluationResult, Trajectory};
use prl_trainer::data;
use prl_trainer::eval::{Protocol, evaluate};
use prl_trainer::model::LoadedModel;
use prl_trainer::rollout::RolloutConfig;
use prl_trainer::sampling::Sampler;
use prl_trainer::sft;
use prl_trainer::tokenizer::PrlTokenizer;
use std::path::Path;
use std::time::Instant;
use tch::Device;
use tokio_util::sync::CancellationToken;

/// Runs the SFT `stage` (spec JSON) from the model directory `model` as run `run_id`, with its
/// checkpoints under `work`, printing the loss every `every` steps. Returns the job.
pub fn train_sft(
    model: &Path,
    stage: serde_json::Value,
    run_id: RunId,
    work: &Path,
    every: u64,
) -> Result<JobMessage> {
    let started = Instant::now();
    let job = JobMessage {
        job_id: JobId::new(),
        run_id,
        experiment_id: ExperimentId::new(),
        attempt: 1,
        expected_version: 0,
        model: ModelRef::Path(model.display().to_string()),
        stage: StageSpec::Sft(serde_json::from_value(stage)?),
        seed: 1,
        input_checkpoint: None,
        resume_from: None,
        datasets: Default::default(),
    };
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let training = {
        let (job, work) = (job.clone(), work.to_owned());
        std::thread::spawn(move || sft::train(&job, &work, &CancellationToken::new(), &events))
    };
    while let Some(event) = received.blocking_recv() {
        if let WorkerEvent::Metrics { step, values } = event
            && step % every == 0
        {
            println!(
                "step {step:>5}: loss {:.4}, {:.0} tokens/s ({:.0} s)",
                values["loss"],
                values["tokens_per_s"],
                started.elapsed().as_secs_f64()
            );
        }
    }
    training.join().expect("the training thread")?;
    Ok(job)
}

/// One greedy response per prompt on the first `prompts` prompts of `benchmark`: the result and
/// the responses.
pub fn greedy(
    model: &LoadedModel,
    tok: &PrlTokenizer,
    benchmark: &str,
    prompts: usize,
    attention: Attention,
    mode: RolloutMode,
    max_new_tokens: usize,
) -> Result<(EvaluationResult, Vec<Trajectory>)> {
    let tasks = data::tasks(benchmark, Some(prompts), &Default::default())?;
    let protocol = Protocol {
        k: 1,
        greedy: false,
        config: RolloutConfig {
            attention,
            mode,
            paths: 2,
            path_budget: 64,
            max_blocks: 4,
            max_new_tokens,
            sampler: Sampler {
                temperature: 0.0,
                top_p: 1.0,
            },
        },
    };
    let evaluation = evaluate(model, tok, &tasks, benchmark, 0, &protocol, Device::Cpu)?;
    let result = evaluation
        .results
        .into_iter()
        .next()
        .expect("one benchmark");
    let responses = evaluation
        .generations
        .into_iter()
        .flat_map(|batch| batch.trajectories)
        .collect();
    Ok((result, responses))
}
