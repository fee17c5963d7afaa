//! prl's event log: the store, with the read models and the process manager following every
//! append in its transaction.

use crate::projections::{self, PreparedWords};
use crate::store::{Followers, LogTx, StreamAppend};
use crate::workflow;
use futures::future::BoxFuture;
use prl_schema::events::{Event, RecordedEvent};
use sqlx::{PgConnection, PgPool};

struct Prl {
    words: PreparedWords,
}

impl Followers for Prl {
    fn project<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(projections::apply(conn, events, &self.words))
    }

    fn react<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<Vec<StreamAppend>, sqlx::Error>> {
        Box::pin(workflow::react(conn, events))
    }

    /// A run's trajectories and metrics: the bulk of the log. Their rows are the run's, and
    /// nothing follows them. A checkpoint is not among them: a job's expiry reads the newest.
    fn may_release(&self, event: &Event) -> bool {
        matches!(
            event,
            Event::TrajectoriesRecorded { .. } | Event::MetricsReported { .. }
        )
    }
}

/// A transaction on prl's log: it holds the log's lock until it commits, or until its positions
/// are taken if it appends only a run's trajectories and metrics.
pub async fn begin(pool: &PgPool) -> Result<LogTx, sqlx::Error> {
    begin_with_words(pool, PreparedWords::new()).await
}

/// A transaction on prl's log whose trajectory events' words were found before it began (by
/// event id), so that what it does under the lock is only placing them in their filters.
pub async fn begin_with_words(pool: &PgPool, words: PreparedWords) -> Result<LogTx, sqlx::Error> {
    LogTx::begin(pool, Box::new(Prl { words })).await
}
