//! Typed settings in layers: built-in defaults, then an optional TOML file (`PRL_CONFIG`), then
//! `PRL_...` environment variables (`PRL_DATABASE__URL`, `PRL_AUTH__TOKEN`, ...). `DATABASE_URL`,
//! `PRL_ANALYTICS_DATABASE_URL` and `NATS_URL` are honoured too, as the usual names for shared
//! deployments.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// `prl serve`'s settings; docs/reference/settings.md is generated from these types and defaults.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub auth: AuthSettings,
    pub jobs: JobSettings,
    pub ingest: IngestSettings,
    pub web: WebSettings,
    pub files: FileSettings,
    #[serde(default)]
    pub store: StoreSettings,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HttpSettings {
    /// The address to listen on: `0.0.0.0` serves other hosts too.
    pub host: String,
    /// 0 binds a free port (tests).
    pub port: u16,
    /// Request bodies above this many bytes get 413.
    pub body_limit_bytes: usize,
    /// The limit for imports, which carry whole dumps.
    pub import_limit_bytes: usize,
    /// Live event streams (`/events/stream`) served at once; more answer 503.
    pub max_live_streams: usize,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
pub struct DatabaseSettings {
    /// The PostgreSQL database of the event log and read models
    /// (`postgres://user:password@host:5432/prl`; `DATABASE_URL` works too). Required.
    #[schemars(with = "String")]
    pub url: SecretString,
    /// Connections of the API's pool.
    pub max_connections: u32,
    /// The live event feed's own connections, apart from `max_connections`.
    pub live_feed_connections: u32,
    /// A read replica of `url` that the analytics REST (strategy, comparison, trajectory
    /// search, metric series, checkpoints, the results table) reads, so that heavy queries stay
    /// off the primary (`PRL_ANALYTICS_DATABASE_URL` works too; `prl psql` uses it as well).
    /// Its answers lag the primary by the replica's replay delay. Without it they read `url`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub analytics_url: Option<SecretString>,
    /// Memory for the strategy and comparison answers served, kept until their runs' rows
    /// change (each request still checks that with one lookup a run); 0 keeps none. A request
    /// with `Cache-Control: no-cache` is read from the database.
    pub analytics_cache_bytes: u64,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
pub struct NatsSettings {
    /// NATS with JetStream (`NATS_URL` works too): one URL or several separated by commas (a cluster's seeds); may carry a user and
    /// password (`nats://user:password@host:4222`) or a token (`nats://token@host:4222`).
    #[schemars(with = "String")]
    pub url: SecretString,
    /// Prefix of every stream and subject, so deployments can share a server.
    pub namespace: String,
    /// Servers of a cluster that keep each stream (3 survives the loss of one); 1 on one server.
    pub replicas: usize,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
pub struct AuthSettings {
    /// Bearer token required by write endpoints. Required.
    #[schemars(with = "String")]
    pub token: SecretString,
    /// Whether read endpoints need the token too.
    pub protect_reads: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobSettings {
    /// How long a claim or heartbeat keeps a lease.
    pub lease_seconds: u64,
    /// Attempts per job before it fails for good.
    pub max_attempts: u32,
    /// How often expired leases are looked for, in milliseconds.
    pub lease_check_millis: u64,
    /// A job queued this long whose message is no longer in NATS is published again.
    pub requeue_after_seconds: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IngestSettings {
    /// Worker messages written per transaction at most.
    pub batch_size: usize,
    /// Transactions that write a batch of the data lane (trajectories, metrics) at once, its
    /// messages split between them by job: each is one more PostgreSQL backend writing.
    pub writers: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WebSettings {
    /// The built web UI (`npm run build` in `web/`), served at `/`.
    pub dir: std::path::PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FileSettings {
    /// Whether the trainer daemons see the API's files at the same paths (one host, as under
    /// `prl up`, or a shared filesystem). Then a submission naming a `jsonl:`/`verl:` file or a
    /// `path:` model directory that is not there is refused with 422 naming the field, rather
    /// than failing in its job.
    pub shared_with_daemons: bool,
    /// The API's own directory: uploads wait here while they are checked and hashed, and the
    /// store is here when `store.url` is absent. (Artifacts logged before the store existed
    /// stay here too, a directory per run, and are served from here.)
    pub artifact_dir: std::path::PathBuf,
    /// The largest artifact one upload may store.
    pub max_artifact_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StoreSettings {
    /// The artifact store that the trainer daemons use (`file:///shared/dir` or
    /// `s3://bucket/prefix`; `PRL_STORE__URL`, as for the daemons): uploaded dataset files and
    /// artifacts logged through MLflow go there, so every host reads them. An S3-compatible
    /// server's address and credentials come from AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ALLOW_HTTP. When absent,
    /// `file://<files.artifact_dir>/store`, which only daemons on this host can read.
    pub url: Option<String>,
}

#[derive(Serialize)]
struct Defaults {
    http: HttpSettings,
    database: serde_json::Value,
    nats: serde_json::Value,
    auth: serde_json::Value,
    jobs: JobSettings,
    ingest: IngestSettings,
    web: WebSettings,
    files: FileSettings,
}

impl Settings {
    pub fn load() -> Result<Settings, Box<figment::Error>> {
        Self::figment().extract().map_err(Box::new)
    }

    /// The layered sources; callers may merge more on top (the CLI does for `prl up`).
    pub fn figment() -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Self::defaults()));
        if let Ok(path) = std::env::var("PRL_CONFIG") {
            figment = figment.merge(Toml::file(path));
        }
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(("database.url", url));
        }
        if let Ok(url) = std::env::var("PRL_ANALYTICS_DATABASE_URL") {
            figment = figment.merge(("database.analytics_url", url));
        }
        if let Ok(url) = std::env::var("NATS_URL") {
            figment = figment.merge(("nats.url", url));
        }
        figment.merge(Env::prefixed("PRL_").split("__"))
    }

    /// The built-in defaults; `database.url` and `auth.token` have none.
    pub fn defaults() -> serde_json::Value {
        let defaults = Defaults {
            http: HttpSettings {
                host: "127.0.0.1".into(),
                port: 8080,
                body_limit_bytes: 256 * 1024,
                import_limit_bytes: 1 << 30,
                max_live_streams: 256,
            },
            database: serde_json::json!({
                "max_connections": 16,
                "live_feed_connections": 2,
                "analytics_cache_bytes": 64 << 20,
            }),
            nats: serde_json::json!({ "url": "nats://127.0.0.1:4222", "namespace": "prl", "replicas": 1 }),
            auth: serde_json::json!({ "protect_reads": false }),
            jobs: JobSettings {
                lease_seconds: 30,
                max_attempts: 3,
                lease_check_millis: 1000,
                requeue_after_seconds: 300,
            },
            ingest: IngestSettings {
                batch_size: 2000,
                writers: 2,
            },
            web: WebSettings {
                dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../web/dist").into(),
            },
            files: FileSettings {
                shared_with_daemons: false,
                artifact_dir: "prl-artifacts".into(),
                max_artifact_bytes: 4 << 30,
            },
        };
        serde_json::to_value(defaults).expect("the defaults are JSON")
    }
}
