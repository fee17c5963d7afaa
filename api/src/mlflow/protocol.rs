//! The shapes of MLflow's REST messages (its protobufs in their JSON form), how requests are
//! read (bodies within a limit, int64 fields as numbers or strings, MLflow's own rules for
//! names and sizes) and how ids and times are written.

use super::MlflowError;
use crate::routes::body::{Text, check_text, read_limited};
use crate::state::AppState;
use actix_web::{HttpRequest, web};
use chrono::{DateTime, Utc};
use prl_schema::tracking::{MetricValue, TrackedStatus};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// MLflow's own cap on a request (`MAX_BATCH_LOG_REQUEST_SIZE`), with room for JSON's overhead.
const BODY_LIMIT: usize = 2 << 20;
pub const MAX_KEY_LENGTH: usize = 250;
pub const MAX_PARAM_VALUE_LENGTH: usize = 6000;
pub const MAX_TAG_VALUE_LENGTH: usize = 8000;
pub const MAX_EXPERIMENT_NAME_LENGTH: usize = 500;

/// Checks the token (writes always need it; reads where the deployment protects them).
pub fn authorize(req: &HttpRequest, write: bool) -> Result<(), MlflowError> {
    crate::auth::authorize(req, write).map_err(Into::into)
}

/// A write's JSON body (the token checked first).
pub async fn read_body<T: DeserializeOwned>(
    req: &HttpRequest,
    body: web::Payload,
) -> Result<T, MlflowError> {
    authorize(req, true)?;
    read_json(req, body).await
}

/// A JSON body, read within the limit; strings may hold anything but NUL.
pub async fn read_json<T: DeserializeOwned>(
    req: &HttpRequest,
    body: web::Payload,
) -> Result<T, MlflowError> {
    let bytes = read_limited(body, req, BODY_LIMIT).await?;
    let value: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| MlflowError::invalid(format!("the body is not JSON: {e}")))?
    };
    check_text(&value, Text::Free)?;
    serde_json::from_value(value).map_err(|e| MlflowError::invalid(format!("the request: {e}")))
}

/// A read's query parameters.
pub fn read_query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, MlflowError> {
    authorize(req, false)?;
    let query = web::Query::<T>::from_query(req.query_string())
        .map_err(|e| MlflowError::invalid(format!("the query: {e}")))?;
    Ok(query.into_inner())
}

/// The state every handler reads.
pub fn state(req: &HttpRequest) -> &AppState {
    req.app_data::<web::Data<AppState>>()
        .expect("AppState is registered")
}

/// protobuf's JSON writes int64 as a string; MLflow's Python client writes numbers. Both are read.
pub fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }
    match Option::<Raw>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Raw::Number(n)) => Ok(Some(n)),
        Some(Raw::Text(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an integer"))),
    }
}

/// The Default experiment's id: MLflow's `0`, the nil UUID in prl's log.
pub const DEFAULT_EXPERIMENT: Uuid = Uuid::nil();
pub const DEFAULT_EXPERIMENT_NAME: &str = "Default";

pub fn experiment_id_text(id: Uuid) -> String {
    if id == DEFAULT_EXPERIMENT {
        "0".into()
    } else {
        id.hyphenated().to_string()
    }
}

/// An experiment id as a client sends it; an id prl never hands out is not found.
pub fn parse_experiment_id(text: &str) -> Result<Uuid, MlflowError> {
    if text == "0" {
        return Ok(DEFAULT_EXPERIMENT);
    }
    Uuid::parse_str(text)
        .map_err(|_| MlflowError::not_found(format!("No Experiment with id={text} exists")))
}

pub fn parse_run_id(text: &str) -> Result<Uuid, MlflowError> {
    Uuid::parse_str(text)
        .map_err(|_| MlflowError::not_found(format!("Run with id={text} not found")))
}

pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A client's time in milliseconds since 1970, within the years 1 to 9999 (PostgreSQL cannot
/// store every time chrono can).
pub fn from_millis(ms: i64, field: &str) -> Result<DateTime<Utc>, MlflowError> {
    DateTime::from_timestamp_millis(ms)
        .filter(|t| crate::routes::params::storable_time(*t))
        .ok_or_else(|| {
            MlflowError::invalid(format!(
                "{field}: {ms} is not a time in milliseconds between the years 1 and 9999"
            ))
        })
}

pub fn parse_status(name: &str) -> Result<TrackedStatus, MlflowError> {
    Ok(match name {
        "SCHEDULED" => TrackedStatus::Scheduled,
        "RUNNING" => TrackedStatus::Running,
        "FINISHED" => TrackedStatus::Finished,
        "FAILED" => TrackedStatus::Failed,
        "KILLED" => TrackedStatus::Killed,
        other => {
            return Err(MlflowError::invalid(format!(
                "status: `{other}` is not one of RUNNING, SCHEDULED, FINISHED, FAILED, KILLED"
            )));
        }
    })
}

/// The stored (snake_case) status text as MLflow names it.
pub fn stored_status_name(text: &str) -> String {
    text.to_ascii_uppercase()
}

