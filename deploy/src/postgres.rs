//! A private PostgreSQL cluster: initdb once into a data directory, then `postgres` as a child.
//! Logins need the generated password of the `postgres` role, kept beside the data directory
//! (`<data_dir>.password`, mode 0600); only TCP on the loopback interface is served. A streaming
//! replica of one (a hot standby, as a cluster's analytics would read) is made the same way.

use crate::process::{die_with_parent, find_binary, free_port, wait_for_port};
use crate::secret::secret_file;
use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct PrivatePostgres {
    child: Child,
    port: u16,
    data_dir: PathBuf,
    password: String,
}

impl PrivatePostgres {
    /// Starts a cluster in `data_dir`, creating it first if it holds none. Data survives restarts.
    /// Call it from a thread that outlives the server (see `die_with_parent`).
    pub fn start(data_dir: &Path) -> Result<Self> {
        let bin_dir = server_bin_dir();
        let owner = ServerUser::for_current_process()?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let data_dir = data_dir.canonicalize()?;
        owner.take(&data_dir)?;
        let created = !data_dir.join("PG_VERSION").exists();
        if created {
            let initdb = find_binary("initdb", &bin_dir)?;
            let mut cmd = Command::new(initdb);
            cmd.arg("-D").arg(&data_dir);
            // Nobody can log in before pg_hba.conf is written below, password only.
            cmd.args(["-U", "postgres", "--auth=reject", "-E", "UTF8", "--no-sync"]);
            let out = owner.apply(&mut cmd).output().context("running initdb")?;
            if !out.status.success() {
                bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        // A cluster made before passwords were used gets one on its next start, as does a cluster
        // whose password file was lost.
        let password_file = data_dir.with_extension("password");
        let (password, made) = secret_file(&password_file)?;
        if created || made {
            set_password(&data_dir, &password, &owner).inspect_err(|_| {
                // Made again, and set, at the next start.
                let _ = std::fs::remove_file(&password_file);
            })?;
        }
        Self::serve(data_dir, password, &owner)
    }

    /// Starts a hot standby of `primary` in `data_dir` (which must not exist yet): a base
    /// backup of it, then `postgres` replaying its WAL as it streams in. Logins are the
    /// primary's, since the roles are replicated. Call it from a thread that outlives the
    /// server, as `start`.
    pub fn start_replica(primary: &PrivatePostgres, data_dir: &Path) -> Result<Self> {
        let owner = ServerUser::for_current_process()?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let data_dir = data_dir.canonicalize()?;
        owner.take(&data_dir)?;
        let mut cmd = Command::new(find_binary("pg_basebackup", &server_bin_dir())?);
        // -R writes standby.signal and the primary's address; the password travels in the
        // environment, which other users cannot read.
        cmd.arg("-D").arg(&data_dir);
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &primary.port.to_string(),
            "-U",
            "postgres",
        ]);
        cmd.args(["-R", "-X", "stream", "--no-sync", "-w"]);
        cmd.env("PGPASSWORD", &primary.password);
        let out = owner
            .apply(&mut cmd)
            .output()
            .context("running pg_basebackup")?;
        if !out.status.success() {
            bail!(
                "pg_basebackup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The standby's own log, not a copy of the primary's.
        let _ = std::fs::remove_file(data_dir.join("server.log"));
        Self::serve(data_dir, primary.password.clone(), &owner)
    }

    /// Serves a cluster's data directory on a free port, password logins only, once it is up.
    fn serve(data_dir: PathBuf, password: String, owner: &ServerUser) -> Result<Self> {
        write_hba(&data_dir, owner)?;
        let port = free_port()?;
        let child = spawn_server(&data_dir, port, owner)?;
        let mut server = PrivatePostgres {
            child,
            port,
            data_dir,
            password,
        };
        server.wait_until_up()?;
        Ok(server)
    }

    /// Starts the stopped cluster again on the port it had, so that its URLs stay valid. Call it
    /// from a thread that outlives the server, as `start`.
    pub fn restart(&mut self) -> Result<()> {
        anyhow::ensure!(
            self.child.try_wait()?.is_some(),
            "postgres is still running"
        );
        let owner = ServerUser::for_current_process()?;
        self.child = spawn_server(&self.data_dir, self.port, &owner)?;
        self.wait_until_up()
    }

    fn wait_until_up(&mut self) -> Result<()> {
        let log_path = self.data_dir.join("server.log");
        wait_for_port(self.port, Duration::from_secs(60), || {
            self.check_alive(&log_path)
        })?;
        self.wait_until_ready()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// Fast shutdown: ends sessions, writes a checkpoint, exits.
    pub fn stop(&mut self) -> Result<()> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().context("waiting for postgres to stop")?;
        Ok(())
    }

    fn check_alive(&mut self, log: &Path) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            bail!("postgres exited ({status}) while starting:\n{tail}");
        }
        Ok(())
    }

