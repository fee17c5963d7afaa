//! Spawning server processes that cannot outlive the process that started them.

use anyhow::{Context, Result, bail};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Asks the kernel to send `signal` to the child when the spawning thread exits, so that a crashed
/// `prl up` or test run leaves no server behind. Callers spawn from a thread that lives as long as
/// the server should.
pub fn die_with_parent(command: &mut Command, signal: libc::c_int) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free local port")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `port`, or `check` reports the server gone.
pub fn wait_for_port(
    port: u16,
    timeout: Duration,
    mut still_running: impl FnMut() -> Result<()>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        still_running()?;
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listened on port {port} within {timeout:?}")
}

/// Finds `name` in the first of `dirs` that has it, then on PATH.
pub fn find_binary(name: &str, dirs: &[PathBuf]) -> Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.iter()
        .chain(path_dirs.iter())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .with_context(|| {
            format!("`{name}` was not found; install it (deploy/setup.sh does) or put it on PATH")
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
