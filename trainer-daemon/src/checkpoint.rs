//! Checkpoint files: written under the daemon's data directory and described by URI, sha256 and
//! size, so that whoever loads one can check it is the file that was recorded.

use anyhow::{Context, Result};
use prl_schema::ids::RunId;
use prl_schema::jobs::CheckpointRef;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub fn run_dir(data_dir: &Path, run_id: RunId) -> PathBuf {
    data_dir.join("checkpoints").join(run_id.to_string())
}

/// Writes `bytes` as the checkpoint of `step`, atomically (write, then rename).
pub fn save(data_dir: &Path, run_id: RunId, step: u64, bytes: &[u8]) -> Result<CheckpointRef> {
    let dir = run_dir(data_dir, run_id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("step-{step:08}.ckpt"));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)?;
    describe(&path, step)
}

pub fn describe(path: &Path, step: u64) -> Result<CheckpointRef> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let path = path.canonicalize()?;
    Ok(CheckpointRef {
        uri: format!("file://{}", path.display()),
        step,
        sha256: hex::encode(Sha256::digest(&bytes)),
        size_bytes: bytes.len() as u64,
    })
}

/// The newest checkpoint (a `step-N` file or directory) a run left in this data directory.
pub fn latest(data_dir: &Path, run_id: RunId) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(run_dir(data_dir, run_id))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix("step-")?;
            let (digits, extension) = rest.split_once('.').unwrap_or((rest, ""));
            if !matches!(extension, "" | "ckpt") {
                return None; // half-written
            }
            Some((digits.parse().ok()?, e.path()))
        })
        .max_by_key(|(step, _)| *step)
}

/// The directory for the checkpoint of `step`.
pub fn step_dir(data_dir: &Path, run_id: RunId, step: u64) -> PathBuf {
    run_dir(data_dir, run_id).join(format!("step-{step:08}"))
}
