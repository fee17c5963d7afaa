//! Appending to the log. Every append runs inside a `LogTx`, which holds the log's advisory lock so
//! that positions are committed in the order they were taken: a reader tailing by position can
//! then never see position n+1 before n. In the same transaction the `Followers` the transaction
//! was begun with bring the read models up to the new events and name the events that must
//! follow them, which are appended too.

use super::copy::{CopyIn, Jsonb};
use futures::future::BoxFuture;
use prl_schema::events::{Event, Metadata, RecordedEvent, SCHEMA_VERSION};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Row};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// The key of the transaction-level advisory lock that serialises appends.
const LOG_LOCK: i64 = 0x0070_726c_5f6c_6f67; // "prl_log"

/// The version a stream must be at for an append to go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    Any,
    /// The stream must not exist yet.
    NoStream,
    Exact(i64),
}

#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event: Event,
    pub metadata: Metadata,
}

impl NewEvent {
    pub fn new(event: Event, metadata: Metadata) -> Self {
        NewEvent {
            event_id: Uuid::now_v7(),
            event,
            metadata,
        }
    }
}

/// Events for one stream, appended together or not at all.
#[derive(Clone, Debug)]
pub struct StreamAppend {
    pub stream_id: Uuid,
    pub expected: Expected,
    pub events: Vec<NewEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("stream {stream_id} is at version {actual}, not the expected {expected:?}")]
    Conflict {
        stream_id: Uuid,
        expected: Expected,
        actual: i64,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Which of `ids` are event ids in the log. Outside a `LogTx` the answer may be stale by the
/// time it is used: an append's own check under the lock is the one that counts.
pub async fn existing_event_ids(
    conn: impl sqlx::PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let rows = sqlx::query("SELECT event_id FROM events WHERE event_id = ANY($1)")
        .bind(ids)
        .fetch_all(conn)
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What an append does in its own transaction besides writing the events. Supplied by whoever
/// begins the transaction (prl's are in `crate::event_log`), so the store knows nothing of them;
/// they may carry what was worked out for the transaction before it took the lock.
pub trait Followers: Send + Sync {
    /// Brings the read models up to `events`, in log order.
    fn project<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;

    /// The appends that must follow `events`, which the read models already reflect.
    fn react<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<Vec<StreamAppend>, sqlx::Error>>;
}

/// A transaction on the log. Dropped without `commit` (an error, a conflict the caller gives up
/// on, a request whose client went away), it closes its connection, which rolls it back: a COPY
/// cut off mid-way leaves a connection that no later query could trust.
pub struct LogTx {
    conn: PoolConnection<Postgres>,
    committed: bool,
    followers: Box<dyn Followers>,
}

impl LogTx {
    pub async fn begin(pool: &PgPool, followers: Box<dyn Followers>) -> Result<Self, sqlx::Error> {
        let mut log = LogTx {
            conn: pool.acquire().await?,
            committed: false,
            followers,
        };
        sqlx::query("BEGIN").execute(&mut *log.conn).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOG_LOCK)
            .execute(&mut *log.conn)
            .await?;
        Ok(log)
    }

    pub fn conn(&mut self) -> &mut sqlx::PgConnection {
        &mut self.conn
    }

    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("COMMIT").execute(&mut *self.conn).await?;
        self.committed = true;
        Ok(())
    }

    /// The ids among `ids` that are already in the log.
    pub async fn existing_event_ids(&mut self, ids: &[Uuid]) -> Result<HashSet<Uuid>, sqlx::Error> {
        existing_event_ids(&mut *self.conn, ids).await
    }

    /// Appends one stream's events. If its first event id is already in the log this is a retry:
    /// the first append's events are returned and nothing is written.
    pub async fn append_one(
        &mut self,
        append: StreamAppend,
    ) -> Result<Vec<RecordedEvent>, AppendError> {
        let ids: Vec<Uuid> = append.events.iter().map(|e| e.event_id).collect();
        if !self.existing_event_ids(&ids).await?.is_empty() {
            return Ok(super::read_recorded(&mut self.conn, &ids).await?);
        }
        let mut results = self.append_many(vec![append]).await?;
        results.pop().expect("one result per append")
    }

    /// Appends several streams' events in one COPY. Each append succeeds or conflicts on its own; the caller has already dropped events whose ids are in the log. Projections and
    /// follow-up events are handled before this returns.
    pub async fn append_many(
        &mut self,
        appends: Vec<StreamAppend>,
    ) -> Result<Vec<Result<Vec<RecordedEvent>, AppendError>>, sqlx::Error> {
        let stream_ids: Vec<Uuid> = appends.iter().map(|a| a.stream_id).collect();
        let mut heads = self.stream_heads(&stream_ids).await?;

        let mut rows = Rows::default();
        let mut outcome: Vec<Result<std::ops::Range<usize>, AppendError>> = Vec::new();
        for append in appends {
            let actual = heads.get(&append.stream_id).copied().unwrap_or(0);
            let ok = match append.expected {
                Expected::Any => true,
                Expected::NoStream => actual == 0,
                Expected::Exact(v) => actual == v,
            };
            if !ok {
                outcome.push(Err(AppendError::Conflict {
                    stream_id: append.stream_id,
                    expected: append.expected,
                    actual,
                }));
                continue;
            }
            let start = rows.len();
            for (i, new) in append.events.into_iter().enumerate() {
                rows.push(append.stream_id, actual + 1 + i as i64, new);
            }
            heads.insert(append.stream_id, actual + (rows.len() - start) as i64);
            outcome.push(Ok(start..rows.len()));
        }

        let recorded = rows.insert(&mut self.conn).await?;
        self.followers.project(&mut self.conn, &recorded).await?;
        let follow_ups = self.followers.react(&mut self.conn, &recorded).await?;
        if !follow_ups.is_empty() {
            // Follow-ups target streams the reaction has just read under the lock: they cannot conflict.
            for result in Box::pin(self.append_many(follow_ups)).await? {
                result
                    .map_err(|e| sqlx::Error::Protocol(format!("follow-up append failed: {e}")))?;
            }
        }
        Ok(outcome
            .into_iter()
            .map(|r| r.map(|range| recorded[range].to_vec()))
            .collect())
    }

    /// The current version of each stream that exists. One index probe per stream, however long
    /// the stream (a run can hold hundreds of thousands of events).
    async fn stream_heads(&mut self, ids: &[Uuid]) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT s.id, v.version
             FROM (SELECT DISTINCT id FROM UNNEST($1::uuid[]) AS u(id)) s
             CROSS JOIN LATERAL (SELECT version FROM events e WHERE e.stream_id = s.id
                                 ORDER BY version DESC LIMIT 1) v",
        )
        .bind(ids)
        .fetch_all(&mut *self.conn)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

