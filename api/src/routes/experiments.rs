//! Submitting, listing, reading and cancelling experiments.

use super::body::{Text, check_text, parse_json, read_limited};
use super::params::int_parameter;
use crate::auth::{ReadAccess, WriteAccess};
use crate::domain::experiment;
use crate::domain::status::{ExperimentStatus, JobStatus};
use crate::error::ApiError;
use crate::event_log;
use crate::state::AppState;
use crate::store::{Expected, NewEvent, StreamAppend, derived_id};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use prl_schema::events::{Event, Metadata};
use prl_schema::jobs::{CheckpointRef, LeaseDecision, LeaseVerdict};
use prl_schema::spec::{Backend, ExperimentSpec, ModelRef};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use uuid::Uuid;

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    pub id: Uuid,
    pub status: ExperimentStatus,
    /// The experiment stream's version; send it as `If-Match` to make a cancel conditional.
    pub version: i64,
}

#[derive(Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ExperimentSummary {
    pub id: Uuid,
    pub name: String,
    pub tags: Vec<String>,
    pub model: String,
    pub status: ExperimentStatus,
    pub status_reason: Option<String>,
    pub version: i64,
    pub submitted_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A stage's state and progress, for a listing.
#[derive(Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StageProgress {
    #[serde(skip)]
    pub experiment_id: Uuid,
    pub idx: i32,
    pub name: String,
    pub kind: String,
    pub status: String,
    /// The last step its run reported.
    pub last_step: Option<i64>,
    /// The steps the spec asks for, where it bounds them (`steps` or `max_steps`).
    pub steps: Option<i64>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct ListedExperiment {
    #[serde(flatten)]
    pub summary: ExperimentSummary,
    pub stages: Vec<StageProgress>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExperimentPage {
    pub items: Vec<ListedExperiment>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StageView {
    pub idx: i32,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub job_id: Option<Uuid>,
    pub run_id: Option<Uuid>,
}

#[derive(Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub stage_idx: i32,
    pub kind: String,
    pub run_id: Uuid,
    pub status: JobStatus,
    pub attempt: i32,
    pub max_attempts: i32,
    pub worker_id: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
    pub version: i64,
    /// Why a queued job waits when no active daemon can take it: none takes its kind, or none
    /// has what its stage's `resources` ask; absent when one could (it may be busy).
    #[sqlx(default)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

#[derive(Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RunView {
    pub id: Uuid,
    /// None for an imported run.
    pub job_id: Option<Uuid>,
    pub stage_idx: i32,
    pub status: String,
    pub attempt: i32,
    pub worker_id: Option<String>,
    pub last_step: Option<i64>,
    /// Each metric's newest value.
    #[schema(value_type = std::collections::HashMap<String, f64>)]
    pub latest_metrics: serde_json::Value,
    /// The checkpoint the run finished with.
    #[schema(value_type = Option<prl_schema::jobs::CheckpointRef>)]
    pub checkpoint: Option<serde_json::Value>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExperimentDetail {
    #[serde(flatten)]
    pub summary: ExperimentSummary,
    /// None for an imported experiment.
    pub spec: Option<ExperimentSpec>,
    /// What an imported experiment was read from.
    pub imported_from: Option<String>,
    pub stages: Vec<StageView>,
    pub jobs: Vec<JobView>,
    pub runs: Vec<RunView>,
    /// What a run logged by another tool (an MLflow client) logged besides metrics; absent for
    /// experiments prl ran or imported.
    pub tracked: Option<TrackedView>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrackedView {
    /// The tool it comes from (`mlflow`).
    pub source: String,
    /// The MLflow experiment it was logged into.
    pub group: Option<String>,
    pub user_id: Option<String>,
    /// The run's status as its tool names it: scheduled, running, finished, failed or killed.
    pub status: String,
    pub params: std::collections::BTreeMap<String, String>,
    pub tags: std::collections::BTreeMap<String, String>,
    pub artifacts: Vec<ArtifactView>,
}

#[derive(Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ArtifactView {
    /// Relative to the run's artifacts.
    pub path: String,
    pub size_bytes: i64,
    pub sha256: String,
    /// Where it downloads (the MLflow artifact route).
    #[sqlx(skip)]
    pub url: String,
}

/// A spec's strings are names, references and settings: no control characters but layout. The
/// error names the field as the spec's own errors do, so the web UI finds its line.
fn check_spec_text(value: &serde_json::Value) -> Result<(), ApiError> {
    check_text(value, Text::Plain).map_err(|e| match e {
        ApiError::InvalidRequest { field, reason } => ApiError::InvalidSpec { field, reason },
        other => other,
    })
}

/// Submit an experiment spec.
///
/// An `Idempotency-Key` header (a UUID) makes a retry return the first submission instead of
/// creating another experiment.
#[utoipa::path(context_path = "/api/v1", 
    request_body(content = ExperimentSpec, description = "The spec, as JSON, or as TOML with `Content-Type: application/toml`"),
    params(("Idempotency-Key" = Option<String>, Header, description = "A UUID naming this submission")),
    responses(
        (status = 201, body = Accepted, headers(("Location" = String))),
        (status = 400, body = crate::error::ErrorBody, description = "Malformed JSON"),
        (status = 401, body = crate::error::ErrorBody),
        (status = 413, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody, description = "A field is invalid; `field` names it"),
    ),
    security(("bearer" = []))
)]
#[post("/experiments")]
pub async fn submit(
    _: WriteAccess,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = read_limited(body, &req, state.body_limit).await?;
    let spec = if is_toml(&req) {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ApiError::Malformed("the TOML spec is not UTF-8".into()))?;
        if let Ok(value) = toml::from_str::<serde_json::Value>(text) {
            check_spec_text(&value)?;
        }
        ExperimentSpec::from_toml(text)?
    } else {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            check_spec_text(&value)?;
        }
        ExperimentSpec::from_json(&bytes)?
    };
    // The key names the submission's event through a namespace of its own, so that no key can
    // name another stream's event; a retry with another body is refused in record_submission.
    let event_id = match req.headers().get("Idempotency-Key") {
        None => Uuid::now_v7(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| Uuid::parse_str(s.trim()).ok())
            .map(|key| derived_id(&[b"prl idempotency key ", key.as_bytes()]))
            .ok_or(ApiError::bad_parameter(
                "Idempotency-Key",
                "the Idempotency-Key header must be a UUID",
            ))?,
    };
    if state.files_shared {
        check_files(&spec)?;
    }
    let accepted = record_submission(&state, spec, event_id).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/experiments/{}", accepted.id)))
        .json(accepted))
}

