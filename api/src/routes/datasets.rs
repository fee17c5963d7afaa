//! Registered datasets: a name for a set of files (its splits) with their row counts and content
//! hashes, versioned in the log. Specs name them as `registered:<name>[:<split>]`; a submission
//! resolves them once, so a later registration never changes what an accepted experiment uses.
//! A split's file is a path every daemon shares, or a file uploaded into the artifact store
//! (`POST /datasets/files`, kept under its sha256), which daemons on any host fetch.

use crate::auth::{ReadAccess, WriteAccess};
use crate::error::ApiError;
use crate::event_log;
use crate::routes::body::{Received, Text, parse_json, read_limited, receive_to_file};
use crate::state::AppState;
use crate::store::{Expected, NewEvent, StreamAppend};
use actix_web::{HttpResponse, get, post, web};
use prl_schema::datasets::{DatasetSplit, Format, registered_reference};
use prl_schema::events::{Event, Metadata};
use prl_schema::spec::ExperimentSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub name: String,
    /// Where the files came from, for people (a URL, a script, a paper).
    #[serde(default)]
    pub source: String,
    pub splits: Vec<DatasetSplit>,
}

#[derive(Serialize, Deserialize, Debug, sqlx::FromRow, utoipa::ToSchema)]
pub struct DatasetView {
    pub name: String,
    /// 1 for the first registration of the name, then one more per registration that changed it.
    pub version: i64,
    pub source: String,
    #[schema(value_type = Vec<DatasetSplit>)]
    pub splits: sqlx::types::Json<Vec<DatasetSplit>>,
    pub registered_at: chrono::DateTime<chrono::Utc>,
}

fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest {
        field: field.into(),
        reason: reason.into(),
    }
}

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 100
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn check(registration: &Registration) -> Result<(), ApiError> {
    if !is_name(&registration.name) {
        return Err(invalid(
            "name",
            "a dataset name is 1 to 100 letters, digits, '-', '_' or '.'",
        ));
    }
    if registration.splits.is_empty() {
        return Err(invalid("splits", "a dataset needs at least one split"));
    }
    for (i, split) in registration.splits.iter().enumerate() {
        let field = |f: &str| format!("splits[{i}].{f}");
        if !is_name(&split.name) || split.name == "sequential" {
            return Err(invalid(
                &field("name"),
                "a split name is like train or test",
            ));
        }
        if registration.splits[..i]
            .iter()
            .any(|s| s.name == split.name)
        {
            return Err(invalid(&field("name"), "another split has this name"));
        }
        if !split.uri.starts_with('/') && !split.uri.contains("://") {
            return Err(invalid(
                &field("uri"),
                "the file's absolute path, or its URL in the artifact store (POST /datasets/files)",
            ));
        }
        if split.rows == 0 {
            return Err(invalid(&field("rows"), "a split has at least one row"));
        }
        if split.sha256.len() != 64
            || !split
                .sha256
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            return Err(invalid(&field("sha256"), "64 lowercase hexadecimal digits"));
        }
    }
    Ok(())
}

/// Refuses a split whose file is said to be in the artifact store but is not there under its
/// hash: registered, it would fail every job that reads it.
async fn check_stored(state: &AppState, registration: &Registration) -> Result<(), ApiError> {
    for (i, split) in registration.splits.iter().enumerate() {
        if !split.is_stored() {
            continue;
        }
        let field = format!("splits[{i}].uri");
        let expected = format!(
            "{}{}",
            state.store.url(),
            DatasetSplit::store_key(&split.sha256, split.format)
        );
        if split.uri != expected {
            return Err(invalid(
                &field,
                format!(
                    "an uploaded {} file with this sha256 is at {expected} (POST /datasets/files \
                     answers its uri)",
                    split.format.extension()
                ),
            ));
        }
        let held = state.store.size_of(&split.uri).await.map_err(|e| {
            tracing::error!("looking up {}: {e:#}", split.uri);
            ApiError::Unavailable("the artifact store did not answer".into())
        })?;
        if held.is_none() {
            return Err(invalid(
                &field,
                "the artifact store holds no such file; upload it first (POST /datasets/files)",
            ));
        }
    }
    Ok(())
}

