//! A private nats-server with JetStream, storing its streams in a project-local directory.

use crate::process::{die_with_parent, find_binary, free_port, wait_for_port};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct PrivateNats {
    child: Child,
    port: u16,
    store_dir: PathBuf,
}

impl PrivateNats {
    /// Starts nats-server with JetStream storing into `store_dir`; streams survive restarts.
    /// Call it from a thread that outlives the server (see `die_with_parent`).
    pub fn start(store_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(store_dir)
            .with_context(|| format!("creating {}", store_dir.display()))?;
        let port = free_port()?;
        let mut server = PrivateNats {
            child: spawn_server(store_dir, port)?,
            port,
            store_dir: store_dir.to_owned(),
        };
        server.wait_until_up()?;
        Ok(server)
    }

    /// Starts the stopped server again on the port it had, with the streams it stored. Call it
    /// from a thread that outlives the server, as `start`.
    pub fn restart(&mut self) -> Result<()> {
        anyhow::ensure!(
            self.child.try_wait()?.is_some(),
            "nats-server is still running"
        );
        self.child = spawn_server(&self.store_dir, self.port)?;
        self.wait_until_up()
    }

    fn wait_until_up(&mut self) -> Result<()> {
        let log_path = self.store_dir.join("server.log");
        wait_for_port(self.port, Duration::from_secs(30), || {
            if let Some(status) = self.child.try_wait()? {
                let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("nats-server exited ({status}) while starting:\n{tail}");
            }
            Ok(())
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) -> Result<()> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child
            .wait()
            .context("waiting for nats-server to stop")?;
        Ok(())
    }
}

fn spawn_server(store_dir: &Path, port: u16) -> Result<Child> {
    let binary = find_binary("nats-server", &[PathBuf::from("/usr/sbin")])?;
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(store_dir.join("server.log"))?;
    let mut cmd = Command::new(binary);
    cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store_dir);
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    die_with_parent(&mut cmd, libc::SIGTERM);
    cmd.spawn().context("starting nats-server")
}