/// Where the daemons share the API's files: every dataset file and model directory the spec
/// names is there (relative paths resolve against the API's working directory, as the daemons'
/// of one host do).
fn check_files(spec: &ExperimentSpec) -> Result<(), ApiError> {
    use prl_schema::datasets::DatasetSource;
    let missing = |field: String, reason: String| ApiError::InvalidSpec { field, reason };
    if let ModelRef::Path(dir) = &spec.model
        && !std::path::Path::new(dir).join("config.json").is_file()
    {
        return Err(missing(
            "model".into(),
            format!("{dir} is not a model directory (it has no config.json)"),
        ));
    }
    for (i, stage) in spec.stages.as_slice().iter().enumerate() {
        for (field, dataset) in stage.datasets() {
            if let DatasetSource::File { path, .. } = dataset.source()
                && !std::path::Path::new(path).is_file()
            {
                return Err(missing(
                    format!("stages[{i}].{field}"),
                    format!("there is no file {path}"),
                ));
            }
        }
    }
    Ok(())
}

/// A spec sent as `application/toml` (the format of spec files) rather than JSON.
fn is_toml(req: &HttpRequest) -> bool {
    req.headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| matches!(v.trim(), "application/toml" | "text/toml" | "text/x-toml"))
}

/// Appends `ExperimentSubmitted` for a new experiment; `event_id` makes a retry return the first.
pub async fn record_submission(
    state: &AppState,
    spec: ExperimentSpec,
    event_id: Uuid,
) -> Result<Accepted, ApiError> {
    let id = Uuid::now_v7();
    let mut log = event_log::begin(&state.pool).await?;
    let datasets = super::datasets::resolve(log.conn(), &spec).await?;
    let start_from = start_from(log.conn(), &spec.model).await?;
    let submitted = spec.clone();
    let event = NewEvent {
        event_id,
        event: experiment::submit(spec, state.max_attempts, datasets, start_from),
        metadata: Metadata {
            correlation_id: Some(id),
            causation_id: None,
            actor: Some("api".into()),
        },
    };
    let recorded = log
        .append_one(StreamAppend {
            stream_id: id,
            expected: Expected::NoStream,
            events: vec![event],
        })
        .await?;
    log.commit().await?;
    state.wake_relay.notify_one();
    let first = recorded
        .first()
        .ok_or_else(|| ApiError::Unavailable("the append returned nothing".into()))?;
    // An event id already in the log returns the first append: the same submission only if it
    // carried the same spec.
    match &first.event {
        Event::ExperimentSubmitted { spec, .. } if *spec == submitted => {}
        _ => return Err(ApiError::IdempotencyKeyReused),
    }
    Ok(Accepted {
        id: first.stream_id,
        status: ExperimentStatus::Queued,
        version: first.version,
    })
}

