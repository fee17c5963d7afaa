//! The raw event feed, for consumers that catch up from a position.

use super::params::int_parameter;
use crate::auth::ReadAccess;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Visibility, read_after};
use actix_web::{HttpResponse, get, web};
use prl_schema::events::RecordedEvent;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Events after this position (default 0, the start of the log).
    pub after: Option<String>,
    /// At most this many, 1 to 1000 (default 100).
    pub limit: Option<String>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeedPage {
    pub events: Vec<RecordedEvent>,
    /// Pass as `after` to continue; equal to the request's `after` when nothing new was committed.
    pub last_position: i64,
}

/// Committed events after a position, in log order. A consumer that always continues from
/// `last_position` sees every event exactly once.
#[utoipa::path(context_path = "/api/v1", params(FeedQuery), responses((status = 200, body = FeedPage), (status = 400, body = crate::error::ErrorBody)))]
#[get("/events")]
pub async fn feed(
    _: ReadAccess,
    state: web::Data<AppState>,
    query: web::Query<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = int_parameter("after", query.after.as_deref(), 0, 0..=i64::MAX)?;
    let limit = int_parameter("limit", query.limit.as_deref(), 100, 1..=1000)?;
    let mut conn = state.pool.acquire().await?;
    let events = read_after(&mut conn, after, limit, Visibility::Settled).await?;
    let last_position = events.last().map(|e| e.position).unwrap_or(after);
    Ok(HttpResponse::Ok().json(FeedPage {
        events,
        last_position,
    }))
}
