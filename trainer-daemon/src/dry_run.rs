//! The dry-run executor: it exercises the whole job protocol (claim, heartbeats, metrics,
//! checkpoints, resume, cancel, finish) without training anything. Its metrics are named
//! `dry_run/...` so that no one mistakes them for training results.

use crate::checkpoint;
use crate::reporter::Reporter;
use crate::training::Outcome;
use anyhow::Result;
use prl_schema::jobs::{CheckpointRef, JobMessage, WorkerEvent};
use prl_schema::spec::StageSpec;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Steps a dry run walks at most, whatever the spec asks for.
pub const MAX_STEPS: u64 = 20;

pub fn planned_steps(stage: &StageSpec) -> u64 {
    let steps = match stage {
        StageSpec::Sft(s) => s.max_steps.map(|m| m.get()).unwrap_or(s.epochs.get() * 10),
        StageSpec::Rl(s) => s.steps.get(),
        StageSpec::Eval(_) => 1,
    };
    steps.min(MAX_STEPS)
}

pub async fn run(
    job: &JobMessage,
    reporter: &Reporter,
    data_dir: &Path,
    step_delay: Duration,
    stop: &CancellationToken,
) -> Result<Outcome> {
    let total = planned_steps(&job.stage);
    let saves = job.stage.saves_checkpoints();
    // Resume after the checkpoint an earlier attempt of this run recorded.
    let start = job.resume_from.as_ref().map_or(0, |c| c.step);
    let save = |step: u64| -> Result<CheckpointRef> {
        let trace = serde_json::json!({ "run_id": job.run_id, "step": step, "dry_run": true });
        checkpoint::save(data_dir, job, step, |dir| {
            Ok(std::fs::write(dir.join("dry_run.json"), trace.to_string())?)
        })
    };
    for step in start + 1..=total {
        tokio::select! {
            _ = stop.cancelled() => {
                let saved = if saves && step > 1 { Some(save(step - 1)?) } else { None };
                if let Some(c) = &saved {
                    reporter.send(WorkerEvent::Checkpoint(c.clone())).await?;
                }
                return Ok(Outcome::Stopped(saved));
            }
            _ = tokio::time::sleep(step_delay) => {}
        }
        // `total_steps` lets watchers draw progress; the rest is only a trace of the protocol.
        let values = BTreeMap::from([
            ("total_steps".to_owned(), total as f64),
            ("dry_run/progress".to_owned(), step as f64 / total as f64),
            ("dry_run/attempt".to_owned(), job.attempt as f64),
        ]);
        reporter.send(WorkerEvent::Metrics { step, values }).await?;
        if saves && step.is_multiple_of(5) && step < total {
            reporter.send(WorkerEvent::Checkpoint(save(step)?)).await?;
        }
    }
    let final_checkpoint = if saves {
        let c = save(total)?;
        reporter.send(WorkerEvent::Checkpoint(c.clone())).await?;
        Some(c)
    } else {
        None
    };
    Ok(Outcome::Finished(final_checkpoint))
}
