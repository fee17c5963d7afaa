//! The NATS side of prl's contract: stream and consumer names, subjects, and their set-up.
//! Everything is named under a namespace (`prl` by default), so several deployments, or tests,
//! can share one NATS server. Both the API and the trainer daemons call `ensure`, so either
//! may start first.

pub mod encoding;
pub mod signals;
pub mod workers;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer, stream};
use prl_schema::ids::{JobId, RunId};
use prl_schema::jobs::WorkerEvent;
use prl_schema::spec::{JobRoute, StageKind};
use std::time::Duration;

/// How long NATS remembers a `Nats-Msg-Id` to drop a duplicate publish.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a delivered job message may stay unacknowledged before it is delivered again. Daemons
/// acknowledge as soon as their claim is decided, so this only covers a daemon that dies mid-claim.
pub const JOB_ACK_WAIT: Duration = Duration::from_secs(30);
/// How long the ingester may hold a worker message before JetStream delivers it again; while a
/// write is retried through an outage it keeps the message with progress acknowledgements.
pub const INGEST_ACK_WAIT: Duration = Duration::from_secs(30);

pub type PullConsumer = consumer::Consumer<consumer::pull::Config>;

/// The two ways worker messages travel into the log. Claims and heartbeats take the control lane,
/// so that a backlog of trajectories never delays a lease; everything else takes the data lane,
/// in the order each worker sent it (a `Finished` stays behind its attempt's trajectories).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Control,
    Data,
}

impl Lane {
    pub fn of(event: &WorkerEvent) -> Lane {
        match event {
            WorkerEvent::Claim { .. } | WorkerEvent::Heartbeat => Lane::Control,
            _ => Lane::Data,
        }
    }

    fn token(self) -> &'static str {
        match self {
            Lane::Control => "control",
            Lane::Data => "events",
        }
    }
}

/// The names of one deployment's streams, consumers and subjects.
#[derive(Clone, Debug)]
pub struct Topology {
    ns: String,
    replicas: usize,
}

impl Topology {
    /// `namespace` is a subject token: letters, digits, '-' and '_'.
    pub fn new(namespace: &str) -> Result<Self> {
        anyhow::ensure!(
            !namespace.is_empty()
                && namespace
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "the NATS namespace {namespace:?} must be letters, digits, '-' or '_'"
        );
        Ok(Topology {
            ns: namespace.to_owned(),
            replicas: 1,
        })
    }

    /// Streams kept on `replicas` servers of a cluster (1 on a single server; 3 survives the
    /// loss of any one server). Streams made with another count are changed to it.
    pub fn with_replicas(mut self, replicas: usize) -> Result<Self> {
        anyhow::ensure!(
            (1..=5).contains(&replicas),
            "stream replicas must be 1 to 5, not {replicas}"
        );
        self.replicas = replicas;
        Ok(self)
    }

    pub(crate) fn stream_name(&self, what: &str) -> String {
        format!("{}_{what}", self.ns.to_uppercase().replace('-', "_"))
    }

    /// Work queue of job attempts; subjects `<ns>.jobs.<kind>`.
    pub fn jobs_stream(&self) -> String {
        self.stream_name("JOBS")
    }

    /// Worker events on their way into the log: subjects `<ns>.events.<run_id>.<event>` for the
    /// data lane (stream `<NS>_EVENTS`), `<ns>.control.<run_id>.<event>` for the control lane
    /// (stream `<NS>_CONTROL`).
    pub fn lane_stream(&self, lane: Lane) -> String {
        self.stream_name(&lane.token().to_uppercase())
    }

    /// Worker messages that could not be decoded or ingested, kept for inspection.
    pub fn dead_letter_stream(&self) -> String {
        self.stream_name("DEAD_LETTERS")
    }

    /// Every job subject.
    pub fn jobs_subject_filter(&self) -> String {
        format!("{}.jobs.>", self.ns)
    }

    /// Jobs of `kind` for any daemon travel on `<ns>.jobs.<kind>`; those that need a device
    /// kind on `<ns>.jobs.<kind>.<device>`, which only daemons with such a device read, and
    /// verl stages on `<ns>.jobs.<kind>.verl`, which only verl bridges read.
    pub fn job_subject(&self, kind: StageKind, route: JobRoute) -> String {
        match route.token() {
            None => format!("{}.jobs.{}", self.ns, kind.as_str()),
            Some(t) => format!("{}.jobs.{}.{t}", self.ns, kind.as_str()),
        }
    }

    /// The durable consumer from which daemons take jobs of `kind` on `route`.
    pub fn job_consumer(&self, kind: StageKind, route: JobRoute) -> String {
        match route.token() {
            None => format!("{}-trainers-{}", self.ns, kind.as_str()),
            Some(t) => format!("{}-trainers-{}-{t}", self.ns, kind.as_str()),
        }
    }

