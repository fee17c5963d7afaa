//! Logging set-up and the Prometheus counters that `/metrics` serves.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,prl_api=info,prl_trainer=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// The API's own counters; cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_latency: Histogram,
    pub ingested: IntCounterVec,
    pub published: IntCounter,
    pub leases_expired: IntCounter,
    pub jobs_republished: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("prl".into()), None).expect("valid prefix");
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by method and status"),
            &["method", "status"],
        )
        .expect("valid metric");
        let http_latency = Histogram::with_opts(HistogramOpts::new(
            "http_request_seconds",
            "HTTP request latency",
        ))
        .expect("valid metric");
        let ingested = IntCounterVec::new(
            Opts::new("ingested_messages_total", "Worker messages by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let published = IntCounter::new("outbox_published_total", "Job messages published")
            .expect("valid metric");
        let leases_expired = IntCounter::new("leases_expired_total", "Job leases that expired")
            .expect("valid metric");
        let jobs_republished = IntCounter::new(
            "jobs_republished_total",
            "Queued jobs published again because their message was lost",
        )
        .expect("valid metric");
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_latency.clone()),
            Box::new(ingested.clone()),
            Box::new(published.clone()),
            Box::new(leases_expired.clone()),
            Box::new(jobs_republished.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Metrics {
            registry,
            http_requests,
            http_latency,
            ingested,
            published,
            leases_expired,
            jobs_republished,
        }
    }

    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("text encoding cannot fail")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
