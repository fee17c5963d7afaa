//! What every training job shares: a blocking thread whose events are forwarded to the reporter,
//! resuming from the newest checkpoint, checkpoint directories that carry the optimiser state until
//! the stage's last, and a data order that a resumed run repeats.

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
use std::path::Path;
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
    let (job, data_dir, thread_stop) = (job.clone(), data_dir.to_owned(), stop.clone());
    let work = tokio::task::spawn_blocking(move || body(&job, &data_dir, &thread_stop, &tx));
    while let Some(event) = rx.recv().await {
        if let Err(e) = reporter.send(event).await {
            // Nothing more can be reported: stop the training thread rather than leave it running.
            stop.cancel();
            let _ = work.await;
            return Err(e);
        }
    }
    work.await.context("the training thread panicked")?
}

/// The optimiser's state in a checkpoint directory.
const OPTIMIZER_STATE: &str = "optimizer.safetensors";

/// Loads the checkpoint an earlier attempt recorded, if the job names one (on this host's disk:
/// the daemon fetched it); returns its step (0 without one). A stage's last checkpoint has no
/// optimiser state: an attempt that resumes from it has no step left to take when its stage's
/// length is what it was, and only saves it again and finishes; were there steps left, they
/// would train from its weights with fresh moments.
pub fn resume(model: &mut LoadedModel, optimizer: &mut AdamW, job: &JobMessage) -> Result<u64> {
    let Some(checkpoint) = &job.resume_from else {
        return Ok(0);
    };
    let dir = checkpoint::local_dir(checkpoint)?;
    model
        .vs
        .load(dir.join("model.safetensors"))
        .context("resuming the model")?;
    let state = dir.join(OPTIMIZER_STATE);
    if state.exists() {
        optimizer.load(&state).context("resuming the optimiser")?;
    } else {
        optimizer.take_weights();
    }
    tracing::info!(step = checkpoint.step, "resuming from a checkpoint");
    Ok(checkpoint.step)
}

/// Saves a checkpoint directory (HF weights, config and tokenizer, plus the optimiser state when
/// given) and reports it. A stage's last checkpoint is saved without it, as a finished stage is
/// never trained on (the next stage starts a fresh optimiser): in bf16 the float32 master weights
/// and moments are six times the weights' bytes.
pub fn save(
    model: &LoadedModel,
    optimizer: Option<&AdamW>,
    tok: &PrlTokenizer,
    data_dir: &Path,
    job: &JobMessage,
    step: u64,
    events: &Events,
) -> Result<CheckpointRef> {
    let saved = checkpoint::save(data_dir, job, step, |dir| {
        model.save(dir)?;
        tok.save(&dir.join("tokenizer.json"))?;
        if let Some(optimizer) = optimizer {
            optimizer.save(&dir.join(OPTIMIZER_STATE))?;
        }
        std::fs::write(
            dir.join(PRL_META),
            serde_json::json!({ "eos": tok.eos_token, "step": step }).to_string(),
        )?;
        Ok(())
    })?;
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

/// Batches drawn in a run that grouped by length come from windows of this many batches.
const GROUP_WINDOW: usize = 16;

/// The examples of each batch of a run, in epoch order or grouped by length. Grouping sorts each
/// window of `GROUP_WINDOW` batches drawn in epoch order by length, cuts it into batches and takes
/// them in a seeded random order: a batch holds examples of similar length (little padding), the
/// stream still mixes short and long batches, and a resumed run draws the same batches.
pub struct BatchOrder {
    order: EpochOrder,
    size: usize,
    seed: u64,
    /// Each example's length, when grouping.
    lengths: Option<Vec<usize>>,
    window: usize,
    grouped: Vec<Vec<usize>>,
}

impl BatchOrder {
    pub fn new(size: usize, seed: u64, len: usize, lengths: Option<Vec<usize>>) -> Self {
        BatchOrder {
            order: EpochOrder::new(len, seed),
            size,
            seed,
            lengths,
            window: usize::MAX,
            grouped: Vec::new(),
        }
    }

    /// The dataset indices of the `n`-th batch drawn.
    pub fn batch(&mut self, n: usize) -> Vec<usize> {
        let Some(lengths) = &self.lengths else {
            return (n * self.size..(n + 1) * self.size)
                .map(|i| self.order.index(i))
                .collect();
        };
        let window = n / GROUP_WINDOW;
        if window != self.window {
            let first = window * GROUP_WINDOW * self.size;
            let mut drawn: Vec<usize> = (first..first + GROUP_WINDOW * self.size)
                .map(|i| self.order.index(i))
                .collect();
            drawn.sort_by_key(|&i| lengths[i]);
            self.grouped = drawn.chunks(self.size).map(<[usize]>::to_vec).collect();
            self.grouped.shuffle(&mut rand::rngs::StdRng::seed_from_u64(
                !self.seed ^ (window as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ));
            self.window = window;
        }
        self.grouped[n % GROUP_WINDOW].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_batches_hold_similar_lengths_and_draw_every_example_once_per_epoch() {
        let lengths: Vec<usize> = (0..512).map(|i| (i * 7919) % 300).collect();
        let mut grouped = BatchOrder::new(32, 3, 512, Some(lengths.clone()));
        let mut plain = BatchOrder::new(32, 3, 512, None);
        let spread = |batch: &[usize]| {
            let l = batch.iter().map(|&i| lengths[i]);
            l.clone().max().unwrap() - l.min().unwrap()
        };
        let mut seen = vec![0; 512];
        let (mut grouped_spread, mut plain_spread) = (0, 0);
        for n in 0..16 {
            let batch = grouped.batch(n);
            assert_eq!(batch.len(), 32);
            batch.iter().for_each(|&i| seen[i] += 1);
            grouped_spread += spread(&batch);
            plain_spread += spread(&plain.batch(n));
        }
        assert!(seen.iter().all(|&c| c == 1), "each example once per epoch");
        assert!(
            grouped_spread * 5 < plain_spread,
            "grouped {grouped_spread} against plain {plain_spread}"
        );
        // Short and long batches are mixed, not in length order.
        let firsts: Vec<usize> = (0..16).map(|n| lengths[grouped.batch(n)[0]]).collect();
        assert!(!firsts.is_sorted(), "{firsts:?}");
        // A resumed run, which starts mid-window, draws the same batches.
        let mut resumed = BatchOrder::new(32, 3, 512, Some(lengths.clone()));
        assert_eq!(resumed.batch(21), grouped.batch(21));
        assert_eq!(
            resumed.batch(5),
            BatchOrder::new(32, 3, 512, Some(lengths)).batch(5)
        );
    }
}
