//! verl-style parquet datasets, what users of the reference code have: one row per problem with
//!
//! - `prompt`: the chat, a list of `{role, content}` (the question is the last user message);
//! - `reward_model.ground_truth`: the answer to check (a string or a number);
//! - `extra_info`: anything else; its `answer` (or `solution`, `response`) is the solution text,
//!   which holds parallel-format solutions in cold-start SFT data;
//! - `data_source`, optionally; `extra_info.index` is the row's id when present.
//!
//! Snappy, LZ4 and gzip pages are read (what pandas, pyarrow and HF datasets write by default).

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde::Deserialize;
use std::path::Path;

/// One problem of a verl dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct VerlRow {
    /// `extra_info.index`, or `row-<n>` (counted from 1).
    pub id: String,
    pub question: String,
    pub ground_truth: String,
    pub solution: Option<String>,
    pub data_source: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct RewardModel {
    ground_truth: serde_json::Value,
}

#[derive(Deserialize)]
struct Raw {
    prompt: Vec<Message>,
    reward_model: RewardModel,
    #[serde(default)]
    extra_info: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    data_source: Option<String>,
}

const SOLUTION_KEYS: [&str; 3] = ["answer", "solution", "response"];

fn text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Every row of the file; a bad one is an error naming the file, the row (from 1) and the field.
pub fn read(path: &Path) -> Result<Vec<VerlRow>, String> {
    parquet_rows(path, |number, json| {
        let raw: Raw = serde_path_to_error::deserialize(json).map_err(|e| {
            match e.path().to_string().as_str() {
                "." => e.inner().to_string(),
                field => format!("{field}: {}", e.inner()),
            }
        })?;
        let question = raw
            .prompt
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.clone())
            .filter(|q| !q.trim().is_empty())
            .ok_or("prompt: no user message with content")?;
        let ground_truth = text(&raw.reward_model.ground_truth)
            .filter(|t| !t.trim().is_empty())
            .ok_or("reward_model.ground_truth: empty or not text")?;
        let extra = raw.extra_info.unwrap_or_default();
        Ok(VerlRow {
            id: extra
                .get("index")
                .and_then(text)
                .unwrap_or_else(|| format!("row-{number}")),
            question,
            ground_truth: ground_truth.trim().to_owned(),
            solution: SOLUTION_KEYS
                .iter()
                .find_map(|k| extra.get(*k).and_then(text))
                .filter(|s| !s.trim().is_empty()),
            data_source: raw.data_source,
        })
    })
}

/// Every row of a parquet file as JSON, turned by `row` (given the row's number, from 1) into
/// what the caller keeps; an error names the file and the row.
pub(crate) fn parquet_rows<T>(
    path: &Path,
    mut row: impl FnMut(usize, serde_json::Value) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let file = path.display();
    let handle = std::fs::File::open(path).map_err(|e| format!("{file}: {e}"))?;
    let reader = SerializedFileReader::new(handle)
        .map_err(|e| format!("{file}: not a readable parquet file: {e}"))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| format!("{file}: {e}"))?;
    rows.enumerate()
        .map(|(i, r)| {
            let at = |message: String| format!("{file} row {}: {message}", i + 1);
            let json = r.map_err(|e| at(e.to_string()))?.to_json_value();
            row(i + 1, json).map_err(at)
        })
        .collect()
}