    /// The subject a worker publishes `event` on, in its lane.
    pub fn worker_subject(&self, run_id: RunId, event: &WorkerEvent) -> String {
        self.lane_subject(Lane::of(event), run_id, event.subject_suffix())
    }

    /// Every subject of one lane.
    pub fn lane_subject_filter(&self, lane: Lane) -> String {
        format!("{}.{}.>", self.ns, lane.token())
    }

    pub fn lane_subject(&self, lane: Lane, run_id: RunId, suffix: &str) -> String {
        format!("{}.{}.{run_id}.{suffix}", self.ns, lane.token())
    }

    /// Plain NATS subject on which the API answers claims and heartbeats of a job's attempts.
    pub fn lease_subject(&self, job_id: JobId) -> String {
        format!("{}.leases.{job_id}", self.ns)
    }

    pub fn dead_letter_subject(&self, original: &str) -> String {
        format!("{}.dead.{original}", self.ns)
    }

    fn ingest_consumer_name(&self, lane: Lane) -> String {
        match lane {
            Lane::Data => format!("{}-ingester", self.ns),
            Lane::Control => format!("{}-ingester-control", self.ns),
        }
    }

    /// Creates the streams and consumers if they do not exist yet.
    pub async fn ensure(&self, js: &jetstream::Context) -> Result<()> {
        for (name, subject, retention) in [
            (
                self.jobs_stream(),
                "jobs",
                stream::RetentionPolicy::WorkQueue,
            ),
            (
                self.lane_stream(Lane::Data),
                Lane::Data.token(),
                stream::RetentionPolicy::WorkQueue,
            ),
            (
                self.lane_stream(Lane::Control),
                Lane::Control.token(),
                stream::RetentionPolicy::WorkQueue,
            ),
            (
                self.dead_letter_stream(),
                "dead",
                stream::RetentionPolicy::Limits,
            ),
        ] {
            let config = stream::Config {
                name: name.clone(),
                subjects: vec![format!("{}.{subject}.>", self.ns)],
                retention,
                duplicate_window: DUPLICATE_WINDOW,
                num_replicas: self.replicas,
                ..Default::default()
            };
            let existing = js
                .get_or_create_stream(config)
                .await
                .with_context(|| format!("creating the stream {name}"))?;
            let current = &existing.cached_info().config;
            if current.num_replicas != self.replicas {
                tracing::info!(
                    "{name}: {} replicas, now {}",
                    current.num_replicas,
                    self.replicas
                );
                js.update_stream(stream::Config {
                    num_replicas: self.replicas,
                    ..current.clone()
                })
                .await
                .with_context(|| format!("setting the replicas of the stream {name}"))?;
            }
        }
        for kind in StageKind::ALL {
            for route in JobRoute::ALL {
                self.job_consumer_for(js, kind, route).await?;
            }
        }
        for lane in [Lane::Data, Lane::Control] {
            self.ingest_consumer(js, lane).await?;
        }
        Ok(())
    }

    /// The pull consumer of one job kind on one route. It delivers without limit: a job waits in the queue
    /// until a daemon's claim is decided (claims are fenced by the job's version), and a job
    /// message whose deliveries ran out would leave its job queued for good.
    pub async fn job_consumer_for(
        &self,
        js: &jetstream::Context,
        kind: StageKind,
        route: JobRoute,
    ) -> Result<PullConsumer> {
        let stream = js
            .get_stream(self.jobs_stream())
            .await
            .context("opening the jobs stream")?;
        let name = self.job_consumer(kind, route);
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: self.job_subject(kind, route),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: JOB_ACK_WAIT,
            max_deliver: -1,
            // Jobs no daemon can take yet wait unacknowledged (each daemon that cannot take one
            // hands it back with a delay); they must not block the jobs behind them.
            max_ack_pending: 100_000,
            ..Default::default()
        };
        durable_consumer(&stream, config).await
    }

    /// The API's pull consumer of one lane. It delivers without limit: the ingester, not a
    /// delivery count, decides when a message is at fault and parks it, so an outage of the
    /// database can never drop a message.
    pub async fn ingest_consumer(
        &self,
        js: &jetstream::Context,
        lane: Lane,
    ) -> Result<PullConsumer> {
        let stream = self.open_lane_stream(js, lane).await?;
        let config = consumer::pull::Config {
            durable_name: Some(self.ingest_consumer_name(lane)),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: INGEST_ACK_WAIT,
            max_deliver: -1,
            max_ack_pending: 100_000,
            ..Default::default()
        };
        durable_consumer(&stream, config).await
    }

    /// The stream of one lane.
    pub async fn open_lane_stream(
        &self,
        js: &jetstream::Context,
        lane: Lane,
    ) -> Result<stream::Stream> {
        let name = self.lane_stream(lane);
        js.get_stream(&name)
            .await
            .with_context(|| format!("opening the stream {name}"))
    }

    /// The ingest consumer of one lane as it is, for reading its state.
    pub async fn lane_consumer(&self, js: &jetstream::Context, lane: Lane) -> Result<PullConsumer> {
        let stream = self.open_lane_stream(js, lane).await?;
        let name = self.ingest_consumer_name(lane);
        stream
            .get_consumer(&name)
            .await
            .map_err(|e| anyhow::anyhow!("opening the consumer {name}: {e}"))
    }
}

