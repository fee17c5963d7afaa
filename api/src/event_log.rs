//! prl's event log: the store, with the read models and the process manager following every
//! append in its transaction.

use crate::store::{Followers, LogTx, StreamAppend};
use crate::{projections, workflow};
use futures::future::BoxFuture;
use prl_schema::events::RecordedEvent;
use sqlx::{PgConnection, PgPool};

struct Prl;

impl Followers for Prl {
    fn project<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(projections::apply(conn, events))
    }

    fn react<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<Vec<StreamAppend>, sqlx::Error>> {
        Box::pin(workflow::react(conn, events))
    }
}

/// A transaction on prl's log: it holds the log's lock until it commits.
pub async fn begin(pool: &PgPool) -> Result<LogTx, sqlx::Error> {
    LogTx::begin(pool, &Prl).await
}