impl Drop for LogTx {
    fn drop(&mut self) {
        if !self.committed {
            self.conn.close_on_drop();
        }
    }
}

/// An event of an append, with its place in its stream.
struct Versioned {
    stream_id: Uuid,
    version: i64,
    new: NewEvent,
}

/// The events of one append, in log order.
#[derive(Default)]
struct Rows(Vec<Versioned>);

impl Rows {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn push(&mut self, stream_id: Uuid, version: i64, new: NewEvent) {
        self.0.push(Versioned {
            stream_id,
            version,
            new,
        });
    }

    /// Takes the next positions and writes the events at them with one binary COPY. The log's
    /// lock is held, so positions are taken, and committed, in order. Each event is serialised
    /// as its row is written, while the server stores the chunks before it.
    async fn insert(
        self,
        conn: &mut sqlx::PgConnection,
    ) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        if self.0.is_empty() {
            return Ok(Vec::new());
        }
        let (recorded_at, mut positions): (chrono::DateTime<chrono::Utc>, Vec<i64>) =
            sqlx::query_as(
                "SELECT now(), array_agg(nextval(pg_get_serial_sequence('events', 'position')))
                 FROM generate_series(1, $1)",
            )
            .bind(self.len() as i64)
            .fetch_one(&mut *conn)
            .await?;
        positions.sort_unstable();
        let mut copy = CopyIn::start(
            conn,
            "events",
            &[
                "position",
                "stream_type",
                "stream_id",
                "version",
                "event_id",
                "event_type",
                "schema_version",
                "payload",
                "metadata",
                "recorded_at",
            ],
        )
        .await?;
        for (e, &position) in self.0.iter().zip(&positions) {
            let (event_type, payload) = e.new.event.to_json_parts();
            let metadata = serde_json::to_vec(&e.new.metadata).expect("metadata is JSON");
            copy.row().await?;
            copy.field(position)
                .field(e.new.event.stream_type().as_str())
                .field(e.stream_id)
                .field(e.version)
                .field(e.new.event_id)
                .field(event_type.as_str())
                .field(SCHEMA_VERSION)
                .field(Jsonb(&payload))
                .field(Jsonb(&metadata))
                .field(recorded_at);
        }
        copy.finish().await?;
        Ok(self
            .0
            .into_iter()
            .zip(positions)
            .map(|(e, position)| RecordedEvent {
                position,
                stream_type: e.new.event.stream_type(),
                stream_id: e.stream_id,
                version: e.version,
                event_id: e.new.event_id,
                schema_version: SCHEMA_VERSION,
                event: e.new.event,
                metadata: e.new.metadata,
                recorded_at,
            })
            .collect())
    }
}