/// A durable consumer with `config`: created, or updated when it exists with other settings (made
/// by an earlier version). One with another delivery limit is made again instead: an update would
/// leave the messages that ran out of deliveries in the stream, never delivered. Work queues
/// delete only acknowledged messages, so the new consumer delivers every one still there, and
/// every reader of them is idempotent.
async fn durable_consumer(
    stream: &stream::Stream,
    config: consumer::pull::Config,
) -> Result<PullConsumer> {
    let name = config
        .durable_name
        .clone()
        .expect("a durable consumer has a name");
    if let Ok(info) = stream.consumer_info(&name).await
        && info.config.max_deliver != config.max_deliver
    {
        tracing::warn!("making the consumer {name} again, without its delivery limit");
        // Another process starting beside this one may have deleted it first.
        let _ = stream.delete_consumer(&name).await;
    }
    stream
        .create_consumer(config)
        .await
        .with_context(|| format!("creating the consumer {name}"))
}

/// Connects to a server or a cluster, retrying for a while: in the local stack the server may still
/// be starting. `urls` is one URL or several separated by commas (the seeds of a cluster; the
/// others are learned from them). A user and password, or a token alone (`nats://TOKEN@host`), in
/// any of them logs in; they are never printed.
pub async fn connect(urls: &str) -> Result<async_nats::Client> {
    let (servers, options) = parse_urls(urls)?;
    let mut last = None;
    for _ in 0..50 {
        match options.clone().connect(servers.as_slice()).await {
            Ok(client) => return Ok(client),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shown: Vec<&str> = servers.iter().map(|s| s.as_url_str()).collect();
    Err(last.expect("at least one attempt"))
        .with_context(|| format!("connecting to NATS at {}", shown.join(",")))
}

/// The servers named by `urls`, without credentials, and the options that log in with them.
fn parse_urls(urls: &str) -> Result<(Vec<async_nats::ServerAddr>, async_nats::ConnectOptions)> {
    let mut options = async_nats::ConnectOptions::new();
    let mut servers = Vec::new();
    for (n, text) in urls.split(',').map(str::trim).enumerate() {
        let mut url = url::Url::parse(text)
            .map_err(|e| anyhow::anyhow!("NATS URL {} is not a URL: {e}", n + 1))?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        if !url.username().is_empty() {
            let user = decode(url.username());
            options = match url.password() {
                Some(password) => options.user_and_password(user, decode(password)),
                None => options.token(user),
            };
        }
        let _ = url.set_username("");
        let _ = url.set_password(None);
        servers.push(
            url.as_str()
                .parse()
                .with_context(|| format!("NATS URL {url} names no server"))?,
        );
    }
    Ok((servers, options))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prl_schema::spec::DeviceKind;

    #[test]
    fn names_live_under_the_namespace() {
        let t = Topology::new("t-1").unwrap();
        assert_eq!(t.jobs_stream(), "T_1_JOBS");
        assert_eq!(t.job_subject(StageKind::Rl, JobRoute::Any), "t-1.jobs.rl");
        assert_eq!(
            t.job_subject(StageKind::Rl, JobRoute::Verl),
            "t-1.jobs.rl.verl"
        );
        assert_eq!(
            t.job_subject(StageKind::Rl, JobRoute::Device(DeviceKind::Cuda)),
            "t-1.jobs.rl.cuda"
        );
        assert!(Topology::new("a.b").is_err());
        let run = RunId::new();
        assert_eq!(
            t.worker_subject(run, &WorkerEvent::Heartbeat),
            format!("t-1.control.{run}.heartbeat")
        );
        assert_eq!(t.lane_stream(Lane::Control), "T_1_CONTROL");
        assert_eq!(t.lane_stream(Lane::Data), "T_1_EVENTS");
    }

    #[test]
    fn credentials_leave_the_urls_and_several_urls_name_a_cluster() {
        let (servers, _) =
            parse_urls("nats://prl:p%40ss@10.0.0.1:4222, nats://10.0.0.2:4223").unwrap();
        let shown: Vec<&str> = servers.iter().map(|s| s.as_url_str()).collect();
        assert_eq!(shown, ["nats://10.0.0.1:4222", "nats://10.0.0.2:4223"]);
        let refused = parse_urls("nats://prl:secret@").unwrap_err().to_string();
        assert!(!refused.contains("secret"), "{refused}");
    }
}
