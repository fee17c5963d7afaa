//! Integration tests against real PostgreSQL and NATS JetStream. One binary; each test gets its
//! own database and NATS namespace.

mod analytics;
mod artifacts;
mod auth;
mod cancel;
mod datasets;
mod endpoints;
mod evaluation;
mod follow;
mod hostile;
mod imports;
mod ingest;
mod leases;
mod listing;
mod live_runs;
mod log_order;
mod mlflow;
mod outbox;
mod replay;
mod rl;
mod sft;
mod smollm2;
mod specs;
mod submission;
mod suite;
mod verl;
mod workers;
