//! A private nats-server with JetStream, storing its streams in a project-local directory. Clients
//! log in as user `prl` with a generated password, which the server's configuration
//! (`<store_dir>.conf`) and the URL of `url` carry; the file is readable by this user only.

use crate::process::{die_with_parent, find_binary, free_port, wait_for_port};
use crate::secret::{secret_file, write_private};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct PrivateNats {
    child: Child,
    port: u16,
    store_dir: PathBuf,
    password: String,
}

impl PrivateNats {
    /// Starts nats-server with JetStream storing into `store_dir`; streams survive restarts.
    /// Call it from a thread that outlives the server (see `die_with_parent`).
    pub fn start(store_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(store_dir)
            .with_context(|| format!("creating {}", store_dir.display()))?;
        let (password, _) = secret_file(&store_dir.with_extension("password"))?;
        write_config(store_dir, &password)?;
        let port = free_port()?;
        let mut server = PrivateNats {
            child: spawn_server(store_dir, port)?,
            port,
            store_dir: store_dir.to_owned(),
            password,
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
        format!("nats://{USER}:{}@127.0.0.1:{}", self.password, self.port)
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

/// The one user of a private server.
const USER: &str = "prl";

/// The server's configuration: only the login; everything else is on its command line.
fn write_config(store_dir: &Path, password: &str) -> Result<()> {
    let path = store_dir.with_extension("conf");
    let config = format!("authorization {{\n  user: \"{USER}\"\n  password: \"{password}\"\n}}\n");
    write_private(&path, config.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

fn spawn_server(store_dir: &Path, port: u16) -> Result<Child> {
    let binary = find_binary("nats-server", &[PathBuf::from("/usr/sbin")])?;
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(store_dir.join("server.log"))?;
    let mut cmd = Command::new(binary);
    cmd.arg("-c").arg(store_dir.with_extension("conf"));
    cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store_dir);
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    die_with_parent(&mut cmd, libc::SIGTERM);
    cmd.spawn().context("starting nats-server")
}
