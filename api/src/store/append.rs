//! Appending to the log. Every append runs inside a `LogTx`, which takes the log's advisory lock
//! and its transaction id together, and its positions under that lock: positions are therefore
//! in the order of transaction ids, and a reader that reads below `pg_snapshot_xmin` never sees
//! position n+1 before n. Most transactions hold the lock until they commit. One whose events
//! nothing follows and nothing else reads under the lock (the `Followers` say which: runs'
//! trajectories and metrics) lets it go once its positions are taken, so that the next append
//! writes beside it. Every transaction also holds a lock on each stream it appends to, from
//! before it reads the stream until it commits, so that appends to one stream stay one at a time.
//! In the same transaction the `Followers` bring the read models up to the new events and name
//! the events that must follow them, which are appended too.

use super::copy::{CopyIn, Jsonb};
use futures::future::BoxFuture;
use prl_schema::events::{Event, Metadata, RecordedEvent, SCHEMA_VERSION};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Row};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

use crate::advisory_locks;

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

    /// Whether a transaction may let other appends begin before it commits when all it appends
    /// are such events: nothing follows them, their projection writes only rows of their own
    /// streams, and no other append reads those rows to decide what it appends.
    fn may_release(&self, event: &Event) -> bool;

    /// The streams other than their own whose rows projecting `appends` writes (a job's events
    /// write its run's row). They are locked with the appended streams, so that whoever writes a
    /// stream's rows holds its lock, and row locks are never waited for in two orders.
    fn rows_written_elsewhere<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        appends: &'a [StreamAppend],
    ) -> BoxFuture<'a, Result<Vec<Uuid>, sqlx::Error>>;
}

/// A transaction on the log. Dropped without `commit` (an error, a conflict the caller gives up
/// on, a request whose client went away), or with the log's lock still held, it closes its
/// connection, which rolls it back and lets the locks go: a COPY cut off mid-way leaves a
/// connection that no later query could trust.
pub struct LogTx {
    conn: PoolConnection<Postgres>,
    committed: bool,
    /// Whether this session holds the log's lock (session-level, so that it can be let go before
    /// the commit).
    holds_log_lock: bool,
    /// Whether everything appended so far may let the log's lock go (`Followers::may_release`).
    releasable: bool,
    locked_streams: HashSet<Uuid>,
    followers: Box<dyn Followers>,
}

impl LogTx {
    /// Begins a transaction, takes the log's lock and then the transaction's id: positions
    /// are taken only under the lock, so ids and positions are in the same order.
    pub async fn begin(pool: &PgPool, followers: Box<dyn Followers>) -> Result<Self, sqlx::Error> {
        let mut log = LogTx {
            conn: pool.acquire().await?,
            committed: false,
            holds_log_lock: false,
            releasable: true,
            locked_streams: HashSet::new(),
            followers,
        };
        sqlx::query("BEGIN").execute(&mut *log.conn).await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(advisory_locks::LOG)
            .execute(&mut *log.conn)
            .await?;
        log.holds_log_lock = true;
        sqlx::query("SELECT pg_current_xact_id()")
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
        if self.holds_log_lock {
            self.unlock_log().await?;
        }
        Ok(())
    }

    /// Waits until every transaction that let the log's lock go early has ended: from then on,
    /// with the lock held, every position taken is committed or rolled back, and a read of the
    /// whole log sees all of it (what replay needs).
    pub async fn settle(&mut self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(advisory_locks::RELEASED_LOG)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }

    /// Locks `streams` until this transaction ends, waiting for any other transaction that
    /// appends to them: taken before anything about them is read (their heads, whether an
    /// event is already in them), it makes the reads current. The log's lock must still be held,
    /// so that every transaction takes stream locks in one order of its own and waits for none.
    pub async fn lock_streams(&mut self, streams: &[Uuid]) -> Result<(), sqlx::Error> {
        let new: HashSet<Uuid> = streams
            .iter()
            .filter(|s| !self.locked_streams.contains(s))
            .copied()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        self.must_hold_log_lock()?;
        let mut keys: Vec<i32> = new.iter().map(|s| stream_key(*s)).collect();
        keys.sort_unstable();
        keys.dedup();
        // One statement: unnest keeps the array's order.
        sqlx::query("SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::int4[]) AS k")
            .bind(advisory_locks::STREAMS)
            .bind(&keys)
            .execute(&mut *self.conn)
            .await?;
        self.locked_streams.extend(new);
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
        self.lock_streams(&[append.stream_id]).await?;
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
        let elsewhere = (self.followers)
            .rows_written_elsewhere(&mut self.conn, &appends)
            .await?;
        self.lock_streams(&[stream_ids.as_slice(), &elsewhere].concat())
            .await?;
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

        if rows.len() > 0 {
            self.must_hold_log_lock()?;
        }
        // Decided over the whole transaction: rows an earlier append wrote under the lock, for
        // one, must stay hidden behind it until the commit.
        self.releasable &= rows
            .0
            .iter()
            .all(|e| self.followers.may_release(&e.new.event));
        let release = rows.len() > 0 && self.releasable;
        let recorded = rows.insert(self, release).await?;
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

    fn must_hold_log_lock(&self) -> Result<(), sqlx::Error> {
        if self.holds_log_lock {
            Ok(())
        } else {
            Err(sqlx::Error::Protocol(
                "this log transaction let the log's lock go: it appends no more".into(),
            ))
        }
    }

    /// Lets the log's lock go before the commit, once this transaction's positions are taken; it
    /// then takes no more. `advisory_locks::RELEASED_LOG` is held instead, for `settle`.
    async fn release(&mut self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(advisory_locks::RELEASED_LOG)
            .execute(&mut *self.conn)
            .await?;
        self.unlock_log().await
    }

    async fn unlock_log(&mut self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(advisory_locks::LOG)
            .execute(&mut *self.conn)
            .await?;
        self.holds_log_lock = false;
        Ok(())
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

/// A stream's lock key: every bit of its id folded in, since ids made in one millisecond (UUID
/// version 7) share their first six bytes.
fn stream_key(stream: Uuid) -> i32 {
    let id = stream.as_u128();
    (id ^ (id >> 32) ^ (id >> 64) ^ (id >> 96)) as u32 as i32
}

impl Drop for LogTx {
    fn drop(&mut self) {
        if !self.committed || self.holds_log_lock {
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

    /// Takes the next positions, under the log's lock, and writes the events at them with one
    /// binary COPY, after letting the lock go if `release`. Each event is serialised as its row
    /// is written, while the server stores the chunks before it.
    async fn insert(
        self,
        log: &mut LogTx,
        release: bool,
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
            .fetch_one(&mut *log.conn)
            .await?;
        positions.sort_unstable();
        if release {
            log.release().await?;
        }
        let mut copy = CopyIn::start(
            &mut log.conn,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_made_in_one_millisecond_lock_apart() {
        let ids: Vec<Uuid> = (0..1000).map(|_| Uuid::now_v7()).collect();
        let keys: HashSet<i32> = ids.iter().map(|id| stream_key(*id)).collect();
        // 1,000 random 32-bit keys collide with a chance of about 1 in 10,000.
        assert!(keys.len() >= 999, "{} keys for 1,000 streams", keys.len());
    }
}
