//! `prl dataset`: register files as a named dataset (every row is read and checked here, and
//! each file's sha256 recorded), and list what is registered.

use anyhow::{Context, Result, anyhow, bail};
use prl_api::routes::datasets::Registration;
use prl_schema::datasets::{DatasetSplit, Format, read};
use sha2::Digest;
use std::path::{Path, PathBuf};

/// `train=data/train.jsonl`: a split's name and its file.
pub fn split_argument(text: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not SPLIT=FILE, e.g. train=data/train.jsonl"))?;
    Ok((name.to_owned(), PathBuf::from(path)))
}

fn split(name: &str, path: &Path) -> Result<DatasetSplit> {
    let format = Format::of_path(path).ok_or_else(|| {
        anyhow!(
            "{}: a dataset file is .jsonl or .parquet (verl-style)",
            path.display()
        )
    })?;
    let rows = read(path, format).map_err(|e| anyhow!(e))?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let uri = std::fs::canonicalize(path)
        .with_context(|| format!("resolving {}", path.display()))?
        .display()
        .to_string();
    Ok(DatasetSplit {
        name: name.to_owned(),
        format,
        uri,
        rows: rows.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
    })
}

pub fn registration(
    name: String,
    splits: &[(String, PathBuf)],
    source: String,
) -> Result<Registration> {
    if splits.is_empty() {
        bail!("give at least one --split NAME=FILE");
    }
    Ok(Registration {
        name,
        source,
        splits: splits
            .iter()
            .map(|(name, path)| split(name, path))
            .collect::<Result<_>>()?,
    })
}
