//! What every request handler shares.

use crate::telemetry::Metrics;
use prl_bus::Topology;
use secrecy::SecretString;
use sqlx::PgPool;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Where analytics reads go: the read replica (`database.analytics_url`), else `pool`.
    pub analytics: PgPool,
    /// The strategy and comparison answers served, kept while their rows stay unchanged.
    pub answers: Arc<crate::answer_cache::AnswerCache>,
    pub nats: async_nats::Client,
    pub topology: Topology,
    pub token: SecretString,
    pub protect_reads: bool,
    pub body_limit: usize,
    pub import_limit: usize,
    pub max_attempts: u32,
    /// Whether submissions' files are checked here (`files.shared_with_daemons`).
    pub files_shared: bool,
    /// The API's directory (`files.artifact_dir`): uploads wait here while they are hashed.
    pub artifact_dir: std::path::PathBuf,
    /// Where uploaded files go (`store.url`): the store the daemons read.
    pub store: prl_artifacts::ArtifactStore,
    /// Whether daemons read `store`: it was configured, or they share the API's files.
    pub store_reaches_daemons: bool,
    /// The largest artifact one upload may store.
    pub max_artifact_bytes: u64,
    pub metrics: Metrics,
    /// Tells the outbox relay that new events wait.
    pub wake_relay: Arc<Notify>,
    /// Cancelled when the server stops, so that endless responses (the live event stream) end.
    pub shutdown: CancellationToken,
    /// The live event feed that `/events/stream` serves, with its own pool and stream cap.
    pub live: crate::live_feed::LiveFeed,
    /// The background tasks' health, for `/healthz`.
    pub tasks: crate::messaging::supervisor::Tasks,
}
