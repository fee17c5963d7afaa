//! `prl import`: reads dump folders and verl datasets into an import request; the API checks
//! every line.

use anyhow::{Context, Result, bail};
use prl_api::routes::imports::ImportRequest;
use prl_schema::dumps::DumpFile;
use std::path::{Path, PathBuf};

/// What to import: dump folders of the reference code and a verl parquet dataset.
#[derive(Default)]
pub struct Sources {
    pub rollouts: Option<PathBuf>,
    pub validation: Option<PathBuf>,
    pub dataset: Option<PathBuf>,
}

pub fn request(
    name: String,
    sources: Sources,
    benchmark: Option<String>,
    tags: Vec<String>,
) -> Result<ImportRequest> {
    let Sources {
        rollouts,
        validation,
        dataset,
    } = sources;
    if rollouts.is_none() && validation.is_none() && dataset.is_none() {
        bail!(
            "give --rollouts or --validation (folders of {{step}}.jsonl dumps) or --dataset (a verl parquet file)"
        );
    }
    let source = [&rollouts, &validation, &dataset]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut rollout_files = rollouts
        .as_deref()
        .map(read_folder)
        .transpose()?
        .unwrap_or_default();
    if let Some(path) = &dataset {
        rollout_files.push(dataset_as_rollouts(path)?);
    }
    Ok(ImportRequest {
        name,
        tags,
        source,
        rollouts: rollout_files,
        validation: validation
            .as_deref()
            .map(read_folder)
            .transpose()?
            .unwrap_or_default(),
        benchmark,
    })
}

/// A verl dataset whose answer texts are solutions (cold-start SFT data) as rollouts of step 0,
/// so that its parallel structure is analysed like trajectories. Line n is row n.
pub fn dataset_as_rollouts(path: &Path) -> Result<DumpFile> {
    let rows = prl_schema::verl::read(path).map_err(anyhow::Error::msg)?;
    let mut lines = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let Some(solution) = row.solution else {
            bail!(
                "{} row {}: no solution text (extra_info.answer) to analyse",
                path.display(),
                i + 1
            );
        };
        let (correct, answer) = prl_schema::reward::check_answer(&solution, &row.ground_truth);
        lines.push(
            serde_json::json!({
                "input": row.question, "output": solution, "step": 0,
                "score": if correct { 1.0 } else { 0.0 }, "acc": correct, "pred": answer,
                "ground_truth": row.ground_truth, "data_source": row.data_source,
            })
            .to_string(),
        );
    }
    Ok(DumpFile {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        content: lines.join("\n"),
    })
}

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
