//! The integration-test harness: real PostgreSQL and NATS (private ones unless DATABASE_URL and
//! NATS_URL are given), a fresh database and NATS namespace per test, and the API on a free port.

mod servers;
mod test_app;

pub use test_app::{Daemon, FakeWorker, TOKEN, TestApp, quick_spec};
