//! Fault injection: a real RL job of the tiny model runs while a server it depends on is stopped
//! and started again, then an audit checks that nothing was lost, nothing counted twice, and no
//! attempt was burnt. Each scenario has its own PostgreSQL cluster and nats-server, so stopping
//! them touches no other test.

mod audit;
mod cluster;
mod hosts;
mod local_stack;
mod network;

use audit::{Audit, Tap};
use cluster::NatsCluster;
use prl_api::settings::Settings;
use prl_bus::Lane;
use prl_integration_tests::{Servers, TestApp, training_turn};
use prl_local_stack::{PrivateNats, PrivatePostgres};
use secrecy::ExposeSecret;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const STEPS: u64 = 30;
const PROMPTS: u64 = 4;
const GROUP: u64 = 4;
const LEASE_SECONDS: u64 = 4;

/// Servers of one scenario, started on the test's own thread: they die with the thread that
/// started them, and the test stops and starts them from there.
struct OwnServers {
    postgres: PrivatePostgres,
    nats: PrivateNats,
    _dir: TempDir,
}

impl OwnServers {
    fn start(name: &str) -> OwnServers {
        let dir = TempDir::new(name);
        OwnServers {
            postgres: PrivatePostgres::start(&dir.0.join("postgres")).expect("starting postgres"),
            nats: PrivateNats::start(&dir.0.join("nats")).expect("starting nats-server"),
            _dir: dir,
        }
    }