/// A dataset's stream id: derived from its name, so every registration of it shares one stream.
fn stream_id(name: &str) -> Uuid {
    crate::store::derived_id(&[b"prl dataset ", name.as_bytes()])
}

/// Registers a dataset, or a new version of it. Registering what is already the newest version
/// records nothing.
#[utoipa::path(context_path = "/api/v1", request_body = Registration,
    responses(
        (status = 201, body = DatasetView),
        (status = 200, body = DatasetView, description = "Already the newest version"),
        (status = 422, body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
#[post("/datasets")]
pub async fn register(
    _: WriteAccess,
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = read_limited(body, &req, state.body_limit).await?;
    let registration: Registration = parse_json(&bytes, Text::Plain)?;
    check(&registration)?;
    check_stored(&state, &registration).await?;
    let id = stream_id(&registration.name);
    let mut log = event_log::begin(&state.pool).await?;
    let current: Option<(i64, sqlx::types::Json<Vec<DatasetSplit>>)> =
        sqlx::query_as("SELECT version, splits FROM datasets WHERE name = $1")
            .bind(&registration.name)
            .fetch_optional(log.conn())
            .await?;
    let unchanged = current
        .as_ref()
        .is_some_and(|(_, splits)| splits.0 == registration.splits);
    if !unchanged {
        log.append_one(StreamAppend {
            stream_id: id,
            expected: current.map_or(Expected::NoStream, |(v, _)| Expected::Exact(v)),
            events: vec![NewEvent::new(
                Event::DatasetRegistered {
                    name: registration.name.clone(),
                    source: registration.source,
                    splits: registration.splits,
                },
                Metadata::default(),
            )],
        })
        .await?;
    }
    let view: DatasetView = sqlx::query_as(
        "SELECT name, version, source, splits, registered_at FROM datasets WHERE name = $1",
    )
    .bind(&registration.name)
    .fetch_one(log.conn())
    .await?;
    log.commit().await?;
    Ok(if unchanged {
        HttpResponse::Ok().json(view)
    } else {
        HttpResponse::Created().json(view)
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct FileQuery {
    /// What the file holds: `jsonl` or `verl` (verl-style parquet).
    #[param(pattern = "^(jsonl|verl)$")]
    pub format: Option<String>,
}

/// A dataset file in the artifact store: register it as a split by these fields.
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct StoredDatasetFile {
    pub format: Format,
    /// Its URL in the artifact store, where every daemon fetches it.
    pub uri: String,
    pub rows: u64,
    pub sha256: String,
    pub size_bytes: u64,
}

/// Puts one dataset file (the request's body) in the artifact store, where daemons on any host
/// fetch it. Every row is read and checked first (422 naming the line or row); the file is kept
/// under its sha256, so the same file uploaded twice is stored once (200 the second time).
#[utoipa::path(context_path = "/api/v1", params(FileQuery),
    request_body(content = [u8], content_type = "application/octet-stream"),
    responses(
        (status = 201, body = StoredDatasetFile),
        (status = 200, body = StoredDatasetFile, description = "Already stored"),
        (status = 409, body = crate::error::ErrorBody, description = "The API has no `store.url` that daemons read"),
        (status = 413, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
#[post("/datasets/files")]
pub async fn upload_file(
    _: WriteAccess,
    state: web::Data<AppState>,
    query: web::Query<FileQuery>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if !state.store_reaches_daemons {
        return Err(ApiError::Conflict(
            "this API has no store.url, so no daemon could read an uploaded file; give it the \
             daemons' artifact store (store.url or PRL_STORE__URL), or register files by path"
                .into(),
        ));
    }
    let format = match query.format.as_deref() {
        Some("jsonl") => Format::Jsonl,
        Some("verl") => Format::Verl,
        other => {
            return Err(ApiError::bad_parameter(
                "format",
                format!("format is jsonl or verl (parquet), not {other:?}"),
            ));
        }
    };
    let uploads = state.artifact_dir.join("uploads");
    let (file, size_bytes, sha256) = receive_to_file(body, &uploads, state.import_limit as u64)
        .await
        .map_err(|e| match e {
            Received::TooLarge(limit) => ApiError::TooLarge {
                limit: limit as usize,
            },
            Received::Broken(e) => ApiError::Malformed(format!("reading the body: {e}")),
            Received::Disk(e) => {
                tracing::error!("receiving a dataset file: {e}");
                ApiError::Unavailable("the API could not keep the upload on its disk".into())
            }
        })?;
    let path = file.to_path_buf();
    let read = tokio::task::spawn_blocking(move || prl_schema::datasets::read(&path, format)).await;
    let rows = match read {
        Ok(Ok(rows)) => rows.len() as u64,
        Ok(Err(reason)) => {
            let shown = file.display().to_string();
            return Err(invalid("body", reason.replace(&shown, "the upload")));
        }
        Err(_) => return Err(invalid("body", "the file could not be read as its format")),
    };
    let key = DatasetSplit::store_key(&sha256, format);
    let uri = format!("{}{key}", state.store.url());
    let unavailable = |e: anyhow::Error| {
        tracing::error!("storing {key}: {e:#}");
        ApiError::Unavailable("the artifact store did not answer".into())
    };
    let fresh = state.store.size_of(&uri).await.map_err(unavailable)? != Some(size_bytes);
    if fresh {
        let stored = state
            .store
            .put_file(&key, &file)
            .await
            .map_err(unavailable)?;
        if stored.sha256 != sha256 {
            return Err(ApiError::Unavailable(
                "the upload changed on the API's disk while it was stored; send it again".into(),
            ));
        }
    }
    let stored = StoredDatasetFile {
        format,
        uri,
        rows,
        sha256,
        size_bytes,
    };
    Ok(match fresh {
        true => HttpResponse::Created().json(stored),
        false => HttpResponse::Ok().json(stored),
    })
}

/// Every registered dataset, newest version of each.
#[utoipa::path(context_path = "/api/v1", responses((status = 200, body = Vec<DatasetView>)))]
#[get("/datasets")]
pub async fn list(_: ReadAccess, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let views: Vec<DatasetView> = sqlx::query_as(
        "SELECT name, version, source, splits, registered_at FROM datasets ORDER BY name",
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(HttpResponse::Ok().json(views))
}

/// The registered datasets a spec names, keyed `name:split`, or a 422 naming the field whose
/// reference is unknown.
pub async fn resolve(
    conn: &mut sqlx::PgConnection,
    spec: &ExperimentSpec,
) -> Result<BTreeMap<String, DatasetSplit>, ApiError> {
    let mut references = vec![];
    for (i, stage) in spec.stages.as_slice().iter().enumerate() {
        for (field, dataset) in stage.datasets() {
            references.push((format!("stages[{i}].{field}"), dataset.as_str()));
        }
    }
    let mut resolved = BTreeMap::new();
    for (field, reference) in references {
        let Some((name, split, _)) = registered_reference(reference) else {
            continue;
        };
        let splits: Option<sqlx::types::Json<Vec<DatasetSplit>>> =
            sqlx::query_scalar("SELECT splits FROM datasets WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *conn)
                .await?;
        let Some(splits) = splits else {
            return Err(ApiError::InvalidSpec {
                field,
                reason: format!("no dataset is registered as '{name}' (prl dataset register)"),
            });
        };
        let Some(found) = splits.0.into_iter().find(|s| s.name == split) else {
            return Err(ApiError::InvalidSpec {
                field,
                reason: format!("the dataset '{name}' has no split '{split}'"),
            });
        };
        resolved.insert(format!("{name}:{split}"), found);
    }
    Ok(resolved)
}
