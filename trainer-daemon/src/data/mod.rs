//! Training and evaluation data: the built-in task and the prompt formats.

pub mod builtin;
pub mod jsonl;
pub mod prompt;
pub mod verl;

use anyhow::{Result, bail};
use builtin::{Difficulty, Problem, Split};
use prompt::PromptStyle;
use std::path::Path;

/// A prompt with a checkable answer, for RL and evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub id: String,
    /// The rendered prompt.
    pub prompt: String,
    pub truth: String,
}

/// `<prefix><path>[:sequential]`: a dataset file and the prompt design its questions get.
fn file_reference<'a>(reference: &'a str, prefix: &str) -> Option<(&'a Path, PromptStyle)> {
    let rest = reference.strip_prefix(prefix)?;
    Some(match rest.strip_suffix(":sequential") {
        Some(path) => (Path::new(path), PromptStyle::StepByStep),
        None => (Path::new(rest), PromptStyle::Parallel),
    })
}

/// The tasks of a dataset reference (`builtin:...`, `jsonl:<path>` or `verl:<path>`), the first
/// `max` of them when given.
pub fn tasks(reference: &str, max: Option<usize>) -> Result<Vec<Task>> {
    let mut tasks = if let Some(set) = jsonl::JsonlSet::parse(reference) {
        set.tasks()?
    } else if let Some(set) = verl::VerlSet::parse(reference) {
        set.tasks()?
    } else {
        BuiltinSet::parse(reference)?.tasks()
    };
    if let Some(max) = max {
        tasks.truncate(max);
    }
    Ok(tasks)
}

/// The (prompt, target response) pairs of a dataset reference, for SFT.
pub fn examples(reference: &str) -> Result<Vec<(String, String)>> {
    if let Some(set) = jsonl::JsonlSet::parse(reference) {
        set.examples()
    } else if let Some(set) = verl::VerlSet::parse(reference) {
        set.examples()
    } else {
        Ok(BuiltinSet::parse(reference)?.examples())
    }
}

/// A dataset reference resolved: `builtin:<easy|hard>[-test][:sequential]`.
#[derive(Clone, Debug, PartialEq)]
pub struct BuiltinSet {
    pub difficulty: Difficulty,
    pub split: Split,
    pub style: PromptStyle,
}

/// Problems per built-in split.
pub const BUILTIN_TRAIN_SIZE: usize = 4000;
pub const BUILTIN_TEST_SIZE: usize = 512;
/// The seed of the built-in task; the split hash keeps test problems out of training whatever it is.
pub const BUILTIN_SEED: u64 = 20_250_910;

impl BuiltinSet {
    pub fn parse(reference: &str) -> Result<Self> {
        let Some(name) = reference.strip_prefix("builtin:") else {
            bail!(
                "dataset {reference:?} is neither built in (builtin:easy, builtin:hard, builtin:easy-test, ...) nor a file (jsonl:<path>, verl:<path>)"
            )
        };
        let (name, style) = match name.strip_suffix(":sequential") {
            Some(name) => (name, PromptStyle::StepByStep),
            None => (name, PromptStyle::Parallel),
        };
        let (difficulty, split) = match name {
            "easy" => (Difficulty::Easy, Split::Train),
            "hard" => (Difficulty::Hard, Split::Train),
            "easy-test" => (Difficulty::Easy, Split::Test),
            "hard-test" | "test" => (Difficulty::Hard, Split::Test),
            other => bail!(
                "unknown built-in dataset {other:?}: expected easy, hard, easy-test or hard-test"
            ),
        };
        Ok(BuiltinSet {
            difficulty,
            split,
            style,
        })
    }

    pub fn problems(&self) -> Vec<Problem> {
        let count = match self.split {
            Split::Train => BUILTIN_TRAIN_SIZE,
            Split::Test => BUILTIN_TEST_SIZE,
        };
        builtin::generate(self.difficulty, self.split, count, BUILTIN_SEED)
    }

    /// The problems as prompts in this set's style, with their answers.
    pub fn tasks(&self) -> Vec<Task> {
        self.problems()
            .into_iter()
            .map(|p| Task {
                prompt: prompt::render(&p.question, self.style),
                truth: p.answer.to_string(),
                id: p.id,
            })
            .collect()
    }

    /// (prompt, target response) pairs in this set's style.
    pub fn examples(&self) -> Vec<(String, String)> {
        self.problems()
            .into_iter()
            .map(|p| {
                let response = match self.style {
                    PromptStyle::Parallel => p.parallel_solution,
                    PromptStyle::StepByStep => p.sequential_solution,
                };
                (prompt::render(&p.question, self.style), response)
            })
            .collect()
    }
}