/// The checkpoint a `checkpoint:<run>@<step>` model names, as the log recorded it.
async fn start_from(
    conn: &mut sqlx::PgConnection,
    model: &ModelRef,
) -> Result<Option<CheckpointRef>, ApiError> {
    let ModelRef::Checkpoint { run, step } = model else {
        return Ok(None);
    };
    let row: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT uri, sha256, size_bytes FROM checkpoints WHERE run_id = $1 AND step = $2",
    )
    .bind(run)
    .bind(*step as i64)
    .fetch_optional(conn)
    .await?;
    let (uri, sha256, size_bytes) = row.ok_or_else(|| ApiError::InvalidSpec {
        field: "model".into(),
        reason: format!("run {run} recorded no checkpoint at step {step}"),
    })?;
    Ok(Some(CheckpointRef {
        uri,
        step: *step,
        sha256,
        size_bytes: size_bytes as u64,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// One of queued, running, completed, failed, cancelled, imported.
    #[param(pattern = r"^(queued|running|completed|failed|cancelled|imported)$")]
    pub status: Option<String>,
    /// Experiments carrying this tag.
    pub tag: Option<String>,
    /// Experiments whose name contains this text (case-insensitive).
    pub name: Option<String>,
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
}

/// List experiments, newest first, with keyset pagination.
#[utoipa::path(context_path = "/api/v1", params(ListQuery), responses((status = 200, body = ExperimentPage), (status = 400, body = crate::error::ErrorBody)))]
#[get("/experiments")]
pub async fn list(
    _: ReadAccess,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let limit = int_parameter("limit", q.limit.as_deref(), 50, 1..=200)?;
    if let Some(status) = &q.status
        && ExperimentStatus::parse(status).is_none()
    {
        let known: Vec<&str> = ExperimentStatus::ALL.map(ExperimentStatus::as_str).into();
        return Err(ApiError::bad_parameter(
            "status",
            format!(
                "unknown status {status:?}; expected one of {}",
                known.join(", ")
            ),
        ));
    }
    let cursor = q.cursor.as_deref().map(Cursor::parse).transpose()?;
    let mut items: Vec<ExperimentSummary> = sqlx::query_as(
        "SELECT id, name, tags, model, status, status_reason, version, submitted_at, updated_at, finished_at
         FROM experiments
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR $2 = ANY(tags))
           AND ($3::text IS NULL OR name ILIKE '%' || $3 || '%')
           AND ($4::timestamptz IS NULL OR (submitted_at, id) < ($4, $5))
         ORDER BY submitted_at DESC, id DESC
         LIMIT $6",
    )
    .bind(&q.status)
    .bind(&q.tag)
    .bind(q.name.as_deref().map(escape_like))
    .bind(cursor.as_ref().map(|c| c.submitted_at))
    .bind(cursor.as_ref().map(|c| c.id))
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|last| {
            Cursor {
                submitted_at: last.submitted_at,
                id: last.id,
            }
            .to_string()
        })
    } else {
        None
    };
    let ids: Vec<Uuid> = items.iter().map(|x| x.id).collect();
    let rows: Vec<StageProgress> = sqlx::query_as(
        "SELECT s.experiment_id, s.idx, s.name, s.kind, s.status, r.last_step,
                CASE WHEN w.steps IS NOT NULL THEN least(w.steps, 9223372036854775807)::bigint END AS steps
         FROM stages s JOIN experiments e ON e.id = s.experiment_id LEFT JOIN runs r ON r.id = s.run_id
         CROSS JOIN LATERAL (SELECT coalesce(e.spec->'stages'->s.idx->>'steps',
                                             e.spec->'stages'->s.idx->>'max_steps')::numeric AS steps) w
         WHERE s.experiment_id = ANY($1) ORDER BY s.idx",
    )
    .bind(&ids)
    .fetch_all(&state.pool)
    .await?;
    let mut stages: std::collections::HashMap<Uuid, Vec<StageProgress>> = Default::default();
    for row in rows {
        stages.entry(row.experiment_id).or_default().push(row);
    }
    let items = items
        .into_iter()
        .map(|summary| ListedExperiment {
            stages: stages.remove(&summary.id).unwrap_or_default(),
            summary,
        })
        .collect();
    Ok(HttpResponse::Ok().json(ExperimentPage { items, next_cursor }))
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// A position in the listing: the last item's submission time and id.
struct Cursor {
    submitted_at: DateTime<Utc>,
    id: Uuid,
}

