//! Dataset files in the formats prl reads, as one kind of row:
//!
//! - JSONL, `jsonl:<path>`: one object per line,
//!   `{"id": "gsm8k-17", "question": "...", "answer": "7", "solution": "...Final Answer: 7"}`;
//!   `answer` (a string or a number) is what RL and evaluation check, `solution` the SFT target,
//!   `id` defaults to `line-<n>`; blank lines are skipped;
//! - verl-style parquet, `verl:<path>` (see `verl.rs`).
//!
//! The trainer reads them to train and evaluate; the CLI reads them to register a dataset. A bad
//! row is an error naming the file and the line (or row) and the field.

use serde::Deserialize;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Jsonl,
    Verl,
}

impl Format {
    pub fn prefix(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl:",
            Format::Verl => "verl:",
        }
    }

    /// `jsonl:<rest>` or `verl:<rest>`: the format and the rest.
    pub fn of_reference(reference: &str) -> Option<(Format, &str)> {
        [Format::Jsonl, Format::Verl]
            .into_iter()
            .find_map(|f| reference.strip_prefix(f.prefix()).map(|rest| (f, rest)))
    }

    /// The extension of its files: `jsonl` or `parquet`.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Verl => "parquet",
        }
    }

    /// By the file's extension: `.jsonl` or `.parquet`.
    pub fn of_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "jsonl" => Some(Format::Jsonl),
            "parquet" => Some(Format::Verl),
            _ => None,
        }
    }
}

/// One split of a registered dataset: a file, what it holds, and its content hash, which the
/// trainer checks before it trains or evaluates on the file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetSplit {
    pub name: String,
    pub format: Format,
    /// The file's absolute path, where the trainer daemons can read it, or its URL in the
    /// artifact store (uploaded, under [`DatasetSplit::store_key`]), which daemons fetch.
    pub uri: String,
    pub rows: u64,
    pub sha256: String,
}

impl DatasetSplit {
    /// The key an uploaded file has in the artifact store: named by its content.
    pub fn store_key(sha256: &str, format: Format) -> String {
        format!("datasets/{sha256}.{}", format.extension())
    }

    /// Whether the file is in the artifact store (a URL) rather than at an absolute path.
    pub fn is_stored(&self) -> bool {
        !self.uri.starts_with('/')
    }

    /// The file reference the split stands for.
    pub fn reference(&self) -> String {
        format!("{}{}", self.format.prefix(), self.uri)
    }
}

/// A reference to a registered dataset, `registered:<name>[:<split>][:sequential]`: its name,
/// its split (`train` when left out) and whether it asks for the step-by-step prompt.
pub fn registered_reference(reference: &str) -> Option<(&str, &str, bool)> {
    match DatasetSource::parse(reference) {
        Ok(DatasetSource::Registered {
            name,
            split,
            sequential,
        }) => Some((name, split, sequential)),
        _ => None,
    }
}

/// What a dataset reference names, once its syntax is checked: what a spec may say in any
/// `dataset` field. `:sequential` at the end of any of them asks for the step-by-step prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetSource<'a> {
    /// `builtin:<easy|hard|mixed>[-test][:sequential]` or `builtin:pretrain`.
    Builtin(BuiltinDataset),
    /// `jsonl:<path>` or `verl:<path>`, a path on the daemon (relative to its working directory).
    File {
        format: Format,
        path: &'a str,
        sequential: bool,
    },
    /// `registered:<name>[:<split>]`, resolved to its files when the experiment is accepted.
    Registered {
        name: &'a str,
        split: &'a str,
        sequential: bool,
    },
}

