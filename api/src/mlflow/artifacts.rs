//! Artifacts through MLflow's artifact proxy: a run's `mlflow-artifacts:/<experiment>/<run>/artifacts`
//! URI resolves to these routes. An upload is streamed to a file of the API's own while it is
//! hashed, then put in the artifact store under `artifacts/<run>/<sha256>` (named by its content
//! alone: two uploads of one path never overwrite each other's object, and no path a client may
//! send can make a key the store refuses) and recorded as `ArtifactStored` with its path, URL,
//! size and sha256; listings and downloads answer only what the log records, the newest upload of
//! a path winning.

use super::protocol::{self as p, authorize, state};
use super::{MlflowError, begin};
use crate::routes::body::{Received, receive_to_file};
use crate::store::{Expected, NewEvent, StreamAppend};
use actix_web::http::header::{self, TryIntoHeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use prl_schema::events::Event;
use serde::Deserialize;
use std::path::PathBuf;
use uuid::Uuid;

const MAX_PATH_LENGTH: usize = 1024;

/// A run addressed as `<experiment>/<run>/artifacts[/<path>]`.
struct Address {
    experiment: String,
    run: Uuid,
    /// Relative to the run's artifacts; empty for their root.
    path: String,
}

fn address(text: &str) -> Result<Address, MlflowError> {
    let text = text.trim_matches('/');
    let mut parts = text.splitn(4, '/');
    let (Some(experiment), Some(run), Some("artifacts")) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(MlflowError::not_found(format!(
            "'{text}' is not a run's artifact path (<experiment id>/<run id>/artifacts/...)"
        )));
    };
    let path = parts.next().unwrap_or("").to_owned();
    check_path(&path)?;
    Ok(Address {
        experiment: experiment.to_owned(),
        run: p::parse_run_id(run)?,
        path,
    })
}

/// A relative path of plain names: no `.` or `..`, no empty or absolute parts, no control
/// characters or backslashes.
fn check_path(path: &str) -> Result<(), MlflowError> {
    if path.is_empty() {
        return Ok(());
    }
    let bad_part = path
        .split('/')
        .find(|part| part.is_empty() || *part == "." || *part == "..");
    if let Some(part) = bad_part {
        return Err(MlflowError::invalid(format!(
            "artifact path '{path}': the part '{part}' would leave or skip a directory"
        )));
    }
    if let Some(c) = path.chars().find(|c| c.is_control() || *c == '\\') {
        return Err(MlflowError::invalid(format!(
            "artifact path '{}' holds {c:?}",
            path.escape_debug()
        )));
    }
    if path.len() > MAX_PATH_LENGTH {
        return Err(MlflowError::invalid(format!(
            "artifact path is {} bytes long; the limit is {MAX_PATH_LENGTH}",
            path.len()
        )));
    }
    Ok(())
}

/// The prl run behind an address, checked against the experiment id in it.
async fn run_of(pool: &sqlx::PgPool, address: &Address) -> Result<(Uuid, bool), MlflowError> {
    let found: Option<(Uuid, Option<Uuid>, bool)> = sqlx::query_as(
        "SELECT run_id, mlflow_experiment, deleted FROM tracked_runs WHERE experiment_id = $1",
    )
    .bind(address.run)
    .fetch_optional(pool)
    .await?;
    match found {
        Some((run, experiment, deleted))
            if p::experiment_id_text(experiment.unwrap_or(p::DEFAULT_EXPERIMENT))
                == address.experiment =>
        {
            Ok((run, deleted))
        }
        _ => Err(MlflowError::not_found(format!(
            "Run with id={} not found in experiment {}",
            address.run, address.experiment
        ))),
    }
}

/// Where an artifact recorded without a store URL lies: the API's directory, as before the store.
fn stored_before_the_store(root: &std::path::Path, run: Uuid, path: &str) -> PathBuf {
    root.join(run.hyphenated().to_string()).join(path)
}

