//! The daemon loop: take a job attempt from the work queue, claim it, work on it while holding
//! the lease, report the outcome, and take the next.

use crate::checkpoint::Checkpoints;
use crate::dry_run;
use crate::file_access::FileAccess;
use crate::lease::{Lease, Stop};
use crate::reporter::Reporter;
use crate::training::Outcome;
use crate::verl::{self, VerlBridge};
use crate::{eval, rl, sft};
use anyhow::Result;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use prl_bus::{PullConsumer, Topology};
use prl_schema::jobs::{JobMessage, LeaseDecision, WorkerEvent, WorkerInfo, WorkerJob};
use prl_schema::spec::{Backend, DeviceKind, JobRoute, StageKind};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub nats_url: String,
    pub namespace: String,
    /// Servers of a NATS cluster that keep each stream; the API's `nats.replicas`.
    pub replicas: usize,
    pub worker_id: String,
    /// The host name it announces.
    pub host: String,
    /// `cpu` or `cuda:N`, as announced (jobs train on `device::current()`).
    pub device: String,
    pub gpu_memory_gb: Option<f64>,
    pub labels: BTreeMap<String, String>,
    pub kinds: Vec<StageKind>,
    /// Where checkpoints are written (the data directory) and kept for every host (the store).
    pub checkpoints: Checkpoints,
    /// The files jobs may make the daemon read.
    pub files: FileAccess,
    pub heartbeat: Duration,
    /// How long each dry-run step takes.
    pub step_delay: Duration,
    pub executor: Executor,
}

/// What the daemon does with a job.
#[derive(Clone, Debug)]
pub enum Executor {
    /// Walks every job's steps without training: the protocol alone.
    DryRun,
    /// Trains and evaluates for real.
    Train,
    /// Hands verl stages to a Ray cluster and follows them (`crate::verl`).
    Verl(VerlBridge),
}

impl Executor {
    pub fn backend(&self) -> Backend {
        match self {
            Executor::Verl(_) => Backend::Verl,
            Executor::DryRun | Executor::Train => Backend::Tch,
        }
    }
}

