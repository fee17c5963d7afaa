//! A model directory's weights: one `model.safetensors`, or the shards that
//! `model.safetensors.index.json` maps each tensor to (as larger Hugging Face checkpoints ship).

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// The weight files of `dir`, in load order.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(SHARD_INDEX);
    if !index.exists() {
        let single = dir.join(SINGLE_FILE);
        if !single.exists() {
            bail!(
                "{} has neither {SINGLE_FILE} nor {SHARD_INDEX}",
                dir.display()
            );
        }
        return Ok(vec![single]);
    }
    let text =
        std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
    let parsed: ShardIndex = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a shard index (weight_map)", index.display()))?;
    let names: BTreeSet<&String> = parsed.weight_map.values().collect();
    names
        .into_iter()
        .map(|name| {
            // Shards sit beside their index: a name with a directory in it could reach any file.
            if Path::new(name).file_name() != Some(name.as_ref()) {
                bail!(
                    "{}: weight_map names {name:?}, which is not a file in the same directory",
                    index.display()
                );
            }
            Ok(dir.join(name))
        })
        .collect()
}

/// The tensors with a row per token: a model whose vocabulary grew has more rows than its files.
const TOKEN_ROWS: [&str; 2] = ["model.embed_tokens.weight", "lm_head.weight"];

/// Copies every variable of `variables` from `files`, one file in memory at a time, converting
/// dtypes. The files hold `vocab` token rows (config.json's `vocab_size`); a token-row tensor
/// with more gets the files' rows first and their mean in the rest. Fails naming the tensor that
/// is missing or has another shape than config.json gives it; tensors the model does not use
/// (rotary caches some exports keep) are ignored.
pub fn load_into(variables: HashMap<String, Tensor>, files: &[PathBuf], vocab: i64) -> Result<()> {
    let mut missing = variables;
    for file in files {
        let tensors = Tensor::read_safetensors(file)
            .with_context(|| format!("reading {}", file.display()))?;
        for (name, value) in tensors {
            let Some(mut var) = missing.remove(&name) else {
                continue;
            };
            let (want, found) = (var.size(), value.size());
            let mut expected = want.clone();
            if TOKEN_ROWS.contains(&name.as_str()) && expected.len() == 2 {
                expected[0] = vocab;
            }
            if found != expected {
                bail!(
                    "{name} in {} has shape {found:?}; config.json makes it {expected:?}",
                    file.display(),
                );
            }
            tch::no_grad(|| {
                if want == found {
                    return var.copy_(&value);
                }
                let added = want[0] - found[0];
                let mean = value.mean_dim(0, true, Kind::Float);
                var.narrow(0, 0, found[0]).copy_(&value);
                var.narrow(0, found[0], added)
                    .copy_(&mean.expand([added, want[1]], false));
            });
        }
    }
    if let Some(name) = missing.keys().min() {
        bail!(
            "{name} is in none of {} ({} tensors missing in all)",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            missing.len()
        );
    }
    Ok(())
}
