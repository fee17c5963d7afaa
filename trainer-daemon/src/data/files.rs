//! Dataset files, referenced as `jsonl:<path>` or `verl:<path>`, with `:sequential` for the
//! step-by-step prompt; `prl_schema::datasets` reads them. Each question is wrapped in the
//! method's prompt; RL and evaluation need every row's answer, SFT every row's solution.

use super::Task;
use super::prompt::{self, PromptStyle};
use anyhow::{Result, anyhow};
use prl_schema::datasets::{DatasetRow, Format, read};
use std::path::Path;

pub struct FileSet<'a> {
    pub path: &'a Path,
    pub format: Format,
    pub style: PromptStyle,
}

impl<'a> FileSet<'a> {
    /// `jsonl:<path>[:sequential]` or `verl:<path>[:sequential]`; None for another reference.
    pub fn parse(reference: &'a str) -> Option<Self> {
        let (format, rest) = Format::of_reference(reference)?;
        let (path, style) = match rest.strip_suffix(":sequential") {
            Some(path) => (path, PromptStyle::StepByStep),
            None => (rest, PromptStyle::Parallel),
        };
        Some(FileSet {
            path: Path::new(path),
            format,
            style,
        })
    }

    fn rows(&self) -> Result<Vec<DatasetRow>> {
        read(self.path, self.format).map_err(|e| anyhow!(e))
    }

    fn missing(&self, row: &DatasetRow, what: &str) -> anyhow::Error {
        anyhow!("{} {}: {what}", self.path.display(), row.place)
    }

    /// Rows with a question and an answer, for RL and evaluation.
    pub fn tasks(&self) -> Result<Vec<Task>> {
        self.rows()?
            .into_iter()
            .map(|row| match &row.answer {
                Some(truth) => Ok(Task {
                    prompt: prompt::render(&row.question, self.style),
                    truth: truth.clone(),
                    source: row.source.clone(),
                    id: row.id,
                }),
                None => Err(self.missing(&row, "no answer (RL and evaluation need `answer`)")),
            })
            .collect()
    }

    /// Prompts with their solutions, for SFT.
    pub fn examples(&self) -> Result<Vec<super::SftExample>> {
        self.rows()?
            .into_iter()
            .map(|row| match &row.solution {
                Some(solution) => Ok(super::SftExample::plain(
                    prompt::render(&row.question, self.style),
                    solution.clone(),
                )),
                None => Err(self.missing(
                    &row,
                    "no solution (SFT needs `solution`, in verl files `extra_info.answer`)",
                )),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("prl-files-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn rows_become_tasks_and_examples_in_the_chosen_prompt() {
        let path = file(
            "good.jsonl",
            "{\"id\": \"a\", \"question\": \"1+1?\", \"answer\": 2, \"solution\": \"Final Answer: 2\"}\n",
        );
        let reference = format!("jsonl:{}:sequential", path.display());
        let set = FileSet::parse(&reference).unwrap();
        assert_eq!((set.path, set.format), (path.as_path(), Format::Jsonl));
        let tasks = set.tasks().unwrap();
        assert_eq!((tasks[0].id.as_str(), tasks[0].truth.as_str()), ("a", "2"));
        assert!(tasks[0].prompt.starts_with("1+1? Let's think step by step"));
        assert_eq!(set.examples().unwrap()[0].response, "Final Answer: 2");
        assert!(FileSet::parse("builtin:easy").is_none());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_row_missing_what_the_job_needs_is_named() {
        let path = file(
            "partial.jsonl",
            "{\"question\": \"q\", \"answer\": 1}\n{\"question\": \"q\"}\n",
        );
        let reference = format!("jsonl:{}", path.display());
        let set = FileSet::parse(&reference).unwrap();
        let tasks = set.tasks().unwrap_err().to_string();
        assert!(
            tasks.ends_with("partial.jsonl line 2: no answer (RL and evaluation need `answer`)"),
            "{tasks}"
        );
        let sft = set.examples().unwrap_err().to_string();
        assert!(sft.contains("partial.jsonl line 1: no solution"), "{sft}");
        std::fs::remove_file(path).unwrap();
    }
}
