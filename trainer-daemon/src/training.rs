//! What every training job shares: a blocking thread whose events are forwarded to the reporter,
//! resuming from the newest checkpoint, checkpoint directories that carry the optimiser state, and
//! a data order that a resumed run repeats.

use crate::adamw::AdamW;
use crate::checkpoint;
use crate::model::LoadedModel;
use crate::presets::PRL_META;
use crate::reporter::Reporter;
use crate::tokenizer::PrlTokenizer;
use anyhow::{Context, Result};
use prl_schema::jobs::{CheckpointRef, JobMessage, WorkerEvent};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub type Events = mpsc::UnboundedSender<WorkerEvent>;

/// How an attempt's work ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Finished(Option<CheckpointRef>),
    /// Stopped early; the checkpoint saved on the way out, if any.
    Stopped(Option<CheckpointRef>),
}

/// The body of a job, run on a blocking thread.
pub type Body = fn(&JobMessage, &Path, &CancellationToken, &Events) -> Result<Outcome>;

/// Runs `body` on a blocking thread and forwards its events; returns how it ended.
pub async fn on_thread(
    body: Body,
    job: &JobMessage,
    reporter: &Reporter,
    data_dir: &Path,
    stop: &CancellationToken,
) -> Result<Outcome> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (job, data_dir, stop) = (job.clone(), data_dir.to_owned(), stop.clone());
    let work = tokio::task::spawn_blocking(move || body(&job, &data_dir, &stop, &tx));
    while let Some(event) = rx.recv().await {
        reporter.send(event).await?;
    }
    work.await.context("the training thread panicked")?
}

/// Loads the newest checkpoint this run left, if any; returns its step (0 without one).
pub fn resume(
    model: &mut LoadedModel,
    optimizer: &mut AdamW,
    data_dir: &Path,
    job: &JobMessage,
) -> Result<u64> {
    let Some((step, dir)) = checkpoint::latest(data_dir, job.run_id) else {
        return Ok(0);
    };
    model
        .vs
        .load(dir.join("model.safetensors"))
        .context("resuming the model")?;
    optimizer
        .load(&dir.join("optimizer.safetensors"))
        .context("resuming the optimiser")?;
    tracing::info!(step, "resuming from a checkpoint");
    Ok(step)
}

/// Saves a checkpoint directory (HF weights, config and tokenizer, plus the optimiser state) and
/// reports it.
pub fn save(
    model: &LoadedModel,
    optimizer: &AdamW,
    tok: &PrlTokenizer,
    data_dir: &Path,
    job: &JobMessage,
    step: u64,
    events: &Events,
) -> Result<CheckpointRef> {
    let dir = checkpoint::step_dir(data_dir, job.run_id, step);
    let tmp: PathBuf = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    model.save(&tmp)?;
    tok.save(&tmp.join("tokenizer.json"))?;
    optimizer.save(&tmp.join("optimizer.safetensors"))?;
    std::fs::write(
        tmp.join(PRL_META),
        serde_json::json!({ "eos": tok.eos_token, "step": step }).to_string(),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    let saved = checkpoint::describe(&dir.join("model.safetensors"), step)?;
    let _ = events.send(WorkerEvent::Checkpoint(saved.clone()));
    Ok(saved)
}

/// A fixed shuffle per epoch and seed, so a resumed run sees the data in the order it would have.
pub struct EpochOrder {
    len: usize,
    seed: u64,
    epoch: usize,
    perm: Vec<usize>,
}

impl EpochOrder {
    pub fn new(len: usize, seed: u64) -> Self {
        EpochOrder {
            len,
            seed,
            epoch: usize::MAX,
            perm: Vec::new(),
        }
    }

    /// The dataset index of the `i`-th example drawn.
    pub fn index(&mut self, i: usize) -> usize {
        let epoch = i / self.len;
        if epoch != self.epoch {
            self.perm = (0..self.len).collect();
            self.perm.shuffle(&mut rand::rngs::StdRng::seed_from_u64(
                self.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ));
            self.epoch = epoch;
        }
        self.perm[i % self.len]
    }
}
