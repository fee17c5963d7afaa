//! The verl bridge: a daemon started with `--ray-address` takes verl stages (`backend =
//! "verl"`) and runs each as a job on a Ray cluster through Ray's Jobs API, while holding the
//! prl lease as any trainer does. It writes the stage's data as verl parquet (each row routed to
//! the reference's reward function for the stage's schedule), submits `main_ppo` with the
//! reference recipe's settings (`command.rs`) under the submission id `prl-<job id>`, and
//! records what verl writes as the attempt's events while it writes it (`files.rs`): metrics,
//! every trajectory, evaluations and checkpoints (their Hugging Face weights, put in the artifact
//! store). The Ray job's exit ends the attempt. A cancelled stage stops the Ray job; a bridge
//! that dies or shuts down leaves it running, and the next attempt, on any bridge, finds it by
//! its submission id and follows it from the newest recorded checkpoint on.
//!
//! The run directory must be the same path for the bridge and the Ray job's driver (the head
//! node, where entrypoints run): the bridge on the head node, or a shared filesystem.

pub mod command;
mod files;
pub mod ray_jobs;

use crate::checkpoint;
use crate::reporter::Reporter;
use crate::training::Outcome;
use anyhow::{Context, Result, bail};
use command::RunFiles;
use prl_schema::jobs::{CheckpointRef, JobMessage, WorkerEvent};
use prl_schema::spec::{ModelRef, RlStage, StageSpec};
use ray_jobs::{RayJobs, RayStatus};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How a bridge reaches its Ray cluster and what it runs there.
#[derive(Clone, Debug)]
pub struct VerlBridge {
    pub ray: RayJobs,
    /// The program the overrides follow: `python3 -m verl.trainer.main_ppo`.
    pub program: String,
    /// Where each job's directory is made (absolute; the same path on the Ray head).
    pub run_root: PathBuf,
    /// How often the files and the Ray job are looked at.
    pub poll: Duration,
}

/// How long the Ray dashboard may stay unreachable before the attempt fails.
const RAY_UNREACHABLE_FOR: Duration = Duration::from_secs(600);

/// Why the bridge stops following before the Ray job ends.
pub struct Stops<'a> {
    /// The lease ended (cancelled, revoked) or the daemon shuts down.
    pub stop: &'a CancellationToken,
    /// The experiment was cancelled: the Ray job is stopped too.
    pub cancelled: &'a CancellationToken,
}

pub async fn run(
    job: &JobMessage,
    reporter: &Reporter,
    bridge: &VerlBridge,
    data_dir: &Path,
    stops: Stops<'_>,
) -> Result<Outcome> {
    let outcome = follow(job, reporter, bridge, data_dir, stops).await;
    if outcome.is_err() {
        // The attempt fails for good: nobody would follow the Ray job, so it must not go on
        // holding the cluster (one that has ended already refuses the stop, which is fine).
        let id = submission_id(job);
        if let Err(e) = bridge.ray.stop(&id).await {
            tracing::warn!("stopping the Ray job {id} of a failed attempt: {e:#}");
        }
    }
    outcome
}

