//! verl-style parquet files written the way pyarrow lays them out (`prompt` as a list of
//! `{content, role}` structs), so tests can generate their fixtures.

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::path::Path;
use std::sync::Arc;

const SCHEMA: &str = "message schema {
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
  }
  optional binary data_source (STRING);
}";

/// One row: the chat as (role, content), the ground truth (None writes a null), the answer text,
/// and the `data_source` (`prl-fixture` when None).
pub struct VerlFixtureRow<'a> {
    pub chat: Vec<(&'a str, &'a str)>,
    pub ground_truth: Option<&'a str>,
    pub answer: Option<&'a str>,
    pub data_source: Option<&'a str>,
}

fn bytes(s: &str) -> ByteArray {
    ByteArray::from(s.as_bytes().to_vec())
}

/// Writes `rows` as a snappy-compressed verl dataset; `extra_info.index` is the row's index.
pub fn write_verl_parquet(path: &Path, rows: &[VerlFixtureRow]) {
    let schema = Arc::new(parse_message_type(SCHEMA).unwrap());
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut column = 0;
    while let Some(mut col) = group.next_column().unwrap() {
        match column {
            // prompt.list.element.content and .role: levels (definition 4, repetition 0 or 1).
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
                    .write_batch(&values, Some(&def), Some(&rep))
                    .unwrap();
            }
            // reward_model.ground_truth, extra_info.answer: null is definition level 1.
            2 | 3 => {
                let field: Vec<Option<&str>> = rows
                    .iter()
                    .map(|r| {
                        if column == 2 {
                            r.ground_truth
                        } else {
                            r.answer
                        }
                    })
                    .collect();
                let values: Vec<ByteArray> = field.iter().flatten().map(|s| bytes(s)).collect();
                let def: Vec<i16> = field
                    .iter()
                    .map(|f| if f.is_some() { 2 } else { 1 })
                    .collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&def), None)
                    .unwrap();
            }
            4 => {
                let values: Vec<i64> = (0..rows.len() as i64).collect();
                col.typed::<Int64Type>()
                    .write_batch(&values, Some(&vec![2; rows.len()]), None)
                    .unwrap();
            }
            _ => {
                let values: Vec<ByteArray> = rows
                    .iter()
                    .map(|r| bytes(r.data_source.unwrap_or("prl-fixture")))
                    .collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&vec![1; rows.len()]), None)
                    .unwrap();
            }
        }
        col.close().unwrap();
        column += 1;
    }
    group.close().unwrap();
    writer.close().unwrap();
}
