//! `prl suite`: runs a directory of experiment specs (a suite, such as the demo suite that mirrors
//! the rows of the reference's main table) one after another, once per seed, and prints each
//! seed's comparison table and the paper's findings judged across the seeds. Running it again
//! reuses every row already submitted with the same spec, so it only prints what it has.
//!
//! A suite is `suite.toml` next to its spec files:
//!
//! ```toml
//! name = "ci"
//! seeds = [1, 2]                   # each seed runs every row (default [1])
//! [[rows]]
//! spec = "sft-unseen.toml"
//! role = "sft"                     # what the row is in the paper's table (see findings.rs)
//! [[rows]]
//! spec = "r1-unseen-s2.toml"
//! start_from = "sft-unseen.toml"   # starts from that row's final checkpoint
//! role = "parallel-r1-s2"
//! ```

use super::client::Client;
use super::findings::{self, Role, RowOutcome, SeedOutcome};
use super::results::print_table;
use anyhow::{Context, Result, bail};
use prl_api::domain::status::ExperimentStatus;
use prl_schema::jobs::CheckpointRef;
use prl_schema::spec::{ExperimentSpec, ModelRef, SpecError, StageSpec, Tag};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    #[serde(default = "one_seed")]
    seeds: Vec<u64>,
    rows: Vec<Row>,
}

fn one_seed() -> Vec<u64> {
    vec![1]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    spec: PathBuf,
    /// An earlier row whose final checkpoint this row's model becomes.
    #[serde(default)]
    start_from: Option<PathBuf>,
    /// What the row stands for in the paper's findings.
    #[serde(default)]
    role: Option<Role>,
}

