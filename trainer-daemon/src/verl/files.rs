//! Reads what a verl job writes, as it writes it, into worker events: every rollout dump
//! (`{step}.jsonl`) as the step's trajectories, every validation dump as evaluations per
//! `data_source`, the `file` logger's lines as metrics, and every checkpoint verl finishes (each
//! `global_step_N` up to `latest_checkpointed_iteration.txt`, even when several finished between
//! two polls) as its Hugging Face directory. A dump file is taken
//! whole once its size has held for one poll (verl writes a step's file at once); the metrics
//! file is read up to its last whole line. Steps at or before `after` (what an earlier attempt
//! recorded up to its newest checkpoint) are skipped; later ones are recorded again under this
//! attempt, whose rows supersede the earlier attempt's.

use super::command::RunFiles;
use anyhow::{Context, Result};
use prl_schema::dumps::{DumpFile, metrics_line, rollout_batches, validation_results};
use prl_schema::jobs::WorkerEvent;
use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub struct Follower {
    files: RunFiles,
    after: u64,
    /// The name validation lines without a `data_source` are recorded under.
    benchmark: String,
    /// Each dump file's size at the last poll.
    sizes: HashMap<PathBuf, u64>,
    rollouts_done: BTreeSet<u64>,
    validation_done: BTreeSet<u64>,
    metrics_offset: u64,
    checkpoint_done: u64,
}

/// What one poll found.
#[derive(Default)]
pub struct Found {
    pub events: Vec<WorkerEvent>,
    /// Checkpoints verl finished: step and the Hugging Face directory of its weights.
    pub checkpoints: Vec<(u64, PathBuf)>,
}

impl Follower {
    pub fn new(files: RunFiles, after: u64, benchmark: String) -> Follower {
        Follower {
            files,
            after,
            benchmark,
            sizes: HashMap::new(),
            rollouts_done: BTreeSet::new(),
            validation_done: BTreeSet::new(),
            metrics_offset: 0,
            checkpoint_done: after,
        }
    }

    /// Passes over the metric lines written so far (an abandoned run's).
    pub fn skip_written_metrics(&mut self) -> Result<()> {
        match std::fs::metadata(self.files.metrics()) {
            Ok(meta) => self.metrics_offset = meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("reading the metrics file's size"),
        }
        Ok(())
    }

    /// What is new since the last poll. `last` takes every dump file as complete: the job has
    /// ended, so nothing is still being written.
    pub fn poll(&mut self, last: bool) -> Result<Found> {
        let mut found = Found::default();
        found.events.extend(self.metrics()?);
        for (step, file) in self.complete_dumps(&self.files.rollouts(), last, true)? {
            let batches = rollout_batches(&[file]).map_err(anyhow::Error::msg)?;
            found
                .events
                .extend(batches.into_iter().map(WorkerEvent::Trajectories));
            self.rollouts_done.insert(step);
        }
        for (step, file) in self.complete_dumps(&self.files.validation(), last, false)? {
            let results =
                validation_results(&[file], &self.benchmark).map_err(anyhow::Error::msg)?;
            found
                .events
                .extend(results.into_iter().map(WorkerEvent::Evaluation));
            self.validation_done.insert(step);
        }
        if let Some(newest) = newest_checkpoint(&self.files)?
            && newest > self.checkpoint_done
        {
            let steps = self.finished_between(self.checkpoint_done, newest)?;
            for step in steps {
                found.checkpoints.push((step, self.hf_dir(step)));
            }
            self.checkpoint_done = newest;
        }
        Ok(found)
    }

