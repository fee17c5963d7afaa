//! Checkpoints: a directory per saved step, written under the daemon's data directory, described
//! by a manifest of every file's sha256 (the directory's hash is the manifest's), uploaded to the
//! artifact store and reported by its URL there. The data directory mirrors the store's keys
//! (`checkpoints/<run>/attempt-<A>/step-<N>/`: an attempt writes only under its own keys, so one
//! whose lease was taken away cannot overwrite what its successor recorded), so a checkpoint this
//! host wrote or fetched before is used from disk once its files match the recorded hash, and
//! one from another host is fetched. Dataset files uploaded through the API travel the same way
//! (`datasets/<sha256>.<jsonl|parquet>`), fetched before the job starts.

use anyhow::{Context, Result, bail};
use prl_artifacts::ArtifactStore;
use prl_schema::datasets::Format;
use prl_schema::jobs::{CheckpointRef, JobMessage};
use std::path::{Path, PathBuf};

/// The store key of the checkpoint a job's attempt saves at `step`.
pub fn key(job: &JobMessage, step: u64) -> String {
    format!(
        "checkpoints/{}/attempt-{}/step-{step:08}",
        job.run_id, job.attempt
    )
}

/// Whether `key` is one that [`key`] makes: nothing else is fetched into a data directory.
fn is_checkpoint_key(key: &str) -> bool {
    let parts: Vec<&str> = key.trim_matches('/').split('/').collect();
    let number = |text: Option<&str>, digits: Option<usize>| {
        text.is_some_and(|t| {
            !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_digit())
                && digits.is_none_or(|d| t.len() == d)
        })
    };
    parts.len() == 4
        && parts[0] == "checkpoints"
        && uuid::Uuid::parse_str(parts[1]).is_ok()
        && number(parts[2].strip_prefix("attempt-"), None)
        && number(parts[3].strip_prefix("step-"), Some(8))
}

