//! `prl up` as a user runs it: a trainer daemon killed with SIGKILL is started again, and SIGTERM
//! stops the whole stack.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A binary of the workspace, built beside the test binaries by `cargo test --workspace`.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().with_file_name(name);
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --bins`",
        binary.display()
    );
    binary
}

/// The pids of `pid`'s children, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn command_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}

/// Waits for a child of `parent` running `prl-trainer`, other than `not`.
fn wait_for_trainer(parent: u32, not: Option<u32>) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = children(parent)
            .into_iter()
            .find(|&p| Some(p) != not && command_of(p).contains("prl-trainer"))
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no trainer daemon under prl up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn prl_up_restarts_a_trainer_killed_with_sigkill_and_stops_on_sigterm() {
    let home = super::TempDir::new("up");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut up = Command::new(workspace_binary("prl"))
        .arg("--home")
        .arg(&home.0)
        .args(["up", "--trainers", "1", "--port", &port.to_string()])
        .env_remove("DATABASE_URL")
        .env_remove("NATS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting prl up");
    // Read as it comes, on a thread of its own: a daemon that outlived prl up would hold the
    // pipe open, and the test must fail on that rather than wait for the end of the pipe.
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let lines = BufReader::new(up.stderr.take().unwrap()).lines();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let first = wait_for_trainer(up.id(), None);
    Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap();
    let second = wait_for_trainer(up.id(), Some(first));
    assert_ne!(first, second);

    Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "prl up did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !std::path::Path::new(&format!("/proc/{second}")).exists() || command_of(second).is_empty(),
        "the restarted trainer outlived prl up"
    );
    std::thread::sleep(Duration::from_millis(200));
    let log = log.lock().unwrap().clone();
    assert!(status.success(), "prl up exited with {status}: {log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("trainer 0 exited") && l.contains("starting it again")),
        "{log:#?}"
    );
}
