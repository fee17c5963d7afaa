//! verl-style parquet files written the way pyarrow lays them out (`prompt` as a list of
//! `{content, role}` structs), so tests can generate their fixtures.

use prl_schema::verl::WriteRow;
use std::path::Path;

/// One row: the chat as (role, content), the ground truth (None writes a null), the answer text,
/// and the `data_source` (`prl-fixture` when None).
pub struct VerlFixtureRow<'a> {
    pub chat: Vec<(&'a str, &'a str)>,
    pub ground_truth: Option<&'a str>,
    pub answer: Option<&'a str>,
    pub data_source: Option<&'a str>,
}

/// Writes `rows` as a snappy-compressed verl dataset; `extra_info.index` is the row's index.
pub fn write_verl_parquet(path: &Path, rows: &[VerlFixtureRow]) {
    let rows: Vec<WriteRow> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| WriteRow {
            chat: r.chat.clone(),
            ground_truth: r.ground_truth,
            answer: r.answer,
            index: i as i64,
            reward_method: None,
            data_source: Some(r.data_source.unwrap_or("prl-fixture")),
        })
        .collect();
    prl_schema::verl::write(path, &rows).unwrap();
}
