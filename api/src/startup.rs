//! Building and running the API: connections, migrations, NATS topology, the HTTP server and the
//! background workers (outbox relay, ingester, lease monitor).

use crate::answer_cache::AnswerCache;
use crate::live_feed::LiveFeed;
use crate::messaging::{
    ingest::Ingester, leases::LeaseMonitor, reconciler::Reconciler, relay::Relay, supervisor::Tasks,
};
use crate::settings::Settings;
use crate::state::AppState;
use crate::telemetry::Metrics;
use actix_web::{App, HttpServer, dev::Server, web};
use anyhow::{Context, Result};
use prl_bus::{Lane, Topology};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Claims and heartbeats are small and few: their batches stay small so that they are written fast.
const CONTROL_BATCH: usize = 256;

pub struct Application {
    port: u16,
    server: Server,
    workers: Vec<tokio::task::JoinHandle<()>>,
    shutdown: CancellationToken,
    pub pool: PgPool,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self> {
        let pool = connect_database(&settings).await?;
        crate::MIGRATOR
            .run(&pool)
            .await
            .context("running migrations")?;
        let nats = prl_bus::connect(settings.nats.url.expose_secret()).await?;
        let js = async_nats::jetstream::new(nats.clone());
        let topology =
            Topology::new(&settings.nats.namespace)?.with_replicas(settings.nats.replicas)?;
        topology.ensure(&js).await?;

        let metrics = Metrics::new();
        let wake_relay = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let lease = chrono::Duration::seconds(settings.jobs.lease_seconds as i64);
        let live = LiveFeed::new(
            connect_pool(&settings, settings.database.live_feed_connections).await?,
            settings.http.max_live_streams,
        );
        let tasks = Tasks::default();
        let (feed, stop) = (live.clone(), shutdown.clone());
        let mut workers = vec![tasks.spawn("live-feed", shutdown.clone(), move || {
            feed.clone().broadcast(stop.clone())
        })];
        let relay = Relay {
            pool: pool.clone(),
            js: js.clone(),
            topology: topology.clone(),
            wake: wake_relay.clone(),
            metrics: metrics.clone(),
        };
        let stop = shutdown.clone();
        workers.push(tasks.spawn("relay", shutdown.clone(), move || {
            relay.clone().run(stop.clone())
        }));
        for (name, lane, batch_size, writers) in [
            (
                "ingester-data",
                Lane::Data,
                settings.ingest.batch_size,
                settings.ingest.writers,
            ),
            (
                "ingester-control",
                Lane::Control,
                settings.ingest.batch_size.min(CONTROL_BATCH),
                1,
            ),
        ] {
            let ingester = Ingester {
                pool: pool.clone(),
                nats: nats.clone(),
                js: js.clone(),
                topology: topology.clone(),
                lane,
                batch_size,
                writers,
                lease,
                metrics: metrics.clone(),
                wake_relay: wake_relay.clone(),
            };
            let stop = shutdown.clone();
            workers.push(tasks.spawn(name, shutdown.clone(), move || {
                ingester.clone().run(stop.clone())
            }));
        }
        let monitor = LeaseMonitor {
            pool: pool.clone(),
            js: js.clone(),
            topology: topology.clone(),
            period: Duration::from_millis(settings.jobs.lease_check_millis),
            lease,
            metrics: metrics.clone(),
            wake_relay: wake_relay.clone(),
        };
        let stop = shutdown.clone();
        workers.push(tasks.spawn("lease-monitor", shutdown.clone(), move || {
            monitor.clone().run(stop.clone())
        }));
        let reconciler = Reconciler {
            pool: pool.clone(),
            js: js.clone(),
            topology: topology.clone(),
            requeue_after: Duration::from_secs(settings.jobs.requeue_after_seconds),
            metrics: metrics.clone(),
        };
        let stop = shutdown.clone();
        workers.push(tasks.spawn("job-reconciler", shutdown.clone(), move || {
            reconciler.clone().run(stop.clone())
        }));

        // Connected on first use: a replica that is down costs its endpoints a 503, not the start.
        let analytics = match &settings.database.analytics_url {
            Some(url) => pool_options(settings.database.max_connections)
                .connect_lazy(url.expose_secret())
                .context("the analytics database URL")?,
            None => pool.clone(),
        };
        let store = open_store(&settings)?;
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            analytics,
            answers: Arc::new(AnswerCache::new(settings.database.analytics_cache_bytes)),
            nats,
            topology,
            token: settings.auth.token.clone(),
            protect_reads: settings.auth.protect_reads,
            body_limit: settings.http.body_limit_bytes,
            import_limit: settings.http.import_limit_bytes,
            max_attempts: settings.jobs.max_attempts,
            files_shared: settings.files.shared_with_daemons,
            artifact_dir: settings.files.artifact_dir.clone(),
            store,
            store_reaches_daemons: settings.store.url.is_some()
                || settings.files.shared_with_daemons,
            max_artifact_bytes: settings.files.max_artifact_bytes,
            metrics: metrics.clone(),
            wake_relay,
            shutdown: shutdown.clone(),
            live,
            tasks,
        });
        let listener = TcpListener::bind((settings.http.host.as_str(), settings.http.port))
            .with_context(|| format!("binding {}:{}", settings.http.host, settings.http.port))?;
        let port = listener.local_addr()?.port();
        let web_dir = settings.web.dir.clone();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(
                    crate::routes::params::refuse_nul_in_query,
                ))
                .wrap(actix_web::middleware::from_fn(count_requests))
                .wrap(tracing_actix_web::TracingLogger::default())
                .app_data(state.clone())
                .configure(|cfg| crate::routes::configure(cfg, &web_dir))
        })
        .listen(listener)?
        .disable_signals()
        .run();
        Ok(Application {
            port,
            server,
            workers,
            shutdown,
            pool,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `stop` is cancelled, then stops the workers and the server gracefully.
    pub async fn run_until(self, stop: CancellationToken) -> Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        stop.cancelled().await;
        self.shutdown.cancel();
        handle.stop(true).await;
        for worker in self.workers {
            let _ = worker.await;
        }
        server.await?.context("the HTTP server failed")?;
        Ok(())
    }
}

