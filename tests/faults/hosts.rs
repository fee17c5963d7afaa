//! Several hosts: the API, PostgreSQL, nats-server and an S3-compatible server (s3s-fs) on this
//! machine's own namespace, trainer daemons as `prl-trainer` processes on two hosts of their own
//! (`network.rs`), each with its own data directory, sharing only NATS and the bucket.

use crate::audit::{Audit, Tap};
use crate::network::Network;
use crate::{GROUP, LEASE_SECONDS, PROMPTS, TempDir};
use prl_integration_tests::{S3Server, Servers, TestApp, training_turn};
use prl_local_stack::{PrivatePostgres, die_with_parent};
use prl_schema::jobs::CheckpointRef;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const SFT_STEPS: u64 = 24;
const RL_STEPS: u64 = 4;

/// nats-server with JetStream on `address`, where the other hosts reach it.
struct NatsOn(Child);

impl NatsOn {
    fn start(address: &str, dir: &Path) -> (NatsOn, String) {
        let port = prl_local_stack::free_port().unwrap();
        let log = std::fs::File::create(dir.join("nats.log")).unwrap();
        let mut command = std::process::Command::new("nats-server");
        command
            .args(["-js", "-a", address, "-p", &port.to_string(), "-sd"])
            .arg(dir.join("nats"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        die_with_parent(&mut command, libc::SIGKILL);
        let child = command.spawn().expect("starting nats-server");
        let address = format!("{address}:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        (NatsOn(child), format!("nats://{address}"))
    }
}

impl Drop for NatsOn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon on host `n`: `host-<n>`, labelled `host=<n>`, its data under `dir/host-<n>`.
struct HostDaemon(Child);

impl HostDaemon {
    fn start(network: &Network, n: usize, app: &TestApp, s3: &S3Server, dir: &Path) -> HostDaemon {
        let binary = prl_integration_tests::workspace_binary("prl-trainer");
        let data_dir = host_dir(dir, n);
        let log = std::fs::File::create(dir.join(format!("host-{n}.log"))).unwrap();
        let mut command = network.command_on(n, &binary);
        command
            .env("NATS_URL", &app.nats_url)
            .env("PRL_NATS__NAMESPACE", &app.namespace)
            .envs(s3.env())
            .args(["--worker-id", &format!("host-{n}"), "--label"])
            .arg(format!("host={n}"))
            .args(["--device", "cpu", "--threads", "1", "--heartbeat-ms", "300"])
            .args(["--store", &s3.store_url("runs")])
            .arg("--data-dir")
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        die_with_parent(&mut command, libc::SIGKILL);
        HostDaemon(command.spawn().expect("starting prl-trainer on its host"))
    }

    /// SIGKILL: the host's work is lost, whatever it was doing.
    fn kill_9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for HostDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn host_dir(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("host-{n}"))
}

/// Cold-start SFT, then RL from its final checkpoint on host 1 only.
fn spec() -> Value {
    json!({
        "name": "across hosts", "model": "tiny",
        "stages": [
            {"kind": "sft", "name": "sft", "dataset": "builtin:easy", "attention": "unseen",
             "learning_rate": 1e-3, "max_steps": SFT_STEPS, "batch_size": 8, "checkpoint_every": 4},
            {"kind": "rl", "name": "rl", "dataset": "builtin:hard", "attention": "unseen",
             "reward": "s2", "learning_rate": 1e-4, "steps": RL_STEPS,
             "prompts_per_step": PROMPTS, "group_size": GROUP, "mini_batch_size": PROMPTS * GROUP,
             "dynamic_sampling": false, "max_response_tokens": 48, "max_path_tokens": 16,
             "resources": {"labels": {"host": "1"}}}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sft_daemon_killed_on_one_host_is_resumed_on_another_from_the_bucket() {
    let _turn = training_turn().await;
    let dir = TempDir::new("hosts");
    let network = Network::new(2);
    let server = network.own_address();
    let postgres = PrivatePostgres::start(&dir.0.join("postgres")).expect("starting postgres");
    let (_nats, nats_url) = NatsOn::start(&server, &dir.0);
    let s3 = S3Server::start_on(&server, &dir.0.join("s3"), |c| c);
    let servers = Servers {
        admin_database_url: postgres.url("postgres"),
        nats_url,
    };
    let app = TestApp::spawn_on(&servers, |s| s.jobs.lease_seconds = LEASE_SECONDS).await;
    let tap = Tap::start(&app).await;

    let first = HostDaemon::start(&network, 1, &app, &s3, &dir.0);
    let id = app.submit(&spec()).await;
    // Killed after it recorded a checkpoint, and a step past it.
    app.wait_for_count(
        "SELECT count(*) FROM checkpoints",
        1,
        Duration::from_secs(300),
    )
    .await;
    app.wait_for_count(
        "SELECT coalesce(max(step), 0) FROM run_metrics",
        5,
        Duration::from_secs(300),
    )
    .await;
    first.kill_9();
    let _second = HostDaemon::start(&network, 2, &app, &s3, &dir.0);

    // Host 2 finishes the SFT stage; the RL stage needs host 1, which is gone: it waits, saying
    // why.
    let deadline = Instant::now() + Duration::from_secs(300);
    let why = loop {
        let detail = app.experiment(id).await;
        let rl = detail["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["stage_idx"] == 1);
        if let Some(why) = rl.and_then(|j| j["waiting"].as_str()) {
            break why.to_owned();
        }
        assert!(Instant::now() < deadline, "{detail:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(why.contains("host-2: its label host is 2, not 1"), "{why}");
    let _first_again = HostDaemon::start(&network, 1, &app, &s3, &dir.0);

    let sft = Audit::of_stage(&app, &tap, id, 0, SFT_STEPS, 0).await;
    sft.print("the SFT stage's host killed with SIGKILL, resumed on another");
    sft.assert_clean(2);
    let rl = Audit::of_stage(&app, &tap, id, 1, RL_STEPS, PROMPTS * GROUP).await;
    rl.print("the RL stage on the first host, from a checkpoint written on the second");
    rl.assert_clean(1);

    // Attempt 2 went on from the newest checkpoint the log had, in the bucket.
    let resumed = app
        .second_attempt_resumed_from("s3://prl/runs/checkpoints/")
        .await;
    let detail = app.experiment(id).await;
    let worker = |stage: i64| {
        detail["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["stage_idx"] == stage)
            .unwrap()["worker_id"]
            .clone()
    };
    assert_eq!((worker(0), worker(1)), (json!("host-2"), json!("host-1")));
    // Host 2 fetched what it resumed from; host 1 fetched the SFT stage's final checkpoint,
    // which host 2 wrote; each is checked against the recorded hash.
    let key = |c: &CheckpointRef| c.uri.strip_prefix("s3://prl/runs/").unwrap().to_owned();
    let host2 = host_dir(&dir.0, 2).canonicalize().unwrap();
    prl_artifacts::verify_local(&host2.join(key(&resumed)), &resumed.sha256).unwrap();
    let input: CheckpointRef = serde_json::from_value(
        sqlx::query_scalar(
            "SELECT payload->'input_checkpoint' FROM events e JOIN jobs j ON j.id = e.stream_id
             WHERE e.event_type = 'JobQueued' AND j.stage_idx = 1",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(input.step, SFT_STEPS);
    let host1 = host_dir(&dir.0, 1).canonicalize().unwrap();
    prl_artifacts::verify_local(&host1.join(key(&input)), &input.sha256).unwrap();
}
