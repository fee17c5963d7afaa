//! MLflow runs: each is a prl experiment with one run (`ExperimentTracked`). Params, tags,
//! status and inputs go to the experiment's stream, metrics (`MetricsReported`, one event per
//! step and client timestamp) to the run's, so charts, comparisons and `prl psql` read them like
//! native runs. The run id MLflow clients see is the prl experiment's id.

use super::experiments::{self, ensure_default, view_condition};
use super::protocol::{
    self as p, KeyValue, Metric, MetricView, Run, RunData, RunInfo, RunInputs, check_key,
    check_length, read_body, read_query, state,
};
use super::search::{self, Entity};
use super::{MlflowError, append, begin};
use crate::store::{Expected, LogTx, StreamAppend};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use prl_schema::events::Event;
use prl_schema::ids::RunId;
use prl_schema::tracking::{MetricValue, TrackedStatus};
use serde::Deserialize;
use sqlx::{Postgres, QueryBuilder};
use std::collections::BTreeMap;
use uuid::Uuid;

const RUN_NAME_TAG: &str = "mlflow.runName";
const USER_TAG: &str = "mlflow.user";
const MAX_METRICS_PER_BATCH: usize = 1000;
const MAX_PARAMS_TAGS_PER_BATCH: usize = 100;

const TRACKED: &str = "SELECT t.experiment_id, t.run_id, t.mlflow_experiment, t.name, t.user_id,
        t.status, t.started_at, t.ended_at, t.deleted, t.params, t.tags, t.inputs,
        r.latest_metrics, r.last_step, t.updated_at
     FROM tracked_runs t JOIN runs r ON r.id = t.run_id";

#[derive(sqlx::FromRow)]
struct Tracked {
    experiment_id: Uuid,
    run_id: Uuid,
    mlflow_experiment: Option<Uuid>,
    name: String,
    user_id: Option<String>,
    status: String,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    deleted: bool,
    params: serde_json::Value,
    tags: serde_json::Value,
    inputs: serde_json::Value,
    latest_metrics: serde_json::Value,
    last_step: Option<i64>,
    updated_at: DateTime<Utc>,
}

impl Tracked {
    fn info(&self) -> RunInfo {
        let id = self.experiment_id.hyphenated().to_string();
        RunInfo {
            run_uuid: id.clone(),
            run_id: id,
            run_name: self.name.clone(),
            experiment_id: p::experiment_id_text(
                self.mlflow_experiment.unwrap_or(p::DEFAULT_EXPERIMENT),
            ),
            user_id: self.user_id.clone().unwrap_or_default(),
            status: p::stored_status_name(&self.status),
            start_time: p::millis(self.started_at),
            end_time: self.ended_at.map(p::millis),
            artifact_uri: p::artifact_uri(self.mlflow_experiment, self.experiment_id),
            lifecycle_stage: p::lifecycle(self.deleted),
        }
    }

    /// The run with `metrics` as its latest values.
    fn view(&self, metrics: Vec<MetricView>) -> Run {
        Run {
            info: self.info(),
            data: RunData {
                metrics,
                params: p::pairs(&self.params),
                tags: p::pairs(&self.tags),
            },
            inputs: RunInputs {
                dataset_inputs: self.inputs.as_array().cloned().unwrap_or_default(),
            },
        }
    }

