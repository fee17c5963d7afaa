//! Evaluations of a run: the ones it reported, and new ones of any of its checkpoints on demand.

use crate::auth::{ReadAccess, WriteAccess};
use crate::error::ApiError;
use crate::routes::body::{Text, check_text, read_limited};
use crate::routes::experiments::{Accepted, record_submission};
use crate::routes::results::BenchmarkResult;
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use prl_schema::spec::{ExperimentSpec, SpecError, StageSpec};
use serde_json::{Value, json};
use uuid::Uuid;

/// Every evaluation a run reported, in the order they arrived.
#[utoipa::path(context_path = "/api/v1", responses((status = 200, body = Vec<BenchmarkResult>), (status = 404, body = crate::error::ErrorBody)))]
#[get("/runs/{id}/evaluations")]
pub async fn list(
    _: ReadAccess,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    super::require_run(&state.pool, id).await?;
    let rows: Vec<BenchmarkResult> = sqlx::query_as(
        "SELECT benchmark, k, prompts, step, mean_at_k, pass_at_k, parallel_ratio,
                format_valid_ratio, mean_response_tokens, mean_at_k_se, pass_at_k_se, greedy,
                temperature, top_p, max_response_tokens
         FROM evaluations WHERE run_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(&state.pool)
    .await?;
    Ok(HttpResponse::Ok().json(rows))
}

/// Evaluates one of a run's checkpoints: submits a one-stage experiment whose model is that
/// checkpoint. The body is an eval stage as in a spec (`dataset` and `k` at least; `kind` and
/// `name` may be left out; `attention` and `mode` default to the run's own), plus `step`, the
/// checkpoint's step (the run's newest when left out).
#[utoipa::path(context_path = "/api/v1",
    request_body(content = Object, description = "An eval stage, plus an optional `step`"),
    responses(
        (status = 201, body = Accepted),
        (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody, description = "No such run or checkpoint"),
        (status = 422, body = crate::error::ErrorBody, description = "A field is invalid; `field` names it"),
    ),
    security(("bearer" = []))
)]
#[post("/runs/{id}/evaluations")]
pub async fn evaluate(
    _: WriteAccess,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let run = id.into_inner();
    let bytes = read_limited(body, &req, state.body_limit).await?;
    let value = serde_json::from_slice::<Value>(&bytes)
        .map_err(|e| ApiError::Malformed(format!("the body is not JSON: {e}")))?;
    check_text(&value, Text::Plain)?;
    let Value::Object(mut stage) = value else {
        return Err(ApiError::Malformed("the body must be a JSON object".into()));
    };
    let step = match stage.remove("step") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| ApiError::InvalidSpec {
            field: "step".into(),
            reason: "a step is a whole number".into(),
        })?),
    };
    let trained = run_stage(&state, run).await?;
    let checkpoint_step = sqlx::query_scalar!(
        "SELECT step FROM checkpoints WHERE run_id = $1 AND ($2::bigint IS NULL OR step = $2)
         ORDER BY step DESC LIMIT 1",
        run,
        step.map(|s| s as i64),
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| {
        ApiError::NotFound(match step {
            Some(s) => format!("a checkpoint of run {run} at step {s}"),
            None => format!("a checkpoint of run {run}"),
        })
    })?;
    stage.insert("kind".into(), json!("eval"));
    stage.entry("name").or_insert(json!("evaluate"));
    // Decode the way the run was trained, unless told otherwise.
    let (attention, mode) = match &trained {
        StageSpec::Sft(s) => (json!(s.attention), None),
        StageSpec::Rl(s) => (json!(s.attention), Some(json!(s.mode))),
        StageSpec::Eval(s) => (json!(s.attention), Some(json!(s.mode))),
    };
    stage.entry("attention").or_insert(attention);
    if let Some(mode) = mode {
        stage.entry("mode").or_insert(mode);
    }
    let spec = json!({
        "name": format!("evaluation of run {run} at step {checkpoint_step}"),
        "tags": ["evaluation"],
        "model": format!("checkpoint:{run}@{checkpoint_step}"),
        "stages": [Value::Object(stage)],
    });
    let spec = ExperimentSpec::from_value(spec).map_err(|e| match e {
        // The request's fields are the stage's.
        SpecError::Invalid { field, reason } => ApiError::InvalidSpec {
            field: field
                .strip_prefix("stages[0].")
                .unwrap_or(&field)
                .to_owned(),
            reason,
        },
        SpecError::Malformed(m) => ApiError::Malformed(m),
    })?;
    let accepted: Accepted = record_submission(&state, spec, Uuid::now_v7()).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/experiments/{}", accepted.id)))
        .json(accepted))
}

/// The stage a run belongs to, from its experiment's spec.
async fn run_stage(state: &AppState, run: Uuid) -> Result<StageSpec, ApiError> {
    let row = sqlx::query!(
        "SELECT e.spec, r.stage_idx FROM runs r JOIN experiments e ON e.id = r.experiment_id
         WHERE r.id = $1",
        run,
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("run {run}")))?;
    let Some(spec) = row.spec else {
        return Err(ApiError::NotFound(format!(
            "checkpoints of run {run}: it was imported, with trajectories and evaluations only"
        )));
    };
    let spec: ExperimentSpec = serde_json::from_value(spec)
        .map_err(|e| ApiError::Unavailable(format!("a stored spec does not decode: {e}")))?;
    Ok(spec.stages.as_slice()[row.stage_idx as usize].clone())
}
