pub mod advisory_locks;
pub mod answer_cache;
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

/// Every process that runs the API allocates through mimalloc. With glibc's allocator the
/// ingester's large, short-lived buffers (worker messages of ~100 KB, their decoded batches, the
/// COPY data) were returned to the kernel and faulted back in, zeroed, over and over: page
/// clearing and malloc bookkeeping were half of the API's CPU at 50,000 trajectories/s.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The migrations of prl's PostgreSQL schema (`api/migrations/`), embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
