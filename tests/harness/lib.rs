//! The integration-test harness: real PostgreSQL and NATS (private ones unless DATABASE_URL and
//! NATS_URL are given), a fresh database and NATS namespace per test, and the API on a free port.

mod publish;
mod ray;
mod s3;
pub mod seeds;
mod servers;
mod test_app;
mod verl_fixture;

pub use publish::{Ingested, publish_acked, publish_until};
pub use ray::RayHead;
pub use s3::{S3Server, s3_server_binary};
pub use servers::{Servers, servers};
pub use test_app::{Daemon, FakeWorker, TOKEN, TestApp, quick_spec};
pub use verl_fixture::{VerlFixtureRow, write_verl_parquet};

/// A binary of the workspace, built beside the test binaries by `cargo test --workspace`.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().with_file_name(name);
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --bins`",
        binary.display()
    );
    binary
}

/// The Python of a pinned venv (`scripts/python_venv.sh NAME`, made on first use): the real
/// clients and tools prl is tested against.
pub fn python_of(venv: &str) -> std::path::PathBuf {
    let out = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/python_venv.sh"
        ))
        .arg(venv)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "making the {venv} venv: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::path::Path::new(String::from_utf8(out.stdout).unwrap().trim()).join("bin/python")
}

/// Held by every test that trains a model: two trainings at once on a small machine each run
/// several times slower, so they take turns.
pub async fn training_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}
