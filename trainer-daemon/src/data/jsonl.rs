//! Datasets from JSONL files, referenced as `jsonl:<path>[:sequential]`. One JSON object per
//! line:
//!
//! ```json
//! {"id": "gsm8k-17", "question": "Mia has 3 apples...", "answer": "7", "solution": "3+4=7.\nFinal Answer: 7"}
//! ```
//!
//! `question` is wrapped in the method's prompt (the step-by-step one with `:sequential`);
//! `answer` (a string or a number) is the ground truth RL and evaluation check against;
//! `solution` is the SFT target; `id` defaults to the line number. Blank lines are skipped. A bad
//! line is an error that names the file and the line.

use super::Task;
use super::prompt::{self, PromptStyle};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    #[serde(default)]
    id: Option<String>,
    question: String,
    #[serde(default)]
    answer: Option<Answer>,
    #[serde(default)]
    solution: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Answer {
    Text(String),
    Number(serde_json::Number),
}

/// A dataset file and the prompt design its questions get.
pub struct JsonlSet<'a> {
    pub path: &'a Path,
    pub style: PromptStyle,
}

impl<'a> JsonlSet<'a> {
    /// `jsonl:<path>[:sequential]`, or None for another kind of reference.
    pub fn parse(reference: &'a str) -> Option<Self> {
        let (path, style) = super::file_reference(reference, "jsonl:")?;
        Some(JsonlSet { path, style })
    }

    /// Rows with a question and an answer, for RL and evaluation.
    pub fn tasks(&self) -> Result<Vec<Task>> {
        self.rows(|row, line| {
            let truth = match &row.answer {
                Some(Answer::Text(t)) if !t.trim().is_empty() => t.trim().to_owned(),
                Some(Answer::Number(n)) => n.to_string(),
                _ => bail!("line {line} has no answer (RL and evaluation need `answer`)"),
            };
            Ok(Task {
                id: row.id.clone().unwrap_or_else(|| format!("line-{line}")),
                prompt: prompt::render(&row.question, self.style),
                truth,
            })
        })
    }

    /// (prompt, target response) pairs, for SFT.
    pub fn examples(&self) -> Result<Vec<(String, String)>> {
        self.rows(|row, line| match &row.solution {
            Some(s) if !s.trim().is_empty() => {
                Ok((prompt::render(&row.question, self.style), s.clone()))
            }
            _ => bail!("line {line} has no solution (SFT needs `solution`)"),
        })
    }

    fn rows<T>(&self, mut each: impl FnMut(&Row, usize) -> Result<T>) -> Result<Vec<T>> {
        let file = self.path.display();
        let text = std::fs::read_to_string(self.path)
            .with_context(|| format!("reading the dataset {file}"))?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let row: Row =
                serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(line))
                    .map_err(|e| match e.path().to_string().as_str() {
                        "." | "?" => anyhow::anyhow!("{file}:{number}: {}", e.inner()),
                        field => anyhow::anyhow!("{file}:{number}: {field}: {}", e.inner()),
                    })?;
            if row.question.trim().is_empty() {
                bail!("{file}:{number}: the question is empty");
            }
            out.push(each(&row, number).map_err(|e| anyhow::anyhow!("{file}:{number}: {e:#}"))?);
        }
        if out.is_empty() {
            bail!("the dataset {file} has no rows");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file removed when dropped.
    struct Temp(std::path::PathBuf);

    impl Temp {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(text: &str) -> Temp {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("prl-jsonl-{}-{n}.jsonl", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Temp(path)
    }

    fn error(text: &str, sft: bool) -> String {
        let f = file(text);
        let reference = format!("jsonl:{}", f.path().display());
        let set = JsonlSet::parse(&reference).unwrap();
        let err = if sft {
            set.examples().map(drop).unwrap_err()
        } else {
            set.tasks().map(drop).unwrap_err()
        };
        format!("{err:#}")
    }

    #[test]
    fn rows_become_tasks_and_examples() {
        let f = file(concat!(
            "{\"id\": \"a\", \"question\": \"1+1?\", \"answer\": 2, \"solution\": \"1+1=2.\\nFinal Answer: 2\"}\n",
            "\n",
            "{\"question\": \"2+2?\", \"answer\": \" 4 \", \"solution\": \"Final Answer: 4\"}\n",
        ));
        let reference = format!("jsonl:{}:sequential", f.path().display());
        let set = JsonlSet::parse(&reference).unwrap();
        assert_eq!(set.path, f.path());
        let tasks = set.tasks().unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!((tasks[0].id.as_str(), tasks[0].truth.as_str()), ("a", "2"));
        assert_eq!(
            (tasks[1].id.as_str(), tasks[1].truth.as_str()),
            ("line-3", "4")
        );
        assert!(tasks[1].prompt.starts_with("2+2? Let's think step by step"));
        assert_eq!(set.examples().unwrap()[0].1, "1+1=2.\nFinal Answer: 2");
        assert!(JsonlSet::parse("builtin:easy").is_none());
    }

    #[test]
    fn a_bad_row_is_reported_with_its_file_and_line() {
        let good = "{\"question\": \"q\", \"answer\": \"1\", \"solution\": \"s\"}\n";
        let cases = [
            (
                format!("{good}{{\"question\": \"q\"\n"),
                false,
                ":2: EOF while parsing",
            ),
            (
                format!("{good}{good}{{\"question\": \"q\"}}\n"),
                false,
                ":3: line 3 has no answer",
            ),
            (
                "{\"question\": \"q\", \"answer\": 1}\n".to_owned(),
                true,
                ":1: line 1 has no solution",
            ),
            (
                format!("{good}{{\"question\": 7, \"answer\": 1}}\n"),
                false,
                ":2: question: invalid type",
            ),
            (
                format!("{good}{{\"question\": \" \", \"answer\": 1}}\n"),
                false,
                ":2: the question is empty",
            ),
            (
                "{\"question\": \"q\", \"anwser\": 1}\n".to_owned(),
                false,
                ":1: anwser: unknown field `anwser`",
            ),
            ("\n\n".to_owned(), false, "has no rows"),
        ];
        for (text, sft, expected) in cases {
            let err = error(&text, sft);
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
        let missing = JsonlSet::parse("jsonl:/no/such/file.jsonl")
            .unwrap()
            .tasks();
        assert!(format!("{:#}", missing.unwrap_err()).contains("/no/such/file.jsonl"));
    }
}
