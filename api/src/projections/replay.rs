//! Rebuilding every projection from the log.

use crate::event_log;
use crate::store::{Visibility, read_after};
use sqlx::PgPool;

/// Empties the projections and re-applies the whole log, in one transaction that holds the log
/// lock, so readers see either the old state or the rebuilt one. Returns the events applied.
pub async fn replay(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut log = event_log::begin(pool).await?;
    log.settle().await?;
    // Table names are constants. The strategy rows' versions go too, so that the API reads again
    // every answer it kept from before.
    let truncate = format!(
        "TRUNCATE {}, strategy_versions CASCADE",
        super::TABLES.join(", ")
    );
    sqlx::query(sqlx::AssertSqlSafe(truncate))
        .execute(log.conn())
        .await?;
    let mut position = 0;
    let mut applied = 0;
    loop {
        let batch = read_after(log.conn(), position, 5_000, 64 << 20, Visibility::Locked).await?;
        let Some(last) = batch.last() else { break };
        position = last.position;
        applied += batch.len() as u64;
        super::apply(log.conn(), &batch, &super::PreparedWords::new()).await?;
    }
    log.commit().await?;
    Ok(applied)
}
