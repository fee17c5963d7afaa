//! TRL's GRPO completions tables: with `log_completions=True`, `GRPOTrainer` writes every logged
//! step's completions to `<output_dir>/completions/completions_<step>.parquet` (whatever it
//! reports to), one row per completion with `step`, `prompt`, `completion`, a column per reward
//! function, any extra columns and `advantage`. Rows become lines of the verl dump format, so
//! they are recorded and analysed like a verl run's rollouts.
//!
//! Prompts and completions are text, or conversations (lists of `{role, content}`): a prompt
//! is then its last user message, a completion its assistant messages. The score is the sum of
//! the reward columns (TRL's weights are not in the table); a response is correct when a reward
//! column named like `accuracy` or `correct` is positive, else when the score is.

use serde_json::{Value, json};
use std::path::Path;

/// Columns that are not rewards.
const NOT_REWARDS: [&str; 5] = ["step", "prompt", "completion", "advantage", "image"];

fn conversation_text(value: &Value, role: &str, last_only: bool) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Array(messages) => {
            let texts: Vec<String> = messages
                .iter()
                .filter(|m| m["role"] == role)
                .filter_map(|m| content_text(&m["content"]))
                .collect();
            if last_only {
                texts.last().cloned()
            } else if texts.is_empty() {
                None
            } else {
                Some(texts.concat())
            }
        }
        _ => None,
    }
}

/// A message's content: text, or content blocks whose text parts are joined (images dropped).
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => Some(
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<String>(),
        ),
        _ => None,
    }
}

/// Every row of a completions file as a verl dump line; a bad row is an error naming the
/// file, the row (from 1) and the column.
pub fn read_completions(path: &Path) -> Result<Vec<Value>, String> {
    crate::verl::parquet_rows(path, |_, row| {
        let step = row["step"]
            .as_u64()
            .ok_or("`step` is not a whole number ≥ 0")?;
        let input = conversation_text(&row["prompt"], "user", true)
            .ok_or("`prompt` is neither text nor a conversation with a user message")?;
        let output = conversation_text(&row["completion"], "assistant", false)
            .ok_or("`completion` is neither text nor a conversation with an assistant message")?;
        let rewards: Vec<(&String, f64)> = row
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(name, _)| !NOT_REWARDS.contains(&name.as_str()))
            .filter_map(|(name, v)| Some((name, v.as_f64()?)))
            .filter(|(_, v)| v.is_finite())
            .collect();
        let score: f64 = rewards.iter().map(|(_, v)| v).sum();
        let accuracy = rewards.iter().find(|(name, _)| {
            let name = name.to_ascii_lowercase();
            name.contains("accuracy") || name.contains("correct")
        });
        let correct = accuracy.map_or(score > 0.0, |(_, v)| *v > 0.0);
        Ok(json!({
            "input": input,
            "output": output,
            "score": score,
            "step": step,
            "acc": correct,
        }))
    })
}
