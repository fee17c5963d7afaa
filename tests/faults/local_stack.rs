//! `prl up` as a user runs it: a trainer daemon killed with SIGKILL is started again, SIGTERM
//! stops the whole stack, and its servers let in only who holds the secrets it generated.

use prl_integration_tests::workspace_binary;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// `prl up` running on `home`, its standard error collected as it comes.
struct Up {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Up {
    fn start(home: &Path) -> Up {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(workspace_binary("prl"))
            .arg("--home")
            .arg(home)
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
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Up { child, log }
    }

    /// The stack file, once the stack is up.
    fn wait_until_up(&mut self, home: &Path) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(text) = std::fs::read_to_string(home.join("stack.json")) {
                return serde_json::from_str(&text).unwrap();
            }
            let exited = self.child.try_wait().unwrap();
            assert!(exited.is_none(), "prl up exited: {:#?}", self.log());
            assert!(Instant::now() < deadline, "prl up did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then the exit status.
    fn stop(&mut self) -> ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "prl up did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

#[test]
fn prl_up_restarts_a_trainer_killed_with_sigkill_and_stops_on_sigterm() {
    let home = super::TempDir::new("up");
    let mut up = Up::start(&home.0);
    let first = wait_for_trainer(up.child.id(), None);
    Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap();
    let second = wait_for_trainer(up.child.id(), Some(first));
    assert_ne!(first, second);

    let status = up.stop();
    assert!(
        !Path::new(&format!("/proc/{second}")).exists() || command_of(second).is_empty(),
        "the restarted trainer outlived prl up"
    );
    std::thread::sleep(Duration::from_millis(200));
    let log = up.log();
    assert!(status.success(), "prl up exited with {status}: {log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("trainer 0 exited") && l.contains("starting it again")),
        "{log:#?}"
    );
}

/// psql on `url` with `sql`, with no password but the one in the URL.
fn psql(url: &str, sql: &str) -> Output {
    Command::new("psql")
        .args([url, "-XAtc", sql])
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", "/dev/null")
        .output()
        .expect("psql runs")
}

/// What nats-server answers a client that logs in as `user` (none: anonymously) and pings.
fn nats_answer(address: &str, user: Option<(&str, &str)>) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut info = String::new();
    reader.read_line(&mut info).unwrap();
    assert!(info.starts_with("INFO "), "{info}");
    let login = match user {
        Some((user, password)) => {
            serde_json::json!({ "verbose": false, "user": user, "pass": password })
        }
        None => serde_json::json!({ "verbose": false }),
    };
    write!(stream, "CONNECT {login}\r\nPING\r\n").unwrap();
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    answer
}

#[test]
fn prl_up_lets_in_only_who_holds_its_generated_secrets() {
    let home = super::TempDir::new("up-secrets");
    let mut up = Up::start(&home.0);
    let stack = up.wait_until_up(&home.0);
    use std::os::unix::fs::PermissionsExt;
    for file in [
        "token",
        "stack.json",
        "postgres.password",
        "analyst.password",
        "nats.password",
        "nats.conf",
    ] {
        let mode = std::fs::metadata(home.0.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    // PostgreSQL: the service's password lets in, no password does not.
    let database = url::Url::parse(stack["database_url"].as_str().unwrap()).unwrap();
    assert!(database.password().is_some_and(|p| p.len() >= 32));
    let mut anonymous = database.clone();
    anonymous.set_password(None).unwrap();
    let refused = psql(anonymous.as_str(), "SELECT 1");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("password"),
        "{refused:?}"
    );
    assert_eq!(psql(database.as_str(), "SELECT 1").stdout, b"1\n");
    // The analyst comes in through `prl psql`, with the password the stack gave it.
    let analyst = || {
        Command::new(workspace_binary("prl"))
            .arg("--home")
            .arg(&home.0)
            .args(["psql", "--", "-XAtc", "SELECT current_user"])
            .env_remove("DATABASE_URL")
            .env_remove("PGPASSWORD")
            .env("PGPASSFILE", "/dev/null")
            .output()
            .unwrap()
    };
    let analyst_session = analyst();
    assert_eq!(
        String::from_utf8_lossy(&analyst_session.stdout),
        "prl_analyst\n",
        "{analyst_session:?}"
    );

    // NATS: its user and password let in, nobody else.
    let nats = url::Url::parse(stack["nats_url"].as_str().unwrap()).unwrap();
    let address = format!("{}:{}", nats.host_str().unwrap(), nats.port().unwrap());
    let anonymous = nats_answer(&address, None);
    assert!(anonymous.contains("Authorization Violation"), "{anonymous}");
    let wrong = nats_answer(&address, Some((nats.username(), "guess")));
    assert!(wrong.contains("Authorization Violation"), "{wrong}");
    let user = (nats.username(), nats.password().unwrap());
    assert_eq!(nats_answer(&address, Some(user)).trim(), "PONG");

    // Started again on the same data, the stack keeps its passwords.
    assert!(up.stop().success(), "{:#?}", up.log());
    let mut again = Up::start(&home.0);
    let restarted = again.wait_until_up(&home.0);
    let kept = url::Url::parse(restarted["database_url"].as_str().unwrap()).unwrap();
    assert_eq!(kept.password(), database.password());
    assert_eq!(analyst().stdout, b"prl_analyst\n");
    assert!(again.stop().success(), "{:#?}", again.log());
}