pub async fn run(config: DaemonConfig, shutdown: CancellationToken) -> Result<()> {
    let nats = prl_bus::connect(&config.nats_url).await?;
    let js = jetstream::new(nats.clone());
    let topology = Topology::new(&config.namespace)?.with_replicas(config.replicas)?;
    topology.ensure(&js).await?;
    // A trainer reads jobs for any daemon and jobs for its kind of device; a bridge, verl's.
    let routes = match config.executor.backend() {
        Backend::Tch => vec![
            JobRoute::Any,
            JobRoute::Device(DeviceKind::of(&config.device)),
        ],
        Backend::Verl => vec![JobRoute::Verl],
    };
    let mut consumers = Vec::new();
    for kind in &config.kinds {
        for route in &routes {
            consumers.push(topology.job_consumer_for(&js, *kind, *route).await?);
        }
    }
    tracing::info!(worker = %config.worker_id, kinds = ?config.kinds, "daemon ready");
    let daemon = Daemon {
        config,
        nats,
        js,
        topology,
        current_job: Default::default(),
    };
    // Presence and jobs share this future, so that nothing of the daemon outlives it.
    let presence = announce(
        daemon.presence(),
        daemon.js.clone(),
        daemon.topology.clone(),
        daemon.current_job.clone(),
        shutdown.clone(),
    );
    let jobs = async {
        while !shutdown.is_cancelled() {
            for consumer in &consumers {
                if shutdown.is_cancelled() {
                    break;
                }
                if let Err(e) = daemon.take_one(consumer, &shutdown).await {
                    tracing::warn!("daemon: {e:#}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    };
    tokio::join!(presence, jobs);
    Ok(())
}

/// Writes this daemon's presence every `PRESENCE_PERIOD` until shutdown, then takes it away. A
/// write that fails (NATS away) is tried again at the next period.
async fn announce(
    mut info: WorkerInfo,
    js: jetstream::Context,
    topology: Topology,
    current_job: Arc<Mutex<Option<WorkerJob>>>,
    shutdown: CancellationToken,
) {
    let key = prl_bus::workers::key(&info.worker_id);
    let mut bucket = None;
    loop {
        if bucket.is_none() {
            bucket = topology
                .workers(&js)
                .await
                .inspect_err(|e| tracing::warn!("opening the workers bucket: {e:#}"))
                .ok();
        }
        if let Some(store) = &bucket {
            info.job = current_job.lock().expect("not poisoned").clone();
            info.seen_at = chrono::Utc::now();
            let bytes = serde_json::to_vec(&info).expect("serialises");
            if let Err(e) = store.put(&key, bytes.into()).await {
                tracing::warn!("announcing this daemon: {e}");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(prl_bus::workers::PRESENCE_PERIOD) => {}
        }
    }
    if let Some(store) = bucket {
        let _ = store.delete(&key).await;
    }
}

/// When a job a daemon could not take is delivered again (to any daemon that reads its
/// subject), times how often it was delivered, up to five.
const MISFIT_REDELIVERY: Duration = Duration::from_secs(2);

/// How long a daemon waits for the verdict on its claim before it lets the job go.
const CLAIM_VERDICT_WAIT: Duration = Duration::from_secs(120);

struct Daemon {
    config: DaemonConfig,
    nats: async_nats::Client,
    js: jetstream::Context,
    topology: Topology,
    /// The attempt it holds, for its presence.
    current_job: Arc<Mutex<Option<WorkerJob>>>,
}

impl Daemon {
    fn presence(&self) -> WorkerInfo {
        let config = &self.config;
        let now = chrono::Utc::now();
        WorkerInfo {
            worker_id: config.worker_id.clone(),
            host: config.host.clone(),
            device: config.device.clone(),
            gpu_memory_gb: config.gpu_memory_gb,
            labels: config.labels.clone(),
            kinds: config.kinds.clone(),
            backend: config.executor.backend(),
            job: None,
            started_at: now,
            seen_at: now,
        }
    }

    /// Waits briefly for one job message and handles it.
    async fn take_one(&self, consumer: &PullConsumer, shutdown: &CancellationToken) -> Result<()> {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("fetching a job: {e}"))?;
        let Some(message) = batch.next().await else {
            return Ok(());
        };
        let message = message.map_err(|e| anyhow::anyhow!("receiving a job: {e}"))?;
        let job: JobMessage = match serde_json::from_slice(&message.payload) {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(subject = %message.subject, "dropping a job message that does not decode: {e}");
                message
                    .ack_with(AckKind::Term)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                return Ok(());
            }
        };
        // Labels and memory are not in the subject, nor where its checkpoints are: a daemon
        // that does not fit, or cannot read them, lets the job go back to the queue for another
        // daemon without claiming it, offered again later the more often it came back.
        let misfit = job
            .stage
            .fits(&self.presence())
            .err()
            .or_else(|| self.config.checkpoints.unreadable(&job));
        if let Some(why) = misfit {
            tracing::debug!(job = %job.job_id, "leaving a job this daemon cannot take: {why}");
            let delivered = message.info().map_or(1, |i| i.delivered.clamp(1, 5)) as u32;
            message
                .ack_with(AckKind::Nak(Some(MISFIT_REDELIVERY * delivered)))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            return Ok(());
        }
        let reporter = Reporter {
            js: self.js.clone(),
            topology: self.topology.clone(),
            job_id: job.job_id,
            run_id: job.run_id,
            attempt: job.attempt,
            worker_id: self.config.worker_id.clone(),
            shutdown: shutdown.clone(),
            checkpoints: self.config.checkpoints.clone(),
            uploaded: Default::default(),
        };
        let mut lease = Lease::listen(&self.nats, &self.topology, reporter.clone()).await?;
        // A claim is decided when the API writes it, which waits out a database outage; until
        // then the job message stays ours, so no other daemon claims it meanwhile.
        let keep_message = async {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let _ = message.ack_with(AckKind::Progress).await;
            }
        };
        let claimed = tokio::select! {
            claimed = lease.claim(job.expected_version, CLAIM_VERDICT_WAIT) => claimed,
            _ = keep_message => unreachable!("keeping the message never ends"),
        };
        let decision = match claimed {
            Ok(decision) => decision,
            Err(e) => {
                // Let the message come back, to us or another daemon.
                message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                return Err(e);
            }
        };
        // The claim is decided either way; from here the log's lease, not JetStream, owns the attempt.
        message
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("acking a job: {e}"))?;
        match decision {
            LeaseDecision::Granted { .. } => self.work(job, reporter, lease, shutdown).await,
            LeaseDecision::Cancelled => {
                tracing::info!(job = %job.job_id, "skipping a cancelled job");
                Ok(())
            }
            LeaseDecision::Revoked { reason } => {
                tracing::info!(job = %job.job_id, "claim refused: {reason}");
                Ok(())
            }
        }
    }

    async fn work(
        &self,
        job: JobMessage,
        reporter: Reporter,
        lease: Lease,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        tracing::info!(job = %job.job_id, attempt = job.attempt, kind = ?job.kind(), "working");
        let holding = WorkerJob {
            job_id: job.job_id,
            run_id: job.run_id,
            attempt: job.attempt,
        };
        *self.current_job.lock().expect("not poisoned") = Some(holding);
        let done = CancellationToken::new();
        let stop = shutdown.child_token();
        let cancelled = CancellationToken::new();
        // Work and heartbeats share this task, so that nothing outlives the daemon when it dies.
        let work = async {
            let result = async {
                let job = self.config.checkpoints.localize(&job).await?;
                self.config.files.admit(&job).map_err(anyhow::Error::msg)?;
                self.execute(&job, &reporter, &stop, &cancelled).await
            }
            .await;
            done.cancel();
            result
        };
        let (result, why_stopped) = tokio::join!(
            work,
            lease.keep(
                self.config.heartbeat,
                done.clone(),
                stop.clone(),
                cancelled.clone()
            )
        );
        *self.current_job.lock().expect("not poisoned") = None;
        match (result, why_stopped) {
            (_, Some(Stop::Revoked(reason))) => {
                tracing::warn!(job = %job.job_id, "lost the lease: {reason}");
            }
            (Ok(Outcome::Finished(checkpoint)), _) => {
                reporter.send(WorkerEvent::Finished { checkpoint }).await?
            }
            (Ok(Outcome::Stopped(_)), Some(Stop::Cancelled)) => {
                tracing::info!(job = %job.job_id, "cancelled; checkpoint saved");
            }
            // Shut down mid-job: the lease runs out and another attempt resumes from the checkpoint.
            (Ok(Outcome::Stopped(_)), None) => {
                tracing::info!(job = %job.job_id, "stopped for shutdown")
            }
            (Err(e), _) => {
                reporter
                    .send(WorkerEvent::Failed {
                        reason: format!("{e:#}"),
                    })
                    .await?
            }
        }
        Ok(())
    }

    async fn execute(
        &self,
        job: &JobMessage,
        reporter: &Reporter,
        stop: &CancellationToken,
        cancelled: &CancellationToken,
    ) -> Result<Outcome> {
        let data_dir = &self.config.checkpoints.data_dir;
        match (&self.config.executor, job.kind()) {
            (Executor::Verl(bridge), _) => {
                let stops = verl::Stops { stop, cancelled };
                verl::run(job, reporter, bridge, data_dir, stops).await
            }
            (Executor::Train, StageKind::Sft) => sft::run(job, reporter, data_dir, stop).await,
            (Executor::Train, StageKind::Rl) => rl::run(job, reporter, data_dir, stop).await,
            (Executor::Train, StageKind::Eval) => eval::run(job, reporter, data_dir, stop).await,
            (Executor::DryRun, _) => {
                dry_run::run(job, reporter, data_dir, self.config.step_delay, stop).await
            }
        }
    }
}
