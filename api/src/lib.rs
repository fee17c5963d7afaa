pub mod advisory_locks;
pub mod auth;
pub mod domain;
pub mod error;
pub mod event_log;
pub mod live_feed;
pub mod messaging;
pub mod mlflow;
pub mod projections;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod workflow;

/// The migrations of prl's PostgreSQL schema (`api/migrations/`), embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
