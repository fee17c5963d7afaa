//! Runs logged live by a program prl does not run: the Python client (`clients/python`) and
//! `prl follow` (a verl run's files). A live run is an experiment with one run, like an MLflow
//! run; a client sends batches of metric points, rollouts and validation lines (in the verl dump
//! format the imports read) and says when it finished. A batch named by the client is recorded
//! once however often it is sent, and may carry a cursor the client reads back to resume.

use super::body::{Text, check_text, read_limited};
use crate::auth::{ReadAccess, WriteAccess};
use crate::error::ApiError;
use crate::event_log;
use crate::state::AppState;
use crate::store::{Expected, NewEvent, StreamAppend, derived_id};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use prl_schema::dumps::{DumpError, DumpFile, rollout_batches, validation_results};
use prl_schema::events::{Event, Metadata};
use prl_schema::ids::RunId;
use prl_schema::tracking::TrackedStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLiveRun {
    /// The experiment's name (the method, in comparisons).
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// What logs it (`client`, `verl`); default `client`.
    pub source: Option<String>,
    /// Hyperparameters; numbers and booleans are kept as their text.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, Object>)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// A key of the client's choosing: creating a run with a key used before returns that run
    /// instead (how a restarted follower finds its run).
    pub key: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, sqlx::FromRow, utoipa::ToSchema)]
pub struct LiveRun {
    pub experiment_id: Uuid,
    pub run_id: Uuid,
    pub name: String,
    /// scheduled, running, finished, failed or killed.
    pub status: String,
    pub last_step: Option<i64>,
    /// The cursor of the last recorded batch that carried one.
    #[schema(value_type = Option<Object>)]
    pub cursor: Option<serde_json::Value>,
}

async fn load(pool: &sqlx::PgPool, id: Uuid) -> Result<Option<LiveRun>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT t.experiment_id, t.run_id, t.name, t.status, r.last_step, t.cursor
         FROM tracked_runs t JOIN runs r ON r.id = t.run_id
         WHERE t.experiment_id = $1 AND t.source <> 'mlflow'",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

async fn existing(pool: &sqlx::PgPool, id: Uuid) -> Result<LiveRun, ApiError> {
    load(pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("live run {id}")))
}

fn metadata(id: Uuid, actor: &str) -> Metadata {
    Metadata {
        correlation_id: Some(id),
        causation_id: None,
        actor: Some(actor.to_owned()),
    }
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], text: Text) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::Malformed(format!("the body is not JSON: {e}")))?;
    check_text(&value, text)?;
    serde_json::from_value(value)
        .map_err(|e| ApiError::Malformed(format!("the body does not fit its schema: {e}")))
}

/// Starts a live run (or, with a `key` used before, returns the run it started).
#[utoipa::path(context_path = "/api/v1", request_body = NewLiveRun,
    responses(
        (status = 201, body = LiveRun),
        (status = 200, body = LiveRun, description = "The run this key started before"),
        (status = 400, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
#[post("/live-runs")]
pub async fn start(
    _: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = read_limited(body, &req, state.body_limit).await?;
    let request: NewLiveRun = parse(&bytes, Text::Plain)?;
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::InvalidRequest {
            field: "name".into(),
            reason: "name the run in 1 to 200 characters".into(),
        });
    }
    let source = request.source.unwrap_or_else(|| "client".into());
    if source == "mlflow" || source.is_empty() || source.len() > 40 {
        return Err(ApiError::InvalidRequest {
            field: "source".into(),
            reason: "a source of 1 to 40 characters other than `mlflow` (MLflow clients log through /mlflow)".into(),
        });
    }
    let params: BTreeMap<String, String> = request
        .params
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    let id = match &request.key {
        Some(key) => derived_id(&[b"live-run", key.as_bytes()]),
        None => Uuid::new_v4(),
    };
    let mut events = vec![Event::ExperimentTracked {
        name,
        tags: request.tags,
        source: source.clone(),
        run_id: RunId(Uuid::new_v4()),
        group: None,
        user: None,
        started_at: Utc::now(),
    }];
    if !params.is_empty() {
        events.push(Event::ParamsLogged { params });
    }
    let meta = metadata(id, &source);
    let mut log = event_log::begin(&state.pool).await?;
    let appended = log
        .append_many(vec![StreamAppend {
            stream_id: id,
            expected: Expected::NoStream,
            events: events
                .into_iter()
                .map(|e| NewEvent::new(e, meta.clone()))
                .collect(),
        }])
        .await?
        .pop()
        .expect("one result per append");
    if appended.is_err() && request.key.is_some() {
        // The key started a run before: that one is the answer.
        drop(log);
        return Ok(HttpResponse::Ok().json(existing(&state.pool, id).await?));
    }
    appended?;
    log.commit().await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/experiments/{id}")))
        .json(existing(&state.pool, id).await?))
}

