//! The servers a test run talks to, started once per test binary.

use prl_local_stack::{PrivateNats, PrivatePostgres};
use std::sync::OnceLock;

pub struct Servers {
    /// A URL of the `postgres` database, from which test databases are made.
    pub admin_database_url: String,
    pub nats_url: String,
}

static SERVERS: OnceLock<Servers> = OnceLock::new();

/// The given servers (DATABASE_URL and NATS_URL), or private ones started now.
pub fn servers() -> &'static Servers {
    SERVERS.get_or_init(|| {
        let given_db = std::env::var("DATABASE_URL").ok();
        let given_nats = std::env::var("NATS_URL").ok();
        if let (Some(db), Some(nats)) = (&given_db, &given_nats) {
            return Servers {
                admin_database_url: db.clone(),
                nats_url: nats.clone(),
            };
        }
        let dir = std::env::temp_dir().join(format!("prl-test-stack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        remove_stale_stacks();
        let (tx, rx) = std::sync::mpsc::channel();
        // Test threads come and go; the servers die with the thread that spawned them, so that
        // thread must live as long as the test binary.
        std::thread::spawn(move || {
            let pg = given_db.map(Ok).unwrap_or_else(|| {
                PrivatePostgres::start(&dir.join("postgres")).map(|pg| {
                    let url = pg.url("postgres");
                    std::mem::forget(pg);
                    url
                })
            });
            let nats = given_nats.map(Ok).unwrap_or_else(|| {
                PrivateNats::start(&dir.join("nats")).map(|n| {
                    let url = n.url();
                    std::mem::forget(n);
                    url
                })
            });
            tx.send(pg.and_then(|pg| nats.map(|n| (pg, n))))
                .expect("the test binary waits");
            loop {
                std::thread::park();
            }
        });
        let (admin_database_url, nats_url) = rx
            .recv()
            .expect("server thread")
            .expect("starting test servers");
        Servers {
            admin_database_url,
            nats_url,
        }
    })
}

/// Removes the directories of earlier test runs whose process is gone.
fn remove_stale_stacks() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix("prl-test-stack-")
            .and_then(|p| p.parse::<u32>().ok())
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
