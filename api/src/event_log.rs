//! prl's event log: the store, with the read models and the process manager following every
//! append in its transaction.

use crate::projections::{self, PreparedWords};
use crate::store::{Followers, LogTx, StreamAppend};
use crate::workflow;
use futures::future::BoxFuture;
use prl_schema::events::{Event, RecordedEvent, StreamType};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

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

    /// A job's run: its row takes the job's status, worker and checkpoint (a heartbeat moves
    /// only the lease). A tracked run's: its row takes the status its experiment's stream sets.
    fn rows_written_elsewhere<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        appends: &'a [StreamAppend],
    ) -> BoxFuture<'a, Result<Vec<Uuid>, sqlx::Error>> {
        Box::pin(async move {
            let mut runs = Vec::new();
            let mut jobs = Vec::new();
            let mut tracked = Vec::new();
            for append in appends {
                for new in &append.events {
                    match &new.event {
                        Event::JobQueued { run_id, .. } => runs.push(run_id.0),
                        Event::JobLeaseExtended { .. } => {}
                        Event::TrackedRunUpdated { .. } => tracked.push(append.stream_id),
                        event if event.stream_type() == StreamType::Job => {
                            jobs.push(append.stream_id)
                        }
                        _ => {}
                    }
                }
            }
            if !jobs.is_empty() {
                runs.extend(
                    sqlx::query_scalar!("SELECT run_id FROM jobs WHERE id = ANY($1)", &jobs)
                        .fetch_all(&mut *conn)
                        .await?,
                );
            }
            if !tracked.is_empty() {
                runs.extend(
                    sqlx::query_scalar!(
                        "SELECT run_id FROM tracked_runs WHERE experiment_id = ANY($1)",
                        &tracked
                    )
                    .fetch_all(&mut *conn)
                    .await?,
                );
            }
            Ok(runs)
        })
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