    fn servers(&self) -> Servers {
        Servers {
            admin_database_url: self.postgres.url("postgres"),
            nats_url: self.nats.url(),
        }
    }
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("prl-faults-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An RL job long enough to be mid-way when a fault comes: the untrained tiny model, every group
/// kept (no dynamic sampling), so each step records exactly `PROMPTS * GROUP` trajectories.
fn rl_spec(name: &str, steps: u64) -> serde_json::Value {
    serde_json::json!({
        "name": name, "model": "tiny",
        "stages": [{
            "kind": "rl", "name": "rl", "dataset": "builtin:hard", "attention": "unseen",
            "reward": "s2", "learning_rate": 1e-4, "steps": steps,
            "prompts_per_step": PROMPTS, "group_size": GROUP, "mini_batch_size": PROMPTS * GROUP,
            "dynamic_sampling": false, "max_response_tokens": 48, "max_path_tokens": 16,
            "checkpoint_every": 4
        }]
    })
}

async fn spawn_app(own: &OwnServers) -> TestApp {
    TestApp::spawn_on(&own.servers(), |s| {
        s.jobs.lease_seconds = LEASE_SECONDS;
    })
    .await
}

/// A trainer daemon in a process of its own, so that the test can kill it with SIGKILL.
struct TrainerProcess(Child);

impl TrainerProcess {
    fn start(app: &TestApp, worker_id: &str) -> TrainerProcess {
        let binary = prl_integration_tests::workspace_binary("prl-trainer");
        let child = Command::new(binary)
            .env("NATS_URL", &app.nats_url)
            .env("PRL_NATS__NAMESPACE", &app.namespace)
            .env("PRL_NATS__REPLICAS", app.replicas.to_string())
            .args([
                "--worker-id",
                worker_id,
                "--threads",
                "1",
                "--heartbeat-ms",
                "300",
            ])
            .arg("--data-dir")
            .arg(&app.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting prl-trainer");
        TrainerProcess(child)
    }

    /// SIGKILL: no checkpoint, no goodbye, whatever it was doing.
    fn kill_9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for TrainerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The API as `prl serve` in a process of its own, so that the test can kill it.
struct ApiProcess {
    child: Child,
    settings: Settings,
}

impl ApiProcess {
    async fn start(app: &TestApp, settings: &Settings) -> ApiProcess {
        let child = Command::new(prl_integration_tests::workspace_binary("prl"))
            .arg("serve")
            .env("PRL_DATABASE__URL", settings.database.url.expose_secret())
            .env("PRL_NATS__URL", settings.nats.url.expose_secret())
            .env("PRL_NATS__NAMESPACE", &settings.nats.namespace)
            .env("PRL_NATS__REPLICAS", settings.nats.replicas.to_string())
            .env("PRL_AUTH__TOKEN", settings.auth.token.expose_secret())
            .env("PRL_HTTP__PORT", settings.http.port.to_string())
            .env(
                "PRL_JOBS__LEASE_SECONDS",
                settings.jobs.lease_seconds.to_string(),
            )
            .env("PRL_JOBS__LEASE_CHECK_MILLIS", "200")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting prl serve");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !matches!(app.http.get(app.url("/healthz")).send().await, Ok(r) if r.status() == 200)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "prl serve never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ApiProcess {
            child,
            settings: settings.clone(),
        }
    }

    /// SIGKILL: whatever batch the ingesters were writing is cut off.
    fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, as a service manager stops it: it must drain and exit cleanly.
    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "prl serve ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    async fn restart(&mut self, app: &TestApp) {
        let settings = self.settings.clone();
        *self = ApiProcess::start(app, &settings).await;
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until attempt `attempt` has recorded a step at or past `step`.
async fn wait_for_attempt_step(app: &TestApp, attempt: i32, step: i64) {
    app.wait_for_count(
        &format!("SELECT coalesce(max(step), 0) FROM trajectories WHERE attempt = {attempt}"),
        step,
        Duration::from_secs(600),
    )
    .await;
}

/// Waits until the job has recorded `steps` steps, so that the fault comes mid-job.
async fn wait_for_steps(app: &TestApp, steps: i64) {
    app.wait_for_count(
        "SELECT count(DISTINCT step) FROM trajectories",
        steps,
        Duration::from_secs(600),
    )
    .await;
}

/// A server a scenario stops and starts again.
#[derive(Clone, Copy, Debug)]
enum Server {
    Postgres,
    Nats,
}

impl OwnServers {
    fn stop(&mut self, server: Server) {
        match server {
            Server::Postgres => self.postgres.stop(),
            Server::Nats => self.nats.stop(),
        }
        .unwrap()
    }

    fn restart(&mut self, server: Server) {
        match server {
            Server::Postgres => self.postgres.restart(),
            Server::Nats => self.nats.restart(),
        }
        .unwrap()
    }
}

/// An RL job of `steps` steps, with `server` down for `outage` from its second step; the job must
/// still be publishing when the server is back, lose nothing and use one attempt.
async fn an_outage_mid_job_loses_nothing(server: Server, outage: Duration, steps: u64) {
    let _turn = training_turn().await;
    let mut own = OwnServers::start(&format!("{server:?}").to_lowercase());
    let app = spawn_app(&own).await;
    let tap = Tap::start(&app).await;
    let _trainer = app.start_trainer("trainer");
    let id = app
        .submit(&rl_spec(&format!("{server:?} outage"), steps))
        .await;
    wait_for_steps(&app, 2).await;

    own.stop(server);
    tokio::time::sleep(outage).await;
    own.restart(server);
    let before = tap.seen();

    let audit = Audit::of(&app, &tap, id, steps, PROMPTS * GROUP).await;
    audit.print(&format!("{server:?} stopped for {outage:?}"));
    println!("{before} of those messages were published before {server:?} was back");
    audit.assert_published_after(before);
    audit.assert_clean(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_ten_leases_loses_nothing_and_revokes_nobody() {
    // Past a connection's acquire timeout and JetStream's ack wait (5 s and 30 s). Training goes
    // on meanwhile (its events wait in NATS), with the API idle, at about 0.6 s a step: four
    // times the steps, so that the job outlasts it on a machine faster than that too.
    let outage = Duration::from_secs(10 * LEASE_SECONDS);
    an_outage_mid_job_loses_nothing(Server::Postgres, outage, 4 * STEPS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_for_thirty_seconds_loses_nothing_and_revokes_nobody() {
    an_outage_mid_job_loses_nothing(Server::Nats, Duration::from_secs(30), STEPS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trainer_killed_twice_with_sigkill_loses_nothing_and_counts_nothing_twice() {
    let _turn = training_turn().await;
    let own = OwnServers::start("sigkill");
    let app = spawn_app(&own).await;
    let tap = Tap::start(&app).await;
    let id = app.submit(&rl_spec("killed twice", STEPS)).await;

    // Each daemon dies two steps past a checkpoint, so its successor redoes those steps.
    let first = TrainerProcess::start(&app, "first");
    wait_for_attempt_step(&app, 1, 6).await;
    first.kill_9();
    let second = TrainerProcess::start(&app, "second");
    wait_for_attempt_step(&app, 2, 14).await;
    second.kill_9();
    let _third = TrainerProcess::start(&app, "third");

    let audit = Audit::of(&app, &tap, id, STEPS, PROMPTS * GROUP).await;
    audit.print("prl-trainer killed with SIGKILL twice");
    audit.assert_clean(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_killed_with_sigkill_and_stopped_with_sigterm_loses_nothing() {
    let _turn = training_turn().await;
    let own = OwnServers::start("api");
    let (app, settings) = TestApp::without_api(&own.servers(), |s| {
        s.jobs.lease_seconds = LEASE_SECONDS;
    })
    .await;
    let mut api = ApiProcess::start(&app, &settings).await;
    let tap = Tap::start(&app).await;
    let _trainer = TrainerProcess::start(&app, "trainer");
    let id = app.submit(&rl_spec("API killed", 2 * STEPS)).await;

    // Killed mid-ingest and down for longer than a lease; the trainer keeps publishing.
    wait_for_steps(&app, 3).await;
    api.kill_9();
    tokio::time::sleep(Duration::from_secs(2 * LEASE_SECONDS)).await;
    api.restart(&app).await;
    // Stopped as a service manager stops it, while the job still runs.
    wait_for_steps(&app, 12).await;
    let status = api.terminate();
    assert!(
        status.success(),
        "prl serve exited with {status} on SIGTERM"
    );
    tokio::time::sleep(Duration::from_secs(2 * LEASE_SECONDS)).await;
    api.restart(&app).await;
    let before = tap.seen();

    let audit = Audit::of(&app, &tap, id, 2 * STEPS, PROMPTS * GROUP).await;
    audit.print("prl serve killed with SIGKILL, then stopped with SIGTERM");
    audit.assert_published_after(before);
    audit.assert_clean(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_cluster_node_killed_mid_job_loses_nothing_with_three_replicas() {
    let _turn = training_turn().await;
    let dir = TempDir::new("cluster");
    let postgres = PrivatePostgres::start(&dir.0.join("postgres")).expect("starting postgres");
    let mut cluster = NatsCluster::start(&dir.0);
    cluster.wait_until_ready().await;
    let servers = Servers {
        admin_database_url: postgres.url("postgres"),
        nats_url: cluster.urls(),
    };
    let app = TestApp::spawn_on(&servers, |s| {
        s.jobs.lease_seconds = LEASE_SECONDS;
        s.nats.replicas = 3;
    })
    .await;
    let tap = Tap::start(&app).await;
    let _trainer = TrainerProcess::start(&app, "trainer");
    let id = app.submit(&rl_spec("cluster node killed", STEPS)).await;
    wait_for_steps(&app, 3).await;

    // The node that leads the data lane's stream: its loss forces an election mid-ingest.
    let stream = app
        .js
        .get_stream(app.topology.lane_stream(Lane::Data))
        .await
        .unwrap();
    let info = stream.cached_info();
    assert_eq!(info.config.num_replicas, 3);
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap();
    cluster.kill_9(cluster.node_named(&leader));
    let before = tap.seen();

    let audit = Audit::of(&app, &tap, id, STEPS, PROMPTS * GROUP).await;
    audit.print(&format!(
        "NATS node {leader} (the data stream's leader) killed with SIGKILL"
    ));
    audit.assert_published_after(before);
    audit.assert_clean(1);
}
