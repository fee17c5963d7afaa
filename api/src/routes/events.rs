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

/// One line of the live stream: which stream changed and how, without the payload.
#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventNotice {
    pub position: i64,
    pub stream_type: String,
    pub stream_id: uuid::Uuid,
    pub event_type: String,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Notices after this position; default: only events committed from now on. A reconnecting
    /// client's `Last-Event-ID` header takes precedence.
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
        None => {
            sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
                .fetch_one(&state.pool)
                .await?
        }
    };
    let pool = state.pool.clone();
    let stop = state.shutdown.clone();
    let head = state.log_head.subscribe();
    // A bare `id:` first: the client learns where the stream starts, so a reconnect before the
    // first notice resumes from there instead of from its own "now".
    let opening = bytes::Bytes::from(format!("id: {after}\n\n"));
    let opening = futures::stream::once(async move { Ok::<_, ApiError>(opening) });
    // Each stream reads the log only when the shared head moved (or once after each chunk, to
    // drain a burst longer than one read); an idle stream costs no queries.
    let start = (after, std::time::Instant::now(), head);
    let notices = futures::stream::unfold(start, move |(after, last_sent, mut head)| {
        let (pool, stop) = (pool.clone(), stop.clone());
        async move {
            loop {
                head.borrow_and_update();
                let found = tokio::select! {
                    _ = stop.cancelled() => return None,
                    found = notices_after(&pool, after) => found,
                };
                match found {
                    Ok(notices) if !notices.is_empty() => {
                        let last = notices.last().map(|n| n.position).unwrap_or(after);
                        let chunk = notices.iter().map(sse_message).collect::<String>();
                        let sent = std::time::Instant::now();
                        return Some((Ok(bytes::Bytes::from(chunk)), (last, sent, head)));
                    }
                    Ok(_) => {}
                    Err(e) => return Some((Err(e), (after, last_sent, head))),
                }
                let quiet = KEEPALIVE.saturating_sub(last_sent.elapsed());
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    changed = head.changed() => if changed.is_err() { return None },
                    _ = tokio::time::sleep(quiet) => {
                        let ping = bytes::Bytes::from_static(b": keepalive\n\n");
                        return Some((Ok(ping), (after, std::time::Instant::now(), head)));
                    }
                }
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures::StreamExt::chain(opening, notices)))
}

async fn notices_after(pool: &sqlx::PgPool, after: i64) -> Result<Vec<EventNotice>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT position, stream_type, stream_id, event_type, recorded_at FROM events
         WHERE position > $1 AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY position LIMIT 500",
    )
    .bind(after)
    .fetch_all(pool)
    .await?)
}

fn sse_message(notice: &EventNotice) -> String {
    let data = serde_json::to_string(notice).unwrap_or_default();
    format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        notice.position, notice.event_type
    )
}

/// The log's newest settled position, read once per process for all the open live streams (only
/// while some are open), so that many idle viewers cost one cheap query per tick.
pub async fn watch_log_head(
    pool: sqlx::PgPool,
    head: tokio::sync::watch::Sender<i64>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(400));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if head.receiver_count() == 0 {
            continue;
        }
        let newest: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "SELECT coalesce(max(position), 0) FROM events
             WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())",
        )
        .fetch_one(&pool)
        .await;
        match newest {
            Ok(position) => {
                head.send_if_modified(|known| std::mem::replace(known, position) != position);
            }
            Err(e) => tracing::warn!("reading the log's head for live streams: {e}"),
        }
    }
}