impl Cursor {
    fn parse(text: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::bad_parameter(
                "cursor",
                format!("{text:?} is not a cursor this API issued"),
            )
        };
        let (micros, id) = text.split_once('_').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        Ok(Cursor {
            submitted_at: DateTime::from_timestamp_micros(micros).ok_or_else(bad)?,
            id: Uuid::parse_str(id).map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.submitted_at.timestamp_micros(), self.id)
    }
}

/// One experiment with its spec, stages, jobs and runs.
#[utoipa::path(context_path = "/api/v1", responses((status = 200, body = ExperimentDetail), (status = 404, body = crate::error::ErrorBody)))]
#[get("/experiments/{id}")]
pub async fn get(
    _: ReadAccess,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let mut detail = load_detail(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("experiment {id}")))?;
    explain_waiting(&state, &mut detail).await;
    Ok(HttpResponse::Ok()
        .insert_header(("ETag", format!("\"{}\"", detail.summary.version)))
        .json(detail))
}

/// Fills in why each queued job waits, from the daemons' presence. Best effort: without NATS the
/// detail is served without it.
async fn explain_waiting(state: &AppState, detail: &mut ExperimentDetail) {
    let Some(spec) = &detail.spec else { return };
    if !detail.jobs.iter().any(|j| j.status == JobStatus::Queued) {
        return;
    }
    let js = async_nats::jetstream::new(state.nats.clone());
    let read = async {
        let bucket = state.topology.workers(&js).await?;
        prl_bus::workers::list(&bucket).await
    };
    // Never holds the page up for long: NATS may be away.
    let Ok(Ok(workers)) = tokio::time::timeout(std::time::Duration::from_millis(500), read).await
    else {
        return;
    };
    let now = Utc::now();
    let active: Vec<_> = workers
        .iter()
        .filter(|w| !prl_bus::workers::is_lost(w, now))
        .collect();
    for job in detail
        .jobs
        .iter_mut()
        .filter(|j| j.status == JobStatus::Queued)
    {
        let Some(stage) = spec.stages.as_slice().get(job.stage_idx as usize) else {
            continue;
        };
        let takers: Vec<_> = active
            .iter()
            .filter(|w| w.kinds.contains(&stage.kind()))
            .collect();
        if takers.is_empty() {
            job.waiting = Some(format!(
                "no active daemon takes {} jobs ({} active)",
                stage.kind().as_str(),
                active.len()
            ));
            continue;
        }
        let needs = match stage.backend() {
            Backend::Tch => stage.resources().to_string(),
            Backend::Verl => "a verl bridge (prl-trainer --ray-address)".into(),
        };
        let misfits: Vec<String> = takers
            .iter()
            .filter_map(|w| {
                stage
                    .fits(w)
                    .err()
                    .map(|why| format!("{}: {why}", w.worker_id))
            })
            .collect();
        if misfits.len() == takers.len() {
            job.waiting = Some(format!(
                "no active daemon fits: the stage needs {needs}; {}",
                misfits.join("; ")
            ));
        }
    }
}

