//! `prl import`: reads dump folders into an import request; the API checks every line.

use crate::routes::imports::ImportRequest;
use anyhow::{Context, Result, bail};
use prl_schema::dumps::DumpFile;
use std::path::{Path, PathBuf};

pub fn request(
    name: String,
    rollouts: Option<PathBuf>,
    validation: Option<PathBuf>,
    benchmark: Option<String>,
    tags: Vec<String>,
) -> Result<ImportRequest> {
    if rollouts.is_none() && validation.is_none() {
        bail!("give --rollouts and/or --validation: folders of {{step}}.jsonl dumps");
    }
    let source = [&rollouts, &validation]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Ok(ImportRequest {
        name,
        tags,
        source,
        rollouts: rollouts
            .as_deref()
            .map(read_folder)
            .transpose()?
            .unwrap_or_default(),
        validation: validation
            .as_deref()
            .map(read_folder)
            .transpose()?
            .unwrap_or_default(),
        benchmark,
    })
}

/// Every `.jsonl` file of a folder, in step order where names are steps.
pub fn read_folder(dir: &Path) -> Result<Vec<DumpFile>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    if paths.is_empty() {
        bail!("{} has no .jsonl files", dir.display());
    }
    let step = |p: &PathBuf| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
    };
    paths.sort_by_key(|p| (step(p), p.clone()));
    paths
        .into_iter()
        .map(|path| {
            let content = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(DumpFile { name, content })
        })
        .collect()
}
