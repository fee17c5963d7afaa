//! Request bodies: read within a limit, parsed as JSON, and refused with a 422 naming the field when
//! a string holds what must not be stored. PostgreSQL cannot store a NUL character in text or
//! jsonb, so one would fail the append (a 5xx for the user, a poisoned batch for the ingester); the
//! other control characters are refused in names, reasons and references, where they are never
//! meant and would garble terminals and logs.

use crate::error::ApiError;
use actix_web::{HttpRequest, web};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Which characters a body's strings may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Text {
    /// Anything but NUL: model text, which may hold any character it was given.
    Free,
    /// No control characters but tab, line feed and carriage return: names, tags, references.
    Plain,
}

/// Reads the whole body, refusing one past `limit` bytes without reading it all.
pub async fn read_limited(
    mut body: web::Payload,
    req: &HttpRequest,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get("Content-Length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::Malformed(format!("reading the body: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Why a body could not be received into a file.
#[derive(Debug)]
pub enum Received {
    /// It is past the limit of this many bytes.
    TooLarge(u64),
    /// The client's stream broke.
    Broken(String),
    /// The API's disk failed.
    Disk(std::io::Error),
}

/// Streams a body into a new file under `dir` (removed when the returned path is dropped),
/// hashing it on the way; refuses it once it passes `limit` bytes. Returns the file, its size and
/// its sha256.
pub async fn receive_to_file(
    mut body: web::Payload,
    dir: &std::path::Path,
    limit: u64,
) -> Result<(tempfile::TempPath, u64, String), Received> {
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(Received::Disk)?;
    let path = tempfile::Builder::new()
        .prefix(".upload-")
        .tempfile_in(dir)
        .map_err(Received::Disk)?
        .into_temp_path();
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(Received::Disk)?;
    let (mut hash, mut size) = (sha2::Sha256::new(), 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Received::Broken(e.to_string()))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(Received::TooLarge(limit));
        }
        hash.update(&chunk);
        file.write_all(&chunk).await.map_err(Received::Disk)?;
    }
    file.sync_all().await.map_err(Received::Disk)?;
    Ok((path, size, hex::encode(hash.finalize())))
}

/// Parses a JSON body whose strings follow `text`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], text: Text) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::Malformed(format!("the body is not JSON: {e}")))?;
    check_text(&value, text)?;
    serde_json::from_value(value)
        .map_err(|e| ApiError::Malformed(format!("the body does not fit its schema: {e}")))
}

/// Refuses the first string (key or value) that breaks `text`, naming its path.
pub fn check_text(value: &Value, text: Text) -> Result<(), ApiError> {
    match first_bad_character(value, text, &mut String::new()) {
        None => Ok(()),
        Some((field, c)) => Err(ApiError::InvalidRequest {
            field,
            reason: match c {
                '\0' => "holds a NUL character (U+0000), which cannot be stored".into(),
                c => format!("holds the control character U+{:04X}", c as u32),
            },
        }),
    }
}

fn first_bad_character(value: &Value, text: Text, path: &mut String) -> Option<(String, char)> {
    let bad = |s: &str| {
        s.chars().find(|&c| match text {
            Text::Free => c == '\0',
            Text::Plain => c.is_control() && !matches!(c, '\t' | '\n' | '\r'),
        })
    };
    let within = |path: &mut String, step: &str, value: &Value| {
        let length = path.len();
        path.push_str(step);
        let found = first_bad_character(value, text, path);
        path.truncate(length);
        found
    };
    match value {
        Value::String(s) => bad(s).map(|c| (path.clone(), c)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| within(path, &format!("[{i}]"), item)),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            // A bad key is named escaped, so the error itself carries no control character.
            let shown = key.escape_debug();
            let step = if path.is_empty() {
                shown.to_string()
            } else {
                format!(".{shown}")
            };
            match bad(key) {
                Some(c) => Some((format!("{path}{step}"), c)),
                None => within(path, &step, item),
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(value: Value, text: Text) -> Option<String> {
        match check_text(&value, text) {
            Err(ApiError::InvalidRequest { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn the_first_bad_string_is_named_by_its_path() {
        let spec = json!({"name": "ok", "stages": [{"kind": "sft"}, {"dataset": "jsonl:a\u{0}"}]});
        assert_eq!(
            field(spec, Text::Free).as_deref(),
            Some("stages[1].dataset")
        );
        let key = json!({"tags": {"bad\u{1b}key": 1}});
        assert_eq!(
            field(key, Text::Plain).as_deref(),
            Some("tags.bad\\u{1b}key")
        );
    }

    #[test]
    fn layout_characters_pass_and_free_text_allows_other_controls() {
        assert_eq!(field(json!({"reason": "a\tb\r\nc"}), Text::Plain), None);
        assert_eq!(field(json!({"text": "escape \u{1b}[0m"}), Text::Free), None);
        assert!(field(json!({"text": "escape \u{1b}[0m"}), Text::Plain).is_some());
    }
}
