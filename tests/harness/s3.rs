//! A real S3-compatible server for a test: s3s-fs (built once from crates.io by
//! `scripts/s3_server.sh`) serving a directory of its own, with generated keys, on a free port.

use prl_artifacts::S3Options;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct S3Server {
    /// `http://HOST:PORT`.
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    child: Child,
}

/// The s3s-fs binary, built on first use.
pub fn s3_server_binary() -> PathBuf {
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/s3_server.sh"
        ))
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "building s3s-fs failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

impl S3Server {
    /// Serves `dir` (made if missing) with one bucket, `prl`, on 127.0.0.1. The server dies with
    /// the calling thread or when this is dropped.
    pub fn start(dir: &Path) -> S3Server {
        S3Server::start_on("127.0.0.1", dir, |command| command)
    }

    /// Serves on `host`; `wrap` may change how it is run (in a network namespace, say).
    pub fn start_on(host: &str, dir: &Path, wrap: impl FnOnce(Command) -> Command) -> S3Server {
        let bucket = "prl".to_owned();
        std::fs::create_dir_all(dir.join(&bucket)).unwrap();
        let port = prl_local_stack::free_port().unwrap();
        let (access_key, secret_key) = (
            format!("key{}", uuid::Uuid::new_v4().simple()),
            format!("secret{}", uuid::Uuid::new_v4().simple()),
        );
        let mut command = Command::new(s3_server_binary());
        command
            .args(["--host", host, "--port", &port.to_string()])
            .args(["--access-key", &access_key, "--secret-key", &secret_key])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut command = wrap(command);
        prl_local_stack::die_with_parent(&mut command, libc::SIGKILL);
        let mut child = command.spawn().expect("starting s3s-fs");
        let address = format!("{host}:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(child.try_wait().unwrap().is_none(), "s3s-fs exited");
            assert!(
                std::time::Instant::now() < deadline,
                "s3s-fs did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server {
            endpoint: format!("http://{address}"),
            access_key,
            secret_key,
            bucket,
            child,
        }
    }

    /// A store under `prefix` of the bucket.
    pub fn store_url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.clone()),
            allow_http: Some(true),
        }
    }

    /// The same, as the `AWS_*` variables a `prl-trainer` process reads.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
