//! verl-style parquet datasets, referenced as `verl:<path>[:sequential]` (the format is
//! `prl_schema::verl`): the last user message is the question, wrapped in the method's prompt;
//! `reward_model.ground_truth` is the answer; `extra_info.answer` is the SFT target.

use super::Task;
use super::prompt::{self, PromptStyle};
use anyhow::{Result, anyhow};
use prl_schema::verl::{VerlRow, read};
use std::path::Path;

pub struct VerlSet<'a> {
    pub path: &'a Path,
    pub style: PromptStyle,
}

impl<'a> VerlSet<'a> {
    /// `verl:<path>[:sequential]`, or None for another kind of reference.
    pub fn parse(reference: &'a str) -> Option<Self> {
        let (path, style) = super::file_reference(reference, "verl:")?;
        Some(VerlSet { path, style })
    }

    fn rows(&self) -> Result<Vec<VerlRow>> {
        read(self.path).map_err(|e| anyhow!(e))
    }

    /// Every row, for RL and evaluation.
    pub fn tasks(&self) -> Result<Vec<Task>> {
        Ok(self
            .rows()?
            .into_iter()
            .map(|row| Task {
                prompt: prompt::render(&row.question, self.style),
                id: row.id,
                truth: row.ground_truth,
            })
            .collect())
    }

    /// (prompt, solution) pairs, for SFT: every row needs its `extra_info.answer`.
    pub fn examples(&self) -> Result<Vec<(String, String)>> {
        self.rows()?
            .into_iter()
            .enumerate()
            .map(|(i, row)| match row.solution {
                Some(solution) => Ok((prompt::render(&row.question, self.style), solution)),
                None => Err(anyhow!(
                    "{} row {}: no solution (SFT needs extra_info.answer)",
                    self.path.display(),
                    i + 1
                )),
            })
            .collect()
    }
}