/// A suite read and checked before anything is submitted.
pub struct Suite {
    pub name: String,
    pub seeds: Vec<u64>,
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
        if manifest.seeds.is_empty() {
            bail!("{}: seeds is empty", path.display());
        }
        Ok(Suite {
            name: manifest.name,
            seeds: manifest.seeds,
            rows,
        })
    }

    /// The suite with every row's spec changed by `change` (for example cut to a smoke test's
    /// size).
    pub fn map_specs(mut self, change: impl Fn(&mut ExperimentSpec)) -> Suite {
        for (_, spec) in &mut self.rows {
            change(spec);
        }
        self
    }

    /// Runs the suite once per seed (the manifest's unless `seeds` is given), up to `parallel`
    /// experiments at a time (one per trainer daemon): a row starts once the row it starts from
    /// has completed under the same seed, and is skipped if that row did not complete. A row
    /// whose exact spec was submitted before and did not fail is followed or reused, not run
    /// again, so a suite started again picks up where it stopped. Then
    /// prints each seed's table and the findings judged across the seeds. Returns the experiments
    /// of each seed, in row order.
    pub async fn run(
        self,
        client: &Client,
        seeds: &[u64],
        parallel: usize,
    ) -> Result<Vec<Vec<Uuid>>> {
        let seeds = if seeds.is_empty() {
            self.seeds.clone()
        } else {
            seeds.to_vec()
        };
        println!(
            "suite {}: {} experiments, seeds {seeds:?}, {parallel} at a time",
            self.name,
            self.rows.len()
        );
        let ids = self.schedule(client, &seeds, parallel.max(1)).await?;
        let mut outcomes = Vec::new();
        for (seed, ids) in seeds.iter().zip(&ids) {
            println!("\nseed {seed}:\n");
            let present: Vec<Uuid> = ids.iter().flatten().copied().collect();
            print_table(&client.results(&present).await?);
            outcomes.push(self.outcome(client, *seed, ids).await?);
        }
        if self.rows.iter().any(|(row, _)| row.role.is_some()) {
            println!("\n{}", findings::render(&findings::judge(&outcomes)));
        }
        Ok(ids
            .into_iter()
            .map(|ids| ids.into_iter().flatten().collect())
            .collect())
    }

    /// Every (seed, row), started as they become ready; None for a skipped row.
    async fn schedule(
        &self,
        client: &Client,
        seeds: &[u64],
        parallel: usize,
    ) -> Result<Vec<Vec<Option<Uuid>>>> {
        #[derive(Clone, PartialEq)]
        enum State {
            Waiting,
            Running(Uuid),
            Done(Uuid, ExperimentStatus),
            Skipped,
        }
        let rows = self.rows.len();
        let mut states = vec![vec![State::Waiting; rows]; seeds.len()];
        // Rows that others wait on go first, the longest chain of starts first, so that the
        // dependent rows are not left for last with the daemons idle.
        let chain = self.chain_lengths();
        let mut order: Vec<(usize, usize)> = (0..seeds.len())
            .flat_map(|s| (0..rows).map(move |r| (s, r)))
            .collect();
        order.sort_by_key(|&(s, r)| (std::cmp::Reverse(chain[r]), s, r));
        loop {
            // Start what is ready, in that order, while there is room.
            for &(s, r) in &order {
                let running = states.iter().flatten();
                let busy = running.filter(|x| matches!(x, State::Running(_))).count();
                if busy >= parallel || states[s][r] != State::Waiting {
                    continue;
                }
                let (row, spec) = &self.rows[r];
                let from = row.start_from.as_ref().map(|from| {
                    let i = self.rows.iter().position(|(x, _)| &x.spec == from);
                    &states[s][i.expect("checked when read")]
                });
                let model = match from {
                    None => None,
                    Some(State::Done(id, ExperimentStatus::Completed)) => {
                        Some(final_checkpoint(client, *id).await?)
                    }
                    Some(State::Done(_, status)) => {
                        println!(
                            "skipping {} (seed {}): its start ended {status}",
                            spec.name, seeds[s]
                        );
                        states[s][r] = State::Skipped;
                        continue;
                    }
                    Some(State::Skipped) => {
                        println!(
                            "skipping {} (seed {}): its start was skipped",
                            spec.name, seeds[s]
                        );
                        states[s][r] = State::Skipped;
                        continue;
                    }
                    Some(_) => continue,
                };
                let mut spec = spec.clone();
                spec.seed = seeds[s];
                spec.tags
                    .push(Tag::try_from(seed_tag(seeds[s])).expect("a valid tag"));
                if let Some(model) = model {
                    spec.model = model;
                }
                let (id, before) = match client.find_submitted(&spec).await? {
                    Some((id, status)) => (id, Some(status)),
                    None => (client.submit(&spec).await?, None),
                };
                println!(
                    "{} ({}, seed {}): experiment {id}{}",
                    spec.name,
                    row.spec.display(),
                    seeds[s],
                    match &before {
                        Some(status) => format!(", submitted before ({status})"),
                        None => String::new(),
                    }
                );
                if let Some(status) = before.filter(|&status| status == ExperimentStatus::Completed)
                {
                    states[s][r] = State::Done(id, status);
                    continue;
                }
                states[s][r] = State::Running(id);
                if parallel == 1 {
                    // One at a time: follow it with a progress bar per stage.
                    let status = super::watch::watch(client, id).await?;
                    states[s][r] = State::Done(id, status);
                }
            }
            let running: Vec<(usize, usize, Uuid)> = (0..seeds.len())
                .flat_map(|s| (0..rows).map(move |r| (s, r)))
                .filter_map(|(s, r)| match states[s][r] {
                    State::Running(id) => Some((s, r, id)),
                    _ => None,
                })
                .collect();
            if running.is_empty() {
                if states.iter().flatten().any(|x| *x == State::Waiting) {
                    continue;
                }
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            for (s, r, id) in running {
                let status = client.detail(id).await?.summary.status;
                if !status.is_active() {
                    println!("{} (seed {}): {status}", self.rows[r].1.name, seeds[s]);
                    states[s][r] = State::Done(id, status);
                }
            }
        }
        Ok(states
            .into_iter()
            .map(|seed| {
                seed.into_iter()
                    .map(|x| match x {
                        State::Done(id, _) => Some(id),
                        _ => None,
                    })
                    .collect()
            })
            .collect())
    }

    /// Per row, the length of the longest chain of rows that start from it, itself included.
    fn chain_lengths(&self) -> Vec<usize> {
        let mut chain = vec![1; self.rows.len()];
        // A row starts only from an earlier one, so one pass from the end sees every dependent.
        for r in (0..self.rows.len()).rev() {
            if let Some(from) = &self.rows[r].0.start_from {
                let i = self.rows.iter().position(|(x, _)| &x.spec == from);
                let i = i.expect("checked when read");
                chain[i] = chain[i].max(chain[r] + 1);
            }
        }
        chain
    }

    /// What the findings read of one seed's rows: results, and the strategy series of RL stages.
    async fn outcome(
        &self,
        client: &Client,
        seed: u64,
        ids: &[Option<Uuid>],
    ) -> Result<SeedOutcome> {
        let present: Vec<Uuid> = ids.iter().flatten().copied().collect();
        let table = client.results(&present).await?;
        let prompts = client.prompt_scores(&present).await?;
        let mut rows = Vec::new();
        for ((row, spec), id) in self.rows.iter().zip(ids) {
            let Some(id) = id else { continue };
            let result = table
                .rows
                .iter()
                .find(|r| r.experiment_id == *id)
                .cloned()
                .context("a finished row is missing from the results")?;
            let detail = client.detail(*id).await?;
            let rl_runs: Vec<Uuid> = detail
                .runs
                .iter()
                .filter(|r| {
                    matches!(
                        spec.stages.as_slice().get(r.stage_idx as usize),
                        Some(StageSpec::Rl(_))
                    )
                })
                .map(|r| r.id)
                .collect();
            let strategy = if rl_runs.is_empty() {
                Vec::new()
            } else {
                client.strategy(&rl_runs).await?
            };
            let start = row
                .start_from
                .as_ref()
                .and_then(|from| self.rows.iter().position(|(r, _)| &r.spec == from));
            rows.push((
                start,
                RowOutcome {
                    name: spec.name.as_str().to_owned(),
                    role: row.role,
                    start: None,
                    result,
                    prompts: prompts
                        .iter()
                        .filter(|p| p.experiment_id == *id)
                        .map(|p| (p.benchmark.clone(), p.prompts.clone()))
                        .collect(),
                    strategy,
                },
            ));
        }
        // Starts index this seed's outcome rows, which skip the rows that did not run.
        let ran: Vec<usize> = (0..self.rows.len()).filter(|&i| ids[i].is_some()).collect();
        let rows = rows
            .into_iter()
            .map(|(start, mut outcome)| {
                outcome.start = start.and_then(|s| ran.iter().position(|&r| r == s));
                outcome
            })
            .collect();
        Ok(SeedOutcome { seed, rows })
    }
}

