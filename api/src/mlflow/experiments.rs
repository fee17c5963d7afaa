//! MLflow experiments: the groups MLflow clients log runs into (`mlflow.set_experiment`).
//! `Default` (id `0`) exists for every client; it is written to the log when first used.

use super::protocol::{
    self as p, DEFAULT_EXPERIMENT, DEFAULT_EXPERIMENT_NAME, Experiment, KeyValue,
    MAX_EXPERIMENT_NAME_LENGTH, check_key, check_length, read_body, read_query, state,
};
use super::search::{self, Entity};
use super::{MlflowError, append, begin};
use crate::store::{Expected, LogTx};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use prl_schema::events::Event;
use serde::Deserialize;
use sqlx::{Postgres, QueryBuilder};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Every experiment, Default included before it is first written.
const EXPERIMENTS: &str =
    "(SELECT id, name, tags, deleted, created_at, updated_at FROM mlflow_experiments
     UNION ALL
     SELECT '00000000-0000-0000-0000-000000000000'::uuid, 'Default', '{}'::jsonb, false,
            'epoch'::timestamptz, 'epoch'::timestamptz
     WHERE NOT EXISTS (SELECT 1 FROM mlflow_experiments
                       WHERE id = '00000000-0000-0000-0000-000000000000')) x";

#[derive(sqlx::FromRow)]
pub struct Row {
    pub id: Uuid,
    pub name: String,
    pub tags: serde_json::Value,
    pub deleted: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Row {
    fn view(self) -> Experiment {
        Experiment {
            artifact_location: format!("mlflow-artifacts:/{}", p::experiment_id_text(self.id)),
            experiment_id: p::experiment_id_text(self.id),
            name: self.name,
            lifecycle_stage: p::lifecycle(self.deleted),
            last_update_time: p::millis(self.updated_at),
            creation_time: p::millis(self.created_at),
            tags: p::pairs(&self.tags),
        }
    }
}

pub async fn load(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<Option<Row>, MlflowError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM {EXPERIMENTS} WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The experiment, which must exist.
pub async fn existing(conn: &mut sqlx::PgConnection, text: &str) -> Result<Row, MlflowError> {
    let id = p::parse_experiment_id(text)?;
    load(conn, id)
        .await?
        .ok_or_else(|| MlflowError::not_found(format!("No Experiment with id={text} exists")))
}

/// Writes Default to the log the first time something is logged into it or named after it.
pub async fn ensure_default(log: &mut LogTx) -> Result<(), MlflowError> {
    let written: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM mlflow_experiments WHERE id = $1)")
            .bind(DEFAULT_EXPERIMENT)
            .fetch_one(log.conn())
            .await?;
    if !written {
        append(
            log,
            DEFAULT_EXPERIMENT,
            Expected::NoStream,
            vec![Event::MlflowExperimentCreated {
                name: DEFAULT_EXPERIMENT_NAME.into(),
                tags: BTreeMap::new(),
            }],
        )
        .await?;
    }
    Ok(())
}

async fn check_name_free(log: &mut LogTx, name: &str) -> Result<(), MlflowError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(MlflowError::invalid(
            "Invalid experiment name: ''. An experiment name must be a non-empty string.",
        ));
    }
    check_length("the experiment name", name, MAX_EXPERIMENT_NAME_LENGTH)?;
    let taken: Option<bool> =
        sqlx::query_scalar("SELECT deleted FROM mlflow_experiments WHERE name = $1")
            .bind(name)
            .fetch_optional(log.conn())
            .await?;
    match taken {
        None => Ok(()),
        Some(false) => Err(MlflowError::exists(format!(
            "Experiment(name={name}) already exists."
        ))),
        Some(true) => Err(MlflowError::exists(format!(
            "Experiment(name={name}) already exists in deleted state. Restore it or rename it first."
        ))),
    }
}