impl<'a> DatasetSource<'a> {
    pub fn parse(reference: &'a str) -> Result<Self, String> {
        let (rest, sequential) = match reference.strip_suffix(":sequential") {
            Some(rest) => (rest, true),
            None => (reference, false),
        };
        if let Some(name) = rest.strip_prefix("builtin:") {
            return BuiltinDataset::parse(name, sequential).map(DatasetSource::Builtin);
        }
        if let Some((format, path)) = Format::of_reference(rest) {
            if path.is_empty() {
                return Err(format!("`{}` must be followed by a path", format.prefix()));
            }
            return Ok(DatasetSource::File {
                format,
                path,
                sequential,
            });
        }
        if let Some(rest) = rest.strip_prefix("registered:") {
            let (name, split) = rest.split_once(':').unwrap_or((rest, "train"));
            if name.is_empty() || split.is_empty() || split.contains(':') {
                return Err("a registered dataset is named registered:<name>[:<split>]".into());
            }
            return Ok(DatasetSource::Registered {
                name,
                split,
                sequential,
            });
        }
        Err("a dataset is builtin:<name>, jsonl:<path>, verl:<path> or registered:<name>[:<split>], \
             each optionally followed by :sequential"
            .into())
    }
}

/// One of the built-in task's sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltinDataset {
    pub level: BuiltinLevel,
    /// The held-out split (`-test`), disjoint from training's.
    pub test: bool,
    pub solutions: Solutions,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuiltinLevel {
    Easy,
    Hard,
    /// Easy and hard problems, interleaved.
    Mixed,
}

/// Which prompts and target solutions a built-in set pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Solutions {
    /// The parallel prompt and the parallel solution.
    Parallel,
    /// The step-by-step prompt and the sequential solution (the baselines).
    Sequential,
    /// Untagged solutions (the parallel ones' reasoning as one plain thread) under either prompt,
    /// alternating: the base model's pretraining text, so that it answers both prompts step by
    /// step, checking its work and trying cases without tags, before any parallel SFT.
    Pretrain,
}

/// The names after `builtin:`.
pub const BUILTIN_NAMES: &str = "easy, hard, mixed, easy-test, hard-test, mixed-test or pretrain";

impl BuiltinDataset {
    fn parse(name: &str, sequential: bool) -> Result<Self, String> {
        let (name, test) = match name.strip_suffix("-test") {
            Some(level) => (level, true),
            None => (name, false),
        };
        let level = match name {
            "easy" => BuiltinLevel::Easy,
            "hard" => BuiltinLevel::Hard,
            "mixed" => BuiltinLevel::Mixed,
            "pretrain" if !test && !sequential => {
                return Ok(BuiltinDataset {
                    level: BuiltinLevel::Mixed,
                    test: false,
                    solutions: Solutions::Pretrain,
                });
            }
            _ => {
                let full = if test {
                    format!("{name}-test")
                } else {
                    name.to_owned()
                };
                return Err(format!(
                    "unknown built-in dataset {full:?}: expected {BUILTIN_NAMES}"
                ));
            }
        };
        let solutions = if sequential {
            Solutions::Sequential
        } else {
            Solutions::Parallel
        };
        Ok(BuiltinDataset {
            level,
            test,
            solutions,
        })
    }
}

/// One problem of a dataset file.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetRow {
    pub id: String,
    /// Where the row is, for errors: `line 3` or `row 3`.
    pub place: String,
    pub question: String,
    pub answer: Option<String>,
    pub solution: Option<String>,
    /// The benchmark a row belongs to in a file that mixes several (verl's `data_source`);
    /// evaluations report each separately.
    pub source: Option<String>,
}