    /// Dump files of steps not yet recorded whose size held since the last poll (or all, when
    /// `last`), in step order.
    fn complete_dumps(
        &mut self,
        dir: &Path,
        last: bool,
        rollouts: bool,
    ) -> Result<Vec<(u64, DumpFile)>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let done = if rollouts {
            &self.rollouts_done
        } else {
            &self.validation_done
        };
        let mut ready = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let Some(step) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if step <= self.after || done.contains(&step) {
                continue;
            }
            let size = std::fs::metadata(&path)?.len();
            let held = self.sizes.insert(path.clone(), size) == Some(size);
            if size > 0 && (held || last) {
                let content = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into();
                ready.push((step, DumpFile { name, content }));
            }
        }
        ready.sort_by_key(|(step, _)| *step);
        Ok(ready)
    }

    /// The metric lines appended since the last poll, up to the last whole line.
    fn metrics(&mut self) -> Result<Vec<WorkerEvent>> {
        let path = self.files.metrics();
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        file.seek(SeekFrom::Start(self.metrics_offset))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        let mut events = Vec::new();
        for line in text[..whole].split_inclusive('\n') {
            let at = self.metrics_offset;
            self.metrics_offset += line.len() as u64;
            let parsed = metrics_line(line)
                .map_err(|why| anyhow::anyhow!("{} at byte {at}: {why}", path.display()))?;
            if let Some((step, values)) = parsed
                && step > self.after
                && !values.is_empty()
            {
                events.push(WorkerEvent::Metrics { step, values });
            }
        }
        Ok(events)
    }

    fn hf_dir(&self, step: u64) -> PathBuf {
        self.files
            .checkpoints()
            .join(format!("global_step_{step}/actor/huggingface"))
    }

    /// The checkpoints after `done` up to `newest` (which verl has said it finished) whose
    /// weights are still there (verl may have removed older ones: `max_ckpt_to_keep`), in order.
    fn finished_between(&self, done: u64, newest: u64) -> Result<Vec<u64>> {
        let dir = self.files.checkpoints();
        let mut steps = BTreeSet::from([newest]);
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let step = entry?
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("global_step_"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(step) = step.filter(|s| (done + 1..newest).contains(s))
                && self.hf_dir(step).is_dir()
            {
                steps.insert(step);
            }
        }
        Ok(steps.into_iter().collect())
    }
}

/// Before verl runs again in a directory an earlier run left (from its newest checkpoint, step
/// `from`): that run's dumps of later steps are renamed aside (`{step}.jsonl.abandoned-<attempt>`),
/// so that only the new run's are recorded, and the metric lines written so far are passed over.
pub fn set_aside_after(files: &RunFiles, from: u64, attempt: u32) -> Result<()> {
    for dir in [files.rollouts(), files.validation()] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for entry in entries {
            let path = entry?.path();
            let step = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok());
            if step.is_some_and(|s| s > from) {
                let mut aside = path.clone().into_os_string();
                aside.push(format!(".abandoned-{attempt}"));
                std::fs::rename(&path, &aside)
                    .with_context(|| format!("setting aside {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// The step of the newest checkpoint verl has finished writing in a run directory, if any.
pub fn newest_checkpoint(files: &RunFiles) -> Result<Option<u64>> {
    let path = files
        .checkpoints()
        .join("latest_checkpointed_iteration.txt");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_checkpoint_finished_between_two_polls_is_recorded_in_order() {
        let dir = std::env::temp_dir().join(format!("prl-verl-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = RunFiles { dir: dir.clone() };
        let mut follower = Follower::new(files.clone(), 2, "bench".into());
        for step in [2, 4, 6, 8] {
            std::fs::create_dir_all(follower.hf_dir(step)).unwrap();
        }
        // Step 5's weights were removed (max_ckpt_to_keep); step 8 is not finished yet.
        std::fs::create_dir_all(files.checkpoints().join("global_step_5")).unwrap();
        let latest = files
            .checkpoints()
            .join("latest_checkpointed_iteration.txt");
        std::fs::write(&latest, "6").unwrap();
        let steps = |found: Found| -> Vec<u64> { found.checkpoints.iter().map(|c| c.0).collect() };
        assert_eq!(steps(follower.poll(false).unwrap()), [4, 6]);
        assert_eq!(steps(follower.poll(false).unwrap()), Vec::<u64>::new());
        std::fs::write(&latest, "8").unwrap();
        assert_eq!(steps(follower.poll(false).unwrap()), [8]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_dead_runs_dumps_after_its_checkpoint_are_set_aside_and_its_metrics_passed_over() {
        let dir = std::env::temp_dir().join(format!("prl-verl-aside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = RunFiles { dir: dir.clone() };
        std::fs::create_dir_all(files.rollouts()).unwrap();
        for step in [3, 4, 5] {
            std::fs::write(files.rollouts().join(format!("{step}.jsonl")), "{}\n").unwrap();
        }
        std::fs::write(
            files.metrics(),
            "{\"step\": 5, \"data\": {\"loss\": 1.0}}\n",
        )
        .unwrap();
        set_aside_after(&files, 3, 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(files.rollouts())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["3.jsonl", "4.jsonl.abandoned-2", "5.jsonl.abandoned-2"]
        );
        let mut follower = Follower::new(files, 3, "bench".into());
        follower.skip_written_metrics().unwrap();
        assert!(follower.poll(true).unwrap().events.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
