//! Training and evaluation data: the built-in task and the prompt formats.

pub mod builtin;
pub mod files;
pub mod prompt;

use anyhow::{Context, Result, anyhow, bail};
use builtin::{Difficulty, Problem, Split};
pub use prl_schema::datasets::Solutions;
use prl_schema::datasets::{BuiltinLevel, DatasetSource, DatasetSplit, registered_reference};
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
    /// The benchmark it belongs to, in a file that mixes several (verl's `data_source`).
    pub source: Option<String>,
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

/// A prompt and the response SFT teaches, with the parts of the response that are context only.
#[derive(Clone, Debug, PartialEq)]
pub struct SftExample {
    pub prompt: String,
    pub response: String,
    /// Byte ranges of `response` that are not targets: the built-in task's slips, which a later
    /// block corrects (the model learns to catch them, not to make them).
    pub untrained: Vec<std::ops::Range<usize>>,
}

impl SftExample {
    pub(crate) fn plain(prompt: String, response: String) -> Self {
        SftExample {
            prompt,
            response,
            untrained: Vec::new(),
        }
    }
}

/// The examples of a dataset reference, for SFT.
pub fn examples(reference: &str, registered: &Registered) -> Result<Vec<SftExample>> {
    let reference = resolve(reference, registered)?;
    let reference = reference.as_ref();
    match files::FileSet::parse(reference) {
        Some(set) => set.examples(),
        None => Ok(BuiltinSet::parse(reference)?.examples()),
    }
}

/// A dataset reference resolved: `builtin:<easy|hard|mixed>[-test][:sequential]`, or
/// `builtin:pretrain`.
#[derive(Clone, Debug, PartialEq)]
pub struct BuiltinSet {
    /// The difficulties it draws from, interleaved.
    pub difficulties: Vec<Difficulty>,
    pub split: Split,
    pub solutions: Solutions,
}

/// Problems per built-in split and difficulty.
pub const BUILTIN_TRAIN_SIZE: usize = 8000;
pub const BUILTIN_TEST_SIZE: usize = 512;
/// The seed of the built-in task; the split hash keeps test problems out of training whatever it is.
pub const BUILTIN_SEED: u64 = 20_250_910;

impl BuiltinSet {
    pub fn parse(reference: &str) -> Result<Self> {
        let DatasetSource::Builtin(set) =
            DatasetSource::parse(reference).map_err(|e| anyhow!(e))?
        else {
            bail!("dataset {reference:?} is not built in (builtin:<name>)");
        };
        Ok(BuiltinSet {
            difficulties: match set.level {
                BuiltinLevel::Easy => vec![Difficulty::Easy],
                BuiltinLevel::Hard => vec![Difficulty::Hard],
                BuiltinLevel::Mixed => vec![Difficulty::Easy, Difficulty::Hard],
            },
            split: if set.test { Split::Test } else { Split::Train },
            solutions: set.solutions,
        })
    }

    pub fn problems(&self) -> Vec<Problem> {
        let count = match self.split {
            Split::Train => BUILTIN_TRAIN_SIZE,
            Split::Test => BUILTIN_TEST_SIZE,
        };
        let sets: Vec<Vec<Problem>> = self
            .difficulties
            .iter()
            .map(|d| builtin::generate(*d, self.split, count, BUILTIN_SEED))
            .collect();
        (0..count)
            .flat_map(|i| sets.iter().map(move |set| set[i].clone()))
            .collect()
    }

    /// The prompt of the `index`-th problem. Pretraining alternates prompts per problem of each
    /// difficulty (the sets are interleaved), so every difficulty is seen under both.
    fn style(&self, index: usize) -> PromptStyle {
        match self.solutions {
            Solutions::Parallel => PromptStyle::Parallel,
            Solutions::Sequential => PromptStyle::StepByStep,
            Solutions::Pretrain if (index / self.difficulties.len()).is_multiple_of(2) => {
                PromptStyle::StepByStep
            }
            Solutions::Pretrain => PromptStyle::Parallel,
        }
    }

    /// The problems as prompts in this set's style, with their answers.
    pub fn tasks(&self) -> Vec<Task> {
        self.problems()
            .into_iter()
            .enumerate()
            .map(|(i, p)| Task {
                prompt: prompt::render(&p.question, self.style(i)),
                truth: p.answer.to_string(),
                id: p.id,
                source: None,
            })
            .collect()
    }

    /// SFT examples in this set's style.
    pub fn examples(&self) -> Vec<SftExample> {
        self.problems()
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let prompt = prompt::render(&p.question, self.style(i));
                match self.solutions {
                    Solutions::Parallel => SftExample {
                        prompt,
                        response: p.parallel_solution,
                        untrained: p.slips,
                    },
                    Solutions::Sequential => SftExample::plain(prompt, p.sequential_solution),
                    Solutions::Pretrain => {
                        let untagged = p.untagged_solution();
                        SftExample {
                            prompt,
                            response: untagged.text,
                            untrained: untagged.slips,
                        }
                    }
                }
            })
            .collect()
    }
}