async fn count_requests(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.call(req).await?;
    if let Some(m) = metrics {
        m.http_latency.observe(started.elapsed().as_secs_f64());
        m.http_requests
            .with_label_values(&[&method, response.status().as_str()])
            .inc();
    }
    Ok(response)
}

/// Connects to PostgreSQL, waiting up to a minute for a server that is still starting.
pub async fn connect_database(settings: &Settings) -> Result<PgPool> {
    connect_pool(settings, settings.database.max_connections).await
}

/// A pool of at most `connections` connections to the database.
async fn connect_pool(settings: &Settings, connections: u32) -> Result<PgPool> {
    let url = settings.database.url.expose_secret();
    let options = pool_options(connections);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match options.clone().connect(url).await {
            Ok(pool) => return Ok(pool),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("waiting for the database: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e).context("connecting to the database"),
        }
    }
}

/// A pool of at most `connections` connections. A request or a write waits at most 5 s for one
/// while the database is out of reach: well within JetStream's ack wait, so that the ingester's
/// progress acknowledgements keep its messages, and an HTTP client gets its 503 soon.
fn pool_options(connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(5))
}

/// The artifact store of `store.url`, else a directory of the API's own.
fn open_store(settings: &Settings) -> Result<prl_artifacts::ArtifactStore> {
    let url = match &settings.store.url {
        Some(url) => url.clone(),
        None => {
            let dir = settings.files.artifact_dir.join("store");
            std::fs::create_dir_all(&dir).with_context(|| format!("making {}", dir.display()))?;
            format!("file://{}", dir.canonicalize()?.display())
        }
    };
    prl_artifacts::ArtifactStore::open(&url, &Default::default())
}