    /// The latest values as `runs.latest_metrics` keeps them (for search results).
    fn latest(&self) -> Vec<MetricView> {
        self.latest_metrics
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(key, v)| {
                        let value = serde_json::from_value::<MetricValue>(v.clone()).ok()?;
                        Some(MetricView {
                            key: key.clone(),
                            value,
                            timestamp: p::millis(self.updated_at),
                            step: self.last_step.unwrap_or(0),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn require_active(&self) -> Result<(), MlflowError> {
        if self.deleted {
            return Err(MlflowError::invalid(format!(
                "The run {} must be in the 'active' state. Current state is deleted.",
                self.experiment_id
            )));
        }
        Ok(())
    }
}

async fn load(conn: &mut sqlx::PgConnection, text: Option<&str>) -> Result<Tracked, MlflowError> {
    let text =
        text.ok_or_else(|| MlflowError::invalid("Missing value for required parameter 'run_id'."))?;
    let id = p::parse_run_id(text)?;
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{TRACKED} WHERE t.experiment_id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| MlflowError::not_found(format!("Run with id={text} not found")))
}

/// Each metric's value at its highest step (the newest report of that step).
async fn latest_metrics(
    conn: &mut sqlx::PgConnection,
    run: Uuid,
) -> Result<Vec<MetricView>, MlflowError> {
    let rows: Vec<(String, String, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT DISTINCT ON (kv.key) kv.key, kv.value, m.step, m.recorded_at
         FROM run_metrics m JOIN events e ON e.position = m.position
         CROSS JOIN LATERAL jsonb_each_text(e.payload->'values') kv
         WHERE m.run_id = $1
         ORDER BY kv.key, m.step DESC, m.recorded_at DESC, m.position DESC",
    )
    .bind(run)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(key, value, step, time)| {
            Some(MetricView {
                key,
                value: MetricValue(value.parse().ok()?),
                timestamp: p::millis(time),
                step,
            })
        })
        .collect())
}

#[derive(Deserialize)]
pub struct RunRequest {
    run_id: Option<String>,
    run_uuid: Option<String>,
    // runs/create
    experiment_id: Option<String>,
    user_id: Option<String>,
    #[serde(default, deserialize_with = "p::int64")]
    start_time: Option<i64>,
    #[serde(default)]
    tags: Vec<KeyValue>,
    run_name: Option<String>,
    // runs/update
    status: Option<String>,
    #[serde(default, deserialize_with = "p::int64")]
    end_time: Option<i64>,
    // runs/log-parameter, set-tag, delete-tag, log-metric
    key: Option<String>,
    value: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "p::int64")]
    timestamp: Option<i64>,
    #[serde(default, deserialize_with = "p::int64")]
    step: Option<i64>,
    // runs/log-batch
    #[serde(default)]
    metrics: Vec<Metric>,
    #[serde(default)]
    params: Vec<KeyValue>,
    // runs/log-inputs
    #[serde(default)]
    datasets: Vec<serde_json::Value>,
}

impl RunRequest {
    fn id(&self) -> Option<&str> {
        self.run_id.as_deref().or(self.run_uuid.as_deref())
    }

    fn text_value(&self) -> String {
        match &self.value {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }
}

fn tag_map(tags: Vec<KeyValue>) -> Result<BTreeMap<String, String>, MlflowError> {
    let mut out = BTreeMap::new();
    for tag in tags {
        check_key("tag", &tag.key)?;
        check_length(
            &format!("the value of tag '{}'", tag.key),
            &tag.value,
            p::MAX_TAG_VALUE_LENGTH,
        )?;
        out.insert(tag.key, tag.value);
    }
    Ok(out)
}

pub async fn create(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    let request: RunRequest = read_body(&req, body).await?;
    let mut tags = tag_map(request.tags)?;
    let name = request
        .run_name
        .filter(|n| !n.trim().is_empty())
        .or_else(|| tags.get(RUN_NAME_TAG).cloned())
        .unwrap_or_default();
    let id = Uuid::new_v4();
    let name = if name.trim().is_empty() {
        format!("run-{}", &id.simple().to_string()[..8])
    } else {
        name.trim().to_owned()
    };
    check_length("run_name", &name, p::MAX_EXPERIMENT_NAME_LENGTH)?;
    tags.insert(RUN_NAME_TAG.into(), name.clone());
    let user = request
        .user_id
        .filter(|u| !u.is_empty())
        .or_else(|| tags.get(USER_TAG).cloned());
    let started_at = match request.start_time {
        Some(ms) => p::from_millis(ms, "start_time")?,
        None => Utc::now(),
    };

    let mut log = begin(state(&req)).await?;
    ensure_default(&mut log).await?;
    let experiment =
        experiments::existing(log.conn(), request.experiment_id.as_deref().unwrap_or("0")).await?;
    if experiment.deleted {
        return Err(MlflowError::invalid(format!(
            "The experiment {} must be in the 'active' state. Current state is deleted.",
            p::experiment_id_text(experiment.id)
        )));
    }
    append(
        &mut log,
        id,
        Expected::NoStream,
        vec![
            Event::ExperimentTracked {
                name,
                tags: vec!["mlflow".into(), format!("mlflow:{}", experiment.name)],
                source: "mlflow".into(),
                run_id: RunId(Uuid::new_v4()),
                group: Some(experiment.id),
                user,
                started_at,
            },
            Event::TagsSet { tags },
        ],
    )
    .await?;
    let run = load(log.conn(), Some(&id.to_string())).await?;
    log.commit().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "run": run.view(Vec::new()) })))
}

