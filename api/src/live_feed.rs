//! The live event feed behind `GET /events/stream`: one task reads the notices of newly settled
//! events and broadcasts them to every open stream, so a burst of events costs one query however
//! many viewers watch. A stream catches up from its own position with its own reads (a new viewer,
//! a reconnect, or one that fell behind the broadcast) and then follows the broadcast. Streams are
//! capped, and all of this reads through a small pool of its own, so viewers can never take the
//! connections that appends and the ingester need.

use crate::error::ApiError;
use serde::Serialize;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One line of the live stream: which stream changed and how, without the payload.
#[derive(Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventNotice {
    pub position: i64,
    pub stream_type: String,
    pub stream_id: uuid::Uuid,
    pub event_type: String,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

/// Notices of every settled event after `after`, in log order, up to the last one's position.
struct NoticeBatch {
    pub after: i64,
    pub notices: Vec<EventNotice>,
}

/// How often the broadcaster looks for new events while someone watches.
const TICK: Duration = Duration::from_millis(400);
/// Notices read at once.
const READ: i64 = 500;
/// Batches a slow stream may fall behind before it catches up by reading itself.
const BACKLOG: usize = 64;

#[derive(Clone)]
pub struct LiveFeed {
    pool: PgPool,
    batches: broadcast::Sender<Arc<NoticeBatch>>,
    streams: Arc<Semaphore>,
}

impl LiveFeed {
    /// A feed that reads through `pool` and serves at most `max_streams` streams at once.
    pub fn new(pool: PgPool, max_streams: usize) -> LiveFeed {
        LiveFeed {
            pool,
            batches: broadcast::Sender::new(BACKLOG),
            streams: Arc::new(Semaphore::new(max_streams)),
        }
    }

    /// A follower of the log from `after`, or None when every place is taken. It subscribes
    /// before its first read, so no batch is missed between the two.
    pub fn follow(&self, after: i64) -> Option<Follower> {
        let permit = self.streams.clone().try_acquire_owned().ok()?;
        Some(Follower {
            live: self.clone(),
            batches: self.batches.subscribe(),
            after,
            catching_up: true,
            _permit: permit,
        })
    }

    /// The newest settled position.
    pub async fn head(&self) -> Result<i64, ApiError> {
        Ok(sqlx::query_scalar(
            "SELECT coalesce(max(position), 0) FROM events
             WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Up to `READ` notices of settled events after `after`.
    async fn notices_after(&self, after: i64) -> Result<Vec<EventNotice>, ApiError> {
        Ok(sqlx::query_as(
            "SELECT position, stream_type, stream_id, event_type, recorded_at FROM events
             WHERE position > $1 AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY position LIMIT $2",
        )
        .bind(after)
        .bind(READ)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Broadcasts new notices while anyone watches. It starts from the head when the first viewer
    /// comes (each viewer reads what came before by itself), and forgets its place when the last
    /// one leaves, so an unwatched log costs nothing.
    pub async fn broadcast(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut after: Option<i64> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.batches.receiver_count() == 0 {
                after = None;
                continue;
            }
            if let Err(e) = self.send_new(&mut after).await {
                tracing::warn!("live feed: {e}");
            }
        }
    }

    async fn send_new(&self, after: &mut Option<i64>) -> Result<(), ApiError> {
        let mut from = match *after {
            Some(position) => position,
            None => *after.insert(self.head().await?),
        };
        loop {
            let notices = self.notices_after(from).await?;
            let Some(last) = notices.last().map(|n| n.position) else {
                return Ok(());
            };
            let full = notices.len() as i64 == READ;
            let _ = self.batches.send(Arc::new(NoticeBatch {
                after: from,
                notices,
            }));
            (from, *after) = (last, Some(last));
            if !full {
                return Ok(());
            }
        }
    }
}

/// One open stream's place in the log: it reads the log itself while it catches up, then follows
/// the broadcast. Dropping it frees its place.
pub struct Follower {
    live: LiveFeed,
    batches: broadcast::Receiver<Arc<NoticeBatch>>,
    after: i64,
    catching_up: bool,
    _permit: OwnedSemaphorePermit,
}

impl Follower {
    /// The next notices after the last ones returned; empty when `until` came first, None when
    /// the feed has stopped.
    pub async fn next(&mut self, until: Instant) -> Option<Result<Vec<EventNotice>, ApiError>> {
        loop {
            if self.catching_up {
                match self.live.notices_after(self.after).await {
                    Ok(notices) if notices.is_empty() => self.catching_up = false,
                    Ok(notices) => return Some(Ok(self.advance(notices))),
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            let batch = tokio::select! {
                batch = self.batches.recv() => batch,
                _ = tokio::time::sleep_until(until) => return Some(Ok(Vec::new())),
            };
            match batch {
                // A batch that starts past this stream's position would leave a gap: read it.
                Ok(batch) if batch.after > self.after => self.catching_up = true,
                Ok(batch) => {
                    let new: Vec<EventNotice> = batch
                        .notices
                        .iter()
                        .filter(|n| n.position > self.after)
                        .cloned()
                        .collect();
                    if !new.is_empty() {
                        return Some(Ok(self.advance(new)));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn advance(&mut self, notices: Vec<EventNotice>) -> Vec<EventNotice> {
        self.after = notices.last().map_or(self.after, |n| n.position);
        notices
    }
}
