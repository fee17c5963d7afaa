//! The shared contract of prl: SQL migrations, the experiment spec, events and job messages.
//! It knows nothing about HTTP or NATS: subjects and routes live in the crates that speak them.

pub mod analysis;
pub mod datasets;
pub mod dumps;
pub mod estimators;
pub mod events;
pub mod ids;
pub mod jobs;
pub mod parallel;
pub mod reward;
pub mod spec;
pub mod trajectory;
pub mod verl;

/// The migrations of prl's PostgreSQL schema, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
