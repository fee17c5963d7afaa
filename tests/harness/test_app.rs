//! `TestApp`: one API with its own database and NATS namespace, and helpers per endpoint.

use crate::servers::{Servers, servers};
use async_nats::jetstream;
use prl_api::settings::Settings;
use prl_api::startup::Application;
use prl_bus::Topology;
use prl_schema::jobs::CheckpointRef;
use prl_trainer::daemon::DaemonConfig;
use prl_trainer::file_access::FileAccess;
use serde_json::Value;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const TOKEN: &str = "test-token";

pub struct TestApp {
    pub address: String,
    pub pool: PgPool,
    pub database_url: String,
    pub http: reqwest::Client,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub topology: Topology,
    pub namespace: String,
    pub nats_url: String,
    /// Servers of the NATS cluster that keep each stream (`nats.replicas`).
    pub replicas: usize,
    pub data_dir: std::path::PathBuf,
    stop: CancellationToken,
}

/// A trainer daemon running in this process; `kill` ends it without any goodbye.
pub struct Daemon {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    pub fn kill(self) {
        self.task.abort();
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns an API whose settings `configure` may change.
    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
        Self::spawn_on(servers(), configure).await
    }

    /// Spawns an API on the given servers, for tests that stop and start their own.
    pub async fn spawn_on(servers: &Servers, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let (mut test_app, mut settings) = Self::without_api(servers, configure).await;
        settings.http.port = 0;
        let app = Application::build(settings)
            .await
            .expect("building the app");
        test_app.address = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until(test_app.stop.clone()));
        test_app
    }

    /// A database and NATS namespace of its own, and the settings of an API that would serve
    /// them on a free port, which the caller runs (as a process of its own, for one). Until
    /// then requests find nothing listening.
    pub async fn without_api(
        servers: &Servers,
        configure: impl FnOnce(&mut Settings),
    ) -> (TestApp, Settings) {
        let db_name = format!("prl_test_{}", Uuid::new_v4().simple());
        let mut admin =
            <sqlx::PgConnection as sqlx::Connection>::connect(&servers.admin_database_url)
                .await
                .expect("connecting to the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let database_url = with_database(&servers.admin_database_url, &db_name);
        let namespace = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // Daemons' data directory; the API puts uploads in their store.
        let data_dir = std::env::temp_dir().join(format!("prl-test-data-{namespace}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let store_url = format!(
            "file://{}",
            data_dir.canonicalize().unwrap().join("store").display()
        );
        let mut settings: Settings = Settings::figment()
            .merge(("database.url", database_url.clone()))
            .merge(("database.max_connections", 8))
            .merge(("nats.url", servers.nats_url.clone()))
            .merge(("nats.namespace", namespace.clone()))
            .merge(("auth.token", TOKEN))
            .merge(("http.port", port))
            .merge(("http.body_limit_bytes", 64 * 1024))
            .merge(("jobs.lease_seconds", 2))
            .merge(("jobs.lease_check_millis", 200))
            .merge((
                "files.artifact_dir",
                std::env::temp_dir().join(format!("prl-test-artifacts-{namespace}")),
            ))
            .merge(("store.url", store_url))
            .extract()
            .expect("test settings");
        configure(&mut settings);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy(&database_url)
            .expect("a database URL");
        let nats = prl_bus::connect(&servers.nats_url).await.unwrap();
        let js = jetstream::new(nats.clone());
        // The topology exists before any API runs, so that taps and daemons can start first.
        let replicas = settings.nats.replicas;
        let topology = Topology::new(&namespace)
            .unwrap()
            .with_replicas(replicas)
            .unwrap();
        topology.ensure(&js).await.unwrap();
        let app = TestApp {
            address: format!("http://127.0.0.1:{}", settings.http.port),
            pool,
            database_url,
            http: reqwest::Client::new(),
            nats,
            js,
            topology,
            namespace,
            nats_url: servers.nats_url.clone(),
            replicas,
            data_dir,
            stop: CancellationToken::new(),
        };
        (app, settings)
    }

    /// Starts a dry-run daemon whose steps take `step`.
    pub fn start_daemon(&self, worker_id: &str, step: Duration) -> Daemon {
        let executor = prl_trainer::daemon::Executor::DryRun;
        self.start_configured(DaemonConfig {
            step_delay: step,
            ..self.daemon_config(worker_id, executor)
        })
    }

    /// Starts a daemon that trains SFT jobs for real.
    pub fn start_trainer(&self, worker_id: &str) -> Daemon {
        self.start_trainer_with(worker_id, self.checkpoints())
    }

    /// Starts a daemon that trains for real and keeps its checkpoints as `checkpoints` says (a
    /// data directory of its own stands for another host).
    pub fn start_trainer_with(
        &self,
        worker_id: &str,
        checkpoints: prl_trainer::checkpoint::Checkpoints,
    ) -> Daemon {
        let executor = prl_trainer::daemon::Executor::Train;
        self.start_configured(DaemonConfig {
            checkpoints,
            ..self.daemon_config(worker_id, executor)
        })
    }

    /// A daemon's configuration for this app: a CPU on `test-host`, taking every kind of job.
    pub fn daemon_config(
        &self,
        worker_id: &str,
        executor: prl_trainer::daemon::Executor,
    ) -> DaemonConfig {
        DaemonConfig {
            nats_url: self.nats_url.clone(),
            namespace: self.namespace.clone(),
            replicas: self.replicas,
            worker_id: worker_id.to_owned(),
            host: "test-host".into(),
            device: "cpu".into(),
            gpu_memory_gb: None,
            labels: Default::default(),
            kinds: prl_schema::spec::StageKind::ALL.to_vec(),
            checkpoints: self.checkpoints(),
            // Tests write their datasets to the temporary directory and read fixtures from the
            // workspace.
            files: FileAccess::new(
                &[
                    std::env::temp_dir(),
                    concat!(env!("CARGO_MANIFEST_DIR"), "/..").into(),
                    prl_trainer::presets::cache_root(),
                    self.data_dir.clone(),
                ],
                1 << 30,
            ),
            heartbeat: Duration::from_millis(300),
            step_delay: Duration::ZERO,
            executor,
        }
    }

    pub fn start_configured(&self, config: DaemonConfig) -> Daemon {
        Daemon {
            task: tokio::spawn(prl_trainer::daemon::run(config, CancellationToken::new())),
        }
    }

    /// Where this app's daemons keep checkpoints: its data directory, and a store beside it.
    pub fn checkpoints(&self) -> prl_trainer::checkpoint::Checkpoints {
        std::fs::create_dir_all(&self.data_dir).unwrap();
        let data_dir = self.data_dir.canonicalize().unwrap();
        let store = format!("file://{}", data_dir.join("store").display());
        prl_trainer::checkpoint::Checkpoints {
            store: prl_artifacts::ArtifactStore::open(&store, &Default::default()).unwrap(),
            data_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_experiment(&self, spec: &Value) -> reqwest::Response {
        self.post_raw("/api/v1/experiments", spec.to_string(), Some(TOKEN))
            .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: String,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url(path))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the API answers")
    }

    /// Submits `spec` and returns the new experiment's id.
    pub async fn submit(&self, spec: &Value) -> Uuid {
        let response = self.post_experiment(spec).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("the API answers")
    }

    pub async fn experiment(&self, id: Uuid) -> Value {
        let response = self.get(&format!("/api/v1/experiments/{id}")).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn cancel(&self, id: Uuid, if_match: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url(&format!("/api/v1/experiments/{id}/cancel")))
            .bearer_auth(TOKEN);
        if let Some(version) = if_match {
            request = request.header("If-Match", version);
        }
        request.send().await.expect("the API answers")
    }

    /// Polls until the experiment has `status`; panics with its last state after `timeout`.
    pub async fn wait_for_status(&self, id: Uuid, status: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let detail = self.experiment(id).await;
            if detail["status"] == status {
                return detail;
            }
            assert!(
                Instant::now() < deadline,
                "experiment never became {status}: {detail:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `sql` (a count) until it reaches at least `at_least`.
    pub async fn wait_for_count(&self, sql: &str, at_least: i64, timeout: Duration) -> i64 {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.count(sql).await;
            if n >= at_least {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "`{sql}` stayed at {n}, below {at_least}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The checkpoint attempt 2 was queued to resume from, after checking that the attempt's
    /// first step is the one after it and that it lies in the store at `store_url`.
    pub async fn second_attempt_resumed_from(&self, store_url: &str) -> CheckpointRef {
        let resumed: CheckpointRef = serde_json::from_value(
            sqlx::query_scalar(
                "SELECT payload->'resume_from' FROM events
                 WHERE event_type = 'JobQueued' AND (payload->>'attempt')::int = 2",
            )
            .fetch_one(&self.pool)
            .await
            .unwrap(),
        )
        .unwrap();
        assert!(resumed.uri.starts_with(store_url), "{resumed:?}");
        let first: i64 = sqlx::query_scalar(
            "SELECT min((payload->>'step')::bigint) FROM events
             WHERE event_type = 'MetricsReported' AND (payload->>'attempt')::int = 2",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        assert_eq!(first as u64, resumed.step + 1);
        resumed
    }

    /// Evaluates one of `run`'s checkpoints on demand (`body` as `POST /runs/{id}/evaluations`
    /// takes it), waits for that experiment to complete and returns the evaluations it reported.
    pub async fn evaluate_on_demand(&self, run: &str, body: Value) -> Vec<Value> {
        let path = format!("/api/v1/runs/{run}/evaluations");
        let accepted = self.post_raw(&path, body.to_string(), Some(TOKEN)).await;
        assert_eq!(accepted.status(), 201);
        let accepted: Value = accepted.json().await.unwrap();
        let id = accepted["id"].as_str().unwrap().parse().unwrap();
        let detail = self
            .wait_for_status(id, "completed", Duration::from_secs(300))
            .await;
        let evaluated = detail["runs"][0]["id"].as_str().unwrap();
        self.get(&format!("/api/v1/runs/{evaluated}/evaluations"))
            .await
            .json()
            .await
            .unwrap()
    }

    /// Waits until `n` daemons are active in `GET /api/v1/workers`; returns the list.
    pub async fn wait_for_workers(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listed: Vec<Value> = self.get("/api/v1/workers").await.json().await.unwrap();
            if listed.iter().filter(|w| w["status"] == "active").count() == n {
                return listed;
            }
            assert!(Instant::now() < deadline, "{listed:#?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .expect(sql)
    }

    /// Event types of the log, in order.
    pub async fn event_types(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT event_type FROM events ORDER BY position")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let server = match base.rfind('/') {
        Some(i) if base[..i].contains("//") && i > base.find("//").unwrap() + 1 => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{server}/{db}?{q}"),
        None => format!("{server}/{db}"),
    }
}

/// A small valid spec whose stages run quickly on the dry-run daemon.
pub fn quick_spec(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "tags": ["test"],
        "model": "tiny",
        "stages": [
            {"kind": "sft", "name": "sft", "dataset": "builtin:easy", "learning_rate": 1e-3, "max_steps": 6},
            {"kind": "rl", "name": "rl", "dataset": "builtin:hard", "reward": "s2", "learning_rate": 1e-5, "steps": 4},
            {"kind": "eval", "name": "eval", "dataset": "builtin:hard-test", "k": 2}
        ]
    })
}

/// A hand-driven worker: it takes one job message and speaks the protocol step by step, so a
/// test can misbehave on purpose (duplicate, stale or missing messages).
pub struct FakeWorker {
    pub job: prl_schema::jobs::JobMessage,
    pub reporter: prl_trainer::reporter::Reporter,
    pub lease: prl_trainer::lease::Lease,
}

impl FakeWorker {
    /// Takes the next job of `kind` from the queue and claims it; returns the API's answer.
    pub async fn take(
        app: &TestApp,
        kind: prl_schema::spec::StageKind,
        worker_id: &str,
    ) -> (FakeWorker, prl_schema::jobs::LeaseDecision) {
        use futures::StreamExt;
        let consumer = app
            .topology
            .job_consumer_for(&app.js, kind, prl_schema::spec::JobRoute::Any)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let message = loop {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .unwrap();
            if let Some(message) = batch.next().await {
                break message.unwrap();
            }
            assert!(Instant::now() < deadline, "no job arrived");
        };
        message.ack().await.unwrap();
        let job: prl_schema::jobs::JobMessage = serde_json::from_slice(&message.payload).unwrap();
        let reporter = prl_trainer::reporter::Reporter {
            js: app.js.clone(),
            topology: app.topology.clone(),
            job_id: job.job_id,
            run_id: job.run_id,
            attempt: job.attempt,
            worker_id: worker_id.to_owned(),
            shutdown: CancellationToken::new(),
            checkpoints: app.checkpoints(),
            uploaded: Default::default(),
        };
        let mut lease =
            prl_trainer::lease::Lease::listen(&app.nats, &app.topology, reporter.clone())
                .await
                .unwrap();
        let decision = lease
            .claim(job.expected_version, Duration::from_secs(10))
            .await
            .unwrap();
        (
            FakeWorker {
                job,
                reporter,
                lease,
            },
            decision,
        )
    }

    /// A worker message of this attempt, not yet sent.
    pub fn message(&self, body: prl_schema::jobs::WorkerEvent) -> prl_schema::jobs::WorkerMessage {
        prl_schema::jobs::WorkerMessage {
            event_id: prl_schema::ids::EventId::new(),
            job_id: self.job.job_id,
            run_id: self.job.run_id,
            attempt: self.job.attempt,
            worker_id: self.reporter.worker_id.clone(),
            sent_at: chrono::Utc::now(),
            body,
        }
    }

    /// Publishes raw bytes on this run's data-lane subject, with the given `Nats-Msg-Id`.
    pub async fn publish_raw(&self, app: &TestApp, suffix: &str, payload: Vec<u8>, msg_id: &str) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        app.js
            .publish_with_headers(
                app.topology
                    .lane_subject(prl_bus::Lane::Data, self.job.run_id, suffix),
                headers,
                payload.into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
}
