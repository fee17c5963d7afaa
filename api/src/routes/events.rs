//! The raw event feed, for consumers that catch up from a position.

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
    pub after: Option<i64>,
    /// At most this many, 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeedPage {
    pub events: Vec<RecordedEvent>,
    /// Pass as `after` to continue; equal to the request's `after` when nothing new was committed.
    pub last_position: i64,
}

/// Committed events after a position, in log order. A consumer that always continues from
/// `last_position` sees every event exactly once.
#[utoipa::path(params(FeedQuery), responses((status = 200, body = FeedPage), (status = 400, body = crate::error::ErrorBody)))]
#[get("/events")]
pub async fn feed(
    _: ReadAccess,
    state: web::Data<AppState>,
    query: web::Query<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(100);
    if after < 0 {
        return Err(ApiError::BadParameter {
            parameter: "after",
            reason: "after must be 0 or more".into(),
        });
    }
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadParameter {
            parameter: "limit",
            reason: "limit must be between 1 and 1000".into(),
        });
    }
    let mut conn = state.pool.acquire().await?;
    let events = read_after(&mut conn, after, limit, Visibility::Settled).await?;
    let last_position = events.last().map(|e| e.position).unwrap_or(after);
    Ok(HttpResponse::Ok().json(FeedPage {
        events,
        last_position,
    }))
}
