//! The raw event feed, for consumers that catch up from a position.

use super::params::int_parameter;
use crate::auth::ReadAccess;
use crate::error::ApiError;
use crate::live_feed::EventNotice;
use crate::state::AppState;
use crate::store::{Visibility, read_after};
use actix_web::{HttpResponse, get, web};
use prl_schema::events::RecordedEvent;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Events after this position (default 0, the start of the log).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub after: Option<String>,
    /// At most this many, 1 to 1000 (default 100); a page also ends with the event whose
    /// payload takes it to 4 MiB (so it always holds at least one event).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// The payload text one page of the feed carries at most, whatever its `limit`.
const PAGE_BYTES: i64 = 4 << 20;

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
    let events = read_after(&mut conn, after, limit, PAGE_BYTES, Visibility::Settled).await?;
    let last_position = events.last().map(|e| e.position).unwrap_or(after);
    Ok(HttpResponse::Ok().json(FeedPage {
        events,
        last_position,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Notices after this position; default: only events committed from now on. A reconnecting
    /// client's `Last-Event-ID` header takes precedence.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub after: Option<String>,
}

/// How long a stream may stay silent before a keep-alive comment.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// Live notices of committed events as Server-Sent Events (`id` is the position, `event` the
/// event type, `data` an `EventNotice`), for the web UI and dashboards that refresh what changed.
#[utoipa::path(context_path = "/api/v1", params(StreamQuery), responses((status = 200, content_type = "text/event-stream", body = EventNotice), (status = 400, body = crate::error::ErrorBody)))]
#[get("/events/stream")]
pub async fn stream(
    _: ReadAccess,
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let resume = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok());
    let after = match resume.or(query.after.as_deref()) {
        Some(text) => int_parameter("after", Some(text), 0, 0..=i64::MAX)?,
        None => state.live.head().await?,
    };
    let follower = state.live.follow(after).ok_or_else(|| {
        ApiError::Unavailable("every live stream is taken; try again later".into())
    })?;
    let stop = state.shutdown.clone();
    // A bare `id:` first: the client learns where the stream starts, so a reconnect before the
    // first notice resumes from there instead of from its own "now".
    let opening = bytes::Bytes::from(format!("id: {after}\n\n"));
    let opening = futures::stream::once(async move { Ok::<_, ApiError>(opening) });
    let notices = futures::stream::unfold(follower, move |mut follower| {
        let stop = stop.clone();
        async move {
            let next = tokio::select! {
                _ = stop.cancelled() => return None,
                next = follower.next(Instant::now() + KEEPALIVE) => next?,
            };
            let chunk = next.map(|notices| match notices.as_slice() {
                [] => bytes::Bytes::from_static(b": keepalive\n\n"),
                notices => bytes::Bytes::from(notices.iter().map(sse_message).collect::<String>()),
            });
            Some((chunk, follower))
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures::StreamExt::chain(opening, notices)))
}

fn sse_message(notice: &EventNotice) -> String {
    let data = serde_json::to_string(notice).unwrap_or_default();
    format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        notice.position, notice.event_type
    )
}
