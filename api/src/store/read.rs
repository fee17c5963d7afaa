//! Reading the log back.

use prl_schema::events::{Event, Metadata, RecordedEvent, StreamType};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

const COLUMNS: &str = "position, stream_type, stream_id, version, event_id, schema_version, event_type, payload, metadata, recorded_at";

/// Which rows a read may return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Only rows below the oldest running transaction: what a tailing reader must use.
    Settled,
    /// Every visible row: for readers that hold the log lock and have waited for the appends
    /// that let it go early (`LogTx::settle`), such as replay.
    Locked,
}

/// Up to `limit` events after `position`, in log order, and no more of them than fit in
/// `max_bytes` of payload text (always at least one, however large).
///
/// Appends take their positions in the order of their transaction ids, but may commit out of
/// that order (see `LogTx`). Reading below `pg_snapshot_xmin` keeps out every row of a
/// transaction still in flight, and with it every later position, which a tailing reader would
/// otherwise skip for good; so does it a writer that bypassed the lock, such as a hand-run INSERT.
pub async fn read_after(
    conn: &mut PgConnection,
    position: i64,
    limit: i64,
    max_bytes: i64,
    visibility: Visibility,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    let settled = match visibility {
        Visibility::Settled => "AND tx_id < pg_snapshot_xmin(pg_current_snapshot())",
        Visibility::Locked => "",
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM (
             SELECT *, sum(octet_length(payload::text)) OVER (ORDER BY position) AS through
             FROM (SELECT * FROM events WHERE position > $1 {settled}
                   ORDER BY position LIMIT $2) page
         ) sized
         WHERE through - octet_length(payload::text) < $3
         ORDER BY position"
    );
    // Built from constants only.
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(position)
        .bind(limit)
        .bind(max_bytes)
        .fetch_all(conn)
        .await?;
    rows.iter().map(decode).collect()
}

/// The recorded events with the given ids, in log order.
pub async fn read_recorded(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE event_id = ANY($1) ORDER BY position");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(conn)
        .await?;
    rows.iter().map(decode).collect()
}

fn decode(row: &PgRow) -> Result<RecordedEvent, sqlx::Error> {
    let stream_type: String = row.get(1);
    let event_type: String = row.get(6);
    let corrupt = |what: String| sqlx::Error::Decode(what.into());
    let stream_type: StreamType = serde_json::from_value(serde_json::Value::String(stream_type))
        .map_err(|e| corrupt(format!("stream type: {e}")))?;
    let event = Event::from_parts(&event_type, row.get(7))
        .map_err(|e| corrupt(format!("event {event_type}: {e}")))?;
    let metadata: Metadata =
        serde_json::from_value(row.get(8)).map_err(|e| corrupt(format!("metadata: {e}")))?;
    Ok(RecordedEvent {
        position: row.get(0),
        stream_type,
        stream_id: row.get(2),
        version: row.get(3),
        event_id: row.get(4),
        schema_version: row.get(5),
        event,
        metadata,
        recorded_at: row.get(9),
    })
}