#[derive(Deserialize)]
pub struct CreateRequest {
    name: Option<String>,
    artifact_location: Option<String>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

pub async fn create(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    let request: CreateRequest = read_body(&req, body).await?;
    if request
        .artifact_location
        .as_deref()
        .is_some_and(|l| !l.is_empty())
    {
        return Err(MlflowError::invalid(
            "artifact_location cannot be set: prl keeps artifacts in its artifact store (store.url) and serves them through mlflow-artifacts",
        ));
    }
    let name = request.name.unwrap_or_default().trim().to_owned();
    let mut tags = BTreeMap::new();
    for tag in request.tags {
        check_key("tag", &tag.key)?;
        check_length("a tag value", &tag.value, p::MAX_TAG_VALUE_LENGTH)?;
        tags.insert(tag.key, tag.value);
    }
    let mut log = begin(state(&req)).await?;
    ensure_default(&mut log).await?;
    check_name_free(&mut log, &name).await?;
    let id = Uuid::new_v4();
    append(
        &mut log,
        id,
        Expected::NoStream,
        vec![Event::MlflowExperimentCreated { name, tags }],
    )
    .await?;
    log.commit().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "experiment_id": p::experiment_id_text(id) })))
}

#[derive(Deserialize)]
pub struct GetRequest {
    experiment_id: Option<String>,
    experiment_name: Option<String>,
}

pub async fn get(req: HttpRequest) -> Result<HttpResponse, MlflowError> {
    let request: GetRequest = read_query(&req)?;
    let id = request.experiment_id.ok_or_else(|| {
        MlflowError::invalid("Missing value for required parameter 'experiment_id'.")
    })?;
    let mut conn = state(&req).pool.acquire().await?;
    let row = existing(&mut conn, &id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "experiment": row.view() })))
}

pub async fn get_by_name(req: HttpRequest) -> Result<HttpResponse, MlflowError> {
    let request: GetRequest = read_query(&req)?;
    let name = request.experiment_name.ok_or_else(|| {
        MlflowError::invalid("Missing value for required parameter 'experiment_name'.")
    })?;
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM {EXPERIMENTS} WHERE name = $1"
    )))
    .bind(&name)
    .fetch_optional(&state(&req).pool)
    .await?;
    let row = row.ok_or_else(|| {
        MlflowError::not_found(format!("Could not find experiment with name '{name}'"))
    })?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "experiment": row.view() })))
}

#[derive(Deserialize)]
pub struct SearchRequest {
    #[serde(default, deserialize_with = "p::int64")]
    max_results: Option<i64>,
    filter: Option<String>,
    #[serde(default)]
    order_by: Vec<String>,
    page_token: Option<String>,
    view_type: Option<String>,
}

/// The `deleted` condition of a `view_type`.
pub fn view_condition(view_type: Option<&str>) -> Result<&'static str, MlflowError> {
    Ok(match view_type.unwrap_or("ACTIVE_ONLY") {
        "ACTIVE_ONLY" => "NOT deleted",
        "DELETED_ONLY" => "deleted",
        "ALL" => "true",
        other => {
            return Err(MlflowError::invalid(format!(
                "view_type: `{other}` is not one of ACTIVE_ONLY, DELETED_ONLY, ALL"
            )));
        }
    })
}

/// An experiment attribute or tag as SQL over `x`; true when it is a number.
fn push_experiment_field(
    q: &mut QueryBuilder<Postgres>,
    entity: Entity,
    key: &str,
) -> Result<bool, MlflowError> {
    match (entity, key) {
        (Entity::Tag, key) => {
            q.push("(x.tags->>").push_bind(key.to_owned()).push(")");
            Ok(false)
        }
        (Entity::Attribute, "name") => {
            q.push("x.name");
            Ok(false)
        }
        (Entity::Attribute, "experiment_id") => {
            q.push("x.id::text");
            Ok(false)
        }
        (Entity::Attribute, "creation_time") => {
            q.push("(extract(epoch FROM x.created_at) * 1000)::bigint");
            Ok(true)
        }
        (Entity::Attribute, "last_update_time") => {
            q.push("(extract(epoch FROM x.updated_at) * 1000)::bigint");
            Ok(true)
        }
        _ => Err(MlflowError::invalid(format!(
            "experiments are searched by name, creation_time, last_update_time and tags, not by '{key}'"
        ))),
    }
}

