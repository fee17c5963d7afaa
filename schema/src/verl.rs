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

/// One row as prl writes it for verl (`write`): the chat as (role, content), the answer to check,
/// the solution text, the row's index, the reward function verl's `default_compute_score`
/// routes to (`extra_info.reward_method`, as the Parallel-R1 reference code reads it), and the
/// `data_source`. `None` writes a null.
pub struct WriteRow<'a> {
    pub chat: Vec<(&'a str, &'a str)>,
    pub ground_truth: Option<&'a str>,
    pub answer: Option<&'a str>,
    pub index: i64,
    pub reward_method: Option<&'a str>,
    pub data_source: Option<&'a str>,
}

const WRITE_SCHEMA: &str = "message schema {
  optional group prompt (LIST) {
    repeated group list {
      optional group element {
        optional binary content (STRING);
        optional binary role (STRING);
      }
    }
  }
  optional group reward_model {
    optional binary ground_truth (STRING);
  }
  optional group extra_info {
    optional binary answer (STRING);
    optional int64 index;
    optional binary reward_method (STRING);
  }
  optional binary data_source (STRING);
}";

/// Writes `rows` as a snappy-compressed verl dataset, laid out as pyarrow lays it out.
pub fn write(path: &Path, rows: &[WriteRow]) -> parquet::errors::Result<()> {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;
    let bytes = |s: &str| ByteArray::from(s.as_bytes().to_vec());
    let schema = Arc::new(parquet::schema::parser::parse_message_type(WRITE_SCHEMA)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut writer = SerializedFileWriter::new(std::fs::File::create(path)?, schema, props)?;
    let mut group = writer.next_row_group()?;
    let mut column = 0;
    while let Some(mut col) = group.next_column()? {
        // A string inside one optional group: null is definition level 1, a value 2.
        let nested = |field: &dyn Fn(&WriteRow<'_>) -> Option<String>| {
            let field: Vec<Option<String>> = rows.iter().map(field).collect();
            let values: Vec<ByteArray> = field.iter().flatten().map(|s| bytes(s)).collect();
            let def: Vec<i16> = field.iter().map(|f| 1 + i16::from(f.is_some())).collect();
            (values, def)
        };
        match column {
            // prompt.list.element.content and .role: definition 4, repetition 0 or 1.
            0 | 1 => {
                let (mut values, mut def, mut rep) = (vec![], vec![], vec![]);
                for row in rows {
                    for (i, (role, content)) in row.chat.iter().enumerate() {
                        values.push(bytes(if column == 0 { content } else { role }));
                        def.push(4);
                        rep.push(i16::from(i > 0));
                    }
                }
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&def), Some(&rep))?;
            }
            2 | 3 | 5 => {
                let (values, def) = nested(&|r| {
                    match column {
                        2 => r.ground_truth,
                        3 => r.answer,
                        _ => r.reward_method,
                    }
                    .map(str::to_owned)
                });
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&def), None)?;
            }
            4 => {
                let values: Vec<i64> = rows.iter().map(|r| r.index).collect();
                col.typed::<Int64Type>()
                    .write_batch(&values, Some(&vec![2; rows.len()]), None)?;
            }
            _ => {
                let field: Vec<Option<&str>> = rows.iter().map(|r| r.data_source).collect();
                let values: Vec<ByteArray> = field.iter().flatten().map(|s| bytes(s)).collect();
                let def: Vec<i16> = field.iter().map(|f| i16::from(f.is_some())).collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&def), None)?;
            }
        }
        col.close()?;
        column += 1;
    }
    group.close()?;
    writer.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_rows_read_back_with_their_reward_routing() {
        let path = std::env::temp_dir().join(format!("prl-verl-{}.parquet", std::process::id()));
        let rows = [
            WriteRow {
                chat: vec![("user", "What is 2 + 2?")],
                ground_truth: Some("4"),
                answer: None,
                index: 0,
                reward_method: Some("accuracy_parallel_interv_reward"),
                data_source: Some("math_dapo"),
            },
            WriteRow {
                chat: vec![("system", "Think."), ("user", "What is 3 * 3?")],
                ground_truth: Some("9"),
                answer: Some("3 * 3 = 9"),
                index: 1,
                reward_method: None,
                data_source: None,
            },
        ];
        write(&path, &rows).unwrap();
        let read_back = read(&path).unwrap();
        assert_eq!(read_back.len(), 2);
        assert_eq!(read_back[0].question, "What is 2 + 2?");
        assert_eq!(read_back[0].ground_truth, "4");
        assert_eq!(read_back[0].data_source.as_deref(), Some("math_dapo"));
        assert_eq!(read_back[1].question, "What is 3 * 3?");
        assert_eq!(read_back[1].solution.as_deref(), Some("3 * 3 = 9"));
        assert_eq!(read_back[1].data_source, None);
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let methods: Vec<serde_json::Value> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| row.unwrap().to_json_value()["extra_info"]["reward_method"].clone())
            .collect();
        assert_eq!(
            methods,
            [
                serde_json::json!("accuracy_parallel_interv_reward"),
                serde_json::Value::Null
            ]
        );
        std::fs::remove_file(&path).unwrap();
    }
}