    /// The postmaster writes its state on line 8 of postmaster.pid; "ready" means it accepts work.
    fn wait_until_ready(&mut self) -> Result<()> {
        let pid_file = self.data_dir.join("postmaster.pid");
        for _ in 0..1200 {
            let status = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if status.lines().nth(7).map(str::trim) == Some("ready") {
                return Ok(());
            }
            self.check_alive(&self.data_dir.join("server.log"))?;
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("postgres did not become ready within 60 s")
    }
}

/// Sets the `postgres` role's password in single-user mode, before the server listens. The
/// password travels on stdin, never on a command line.
fn set_password(data_dir: &Path, password: &str, owner: &ServerUser) -> Result<()> {
    let mut cmd = Command::new(find_binary("postgres", &server_bin_dir())?);
    cmd.arg("--single").arg("-D").arg(data_dir);
    cmd.args(["-c", "listen_addresses=", "-c", "unix_socket_directories="]);
    cmd.args(["-c", "password_encryption=scram-sha-256", "postgres"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = owner
        .apply(&mut cmd)
        .spawn()
        .context("starting postgres --single")?;
    let statement = format!("ALTER ROLE postgres PASSWORD '{password}';\n");
    std::io::Write::write_all(
        &mut child.stdin.take().expect("stdin is piped"),
        statement.as_bytes(),
    )?;
    let out = child.wait_with_output()?;
    let said = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || said.contains("ERROR") {
        bail!("setting the postgres password failed: {said}");
    }
    Ok(())
}

/// Password (SCRAM) logins over TCP from this machine only; rewritten at every start, so a
/// cluster made with `trust` by an earlier version is closed too.
fn write_hba(data_dir: &Path, owner: &ServerUser) -> Result<()> {
    let path = data_dir.join("pg_hba.conf");
    std::fs::write(
        &path,
        "# Written by prl at every start.\n\
         host all all 127.0.0.1/32 scram-sha-256\n\
         host all all ::1/128 scram-sha-256\n\
         host replication postgres 127.0.0.1/32 scram-sha-256\n",
    )
    .with_context(|| format!("writing {}", path.display()))?;
    owner.take(&path)
}

/// Starts `postgres` on an initialised cluster; its log is the cluster's `server.log`.
fn spawn_server(data_dir: &Path, port: u16, owner: &ServerUser) -> Result<Child> {
    let log_path = data_dir.join("server.log");
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)?;
    owner.take(&log_path)?;
    let mut cmd = Command::new(find_binary("postgres", &server_bin_dir())?);
    cmd.arg("-D").arg(data_dir).arg("-p").arg(port.to_string());
    // TCP only: a socket path inside a deep data directory can exceed the 107-byte limit.
    cmd.args([
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",
    ]);
    cmd.args(["-c", "max_connections=200", "-c", "fsync=on"]);
    // Trajectory ingest writes gigabytes: rarer checkpoints mean fewer full-page images.
    cmd.args(["-c", "max_wal_size=4GB"]);
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    owner.apply(&mut cmd);
    die_with_parent(&mut cmd, libc::SIGINT);
    cmd.spawn().context("starting postgres")
}

/// Debian keeps the server binaries off PATH, in a versioned directory; newest first.
fn server_bin_dir() -> Vec<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    dirs.into_iter().map(|(_, d)| d).collect()
}

/// PostgreSQL refuses to run as root; as root we run it as the `postgres` system user.
struct ServerUser(Option<(u32, u32)>);

impl ServerUser {
    fn for_current_process() -> Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(ServerUser(None));
        }
        // SAFETY: getpwnam returns null or a pointer to static storage that we copy at once.
        let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
        if pw.is_null() {
            bail!(
                "running as root needs a `postgres` user to own the cluster (install postgresql)"
            );
        }
        // SAFETY: checked non-null above.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Ok(ServerUser(Some((uid, gid))))
    }

    fn take(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.0 {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("giving {} to the postgres user", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            if path.is_dir() {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        Ok(())
    }

    fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        if let Some((uid, gid)) = self.0 {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(url: &str) -> bool {
        Command::new("psql")
            .args([url, "-XAtc", "SELECT 1"])
            .env_remove("PGPASSWORD")
            .env("PGPASSFILE", "/dev/null")
            .output()
            .is_ok_and(|out| out.status.success())
    }

    #[test]
    fn only_the_generated_password_logs_in_and_a_lost_one_is_replaced() {
        let dir = std::env::temp_dir().join(format!("prl-pg-password-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut pg = PrivatePostgres::start(&dir.join("pg")).unwrap();
        let url = pg.url("postgres");
        assert!(answers(&url));
        assert!(!answers(&url.replace(&format!(":{}@", pg.password), "@")));
        assert!(!answers(&url.replace(&pg.password, "guess")));
        pg.stop().unwrap();

        // A cluster whose password file is gone (or that predates passwords) gets a new one.
        std::fs::remove_file(dir.join("pg.password")).unwrap();
        let mut again = PrivatePostgres::start(&dir.join("pg")).unwrap();
        assert_ne!(again.password, pg.password);
        assert!(answers(&again.url("postgres")));
        assert!(!answers(
            &url.replace(&pg.port.to_string(), &again.port.to_string())
        ));
        again.stop().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