pub async fn load_detail(
    pool: &sqlx::PgPool,
    id: Uuid,
) -> Result<Option<ExperimentDetail>, ApiError> {
    let mut conn = pool.acquire().await?;
    let Some(row) = sqlx::query(
        "SELECT id, name, tags, model, status, status_reason, version, submitted_at, updated_at, finished_at, spec,
                imported_from
         FROM experiments WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    use sqlx::FromRow;
    let summary = ExperimentSummary::from_row(&row)?;
    let spec = row
        .get::<Option<serde_json::Value>, _>("spec")
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| ApiError::Unavailable(format!("a stored spec does not decode: {e}")))?;
    let imported_from = row.get("imported_from");
    let stages = sqlx::query_as("SELECT idx, name, kind, status, job_id, run_id FROM stages WHERE experiment_id = $1 ORDER BY idx")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    let jobs = sqlx::query_as(
        "SELECT id, stage_idx, kind, run_id, status, attempt, max_attempts, worker_id, lease_until, failure_reason, version
         FROM jobs WHERE experiment_id = $1 ORDER BY stage_idx",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let runs = sqlx::query_as(
        "SELECT id, job_id, stage_idx, status, attempt, worker_id, last_step, latest_metrics, checkpoint, started_at, finished_at
         FROM runs WHERE experiment_id = $1 ORDER BY stage_idx",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let tracked = load_tracked(&mut conn, id).await?;
    Ok(Some(ExperimentDetail {
        summary,
        spec,
        imported_from,
        stages,
        jobs,
        runs,
        tracked,
    }))
}

async fn load_tracked(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
) -> Result<Option<TrackedView>, ApiError> {
    type Row = (
        Uuid,
        Option<Uuid>,
        String,
        Option<String>,
        Option<String>,
        String,
        sqlx::types::Json<std::collections::BTreeMap<String, String>>,
        sqlx::types::Json<std::collections::BTreeMap<String, String>>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT t.run_id, t.mlflow_experiment, t.source, m.name, t.user_id, t.status, t.params, t.tags
         FROM tracked_runs t LEFT JOIN mlflow_experiments m ON m.id = t.mlflow_experiment
         WHERE t.experiment_id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((run, group_id, source, group, user_id, status, params, tags)) = row else {
        return Ok(None);
    };
    let mut artifacts: Vec<ArtifactView> = sqlx::query_as(
        "SELECT path, size_bytes, sha256 FROM artifacts WHERE run_id = $1 ORDER BY path",
    )
    .bind(run)
    .fetch_all(&mut *conn)
    .await?;
    for a in &mut artifacts {
        a.url = crate::mlflow::artifact_url(group_id, id, &a.path);
    }
    Ok(Some(TrackedView {
        source,
        group,
        user_id,
        status,
        params: params.0,
        tags: tags.0,
        artifacts,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub reason: Option<String>,
}

/// Cancel an experiment. Cancelling twice has the same effect as once.
///
/// With `If-Match: <version>` the cancel only happens if the experiment is still at that version.
#[utoipa::path(context_path = "/api/v1", 
    request_body(content = Option<CancelRequest>),
    params(("If-Match" = Option<String>, Header, description = "The version the experiment must be at")),
    responses(
        (status = 200, body = Accepted),
        (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "Finished already, or not at the If-Match version"),
    ),
    security(("bearer" = []))
)]
#[post("/experiments/{id}/cancel")]
pub async fn cancel(
    _: WriteAccess,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let bytes = read_limited(body, &req, state.body_limit).await?;
    let body: Option<CancelRequest> = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(parse_json(&bytes, Text::Plain)?)
    };
    let expected = match req.headers().get("If-Match") {
        None => Expected::Any,
        Some(v) => Expected::Exact(
            v.to_str()
                .ok()
                .map(|s| s.trim().trim_matches('"'))
                .and_then(|s| s.parse().ok())
                .ok_or(ApiError::bad_parameter(
                    "If-Match",
                    "If-Match must be an experiment version",
                ))?,
        ),
    };
    let reason = body
        .and_then(|b| b.reason)
        .unwrap_or_else(|| "cancelled by a user".into());
    let mut log = event_log::begin(&state.pool).await?;
    let row = sqlx::query("SELECT status, version FROM experiments WHERE id = $1")
        .bind(id)
        .fetch_optional(log.conn())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("experiment {id}")))?;
    let (status, version): (ExperimentStatus, i64) = (row.try_get(0)?, row.get(1));
    // A run another tool logs ends when that tool says so; a cancel here would not stop it.
    let source: Option<String> =
        sqlx::query_scalar("SELECT source FROM tracked_runs WHERE experiment_id = $1")
            .bind(id)
            .fetch_optional(log.conn())
            .await?;
    if let Some(source) = source {
        return Err(ApiError::Conflict(format!(
            "experiment {id} is a run logged by {source}, which prl does not run: it ends when \
             {source} ends it (an MLflow client's runs/update, or the live run's finish)"
        )));
    }
    let events =
        experiment::cancel(status, reason).map_err(|e| ApiError::Conflict(e.to_string()))?;
    if events.is_empty() {
        return Ok(HttpResponse::Ok().json(Accepted {
            id,
            status,
            version,
        }));
    }
    let metadata = Metadata {
        correlation_id: Some(id),
        causation_id: None,
        actor: Some("api".into()),
    };
    let events = events
        .into_iter()
        .map(|e| NewEvent::new(e, metadata.clone()))
        .collect();
    let recorded = log
        .append_one(StreamAppend {
            stream_id: id,
            expected,
            events,
        })
        .await?;
    let stopped = sqlx::query(
        "SELECT id, attempt, worker_id FROM jobs WHERE experiment_id = $1 AND status = $2 AND worker_id IS NOT NULL",
    )
    .bind(id)
    .bind(JobStatus::Cancelled)
    .fetch_all(log.conn())
    .await?;
    log.commit().await?;
    // The fast path to the worker; its next heartbeat would tell it too.
    for job in stopped {
        let job_id = prl_schema::ids::JobId(job.get(0));
        let verdict = LeaseVerdict {
            job_id,
            attempt: job.get::<i32, _>(1) as u32,
            worker_id: job.get(2),
            decision: LeaseDecision::Cancelled,
        };
        let payload = serde_json::to_vec(&verdict).expect("verdicts are JSON");
        if let Err(e) = state
            .nats
            .publish(state.topology.lease_subject(job_id), payload.into())
            .await
        {
            tracing::warn!("telling a worker about a cancel: {e}");
        }
    }
    let version = recorded.last().map(|e| e.version).unwrap_or(version);
    Ok(HttpResponse::Ok().json(Accepted {
        id,
        status: ExperimentStatus::Cancelled,
        version,
    }))
}