pub async fn search_experiments(
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, MlflowError> {
    // A search is a read, though MLflow sends it as a POST.
    p::authorize(&req, false)?;
    let request: SearchRequest = p::read_json(&req, body).await?;
    let page = p::Page::new(
        request.max_results,
        1000,
        50_000,
        request.page_token.as_deref(),
    )?;
    let mut q = QueryBuilder::new(format!("SELECT x.* FROM {EXPERIMENTS} WHERE "));
    q.push(view_condition(request.view_type.as_deref())?);
    search::push_search(
        &mut q,
        request.filter.as_deref(),
        &request.order_by,
        push_experiment_field,
        "x.created_at DESC, x.id",
        &page,
    )?;
    let rows: Vec<Row> = q.build_query_as().fetch_all(&state(&req).pool).await?;
    let (rows, next) = page.split(rows);
    let experiments: Vec<Experiment> = rows.into_iter().map(Row::view).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "experiments": experiments,
        "next_page_token": next,
    })))
}

#[derive(Deserialize)]
pub struct ExperimentRequest {
    experiment_id: Option<String>,
    new_name: Option<String>,
    key: Option<String>,
    value: Option<String>,
}

impl ExperimentRequest {
    fn id(&self) -> Result<&str, MlflowError> {
        self.experiment_id.as_deref().ok_or_else(|| {
            MlflowError::invalid("Missing value for required parameter 'experiment_id'.")
        })
    }
}

/// Appends to an existing experiment's stream what `decide` says, given its row.
async fn change(
    req: &HttpRequest,
    request: &ExperimentRequest,
    decide: impl FnOnce(&Row) -> Result<Vec<Event>, MlflowError>,
) -> Result<(), MlflowError> {
    let mut log = begin(state(req)).await?;
    ensure_default(&mut log).await?;
    let row = existing(log.conn(), request.id()?).await?;
    let events = decide(&row)?;
    if let Some(Event::MlflowExperimentRenamed { name }) = events.first() {
        check_name_free(&mut log, name).await?;
    }
    append(&mut log, row.id, Expected::Any, events).await?;
    log.commit().await?;
    Ok(())
}

pub async fn update(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    let request: ExperimentRequest = read_body(&req, body).await?;
    let name = request
        .new_name
        .clone()
        .unwrap_or_default()
        .trim()
        .to_owned();
    change(&req, &request, |_| {
        Ok(vec![Event::MlflowExperimentRenamed { name }])
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

pub async fn delete(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    let request: ExperimentRequest = read_body(&req, body).await?;
    change(&req, &request, |row| {
        if row.id == DEFAULT_EXPERIMENT {
            return Err(MlflowError::invalid("Cannot delete the default experiment '0'. This is an internally reserved experiment."));
        }
        Ok(vec![Event::MlflowExperimentDeleted {}])
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

pub async fn restore(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    let request: ExperimentRequest = read_body(&req, body).await?;
    change(&req, &request, |_| {
        Ok(vec![Event::MlflowExperimentRestored {}])
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

pub async fn set_tag(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, MlflowError> {
    let request: ExperimentRequest = read_body(&req, body).await?;
    let key = request.key.clone().unwrap_or_default();
    let value = request.value.clone().unwrap_or_default();
    check_key("tag", &key)?;
    check_length("a tag value", &value, p::MAX_TAG_VALUE_LENGTH)?;
    change(&req, &request, |row| {
        if row.deleted {
            return Err(MlflowError::invalid(format!(
                "The experiment {} must be in the 'active' state.",
                p::experiment_id_text(row.id)
            )));
        }
        Ok(vec![Event::MlflowExperimentTagSet { key, value }])
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}
