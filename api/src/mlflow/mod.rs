//! MLflow's tracking REST protocol under `/mlflow`, so that any MLflow client (verl's `mlflow`
//! logger, TRL and transformers' `report_to="mlflow"`, `mlflow.log_metric` by hand) logs into
//! prl with `MLFLOW_TRACKING_URI=http://<host>/mlflow` and `MLFLOW_TRACKING_TOKEN=<token>`.
//! Everything becomes events like native runs': an MLflow run is a prl experiment with one run
//! (`runs.rs`), MLflow experiments are groups of them (`experiments.rs`), artifacts go through
//! the `mlflow-artifacts` proxy routes (`artifacts.rs`). Errors take MLflow's shape (`error.rs`).

mod artifacts;
mod error;
mod experiments;
mod protocol;
mod runs;
mod search;

pub use error::MlflowError;

use crate::event_log;
use crate::state::AppState;
use crate::store::{Expected, LogTx, NewEvent, StreamAppend};
use actix_web::{HttpRequest, web};
use prl_schema::events::{Event, Metadata};
use uuid::Uuid;

/// The routes, mounted at `/mlflow`.
pub fn service() -> actix_web::Scope {
    use web::{get, post, put};
    web::scope("/mlflow")
        .service(
            web::scope("/api/2.0/mlflow")
                .route("/experiments/create", post().to(experiments::create))
                .route("/experiments/get", get().to(experiments::get))
                .route(
                    "/experiments/get-by-name",
                    get().to(experiments::get_by_name),
                )
                .route(
                    "/experiments/search",
                    post().to(experiments::search_experiments),
                )
                .route("/experiments/update", post().to(experiments::update))
                .route("/experiments/delete", post().to(experiments::delete))
                .route("/experiments/restore", post().to(experiments::restore))
                .route(
                    "/experiments/set-experiment-tag",
                    post().to(experiments::set_tag),
                )
                .route("/runs/create", post().to(runs::create))
                .route("/runs/get", get().to(runs::get))
                .route("/runs/update", post().to(runs::update))
                .route("/runs/delete", post().to(runs::delete))
                .route("/runs/restore", post().to(runs::restore))
                .route("/runs/search", post().to(runs::search_runs))
                .route("/runs/log-metric", post().to(runs::log_metric))
                .route("/runs/log-parameter", post().to(runs::log_param))
                .route("/runs/set-tag", post().to(runs::set_tag))
                .route("/runs/delete-tag", post().to(runs::delete_tag))
                .route("/runs/log-batch", post().to(runs::log_batch))
                .route("/runs/log-inputs", post().to(runs::log_inputs))
                .route("/metrics/get-history", get().to(runs::metric_history))
                .route("/logged-models/search", post().to(no_logged_models))
                .default_service(web::to(unknown)),
        )
        .route(
            "/api/2.0/mlflow-artifacts/artifacts",
            get().to(artifacts::list),
        )
        .route(
            "/api/2.0/mlflow-artifacts/artifacts/{path:.*}",
            put().to(artifacts::upload),
        )
        .route(
            "/api/2.0/mlflow-artifacts/artifacts/{path:.*}",
            get().to(artifacts::download),
        )
        .default_service(web::to(unknown))
}

/// prl keeps no logged models (`mlflow.<flavor>.log_model`); clients look for them when they
/// list or download a run's artifacts, and find none.
async fn no_logged_models(req: HttpRequest) -> Result<actix_web::HttpResponse, MlflowError> {
    protocol::authorize(&req, false)?;
    Ok(actix_web::HttpResponse::Ok().json(serde_json::json!({ "models": [] })))
}

/// What prl does not serve (the model registry, traces, logged models, ...), in MLflow's words.
async fn unknown(req: HttpRequest) -> Result<actix_web::HttpResponse, MlflowError> {
    Err(MlflowError {
        code: "ENDPOINT_NOT_FOUND",
        message: format!(
            "prl does not serve {} {} (it speaks MLflow's tracking API: experiments, runs, metrics, params, tags, inputs and artifacts)",
            req.method(),
            req.path()
        ),
    })
}

/// Where a run's artifact downloads: its `mlflow-artifacts` route, each path part escaped.
pub fn artifact_url(group: Option<Uuid>, run: Uuid, path: &str) -> String {
    let escaped: Vec<String> = path
        .split('/')
        .map(|part| {
            part.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        })
        .collect();
    format!(
        "/mlflow/api/2.0/mlflow-artifacts/artifacts/{}/{}/artifacts/{}",
        protocol::experiment_id_text(group.unwrap_or(protocol::DEFAULT_EXPERIMENT)),
        run.hyphenated(),
        escaped.join("/")
    )
}

/// Events written for MLflow clients name the MLflow run they concern.
fn metadata(run: Uuid) -> Metadata {
    Metadata {
        correlation_id: Some(run),
        causation_id: None,
        actor: Some("mlflow".into()),
    }
}

async fn begin(state: &AppState) -> Result<LogTx, MlflowError> {
    Ok(event_log::begin(&state.pool).await?)
}

/// Appends events to one stream, in the transaction that checked them.
async fn append(
    log: &mut LogTx,
    stream_id: Uuid,
    expected: Expected,
    events: Vec<Event>,
) -> Result<(), MlflowError> {
    let metadata = metadata(stream_id);
    let events = events
        .into_iter()
        .map(|e| NewEvent::new(e, metadata.clone()))
        .collect();
    log.append_many(vec![StreamAppend {
        stream_id,
        expected,
        events,
    }])
    .await?
    .pop()
    .expect("one result per append")?;
    Ok(())
}