/// A live run: its status, last step and the cursor of its last recorded batch.
#[utoipa::path(context_path = "/api/v1",
    responses((status = 200, body = LiveRun), (status = 404, body = crate::error::ErrorBody)))]
#[get("/live-runs/{id}")]
pub async fn get(
    _: ReadAccess,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(existing(&state.pool, path.into_inner()).await?))
}

/// Metric values at a step.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricPoint {
    pub step: u64,
    #[serde(with = "prl_schema::tracking::metric_values")]
    #[schema(value_type = BTreeMap<String, f64>)]
    pub values: BTreeMap<String, f64>,
    /// When they were measured; the time of recording otherwise.
    pub time: Option<DateTime<Utc>>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveBatch {
    /// A name of the client's choosing: a batch sent again under the same name is recorded
    /// once (send it again after a timeout without fear).
    pub batch: Option<String>,
    #[serde(default)]
    pub metrics: Vec<MetricPoint>,
    /// Rollouts as verl dumps them: JSONL of `input`, `output`, `score`, `step` and optionally
    /// `acc`, `pred`, `gts` (or `ground_truth`), `data_source`; each becomes a trajectory.
    #[serde(default)]
    pub rollouts: Vec<DumpFile>,
    /// Validation generations in the same lines; they become evaluations per `data_source`.
    #[serde(default)]
    pub validation: Vec<DumpFile>,
    /// The benchmark of validation lines without a `data_source` (default `validation`).
    pub benchmark: Option<String>,
    /// Any JSON the client wants back after a restart (`GET /live-runs/{id}`).
    #[schema(value_type = Option<Object>)]
    pub cursor: Option<serde_json::Value>,
    /// The cursor this batch starts from (`{}` before the first): a batch that does not start
    /// where the run's recorded cursor is answers 409, so two followers of one run cannot both
    /// record its lines.
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    /// The attempt its steps belong to (1 by default): a step recorded again under a higher
    /// attempt (a run that redid steps after resuming) supersedes its earlier rows.
    #[schema(minimum = 1)]
    pub attempt: Option<u32>,
}

#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct BatchRecorded {
    pub metric_steps: usize,
    pub trajectories: usize,
    pub evaluations: usize,
    /// True when a batch of this name had been recorded before; nothing was written again.
    pub already_recorded: bool,
}

fn invalid_file(list: &str, files: &[DumpFile], e: DumpError) -> ApiError {
    let index = files.iter().position(|f| f.name == e.file).unwrap_or(0);
    ApiError::InvalidRequest {
        field: format!("{list}[{index}]"),
        reason: e.to_string(),
    }
}

/// Records a batch of a live run: metrics, rollouts (as trajectories, analysed like native
/// ones) and validation lines (as evaluations), with the client's cursor, in one transaction.
#[utoipa::path(context_path = "/api/v1", request_body = LiveBatch,
    responses(
        (status = 200, body = BatchRecorded),
        (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "The run has finished"),
        (status = 422, body = crate::error::ErrorBody, description = "A line is bad; `field` names its file, the message the line"),
    ),
    security(("bearer" = [])))]
