//! Parked worker messages: listed from the read model, and re-driven, that is published again
//! on their original subject from the dead-letter stream (where they are kept whole), so that the
//! ingester tries them anew, for example after an upgrade that accepts what was refused.

use crate::auth::{ReadAccess, WriteAccess};
use crate::error::ApiError;
use crate::event_log;
use crate::state::AppState;
use crate::store::{Expected, NewEvent, StreamAppend, derived_id};
use actix_web::{HttpResponse, get, post, web};
use async_nats::jetstream::stream::RawMessageErrorKind;
use prl_bus::encoding;
use prl_schema::events::{Event, Metadata};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Serialize, Deserialize, Debug, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: Uuid,
    /// The subject the worker published on.
    pub subject: String,
    /// Why it was parked.
    pub reason: String,
    /// Its sequence in the dead-letter stream.
    pub dead_letter_sequence: i64,
    pub bytes: i64,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    /// How often it was re-driven, and when last.
    pub redrives: i32,
    pub redriven_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The columns of `DeadLetter`, to be followed by a filter or an order.
const SELECT_LETTERS: &str = "SELECT id, subject, reason, dead_letter_sequence, bytes, recorded_at,
    redrives, redriven_at FROM dead_letters";

/// List parked worker messages, oldest first.
#[utoipa::path(context_path = "/api/v1", responses((status = 200, body = Vec<DeadLetter>)))]
#[get("/dead-letters")]
pub async fn list(_: ReadAccess, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rows: Vec<DeadLetter> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_LETTERS} ORDER BY recorded_at, id"
    )))
    .fetch_all(&state.pool)
    .await?;
    Ok(HttpResponse::Ok().json(rows))
}

/// Publish a parked message again on its subject, for the ingester to try anew. A message that
/// still cannot be written is parked again, as a new dead letter.
#[utoipa::path(context_path = "/api/v1",
    responses((status = 202, body = DeadLetter), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
#[post("/dead-letters/{id}/redrive")]
pub async fn redrive(
    _: WriteAccess,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let find = || async {
        sqlx::query_as::<_, DeadLetter>(sqlx::AssertSqlSafe(format!(
            "{SELECT_LETTERS} WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("dead letter {id}")))
    };
    let letter = find().await?;
    let unavailable = |e: &dyn std::fmt::Display| ApiError::Unavailable(format!("NATS: {e}"));
    let js = async_nats::jetstream::new(state.nats.clone());
    let stream = js
        .get_stream(state.topology.dead_letter_stream())
        .await
        .map_err(|e| unavailable(&e))?;
    let parked = stream
        .get_raw_message(letter.dead_letter_sequence as u64)
        .await
        .map_err(|e| match e.kind() {
            RawMessageErrorKind::NoMessageFound => ApiError::NotFound(format!(
                "message {} of the dead-letter stream",
                letter.dead_letter_sequence
            )),
            _ => unavailable(&e),
        })?;
    // Publishing comes first: a retry after a failed record is the same publish, dropped by
    // NATS as a duplicate within its window.
    let mut headers = async_nats::HeaderMap::new();
    let attempt = letter.redrives + 1;
    headers.insert("Nats-Msg-Id", format!("redrive-{id}-{attempt}").as_str());
    if let Some(encoding) = parked.headers.get(encoding::HEADER) {
        headers.insert(encoding::HEADER, encoding.clone());
    }
    js.publish_with_headers(letter.subject.clone(), headers, parked.payload)
        .await
        .map_err(|e| unavailable(&e))?
        .await
        .map_err(|e| unavailable(&e))?;
    // Named by the letter and the attempt: two requests racing for one redrive record it once.
    let event_id = derived_id(&[b"prl redrive ", id.as_bytes(), &attempt.to_be_bytes()]);
    let mut log = event_log::begin(&state.pool).await?;
    log.append_one(StreamAppend {
        stream_id: id,
        expected: Expected::Any,
        events: vec![NewEvent {
            event_id,
            event: Event::DeadLetterRedriven { by: "api".into() },
            metadata: Metadata {
                actor: Some("api".into()),
                ..Default::default()
            },
        }],
    })
    .await?;
    log.commit().await?;
    Ok(HttpResponse::Accepted().json(find().await?))
}