pub async fn get(req: HttpRequest) -> Result<HttpResponse, MlflowError> {
    let request: RunRequest = read_query(&req)?;
    let mut conn = state(&req).pool.acquire().await?;
    let run = load(&mut conn, request.id()).await?;
    let metrics = latest_metrics(&mut conn, run.run_id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "run": run.view(metrics) })))
}

/// Loads the active run in a log transaction and appends what `decide` says, on the
/// experiment's stream (params, tags, status) and the run's (metrics).
async fn write(
    req: &HttpRequest,
    request: &RunRequest,
    decide: impl FnOnce(&Tracked) -> Result<Changes, MlflowError>,
) -> Result<Tracked, MlflowError> {
    let mut log = begin(state(req)).await?;
    let run = load(log.conn(), request.id()).await?;
    let changes = decide(&run)?;
    record(&mut log, &run, changes).await?;
    log.commit().await?;
    Ok(run)
}

#[derive(Default)]
struct Changes {
    experiment: Vec<Event>,
    run: Vec<Event>,
}

async fn record(log: &mut LogTx, run: &Tracked, changes: Changes) -> Result<(), MlflowError> {
    let mut appends = Vec::new();
    let metadata = super::metadata(run.experiment_id);
    for (stream_id, events) in [
        (run.experiment_id, changes.experiment),
        (run.run_id, changes.run),
    ] {
        if !events.is_empty() {
            appends.push(StreamAppend {
                stream_id,
                expected: Expected::Any,
                events: events
                    .into_iter()
                    .map(|e| crate::store::NewEvent::new(e, metadata.clone()))
                    .collect(),
            });
        }
    }
    if appends.is_empty() {
        return Ok(());
    }
    for result in log.append_many(appends).await? {
        result?;
    }
    Ok(())
}

pub async fn update(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    let request: RunRequest = read_body(&req, body).await?;
    let status = request.status.as_deref().map(p::parse_status).transpose()?;
    let ended_at = request
        .end_time
        .map(|ms| p::from_millis(ms, "end_time"))
        .transpose()?;
    let name = request
        .run_name
        .clone()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if let Some(name) = &name {
        check_length("run_name", name, p::MAX_EXPERIMENT_NAME_LENGTH)?;
    }
    write(&req, &request, |run| {
        run.require_active()?;
        let mut experiment = vec![Event::TrackedRunUpdated {
            name: name.clone(),
            status,
            ended_at: ended_at.or_else(|| {
                status
                    .filter(|s| !matches!(s, TrackedStatus::Running | TrackedStatus::Scheduled))
                    .map(|_| Utc::now())
            }),
        }];
        if let Some(name) = name {
            experiment.push(Event::TagsSet {
                tags: BTreeMap::from([(RUN_NAME_TAG.to_owned(), name)]),
            });
        }
        Ok(Changes {
            experiment,
            run: Vec::new(),
        })
    })
    .await?;
    let mut conn = state(&req).pool.acquire().await?;
    let run = load(&mut conn, request.id()).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "run_info": run.info() })))
}

pub async fn delete(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    lifecycle(req, body, Event::TrackedRunDeleted {}).await
}

pub async fn restore(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    lifecycle(req, body, Event::TrackedRunRestored {}).await
}