/// MLflow's rule for metric, param and tag keys: slashes, word characters, `.`, `-`, spaces and
/// colons, at most 250 characters, and not a path that resolves to another name.
pub fn check_key(kind: &str, key: &str) -> Result<(), MlflowError> {
    if key.is_empty() {
        return Err(MlflowError::invalid(format!(
            "Invalid {kind} name: ''. A key name must be provided."
        )));
    }
    if key.chars().count() > MAX_KEY_LENGTH {
        return Err(MlflowError::invalid(format!(
            "{kind} '{}...' is longer than {MAX_KEY_LENGTH} characters",
            key.chars().take(40).collect::<String>()
        )));
    }
    if let Some(c) = key
        .chars()
        .find(|&c| !(c.is_alphanumeric() || matches!(c, '_' | '/' | '.' | '-' | ' ' | ':')))
    {
        return Err(MlflowError::invalid(format!(
            "Invalid {kind} name: '{key}' holds {c:?}. Names may only contain alphanumerics, \
             underscores (_), dashes (-), periods (.), spaces ( ), colon(:) and slashes (/)."
        )));
    }
    let resolves_elsewhere = key.starts_with('/')
        || key.ends_with('/')
        || key.contains("//")
        || key.split('/').any(|part| part == "." || part == "..");
    if resolves_elsewhere {
        return Err(MlflowError::invalid(format!(
            "Invalid {kind} name: '{key}'. Names may be treated as files in certain cases, and \
             must not resolve to other names when treated as such."
        )));
    }
    Ok(())
}

pub fn check_length(what: &str, value: &str, max: usize) -> Result<(), MlflowError> {
    if value.chars().count() > max {
        return Err(MlflowError::invalid(format!(
            "{what} is {} characters long; the limit is {max}",
            value.chars().count()
        )));
    }
    Ok(())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metric {
    pub key: String,
    pub value: MetricValue,
    #[serde(default, deserialize_with = "int64")]
    pub timestamp: Option<i64>,
    #[serde(default, deserialize_with = "int64")]
    pub step: Option<i64>,
}

#[derive(Serialize)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: &'static str,
    pub last_update_time: i64,
    pub creation_time: i64,
    pub tags: Vec<KeyValue>,
}

#[derive(Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub run_uuid: String,
    pub run_name: String,
    pub experiment_id: String,
    pub user_id: String,
    pub status: String,
    pub start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    pub artifact_uri: String,
    pub lifecycle_stage: &'static str,
}

#[derive(Serialize)]
pub struct MetricView {
    pub key: String,
    pub value: MetricValue,
    pub timestamp: i64,
    pub step: i64,
}

#[derive(Serialize)]
pub struct RunData {
    pub metrics: Vec<MetricView>,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
}

#[derive(Serialize)]
pub struct RunInputs {
    pub dataset_inputs: Vec<serde_json::Value>,
}

#[derive(Serialize)]
pub struct Run {
    pub info: RunInfo,
    pub data: RunData,
    pub inputs: RunInputs,
}

pub fn lifecycle(deleted: bool) -> &'static str {
    if deleted { "deleted" } else { "active" }
}

/// Where a run's artifacts live, as MLflow clients address them through the artifact proxy.
pub fn artifact_uri(experiment: Option<Uuid>, run: Uuid) -> String {
    format!(
        "mlflow-artifacts:/{}/{}/artifacts",
        experiment_id_text(experiment.unwrap_or(DEFAULT_EXPERIMENT)),
        run.hyphenated()
    )
}

/// A `{key: value}` JSON object as MLflow's list of pairs.
pub fn pairs(object: &serde_json::Value) -> Vec<KeyValue> {
    object
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: v.as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A page of results: at most `limit` rows from `offset`. MLflow's `page_token` is the offset
/// of the next page, as this server wrote it.
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Page {
    pub fn new(
        max_results: Option<i64>,
        default: i64,
        max: i64,
        page_token: Option<&str>,
    ) -> Result<Page, MlflowError> {
        let limit = max_results.unwrap_or(default);
        if !(1..=max).contains(&limit) {
            return Err(MlflowError::invalid(format!(
                "max_results: {limit} is not between 1 and {max}"
            )));
        }
        let offset = match page_token {
            None | Some("") => 0,
            Some(t) => t.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                MlflowError::invalid(format!("page_token: `{t}` is not a page token"))
            })?,
        };
        Ok(Page { limit, offset })
    }

    /// What to fetch: one row more than the page, to know whether another follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// The page's rows of those fetched, and the next page's token when there is one.
    pub fn split<T>(&self, mut rows: Vec<T>) -> (Vec<T>, Option<String>) {
        let next = (rows.len() as i64 > self.limit).then(|| (self.offset + self.limit).to_string());
        rows.truncate(self.limit as usize);
        (rows, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_mlflows_rule() {
        for good in ["loss", "train/loss", "eval:acc", "a b.c-d_e", "λ"] {
            assert!(check_key("metric", good).is_ok(), "{good}");
        }
        for bad in ["", "a//b", "/a", "a/", "a/../b", "./a", "a\nb", "a*b"] {
            assert!(check_key("metric", bad).is_err(), "{bad:?}");
        }
        assert!(check_key("metric", &"x".repeat(251)).is_err());
    }

    #[test]
    fn ids_and_int64_fields_read_as_clients_write_them() {
        assert_eq!(parse_experiment_id("0").unwrap(), DEFAULT_EXPERIMENT);
        assert_eq!(experiment_id_text(DEFAULT_EXPERIMENT), "0");
        assert_eq!(
            parse_experiment_id("12").unwrap_err().code,
            "RESOURCE_DOES_NOT_EXIST"
        );
        let m: Metric =
            serde_json::from_str(r#"{"key":"l","value":"NaN","timestamp":"17","step":3}"#).unwrap();
        assert!(m.value.0.is_nan());
        assert_eq!((m.timestamp, m.step), (Some(17), Some(3)));
    }
}