fn seed_tag(seed: u64) -> String {
    format!("seed-{seed}")
}

/// The last checkpoint an experiment's runs saved, as a model to start from (in whatever store
/// it lies: the daemons fetch it).
async fn final_checkpoint(client: &Client, id: Uuid) -> Result<ModelRef> {
    let detail = client.detail(id).await?;
    detail
        .runs
        .iter()
        .rev()
        .find_map(|r| {
            let checkpoint: CheckpointRef = serde_json::from_value(r.checkpoint.clone()?).ok()?;
            Some(ModelRef::Checkpoint {
                run: r.id,
                step: checkpoint.step,
            })
        })
        .with_context(|| format!("experiment {id} saved no checkpoint"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_that_others_start_from_are_scheduled_by_their_longest_chain() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/suite/tiny");
        let suite = Suite::read(&dir).unwrap();
        let chains: Vec<(&str, usize)> = suite
            .rows
            .iter()
            .zip(suite.chain_lengths())
            .map(|((row, _), n)| (row.spec.to_str().unwrap(), n))
            .collect();
        assert_eq!(
            chains,
            [
                ("base.toml", 1),
                ("sft-seen.toml", 2),
                ("sft-unseen.toml", 3),
                ("sft-control.toml", 1),
                ("grpo-baseline.toml", 1),
                ("r1-seen.toml", 1),
                ("r1-unseen-s1.toml", 1),
                ("r1-unseen-s2.toml", 2),
                ("scaffold.toml", 1),
            ]
        );
    }
}
