//! `prl dataset`: register files as a named dataset (every row is read and checked, and each
//! file's sha256 recorded), and list what is registered. Files stay where they are (a path every
//! daemon must share), or are uploaded into the artifact store, from which daemons on any host
//! fetch them.

use crate::client::Client;
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

fn format_of(path: &Path) -> Result<Format> {
    Format::of_path(path).ok_or_else(|| {
        anyhow!(
            "{}: a dataset file is .jsonl or .parquet (verl-style)",
            path.display()
        )
    })
}

fn split(name: &str, path: &Path) -> Result<DatasetSplit> {
    let format = format_of(path)?;
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

/// The registration of `splits` under `name`: each file read and checked here and named by its
/// path, or, with a client to `upload` through, sent into the artifact store (the API checks it)
/// and named by its URL there.
pub async fn registration(
    name: String,
    splits: &[(String, PathBuf)],
    source: String,
    upload: Option<&Client>,
) -> Result<Registration> {
    if splits.is_empty() {
        bail!("give at least one --split NAME=FILE");
    }
    let mut registered = vec![];
    for (split_name, path) in splits {
        registered.push(match upload {
            None => split(split_name, path)?,
            Some(client) => {
                let stored = client.upload_dataset_file(path, format_of(path)?).await?;
                DatasetSplit {
                    name: split_name.clone(),
                    format: stored.format,
                    uri: stored.uri,
                    rows: stored.rows,
                    sha256: stored.sha256,
                }
            }
        });
    }
    Ok(Registration {
        name,
        source,
        splits: registered,
    })
}
