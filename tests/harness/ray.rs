//! A real Ray head for a test: `ray start --head` from the pinned `ray` venv
//! (`scripts/requirements-ray.txt`), on free ports, with its dashboard's Jobs API on 127.0.0.1.
//! Stopped with `ray stop` when dropped.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub struct RayHead {
    /// The dashboard, `http://127.0.0.1:PORT`: Ray's Jobs REST API.
    pub address: String,
    /// The venv's Python, which the head runs job entrypoints with.
    pub python: PathBuf,
    bin: PathBuf,
    /// Ray's session files and logs.
    temp: PathBuf,
}

impl RayHead {
    /// Starts a head with `cpus` CPUs and waits for its Jobs API (a minute or so the first time,
    /// while the venv is made).
    pub async fn start(cpus: u32) -> RayHead {
        let head = tokio::task::spawn_blocking(move || RayHead::launch(cpus))
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        loop {
            let up = reqwest::get(format!("{}/api/version", head.address))
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return head;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Ray's dashboard did not answer at {}",
                head.address
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn launch(cpus: u32) -> RayHead {
        let python = crate::python_of("ray");
        let bin = python.parent().unwrap().to_owned();
        let port = || prl_local_stack::free_port().unwrap().to_string();
        let dashboard = port();
        let temp = std::env::temp_dir().join(format!("prl-ray-{}", std::process::id()));
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let status = Command::new(bin.join("ray"))
            .args(["start", "--head", "--disable-usage-stats"])
            .args(["--port", &port(), "--ray-client-server-port", &port()])
            .args([
                "--dashboard-host",
                "127.0.0.1",
                "--dashboard-port",
                &dashboard,
            ])
            .args(["--dashboard-agent-listen-port", &port()])
            .args(["--num-cpus", &cpus.to_string(), "--num-gpus", "0"])
            .arg(format!("--temp-dir={}", temp.display()))
            .env("PATH", path)
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .status()
            .expect("running ray start");
        assert!(status.success(), "ray start failed");
        RayHead {
            address: format!("http://127.0.0.1:{dashboard}"),
            python,
            bin,
            temp,
        }
    }
}

impl Drop for RayHead {
    fn drop(&mut self) {
        let _ = Command::new(self.bin.join("ray"))
            .args(["stop", "--force"])
            .status();
        let _ = std::fs::remove_dir_all(&self.temp);
    }
}
