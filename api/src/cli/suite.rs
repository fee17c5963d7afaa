//! `prl suite`: runs a directory of experiment specs (a suite, such as the demo suite that mirrors
//! the rows of the reference's main table) one after another, and prints their comparison table.
//!
//! A suite is `suite.toml` next to its spec files:
//!
//! ```toml
//! name = "ci"
//! [[rows]]
//! spec = "sft-unseen.toml"
//! [[rows]]
//! spec = "r1-unseen-s2.toml"
//! start_from = "sft-unseen.toml"   # starts from that row's final checkpoint
//! ```

use super::client::Client;
use super::results::print_table;
use anyhow::{Context, Result, bail};
use prl_schema::spec::{ExperimentSpec, ModelRef, SpecError};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    rows: Vec<Row>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    spec: PathBuf,
    /// An earlier row whose final checkpoint this row's model becomes.
    #[serde(default)]
    start_from: Option<PathBuf>,
}

/// A suite read and checked before anything is submitted.
pub struct Suite {
    pub name: String,
    rows: Vec<(Row, ExperimentSpec)>,
}

impl Suite {
    pub fn read(dir: &Path) -> Result<Suite> {
        let path = dir.join("suite.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("could not read {}", path.display()))?;
        let manifest: Manifest = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a valid suite: {e}", path.display()))?;
        let mut rows = Vec::new();
        for (i, row) in manifest.rows.into_iter().enumerate() {
            if let Some(from) = &row.start_from
                && !rows.iter().any(|(r, _): &(Row, _)| &r.spec == from)
            {
                bail!(
                    "{}: rows[{i}].start_from names {}, which is not an earlier row",
                    path.display(),
                    from.display()
                );
            }
            let spec = read_spec(&dir.join(&row.spec))?;
            rows.push((row, spec));
        }
        if rows.is_empty() {
            bail!("{} has no rows", path.display());
        }
        Ok(Suite {
            name: manifest.name,
            rows,
        })
    }

    /// Submits every row in order, following each to its end, then prints the table. A row whose
    /// `start_from` row did not complete is skipped. Returns the experiments, in row order.
    pub async fn run(self, client: &Client) -> Result<Vec<Uuid>> {
        println!("suite {}: {} experiments", self.name, self.rows.len());
        let mut finished: HashMap<PathBuf, (Uuid, String)> = HashMap::new();
        let mut ids = Vec::new();
        for (row, mut spec) in self.rows {
            if let Some(from) = &row.start_from {
                let (id, status) = &finished[from];
                if status != "completed" {
                    println!("skipping {}: {} ended {status}", spec.name, from.display());
                    continue;
                }
                spec.model = ModelRef::Path(final_checkpoint_dir(client, *id).await?);
            }
            let id = client.submit(&spec).await?;
            println!("\n{} ({}): experiment {id}", spec.name, row.spec.display());
            let status = super::watch::watch(client, id).await?;
            ids.push(id);
            finished.insert(row.spec, (id, status));
        }
        println!();
        print_table(&client.results(&ids).await?);
        Ok(ids)
    }
}

/// The directory of the last checkpoint an experiment's runs saved.
async fn final_checkpoint_dir(client: &Client, id: Uuid) -> Result<String> {
    let detail = client.detail(id).await?;
    let uri = detail
        .runs
        .iter()
        .rev()
        .find_map(|r| {
            r.checkpoint
                .as_ref()?
                .get("uri")?
                .as_str()
                .map(str::to_owned)
        })
        .with_context(|| format!("experiment {id} saved no checkpoint"))?;
    let file = uri
        .strip_prefix("file://")
        .with_context(|| format!("{uri} is not a local checkpoint"))?;
    Ok(Path::new(file)
        .parent()
        .context("a checkpoint file has a directory")?
        .display()
        .to_string())
}

/// Parses a spec file, naming the file in any error.
pub fn read_spec(path: &Path) -> Result<ExperimentSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let parsed = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => ExperimentSpec::from_toml(&text),
        Some("json") => ExperimentSpec::from_json(text.as_bytes()),
        _ => bail!("{} should end in .json or .toml", path.display()),
    };
    parsed.map_err(|e| match e {
        SpecError::Malformed(m) => {
            anyhow::anyhow!("{} is not a well-formed spec: {m}", path.display())
        }
        SpecError::Invalid { field, reason } => {
            anyhow::anyhow!("{} has an invalid field {field}: {reason}", path.display())
        }
    })
}