#[post("/live-runs/{id}/batches")]
pub async fn record(
    _: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<Uuid>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let bytes = read_limited(body, &req, state.import_limit).await?;
    // Rollouts hold model text, which may hold any character but NUL.
    let batch: LiveBatch = parse(&bytes, Text::Free)?;
    if let Some(i) = batch
        .metrics
        .iter()
        .position(|p| p.time.is_some_and(|t| !super::params::storable_time(t)))
    {
        return Err(ApiError::InvalidRequest {
            field: format!("metrics[{i}].time"),
            reason: "a time between the years 1 and 9999".into(),
        });
    }
    let trajectories = rollout_batches(&batch.rollouts)
        .map_err(|e| invalid_file("rollouts", &batch.rollouts, e))?;
    let evaluations = validation_results(
        &batch.validation,
        batch.benchmark.as_deref().unwrap_or("validation"),
    )
    .map_err(|e| invalid_file("validation", &batch.validation, e))?;
    let summary = BatchRecorded {
        metric_steps: batch.metrics.len(),
        trajectories: trajectories.iter().map(|b| b.trajectories.len()).sum(),
        evaluations: evaluations.len(),
        already_recorded: false,
    };
    let attempt = batch.attempt.unwrap_or(1);
    if attempt == 0 {
        return Err(ApiError::InvalidRequest {
            field: "attempt".into(),
            reason: "attempts count from 1".into(),
        });
    }
    let run = existing(&state.pool, id).await?;
    let marker = batch
        .batch
        .as_ref()
        .map(|name| derived_id(&[id.as_bytes(), b"batch", name.as_bytes()]));

    let mut log = event_log::begin(&state.pool).await?;
    if let Some(marker) = marker
        && !log.existing_event_ids(&[marker]).await?.is_empty()
    {
        return Ok(HttpResponse::Ok().json(BatchRecorded {
            already_recorded: true,
            ..summary
        }));
    }
    // Read under the log's lock: a finish or another client's batch cannot slip in between.
    let (status, recorded): (String, Option<serde_json::Value>) =
        sqlx::query_as("SELECT status, cursor FROM tracked_runs WHERE experiment_id = $1")
            .bind(id)
            .fetch_one(log.conn())
            .await?;
    if !matches!(status.as_str(), "running" | "scheduled") {
        return Err(ApiError::Conflict(format!(
            "live run {id} has {status}; it takes no more batches"
        )));
    }
    if let Some(after) = &batch.after {
        let recorded = recorded.unwrap_or_else(|| serde_json::json!({}));
        if *after != recorded {
            return Err(ApiError::Conflict(format!(
                "this batch starts after {after}, but live run {id} has recorded up to {recorded}: \
                 another client records this run (a second follower?)"
            )));
        }
    }
    let meta = metadata(id, "live");
    let mut marker_event = NewEvent::new(
        Event::LiveBatchRecorded {
            batch: batch.batch.clone(),
            cursor: batch.cursor,
        },
        meta.clone(),
    );
    if let Some(marker) = marker {
        marker_event.event_id = marker;
    }
    let mut run_events: Vec<Event> = batch
        .metrics
        .into_iter()
        .map(|p| Event::MetricsReported {
            attempt,
            step: p.step,
            values: p.values,
            time: p.time,
        })
        .collect();
    run_events.extend(
        trajectories
            .into_iter()
            .map(|batch| Event::TrajectoriesRecorded { attempt, batch }),
    );
    run_events.extend(
        evaluations
            .into_iter()
            .map(|result| Event::EvaluationReported { attempt, result }),
    );
    let mut appends = vec![StreamAppend {
        stream_id: id,
        expected: Expected::Any,
        events: vec![marker_event],
    }];
    if !run_events.is_empty() {
        appends.push(StreamAppend {
            stream_id: run.run_id,
            expected: Expected::Any,
            events: run_events
                .into_iter()
                .map(|e| NewEvent::new(e, meta.clone()))
                .collect(),
        });
    }
    for result in log.append_many(appends).await? {
        result?;
    }
    log.commit().await?;
    Ok(HttpResponse::Ok().json(summary))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishLiveRun {
    /// `finished` (the default), `failed` or `killed`.
    pub status: Option<TrackedStatus>,
}

/// Marks a live run finished, failed or killed. Finishing twice with the same status is one
/// finish.
#[utoipa::path(context_path = "/api/v1", request_body(content = Option<FinishLiveRun>),
    responses(
        (status = 200, body = LiveRun),
        (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
#[post("/live-runs/{id}/finish")]
pub async fn finish(
    _: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<Uuid>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let bytes = read_limited(body, &req, state.body_limit).await?;
    let request: FinishLiveRun = if bytes.iter().all(u8::is_ascii_whitespace) {
        FinishLiveRun { status: None }
    } else {
        parse(&bytes, Text::Plain)?
    };
    let status = request.status.unwrap_or(TrackedStatus::Finished);
    if matches!(status, TrackedStatus::Running | TrackedStatus::Scheduled) {
        return Err(ApiError::InvalidRequest {
            field: "status".into(),
            reason: "a run finishes as finished, failed or killed".into(),
        });
    }
    existing(&state.pool, id).await?;
    let mut log = event_log::begin(&state.pool).await?;
    let current: String =
        sqlx::query_scalar("SELECT status FROM tracked_runs WHERE experiment_id = $1")
            .bind(id)
            .fetch_one(log.conn())
            .await?;
    if matches!(current.as_str(), "running" | "scheduled") {
        log.append_many(vec![StreamAppend {
            stream_id: id,
            expected: Expected::Any,
            events: vec![NewEvent::new(
                Event::TrackedRunUpdated {
                    name: None,
                    status: Some(status),
                    ended_at: Some(Utc::now()),
                },
                metadata(id, "live"),
            )],
        }])
        .await?
        .pop()
        .expect("one result per append")?;
        log.commit().await?;
    } else {
        drop(log);
    }
    Ok(HttpResponse::Ok().json(existing(&state.pool, id).await?))
}