async fn follow(
    job: &JobMessage,
    reporter: &Reporter,
    bridge: &VerlBridge,
    data_dir: &Path,
    stops: Stops<'_>,
) -> Result<Outcome> {
    let StageSpec::Rl(stage) = &job.stage else {
        bail!("a verl bridge runs RL stages only");
    };
    let files = RunFiles {
        dir: bridge.run_root.join(job.job_id.to_string()),
    };
    let id = submission_id(job);
    let Some(found) = first_look(bridge, &id, stops.stop).await? else {
        return Ok(Outcome::Stopped(None));
    };
    // Steps up to the checkpoint an earlier attempt recorded last are not recorded again.
    let mut after = job.resume_from.as_ref().map_or(0, |c| c.step);
    let submitted = found.is_none();
    match found {
        Some(found) => {
            tracing::info!(job = %job.job_id, status = ?found.status, "following the Ray job {id} an earlier attempt submitted")
        }
        None => {
            // verl resumes from the newest checkpoint in the run directory, which may be older
            // than the recorded one (another bridge's directory, say) or absent: the steps it
            // does again are recorded again, superseding the earlier attempt's rows, and what
            // a run that died left of them is set aside.
            let here = files::newest_checkpoint(&files)?.unwrap_or(0);
            if here < after {
                tracing::warn!(job = %job.job_id, "the run directory's newest checkpoint is step {here}, not {after}: verl redoes the steps after it");
                after = here;
            }
            files::set_aside_after(&files, here, job.attempt)?;
            submit(job, stage, bridge, &files, &id).await?
        }
    }
    let benchmark = stage
        .eval_dataset
        .as_ref()
        .map_or_else(|| stage.dataset.to_string(), ToString::to_string);
    let mut follower = files::Follower::new(files, after, benchmark);
    if submitted {
        follower.skip_written_metrics()?;
    }
    // The stage's newest checkpoint, should verl save none after the one it resumes from.
    let mut newest: Option<CheckpointRef> = job.resume_from.clone().filter(|c| c.step == after);
    let mut reachable_since = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stops.stop.cancelled() => {
                if stops.cancelled.is_cancelled() {
                    bridge.ray.stop(&id).await?;
                    tracing::info!(job = %job.job_id, "cancelled: stopped the Ray job {id}");
                }
                return Ok(Outcome::Stopped(newest));
            }
            _ = tokio::time::sleep(bridge.poll) => {}
        }
        let status = match bridge.ray.get(&id).await {
            Ok(Some(ray_job)) => {
                reachable_since = tokio::time::Instant::now();
                Some(ray_job)
            }
            // A restarted Ray head forgets its jobs: this attempt ends, its lease runs out, and
            // the next attempt submits the job again, resuming from the run directory.
            Ok(None) => {
                tracing::warn!(job = %job.job_id, "Ray no longer knows the job {id}; leaving it to the next attempt");
                return Ok(Outcome::Stopped(newest));
            }
            Err(e) if reachable_since.elapsed() < RAY_UNREACHABLE_FOR => {
                tracing::warn!("{e:#}");
                None
            }
            Err(e) => return Err(e),
        };
        let ended = status.as_ref().filter(|s| s.status.is_terminal());
        // Off the threads heartbeats run on: a later attempt's first poll reads every dump
        // verl wrote meanwhile.
        let last = ended.is_some();
        let (back, found) = tokio::task::spawn_blocking(move || {
            let found = follower.poll(last);
            (follower, found)
        })
        .await?;
        follower = back;
        let found = found?;
        for event in found.events {
            reporter.send(event).await?;
        }
        for (step, hf_dir) in found.checkpoints {
            let (data_dir, message) = (data_dir.to_owned(), job.clone());
            // Hashing a model's weights takes a while: off the threads heartbeats run on.
            let saved = tokio::task::spawn_blocking(move || {
                checkpoint::save(&data_dir, &message, step, |dir| link_files(&hf_dir, dir))
            })
            .await??;
            reporter
                .send(WorkerEvent::Checkpoint(saved.clone()))
                .await?;
            newest = Some(saved);
        }
        let Some(ended) = ended else { continue };
        return match ended.status {
            RayStatus::Succeeded => Ok(Outcome::Finished(newest)),
            RayStatus::Failed => {
                let log = bridge.ray.logs(&id).await.unwrap_or_default();
                let tail = &log[log.floor_char_boundary(log.len().saturating_sub(2000))..];
                bail!(
                    "the verl job {id} failed: {}\n{tail}",
                    ended.message.as_deref().unwrap_or("no message")
                )
            }
            _ => bail!(
                "the Ray job {id} was stopped outside prl: {}",
                ended.message.as_deref().unwrap_or("no message")
            ),
        };
    }
}

