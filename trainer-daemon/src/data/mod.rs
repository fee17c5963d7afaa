//! Training and evaluation data: the built-in task and the prompt formats.

pub mod builtin;
pub mod files;
pub mod prompt;

use anyhow::{Context, Result, bail};
use builtin::{Difficulty, Problem, Split};
use prl_schema::datasets::{DatasetSplit, registered_reference};
use prompt::PromptStyle;
use sha2::Digest;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A prompt with a checkable answer, for RL and evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub id: String,
    /// The rendered prompt.
    pub prompt: String,
    pub truth: String,
}

/// The registered datasets a job may name (`name:split` → split), as resolved at submission.
pub type Registered = BTreeMap<String, DatasetSplit>;

/// A `registered:` reference turned into its file's reference, once the file is checked to be
/// the one registered; any other reference as it is.
fn resolve<'a>(reference: &'a str, registered: &Registered) -> Result<Cow<'a, str>> {
    let Some((name, split, sequential)) = registered_reference(reference) else {
        return Ok(Cow::Borrowed(reference));
    };
    let Some(found) = registered.get(&format!("{name}:{split}")) else {
        bail!("dataset {reference:?} was not resolved when the experiment was accepted");
    };
    let bytes = std::fs::read(&found.uri)
        .with_context(|| format!("reading {} (dataset {name}, split {split})", found.uri))?;
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    if sha256 != found.sha256 {
        bail!(
            "{} changed since dataset {name} was registered (sha256 {sha256}, registered {})",
            found.uri,
            found.sha256
        );
    }
    let style = if sequential { ":sequential" } else { "" };
    Ok(Cow::Owned(format!("{}{style}", found.reference())))
}

/// The tasks of a dataset reference (`builtin:...`, `jsonl:<path>`, `verl:<path>` or
/// `registered:<name>[:<split>]`), the first `max` of them when given.
pub fn tasks(reference: &str, max: Option<usize>, registered: &Registered) -> Result<Vec<Task>> {
    let reference = resolve(reference, registered)?;
    let reference = reference.as_ref();
    let mut tasks = match files::FileSet::parse(reference) {
        Some(set) => set.tasks()?,
        None => BuiltinSet::parse(reference)?.tasks(),
    };
    if let Some(max) = max {
        tasks.truncate(max);
    }
    Ok(tasks)
}

/// The (prompt, target response) pairs of a dataset reference, for SFT.
pub fn examples(reference: &str, registered: &Registered) -> Result<Vec<(String, String)>> {
    let reference = resolve(reference, registered)?;
    let reference = reference.as_ref();
    match files::FileSet::parse(reference) {
        Some(set) => set.examples(),
        None => Ok(BuiltinSet::parse(reference)?.examples()),
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
                "dataset {reference:?} is neither built in (builtin:easy, builtin:hard, builtin:easy-test, ...) nor a file (jsonl:<path>, verl:<path>) nor registered (registered:<name>)"
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
