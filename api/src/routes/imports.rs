//! Imports of runs made by the reference code: its rollout and validation dumps become an
//! experiment with one run, whose trajectories and evaluations are projected like native ones.
//! An import is one transaction, so a bad file leaves nothing behind; its ids are derived from
//! its content, so sending the same import twice records it once.

use super::body::{Text, check_text, read_limited};
use crate::auth::WriteAccess;
use crate::error::ApiError;
use crate::event_log;
use crate::state::AppState;
use crate::store::{Expected, NewEvent, StreamAppend};
use actix_web::{HttpRequest, HttpResponse, post, web};
use prl_schema::dumps::{DumpError, DumpFile, rollout_batches, validation_results};
use prl_schema::events::{Event, Metadata};
use prl_schema::ids::ExperimentId;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use uuid::Uuid;

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The experiment's name: the method, in comparisons.
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// What the files were read from (a path, say); recorded with the experiment.
    #[serde(default)]
    pub source: String,
    /// Rollout dumps: `{step}.jsonl` files of `input`, `output`, `score`, `step`, `acc`, `pred`.
    #[serde(default)]
    pub rollouts: Vec<DumpFile>,
    /// Validation dumps, the same lines for the validation set; they become evaluations.
    #[serde(default)]
    pub validation: Vec<DumpFile>,
    /// The benchmark of validation lines without a `data_source` (default `validation`).
    pub benchmark: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct Imported {
    pub experiment_id: Uuid,
    pub run_id: Uuid,
    pub steps: usize,
    pub trajectories: usize,
    pub evaluations: usize,
    /// True when this exact import had been recorded before; nothing was written again.
    pub already_imported: bool,
}

/// A bad file, named by its place in the request and by its name and line.
fn invalid(request: &ImportRequest, list: &str, e: DumpError) -> ApiError {
    let files = if list == "rollouts" {
        &request.rollouts
    } else {
        &request.validation
    };
    let index = files.iter().position(|f| f.name == e.file).unwrap_or(0);
    ApiError::InvalidRequest {
        field: format!("{list}[{index}]"),
        reason: e.to_string(),
    }
}

/// A stream id from the import's digest and a label.
fn derived_id(digest: &[u8], label: &str) -> Uuid {
    crate::store::derived_id(&[digest, label.as_bytes()])
}

/// Imports a run of the reference code from its dumps.
#[utoipa::path(context_path = "/api/v1", request_body = ImportRequest,
    responses(
        (status = 201, body = Imported),
        (status = 200, body = Imported, description = "The same import was recorded before"),
        (status = 400, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody, description = "A file is bad; `field` names it, the message its name and line"),
    ),
    security(("bearer" = [])))]
#[post("/imports")]
pub async fn import(
    _: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = read_limited(body, &req, state.import_limit).await?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Malformed(format!("the import is not valid JSON: {e}")))?;
    // The dumps hold model text, which may hold any character but NUL.
    check_text(&value, Text::Free)?;
    let request: ImportRequest = serde_json::from_value(value)
        .map_err(|e| ApiError::Malformed(format!("the import is not valid JSON: {e}")))?;
    let name = request.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::InvalidRequest {
            field: "name".into(),
            reason: "name the import in 1 to 200 characters".into(),
        });
    }
    if request.rollouts.is_empty() && request.validation.is_empty() {
        return Err(ApiError::InvalidRequest {
            field: "rollouts".into(),
            reason: "an import needs rollout or validation files".into(),
        });
    }
    let batches =
        rollout_batches(&request.rollouts).map_err(|e| invalid(&request, "rollouts", e))?;
    let benchmark = request.benchmark.as_deref().unwrap_or("validation");
    let evaluations = validation_results(&request.validation, benchmark)
        .map_err(|e| invalid(&request, "validation", e))?;

    let digest = sha2::Sha256::digest(&bytes);
    let experiment_id = derived_id(&digest, "experiment");
    let run_id = derived_id(&digest, "run");
    let summary = Imported {
        experiment_id,
        run_id,
        steps: batches
            .iter()
            .map(|b| b.step)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        trajectories: batches.iter().map(|b| b.trajectories.len()).sum(),
        evaluations: evaluations.len(),
        already_imported: false,
    };

    let metadata = Metadata {
        correlation_id: Some(experiment_id),
        causation_id: None,
        actor: Some("import".into()),
    };
    let event = |event| NewEvent::new(event, metadata.clone());
    let mut run_events = vec![event(Event::RunImported {
        experiment_id: ExperimentId(experiment_id),
    })];
    run_events.extend(
        batches
            .into_iter()
            .map(|batch| event(Event::TrajectoriesRecorded { attempt: 1, batch })),
    );
    run_events.extend(
        evaluations
            .into_iter()
            .map(|result| event(Event::EvaluationReported { attempt: 1, result })),
    );
    let appends = vec![
        StreamAppend {
            stream_id: experiment_id,
            expected: Expected::NoStream,
            events: vec![event(Event::ExperimentImported {
                name: name.to_owned(),
                tags: request.tags.clone(),
                source: request.source.clone(),
            })],
        },
        StreamAppend {
            stream_id: run_id,
            expected: Expected::NoStream,
            events: run_events,
        },
    ];
    let mut log = event_log::begin(&state.pool).await?;
    let results = log.append_many(appends).await?;
    if results.iter().any(Result::is_err) {
        // The experiment's stream exists: this import is in the log already. Nothing is written.
        return Ok(HttpResponse::Ok().json(Imported {
            already_imported: true,
            ..summary
        }));
    }
    log.commit().await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/experiments/{experiment_id}")))
        .json(summary))
}