/// The Ray job of a prl job, the same for every attempt, so a later one finds it.
fn submission_id(job: &JobMessage) -> String {
    format!("prl-{}", job.job_id)
}

/// Whether Ray already has the job `id` (an earlier attempt submitted it), asked until Ray
/// answers, for as long as `RAY_UNREACHABLE_FOR`; None when `stop` comes first.
async fn first_look(
    bridge: &VerlBridge,
    id: &str,
    stop: &CancellationToken,
) -> Result<Option<Option<ray_jobs::RayJob>>> {
    let since = tokio::time::Instant::now();
    loop {
        match bridge.ray.get(id).await {
            Ok(found) => return Ok(Some(found)),
            Err(e) if since.elapsed() < RAY_UNREACHABLE_FOR => tracing::warn!("{e:#}"),
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Writes the stage's data for verl and submits the job.
async fn submit(
    job: &JobMessage,
    stage: &RlStage,
    bridge: &VerlBridge,
    files: &RunFiles,
    id: &str,
) -> Result<()> {
    let model_dir = model_dir(job)?;
    let (message, run_files) = (job.clone(), files.clone());
    tokio::task::spawn_blocking(move || write_data(&message, &run_files)).await??;
    let overrides = command::overrides(stage, &model_dir, files, &job.run_id.to_string());
    let entrypoint = command::entrypoint(&bridge.program, &overrides);
    let metadata = BTreeMap::from([
        ("prl_job".to_owned(), job.job_id.to_string()),
        ("prl_run".to_owned(), job.run_id.to_string()),
        ("prl_experiment".to_owned(), job.experiment_id.to_string()),
    ]);
    bridge
        .ray
        .submit(id, &entrypoint, &command::environment(files), &metadata)
        .await?;
    tracing::info!(job = %job.job_id, "submitted the Ray job {id}");
    Ok(())
}

/// The Hugging Face directory the stage starts from: its input checkpoint (fetched), or the
/// experiment's `path:` model.
fn model_dir(job: &JobMessage) -> Result<PathBuf> {
    if let Some(input) = &job.input_checkpoint {
        return checkpoint::local_dir(input);
    }
    match &job.model {
        ModelRef::Path(dir) => std::path::absolute(dir).with_context(|| format!("resolving {dir}")),
        other => bail!(
            "verl starts from a Hugging Face directory: the model must be path:<dir> or a \
             checkpoint, or an earlier stage must train it, not {other}"
        ),
    }
}

/// The stage's prompts (and its evaluation set's) as verl parquet, every row routed to the
/// reference's reward function of the stage's schedule.
fn write_data(job: &JobMessage, files: &RunFiles) -> Result<()> {
    let StageSpec::Rl(stage) = &job.stage else {
        bail!("a verl bridge runs RL stages only");
    };
    let method = command::reward_method(stage.reward);
    let write = |reference: &str, max: Option<usize>, path: &Path| -> Result<()> {
        let tasks = crate::data::tasks(reference, max, &job.datasets)?;
        let rows: Vec<prl_schema::verl::WriteRow> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| prl_schema::verl::WriteRow {
                chat: vec![("user", t.prompt.as_str())],
                ground_truth: Some(&t.truth),
                answer: None,
                index: i as i64,
                reward_method: Some(method),
                data_source: Some(t.source.as_deref().unwrap_or("math_dapo")),
            })
            .collect();
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
        prl_schema::verl::write(path, &rows).with_context(|| format!("writing {}", path.display()))
    };
    write(stage.dataset.as_str(), None, &files.train_file())?;
    let eval = stage.eval_dataset.as_ref().unwrap_or(&stage.dataset);
    let max = stage.eval_max_prompts.map(|m| m.get() as usize);
    write(eval.as_str(), max, &files.val_file())
}

/// Hard links (or, across filesystems, copies) the files of `from` into `to`.
fn link_files(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let target = to.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}