/// Whether `key` is an uploaded dataset file's (`datasets/<sha256>.<jsonl|parquet>`).
fn is_dataset_key(key: &str) -> bool {
    [Format::Jsonl, Format::Verl].into_iter().any(|format| {
        key.strip_prefix("datasets/")
            .and_then(|name| name.strip_suffix(&format!(".{}", format.extension())))
            .is_some_and(|sha| sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// The directory for the checkpoint a job's attempt saves at `step`.
pub fn step_dir(data_dir: &Path, job: &JobMessage, step: u64) -> PathBuf {
    data_dir.join(key(job, step))
}

/// Writes the checkpoint of `step`: `write` fills a fresh directory, which is described by its
/// manifest and moved into place. Returns it as a local checkpoint (`file://` URI of the
/// directory), which the reporter uploads before it is reported.
pub fn save(
    data_dir: &Path,
    job: &JobMessage,
    step: u64,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<CheckpointRef> {
    let dir = step_dir(data_dir, job, step);
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    write(&tmp)?;
    let (sha256, size_bytes) = prl_artifacts::write_manifest(&tmp)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    let dir = dir.canonicalize()?;
    Ok(CheckpointRef {
        uri: format!("file://{}/", dir.display()),
        step,
        sha256,
        size_bytes,
    })
}

/// The directory of a checkpoint on this host's disk, after checking it is the one recorded.
pub fn local_dir(checkpoint: &CheckpointRef) -> Result<PathBuf> {
    let dir = checkpoint
        .local_dir()
        .with_context(|| format!("{} is not on this host; fetch it first", checkpoint.uri))?;
    if checkpoint.uri.ends_with('/') {
        prl_artifacts::verify_local(&dir, &checkpoint.sha256)
            .with_context(|| format!("checking {}", checkpoint.uri))?;
        return Ok(dir);
    }
    // Recorded before the store: the URI names the weights file, whose hash it is.
    let path = checkpoint.uri.trim_start_matches("file://");
    let (found, _) =
        prl_artifacts::hash_file(Path::new(path)).with_context(|| format!("reading {path}"))?;
    if found != checkpoint.sha256 {
        bail!(
            "{path} has sha256 {found}, not the recorded {}",
            checkpoint.sha256
        );
    }
    Ok(dir)
}

/// Where a job's checkpoints go and come from on this host.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    pub store: ArtifactStore,
    /// The data directory: the store's local mirror.
    pub data_dir: PathBuf,
}

impl Checkpoints {
    /// Why this host cannot read a checkpoint the job names, if it cannot: one in another
    /// store, or a URI that is no checkpoint's. Asked before a claim, so such a job is left to
    /// daemons that can.
    pub fn unreadable(&self, job: &JobMessage) -> Option<String> {
        let checkpoints = [&job.input_checkpoint, &job.resume_from]
            .into_iter()
            .flatten()
            .filter(|c| c.uri.ends_with('/'))
            .map(|c| (&c.uri, is_checkpoint_key as fn(&str) -> bool, "checkpoint"));
        let datasets = job
            .datasets
            .values()
            .filter(|split| split.is_stored())
            .map(|split| {
                (
                    &split.uri,
                    is_dataset_key as fn(&str) -> bool,
                    "dataset file",
                )
            });
        checkpoints
            .chain(datasets)
            .find_map(|(uri, fits, what)| match self.store.key_of(uri) {
                Err(e) => Some(e.to_string()),
                Ok(key) if !fits(key) => Some(format!("{uri} is no {what}")),
                Ok(_) => None,
            })
    }

    /// The job with its input and resume checkpoints and its uploaded dataset files on this
    /// host's disk (fetched from the store unless a matching copy is there), each named by its
    /// local path. Checkpoints recorded
    /// before the store keep their file URIs, which the daemon's data roots must admit; one to
    /// resume from that is not on this host is dropped (the attempt starts over, as it did then).
    pub async fn localize(&self, job: &JobMessage) -> Result<JobMessage> {
        if let Some(why) = self.unreadable(job) {
            bail!(why);
        }
        let mut job = job.clone();
        if let Some(old) = &job.resume_from
            && !old.uri.ends_with('/')
            && local_dir(old).is_err()
        {
            tracing::warn!(uri = %old.uri, "the checkpoint to resume from is not here: starting over");
            job.resume_from = None;
        }
        for (what, slot) in [
            ("input checkpoint", &mut job.input_checkpoint),
            ("checkpoint to resume from", &mut job.resume_from),
        ] {
            let Some(checkpoint) = slot.as_mut() else {
                continue;
            };
            if !checkpoint.uri.ends_with('/') {
                continue;
            }
            let dir = self
                .store
                .fetch_dir(&checkpoint.uri, &checkpoint.sha256, &self.data_dir)
                .await
                .with_context(|| format!("fetching the {what} {}", checkpoint.uri))?;
            checkpoint.uri = format!("file://{}/", dir.canonicalize()?.display());
        }
        for (name, split) in job.datasets.iter_mut().filter(|(_, s)| s.is_stored()) {
            let file = self
                .store
                .fetch_file(&split.uri, &split.sha256, &self.data_dir)
                .await
                .with_context(|| format!("fetching dataset {name} {}", split.uri))?;
            split.uri = file.canonicalize()?.display().to_string();
        }
        Ok(job)
    }

    /// Uploads a checkpoint saved under the data directory and returns it as recorded: by its
    /// URL in the store, with the same hash. One already in the store is returned as it is.
    pub async fn upload(&self, local: &CheckpointRef) -> Result<CheckpointRef> {
        let Some(dir) = local.local_dir().filter(|_| local.uri.ends_with('/')) else {
            return Ok(local.clone());
        };
        let root = self.data_dir.canonicalize()?;
        let Ok(key) = dir.strip_prefix(&root) else {
            return Ok(local.clone()); // not a checkpoint of ours: already recorded somewhere
        };
        let key = key
            .to_str()
            .context("a checkpoint path that is not UTF-8")?;
        let stored = self.store.put_dir(key, &dir).await?;
        if stored.sha256 != local.sha256 {
            bail!("{} changed after it was saved", dir.display());
        }
        Ok(CheckpointRef {
            uri: stored.uri,
            ..local.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_checkpoint_and_dataset_keys_are_fetched() {
        let run = uuid::Uuid::now_v7();
        assert!(is_checkpoint_key(&format!(
            "checkpoints/{run}/attempt-2/step-00000010"
        )));
        for bad in [
            String::new(),
            "checkpoints".into(),
            format!("checkpoints/{run}"),
            format!("checkpoints/{run}/attempt-2/step-10"),
            format!("checkpoints/{run}/attempt-/step-00000010"),
            format!("datasets/{run}/attempt-1/step-00000010"),
            "checkpoints/x/attempt-1/step-00000010".into(),
        ] {
            assert!(!is_checkpoint_key(&bad), "{bad}");
        }
        let sha = "ab".repeat(32);
        assert!(is_dataset_key(&format!("datasets/{sha}.jsonl")));
        assert!(is_dataset_key(&format!("datasets/{sha}.parquet")));
        for bad in [
            format!("datasets/{sha}.csv"),
            format!("datasets/{sha}"),
            format!("datasets/x/{sha}.jsonl"),
            "datasets/ab.jsonl".into(),
            format!("checkpoints/{sha}.jsonl"),
        ] {
            assert!(!is_dataset_key(&bad), "{bad}");
        }
    }
}
