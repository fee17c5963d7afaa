//! A private nats-server with JetStream, storing its streams in a project-local directory.

use crate::process::{die_with_parent, find_binary, free_port, wait_for_port};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct PrivateNats {
    child: Child,
    port: u16,
}

impl PrivateNats {
    /// Starts nats-server with JetStream storing into `store_dir`; streams survive restarts.
    /// Call it from a thread that outlives the server (see `die_with_parent`).
    pub fn start(store_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(store_dir)
            .with_context(|| format!("creating {}", store_dir.display()))?;
        let port = free_port()?;
        let binary = find_binary("nats-server", &[PathBuf::from("/usr/sbin")])?;
        let log = std::fs::File::create(store_dir.join("server.log"))?;
        let mut cmd = Command::new(binary);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store_dir);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd, libc::SIGTERM);
        let child = cmd.spawn().context("starting nats-server")?;
        let mut server = PrivateNats { child, port };
        let log_path = store_dir.join("server.log");
        wait_for_port(port, Duration::from_secs(30), || {
            if let Some(status) = server.child.try_wait()? {
                let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("nats-server exited ({status}) while starting:\n{tail}");
            }
            Ok(())
        })?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn stop(mut self) -> Result<()> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child
            .wait()
            .context("waiting for nats-server to stop")?;
        Ok(())
    }
}
