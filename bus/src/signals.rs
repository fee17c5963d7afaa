//! The signals that stop the API and the daemons gracefully: SIGINT (Ctrl-C) and SIGTERM (what
//! `kill`, systemd and container runtimes send).

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `stop` when the process receives SIGINT or SIGTERM.
pub fn cancel_on_signal(stop: CancellationToken) {
    tokio::spawn(async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::error!("cannot listen for SIGINT and SIGTERM");
            return;
        };
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        }
        stop.cancel();
    });
}