pub fn read(path: &Path, format: Format) -> Result<Vec<DatasetRow>, String> {
    let rows = match format {
        Format::Jsonl => read_jsonl(path)?,
        Format::Verl => crate::verl::read(path)?
            .into_iter()
            .enumerate()
            .map(|(i, r)| DatasetRow {
                id: r.id,
                place: format!("row {}", i + 1),
                question: r.question,
                answer: Some(r.ground_truth),
                solution: r.solution,
                source: r.data_source,
            })
            .collect(),
    };
    if rows.is_empty() {
        return Err(format!("{}: the dataset has no rows", path.display()));
    }
    Ok(rows)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlRow {
    #[serde(default)]
    id: Option<String>,
    question: String,
    #[serde(default)]
    answer: Option<Answer>,
    #[serde(default)]
    solution: Option<String>,
    #[serde(default)]
    data_source: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Answer {
    Text(String),
    Number(serde_json::Number),
}

fn read_jsonl(path: &Path) -> Result<Vec<DatasetRow>, String> {
    let file = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {file}: {e}"))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let at = |message: String| format!("{file} line {number}: {message}");
        let row: JsonlRow =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(line))
                .map_err(|e| {
                    at(match e.path().to_string().as_str() {
                        "." | "?" => e.inner().to_string(),
                        field => format!("{field}: {}", e.inner()),
                    })
                })?;
        if row.question.trim().is_empty() {
            return Err(at("the question is empty".into()));
        }
        rows.push(DatasetRow {
            id: row.id.unwrap_or_else(|| format!("line-{number}")),
            place: format!("line {number}"),
            question: row.question,
            answer: match row.answer {
                Some(Answer::Text(t)) if !t.trim().is_empty() => Some(t.trim().to_owned()),
                Some(Answer::Number(n)) => Some(n.to_string()),
                _ => None,
            },
            solution: row.solution.filter(|s| !s.trim().is_empty()),
            source: row.data_source.filter(|s| !s.trim().is_empty()),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file removed when dropped.
    struct Temp(std::path::PathBuf);

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

    #[test]
    fn jsonl_rows_are_read_with_defaults() {
        let f = file(concat!(
            "{\"id\": \"a\", \"question\": \"1+1?\", \"answer\": 2, \"solution\": \"1+1=2.\\nFinal Answer: 2\"}\n",
            "\n",
            "{\"question\": \"2+2?\", \"answer\": \" 4 \"}\n",
        ));
        let rows = read(&f.0, Format::Jsonl).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].id.as_str(), rows[0].answer.as_deref()),
            ("a", Some("2"))
        );
        assert_eq!(rows[0].solution.as_deref(), Some("1+1=2.\nFinal Answer: 2"));
        assert_eq!(
            (rows[1].id.as_str(), rows[1].place.as_str()),
            ("line-3", "line 3")
        );
        assert_eq!(
            (rows[1].answer.as_deref(), rows[1].solution.as_deref()),
            (Some("4"), None)
        );
    }

    #[test]
    fn a_bad_jsonl_row_is_named_by_file_line_and_field() {
        let good = "{\"question\": \"q\", \"answer\": \"1\"}\n";
        for (text, expected) in [
            (
                format!("{good}{{\"question\": \"q\"\n"),
                " line 2: EOF while parsing",
            ),
            (
                format!("{good}{{\"question\": 7}}\n"),
                " line 2: question: invalid type",
            ),
            (
                format!("{good}{{\"question\": \" \"}}\n"),
                " line 2: the question is empty",
            ),
            (
                "{\"question\": \"q\", \"anwser\": 1}\n".into(),
                " line 1: anwser: unknown field `anwser`",
            ),
            ("\n\n".into(), "has no rows"),
        ] {
            let f = file(&text);
            let err = read(&f.0, Format::Jsonl).unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
        let missing = read(Path::new("/no/such/file.jsonl"), Format::Jsonl).unwrap_err();
        assert!(missing.contains("/no/such/file.jsonl"), "{missing}");
    }

    #[test]
    fn registered_references_name_a_split() {
        assert_eq!(
            registered_reference("registered:gsm8k"),
            Some(("gsm8k", "train", false))
        );
        assert_eq!(
            registered_reference("registered:gsm8k:test:sequential"),
            Some(("gsm8k", "test", true))
        );
        assert_eq!(registered_reference("jsonl:/x"), None);
    }

    #[test]
    fn formats_come_from_references_and_extensions() {
        assert_eq!(
            Format::of_reference("verl:/d/x.parquet"),
            Some((Format::Verl, "/d/x.parquet"))
        );
        assert_eq!(Format::of_reference("builtin:easy"), None);
        assert_eq!(Format::of_path(Path::new("a/b.jsonl")), Some(Format::Jsonl));
        assert_eq!(Format::of_path(Path::new("a/b.csv")), None);
    }
}
