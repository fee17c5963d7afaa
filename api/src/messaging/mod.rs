//! The API's NATS workers: the outbox relay, the worker-event ingester, the lease monitor and the
//! job reconciler.

pub mod ingest;
pub mod leases;
pub mod reconciler;
pub mod relay;
pub mod supervisor;

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Sleeps for `period`; true if shutdown was asked for meanwhile.
pub async fn pause(shutdown: &CancellationToken, period: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(period) => false,
    }
}