async fn lifecycle(
    req: HttpRequest,
    body: web::Payload,
    event: Event,
) -> Result<HttpResponse, MlflowError> {
    let request: RunRequest = read_body(&req, body).await?;
    write(&req, &request, |_| {
        Ok(Changes {
            experiment: vec![event],
            run: Vec::new(),
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

/// Metric points as `MetricsReported` events: one per step and client timestamp, in step order.
fn metric_events(metrics: Vec<Metric>) -> Result<Vec<Event>, MlflowError> {
    let now = p::millis(Utc::now());
    let mut groups: BTreeMap<(u64, i64), BTreeMap<String, f64>> = BTreeMap::new();
    for m in metrics {
        check_key("metric", &m.key)?;
        let step = m.step.unwrap_or(0);
        let step = u64::try_from(step).map_err(|_| {
            MlflowError::invalid(format!(
                "metric '{}': step {step} is negative; prl records steps from 0",
                m.key
            ))
        })?;
        let timestamp = m.timestamp.unwrap_or(now);
        p::from_millis(timestamp, "timestamp")?;
        groups
            .entry((step, timestamp))
            .or_default()
            .insert(m.key, m.value.0);
    }
    groups
        .into_iter()
        .map(|((step, timestamp), values)| {
            Ok(Event::MetricsReported {
                attempt: 1,
                step,
                values,
                time: Some(p::from_millis(timestamp, "timestamp")?),
            })
        })
        .collect()
}

/// New params, refusing a changed value as MLflow does; ones logged before with the same
/// value are left out.
fn new_params(
    run: &Tracked,
    params: Vec<KeyValue>,
) -> Result<BTreeMap<String, String>, MlflowError> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for param in params {
        check_key("param", &param.key)?;
        check_length(
            &format!("the value of param '{}'", param.key),
            &param.value,
            p::MAX_PARAM_VALUE_LENGTH,
        )?;
        let before = run
            .params
            .get(&param.key)
            .and_then(|v| v.as_str())
            .or(out.get(&param.key).map(String::as_str));
        match before {
            Some(old) if old == param.value => {}
            Some(old) => {
                return Err(MlflowError::invalid(format!(
                    "Changing param values is not allowed. Param with key='{}' was already \
                     logged with value='{old}' for run ID='{}'. Attempted logging new value '{}'.",
                    param.key, run.experiment_id, param.value
                )));
            }
            None => {
                out.insert(param.key, param.value);
            }
        }
    }
    Ok(out)
}

/// Tags, with a rename when `mlflow.runName` is among them.
fn tag_events(tags: BTreeMap<String, String>) -> Vec<Event> {
    if tags.is_empty() {
        return Vec::new();
    }
    let rename = tags
        .get(RUN_NAME_TAG)
        .filter(|n| !n.trim().is_empty())
        .map(|n| Event::TrackedRunUpdated {
            name: Some(n.trim().to_owned()),
            status: None,
            ended_at: None,
        });
    let mut events = vec![Event::TagsSet { tags }];
    events.extend(rename);
    events
}

pub async fn log_batch(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    let request: RunRequest = read_body(&req, body).await?;
    log_points(&req, request).await
}

pub async fn log_metric(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    let mut request: RunRequest = read_body(&req, body).await?;
    let key = request
        .key
        .take()
        .ok_or_else(|| MlflowError::invalid("Missing value for required parameter 'key'."))?;
    let value = request
        .value
        .take()
        .ok_or_else(|| MlflowError::invalid("Missing value for required parameter 'value'."))?;
    let value: MetricValue =
        serde_json::from_value(value).map_err(|e| MlflowError::invalid(format!("value: {e}")))?;
    request.metrics = vec![Metric {
        key,
        value,
        timestamp: request.timestamp,
        step: request.step,
    }];
    log_points(&req, request).await
}

pub async fn log_param(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    let mut request: RunRequest = read_body(&req, body).await?;
    let value = request.text_value();
    let key = request.key.take().unwrap_or_default();
    request.params = vec![KeyValue { key, value }];
    log_points(&req, request).await
}

pub async fn set_tag(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    let mut request: RunRequest = read_body(&req, body).await?;
    let value = request.text_value();
    let key = request.key.take().unwrap_or_default();
    request.tags = vec![KeyValue { key, value }];
    log_points(&req, request).await
}

/// log-batch and its one-item forms.
async fn log_points(req: &HttpRequest, request: RunRequest) -> Result<HttpResponse, MlflowError> {
    let (metrics, params, tags) = (
        request.metrics.len(),
        request.params.len(),
        request.tags.len(),
    );
    if metrics > MAX_METRICS_PER_BATCH {
        return Err(MlflowError::invalid(format!(
            "A batch logging request can contain at most {MAX_METRICS_PER_BATCH} metrics. Got {metrics} metrics. Please split up metrics across multiple requests and try again."
        )));
    }
    if params > MAX_PARAMS_TAGS_PER_BATCH || tags > MAX_PARAMS_TAGS_PER_BATCH {
        return Err(MlflowError::invalid(format!(
            "A batch logging request can contain at most {MAX_PARAMS_TAGS_PER_BATCH} params and {MAX_PARAMS_TAGS_PER_BATCH} tags. Got {params} params and {tags} tags."
        )));
    }
    let run_events = metric_events(request.metrics.clone())?;
    let tags = tag_map(request.tags.clone())?;
    write(req, &request, |run| {
        run.require_active()?;
        let params = new_params(run, request.params.clone())?;
        let mut experiment = Vec::new();
        if !params.is_empty() {
            experiment.push(Event::ParamsLogged { params });
        }
        experiment.extend(tag_events(tags));
        Ok(Changes {
            experiment,
            run: run_events,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

pub async fn delete_tag(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    let request: RunRequest = read_body(&req, body).await?;
    let key = request.key.clone().unwrap_or_default();
    write(&req, &request, |run| {
        run.require_active()?;
        if run.tags.get(&key).is_none() {
            return Err(MlflowError::not_found(format!(
                "No tag with name: {key} in run with id {}",
                run.experiment_id
            )));
        }
        Ok(Changes {
            experiment: vec![Event::TagDeleted { key }],
            run: Vec::new(),
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

pub async fn log_inputs(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    let request: RunRequest = read_body(&req, body).await?;
    write(&req, &request, |run| {
        run.require_active()?;
        // A dataset already logged (same name and digest) is not logged again.
        let known = |d: &serde_json::Value| {
            run.inputs.as_array().is_some_and(|inputs| {
                inputs.iter().any(|i| {
                    i["dataset"]["name"] == d["dataset"]["name"]
                        && i["dataset"]["digest"] == d["dataset"]["digest"]
                })
            })
        };
        let datasets: Vec<serde_json::Value> = request
            .datasets
            .iter()
            .filter(|d| !known(d))
            .cloned()
            .collect();
        Ok(Changes {
            experiment: if datasets.is_empty() {
                Vec::new()
            } else {
                vec![Event::InputsLogged { datasets }]
            },
            run: Vec::new(),
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

#[derive(Deserialize)]
pub struct HistoryRequest {
    run_id: Option<String>,
    run_uuid: Option<String>,
    metric_key: Option<String>,
    max_results: Option<i64>,
    page_token: Option<String>,
}

pub async fn metric_history(req: HttpRequest) -> Result<HttpResponse, MlflowError> {
    let request: HistoryRequest = read_query(&req)?;
    let key = request.metric_key.ok_or_else(|| {
        MlflowError::invalid("Missing value for required parameter 'metric_key'.")
    })?;
    let page = p::Page::new(
        request.max_results,
        25_000,
        1_000_000,
        request.page_token.as_deref(),
    )?;
    let mut conn = state(&req).pool.acquire().await?;
    let run = load(
        &mut conn,
        request.run_id.as_deref().or(request.run_uuid.as_deref()),
    )
    .await?;
    let rows: Vec<(String, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT e.payload->'values'->>$2, m.step, m.recorded_at
         FROM run_metrics m JOIN events e ON e.position = m.position
         WHERE m.run_id = $1 AND e.payload->'values' ? $2
         ORDER BY m.step, m.recorded_at, m.position
         LIMIT $3 OFFSET $4",
    )
    .bind(run.run_id)
    .bind(&key)
    .bind(page.fetch())
    .bind(page.offset)
    .fetch_all(&mut *conn)
    .await?;
    let (rows, next) = page.split(rows);
    let metrics: Vec<MetricView> = rows
        .into_iter()
        .filter_map(|(value, step, time)| {
            Some(MetricView {
                key: key.clone(),
                value: MetricValue(value.parse().ok()?),
                timestamp: p::millis(time),
                step,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "metrics": metrics, "next_page_token": next })))
}

#[derive(Deserialize)]
pub struct SearchRequest {
    #[serde(default)]
    experiment_ids: Vec<String>,
    filter: Option<String>,
    run_view_type: Option<String>,
    #[serde(default, deserialize_with = "p::int64")]
    max_results: Option<i64>,
    #[serde(default)]
    order_by: Vec<String>,
    page_token: Option<String>,
}

/// A run's field as SQL over `t` (tracked_runs) and `r` (runs); true when it is a number.
fn push_run_field(
    q: &mut QueryBuilder<Postgres>,
    entity: Entity,
    key: &str,
) -> Result<bool, MlflowError> {
    let millis = |column: &str| format!("(extract(epoch FROM t.{column}) * 1000)::bigint");
    match entity {
        Entity::Metric => {
            q.push("(r.latest_metrics->>")
                .push_bind(key.to_owned())
                .push(")::float8");
            Ok(true)
        }
        Entity::Param => {
            q.push("(t.params->>").push_bind(key.to_owned()).push(")");
            Ok(false)
        }
        Entity::Tag => {
            q.push("(t.tags->>").push_bind(key.to_owned()).push(")");
            Ok(false)
        }
        Entity::Attribute => match key {
            "run_id" | "run_uuid" => {
                q.push("t.experiment_id::text");
                Ok(false)
            }
            "run_name" => {
                q.push("t.name");
                Ok(false)
            }
            "status" => {
                q.push("upper(t.status)");
                Ok(false)
            }
            "user_id" => {
                q.push("t.user_id");
                Ok(false)
            }
            "lifecycle_stage" => {
                q.push("(CASE WHEN t.deleted THEN 'deleted' ELSE 'active' END)");
                Ok(false)
            }
            "start_time" | "created" | "Created" => {
                q.push(millis("started_at"));
                Ok(true)
            }
            "end_time" => {
                q.push(millis("ended_at"));
                Ok(true)
            }
            other => Err(MlflowError::invalid(format!(
                "Invalid attribute key '{other}': runs are searched by run_id, run_name, status, user_id, lifecycle_stage, start_time and end_time"
            ))),
        },
    }
}

pub async fn search_runs(
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, MlflowError> {
    p::authorize(&req, false)?;
    let request: SearchRequest = p::read_json(&req, body).await?;
    let page = p::Page::new(
        request.max_results,
        1000,
        50_000,
        request.page_token.as_deref(),
    )?;
    let experiments = request
        .experiment_ids
        .iter()
        .map(|id| p::parse_experiment_id(id))
        .collect::<Result<Vec<Uuid>, _>>()?;
    let mut q = QueryBuilder::new(TRACKED);
    q.push(
        " WHERE coalesce(t.mlflow_experiment, '00000000-0000-0000-0000-000000000000'::uuid) = ANY(",
    )
    .push_bind(experiments)
    .push(") AND ")
    .push(view_condition(request.run_view_type.as_deref())?.replace("deleted", "t.deleted"));
    search::push_search(
        &mut q,
        request.filter.as_deref(),
        &request.order_by,
        push_run_field,
        "t.started_at DESC, t.experiment_id",
        &page,
    )?;
    let rows: Vec<Tracked> = q.build_query_as().fetch_all(&state(&req).pool).await?;
    let (rows, next) = page.split(rows);
    let runs: Vec<Run> = rows.iter().map(|r| r.view(r.latest())).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "runs": runs, "next_page_token": next })))
}