pub async fn upload(
    req: HttpRequest,
    target: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, MlflowError> {
    authorize(&req, true)?;
    let address = address(&target)?;
    if address.path.is_empty() {
        return Err(MlflowError::invalid(
            "an upload names a file under the run's artifacts",
        ));
    }
    let state = state(&req);
    let (run, deleted) = run_of(&state.pool, &address).await?;
    if deleted {
        return Err(MlflowError::invalid(format!(
            "The run {} must be in the 'active' state. Current state is deleted.",
            address.run
        )));
    }
    let received = receive_to_file(
        body,
        &state.artifact_dir.join("uploads"),
        state.max_artifact_bytes,
    )
    .await;
    let (partial, size_bytes, sha256) = received.map_err(|e| match e {
        Received::TooLarge(limit) => MlflowError {
            code: "REQUEST_LIMIT_EXCEEDED",
            message: format!(
                "artifact '{}' exceeds the limit of {limit} bytes (files.max_artifact_bytes)",
                address.path
            ),
        },
        Received::Broken(e) => MlflowError::invalid(format!("reading the upload: {e}")),
        Received::Disk(e) => {
            tracing::error!("receiving artifact {}: {e}", address.path);
            MlflowError::unavailable(format!("artifact '{}' could not be received", address.path))
        }
    })?;
    let stored = state
        .store
        .put_file(&format!("artifacts/{run}/{sha256}"), &partial)
        .await
        .map_err(|e| {
            tracing::error!("storing artifact {}: {e:#}", address.path);
            MlflowError::unavailable(format!(
                "artifact '{}' could not be put in the artifact store",
                address.path
            ))
        })?;
    if stored.sha256 != sha256 {
        return Err(MlflowError::invalid(format!(
            "artifact '{}' changed on the API's disk while it was stored; send it again",
            address.path
        )));
    }
    let mut log = begin(state).await?;
    log.append_many(vec![StreamAppend {
        stream_id: run,
        expected: Expected::Any,
        events: vec![NewEvent::new(
            Event::ArtifactStored {
                path: address.path.clone(),
                size_bytes,
                sha256,
                uri: Some(stored.uri),
            },
            super::metadata(address.run),
        )],
    }])
    .await?
    .pop()
    .expect("one result per append")?;
    log.commit().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

pub async fn download(
    req: HttpRequest,
    target: web::Path<String>,
) -> Result<HttpResponse, MlflowError> {
    authorize(&req, false)?;
    let address = address(&target)?;
    let state = state(&req);
    let (run, _) = run_of(&state.pool, &address).await?;
    let recorded: Option<Option<String>> =
        sqlx::query_scalar("SELECT uri FROM artifacts WHERE run_id = $1 AND path = $2")
            .bind(run)
            .bind(&address.path)
            .fetch_optional(&state.pool)
            .await?;
    let Some(uri) = recorded else {
        return Err(MlflowError::not_found(format!(
            "No artifact '{}' in run {}",
            address.path, address.run
        )));
    };
    let missing = |e: &dyn std::fmt::Display| {
        MlflowError::not_found(format!("artifact '{}': {e}", address.path))
    };
    let mut response = match uri {
        Some(uri) => {
            let read = state.store.read(&uri).await.map_err(|e| {
                tracing::error!("reading artifact {uri}: {e:#}");
                MlflowError::unavailable(format!(
                    "artifact '{}' could not be read from the artifact store",
                    address.path
                ))
            })?;
            let (size, bytes) = read.ok_or_else(|| missing(&"recorded, but not in the store"))?;
            HttpResponse::Ok()
                .content_type("application/octet-stream")
                .no_chunking(size)
                .streaming(bytes)
        }
        None => actix_files::NamedFile::open_async(stored_before_the_store(
            &state.artifact_dir,
            run,
            &address.path,
        ))
        .await
        .map_err(|e| missing(&e))?
        .into_response(&req),
    };
    // Uploaded files are anyone's content: served as downloads, never rendered in the web UI's
    // origin (an HTML or SVG artifact could otherwise run script beside the stored token).
    let name = address
        .path
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .to_owned();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_DISPOSITION,
        header::ContentDisposition {
            disposition: header::DispositionType::Attachment,
            parameters: vec![header::DispositionParam::Filename(name)],
        }
        .try_into_value()
        .expect("a disposition is a header value"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("sandbox"),
    );
    Ok(response)
}

#[derive(Deserialize)]
pub struct ListRequest {
    path: Option<String>,
}

#[derive(serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct FileInfo {
    path: String,
    is_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_size: Option<i64>,
}

pub async fn list(req: HttpRequest) -> Result<HttpResponse, MlflowError> {
    let request: ListRequest = p::read_query(&req)?;
    let text = request.path.unwrap_or_default();
    // Only runs' artifact directories hold files here.
    if text.trim_matches('/').split('/').count() < 3 {
        return Ok(HttpResponse::Ok().json(serde_json::json!({ "files": [] })));
    }
    let address = address(&text)?;
    let state = state(&req);
    let (run, _) = run_of(&state.pool, &address).await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT path, size_bytes FROM artifacts
         WHERE run_id = $1 AND ($2 = '' OR path = $2 OR left(path, length($2) + 1) = $2 || '/')
         ORDER BY path",
    )
    .bind(run)
    .bind(&address.path)
    .fetch_all(&state.pool)
    .await?;
    let mut files = std::collections::BTreeSet::new();
    for (path, size) in rows {
        if path == address.path {
            let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
            files.insert(FileInfo {
                path: name,
                is_dir: false,
                file_size: Some(size),
            });
            continue;
        }
        let below = if address.path.is_empty() {
            path.as_str()
        } else {
            &path[address.path.len() + 1..]
        };
        files.insert(match below.split_once('/') {
            Some((dir, _)) => FileInfo {
                path: dir.to_owned(),
                is_dir: true,
                file_size: None,
            },
            None => FileInfo {
                path: below.to_owned(),
                is_dir: false,
                file_size: Some(size),
            },
        });
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "files": files })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_stay_inside_the_run() {
        let run = Uuid::new_v4();
        let a = address(&format!("0/{run}/artifacts/plots/loss.png")).unwrap();
        assert_eq!(
            (a.experiment.as_str(), a.run, a.path.as_str()),
            ("0", run, "plots/loss.png")
        );
        assert_eq!(address(&format!("0/{run}/artifacts")).unwrap().path, "");
        for bad in ["../x", "a/../../x", "a//b", "./a", "a\\b", "a\u{0}b"] {
            assert!(
                address(&format!("0/{run}/artifacts/{bad}")).is_err(),
                "{bad:?}"
            );
        }
        assert!(address(&format!("0/{run}/models/x")).is_err());
    }
}
