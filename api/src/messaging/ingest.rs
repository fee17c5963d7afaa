//! The ingester of worker events: it takes them from one lane's JetStream consumer in batches and
//! writes each batch in one log transaction, then acknowledges it. A redelivered message is
//! recognised by its event id and its job and written once; a message whose id another job's
//! message took is parked.
//!
//! Failures are told apart by cause. When the database refuses what a message holds (a data
//! exception, a constraint, a size limit), the batch is halved until the culprit stands alone; only
//! it is parked in the dead-letter stream and recorded in the log, and its neighbours are written.
//! Any other failure (the database or NATS out of reach, a server shutting down, a schema that does
//! not match) is no message's fault: the batch is kept, with progress acknowledgements, and retried
//! with backoff for as long as it lasts; nothing is parked or dropped for it.

use crate::domain::job;
use crate::event_log;
use crate::projections::{self, PreparedWords};
use crate::store::{
    AppendError, Expected, LogTx, NewEvent, StreamAppend, derived_id, existing_event_ids,
};
use crate::telemetry::Metrics;
use anyhow::{Context, Result};
use async_nats::jetstream::{self, AckKind, Message};
use chrono::Utc;
use futures::StreamExt;
use prl_bus::{Lane, Topology, encoding};
use prl_schema::events::{Event, Metadata};
use prl_schema::jobs::{LeaseDecision, LeaseVerdict, WorkerEvent, WorkerMessage};
use prl_schema::word_filter::BatchWords;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Clone)]
pub struct Ingester {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub topology: Topology,
    pub lane: Lane,
    pub batch_size: usize,
    /// Transactions a batch is written in at once, its messages split between them by job.
    pub writers: usize,
    pub lease: chrono::Duration,
    pub metrics: Metrics,
    pub wake_relay: std::sync::Arc<tokio::sync::Notify>,
}

/// How long a batch waits for more messages after its first.
const LINGER: Duration = Duration::from_millis(10);

/// A batch stops growing past this many payload bytes: trajectory messages are large, and one
/// huge transaction holds the log for seconds and risks outliving JetStream's ack wait.
const MAX_BATCH_BYTES: usize = 64 << 20;

/// How many payload bytes one pull request asks the server for. The client asks again when half
/// of it is left, so the server never holds more than about 1.5 times this for the API's
/// connection: past 64 MB (nats-server's `max_pending`) it drops the connection as a slow
/// consumer, and what it had sent waits out the ack wait. A pull counted in messages alone let
/// 2,000 trajectory messages of 84 KB (168 MB) be in flight. A server whose messages may be
/// larger is asked for one message's worth, or none would ever fit.
const PULL_BYTES: usize = 16 << 20;

/// The first and the longest wait before a batch is written again after an outage.
const OUTAGE_RETRY: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));

/// The reason of a parked message whose first reason could not be recorded.
const UNRECORDABLE: &str = "parked: the log refused it, and the record of why";

/// How much of a reason is kept: decoding errors quote the input.
const MAX_REASON_CHARS: usize = 2000;

/// A message taken off the stream, decoded or with the reason it could not be.
struct Incoming {
    message: Message,
    decoded: Result<WorkerMessage, String>,
    /// Its JSON's length, which a compressed payload's is not.
    bytes: usize,
    /// A trajectory message's words, found while the batch before it was written.
    words: Option<Arc<BatchWords>>,
}

impl Ingester {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.consume(&shutdown).await {
                Ok(()) => return,
                Err(e) => tracing::warn!("ingester: {e:#}; restarting"),
            }
            if super::pause(&shutdown, Duration::from_secs(1)).await {
                return;
            }
        }
    }

    async fn consume(&self, shutdown: &CancellationToken) -> Result<()> {
        let consumer = self.topology.ingest_consumer(&self.js, self.lane).await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.batch_size)
            .max_bytes_per_batch(PULL_BYTES.max(self.nats.server_info().max_payload))
            .messages()
            .await
            .context("subscribing to worker events")?;
        // The next batch is received and decoded on another task while this one is written.
        let (batches, mut next) = tokio::sync::mpsc::channel(1);
        let (waiting, writer_waiting) = tokio::sync::watch::channel(false);
        let mut receiving = tokio::spawn(receive(
            messages,
            self.batch_size,
            batches,
            writer_waiting,
            shutdown.child_token(),
        ));
        let stop_receiving = AbortOnDrop(receiving.abort_handle());
        let outcome = async {
            while !shutdown.is_cancelled() {
                waiting.send_replace(true);
                let Some(batch) = next.recv().await else {
                    break;
                };
                waiting.send_replace(false);
                if shutdown.is_cancelled() {
                    let _ = nak(batch).await;
                    break;
                }
                self.ingest(batch?, shutdown).await?;
            }
            if shutdown.is_cancelled() {
                return Ok(());
            }
            match (&mut receiving).await {
                Err(e) if e.is_panic() => Err(anyhow::anyhow!("receiving worker events: {e}")),
                _ => Err(anyhow::anyhow!("the worker-event subscription ended")),
            }
        }
        .await;
        // A batch received but not written goes back now, ahead of newer messages, instead of
        // after JetStream's ack wait.
        drop(stop_receiving);
        next.close();
        while let Ok(batch) = next.try_recv() {
            let _ = nak(batch).await;
        }
        outcome
    }

    /// Writes one batch, waiting out any outage, then acknowledges it and answers its claims and
    /// heartbeats. Returns early only on shutdown, leaving the batch to be delivered again.
    async fn ingest(&self, batch: Vec<Incoming>, shutdown: &CancellationToken) -> Result<()> {
        let started = std::time::Instant::now();
        let mut wait = OUTAGE_RETRY.0;
        let mut groups = split_by_job(batch, self.writers, |item| {
            let job = item.decoded.as_ref().ok().map(|m| m.job_id.0);
            (job, item.bytes)
        });
        let verdicts = loop {
            let writes = groups.iter_mut().map(|group| self.write_isolating(group));
            let outcomes = futures::future::join_all(writes).await;
            let failed = outcomes.iter().filter(|o| o.is_err()).count();
            match outcomes.into_iter().collect::<Result<Vec<_>>>() {
                Ok(verdicts) => break verdicts.into_iter().flatten().collect::<Vec<_>>(),
                Err(e) => {
                    let batch: Vec<&Incoming> = groups.iter().flatten().collect();
                    tracing::warn!(
                        "writing {} worker messages failed ({failed} of {} transactions): {e:#}; \
                         retrying in {wait:?}",
                        batch.len(),
                        groups.len(),
                    );
                    self.metrics
                        .ingested
                        .with_label_values(&["retried"])
                        .inc_by(batch.len() as u64);
                    // Still ours: JetStream must not hand them to another ingester meanwhile.
                    for item in batch {
                        let _ = item.message.ack_with(AckKind::Progress).await;
                    }
                    if super::pause(shutdown, wait).await {
                        return Ok(());
                    }
                    wait = (wait * 2).min(OUTAGE_RETRY.1);
                }
            }
        };
        self.wake_relay.notify_one();
        let batch: Vec<&Incoming> = groups.iter().flatten().collect();
        tracing::debug!(messages = batch.len(), elapsed = ?started.elapsed(), "ingested a batch");
        for item in batch {
            item.message
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("acking: {e}"))?;
        }
        for (subject, verdict) in verdicts {
            let payload = serde_json::to_vec(&verdict)?;
            self.nats.publish(subject, payload.into()).await?;
        }
        Ok(())
    }

    /// Writes `batch` in order. A write that the database refuses because of what a message
    /// holds is tried again on each half, until the messages at fault stand alone and are parked;
    /// any other failure is returned, for the whole batch to be tried again (what was written
    /// meanwhile is then recognised as written).
    async fn write_isolating(&self, batch: &mut [Incoming]) -> Result<Vec<(String, LeaseVerdict)>> {
        let mut verdicts = Vec::new();
        // Ranges of the batch still to write, the next on top.
        let mut todo = Vec::new();
        todo.push(0..batch.len());
        while let Some(range) = todo.pop() {
            let error = match self.write(&batch[range.clone()]).await {
                Ok(written) => {
                    verdicts.extend(written);
                    continue;
                }
                Err(e) => e,
            };
            if !blames_the_message(&error) {
                return Err(error);
            }
            if range.len() > 1 {
                let middle = range.start + range.len() / 2;
                todo.push(middle..range.end);
                todo.push(range.start..middle);
                continue;
            }
            // The culprit is parked; if even its record is refused, it is parked again with a
            // reason that quotes nothing of it.
            let item = &mut batch[range.start];
            match &item.decoded {
                Ok(_) => item.decoded = Err(format!("the log refused it: {error:#}")),
                Err(reason) if reason != UNRECORDABLE => item.decoded = Err(UNRECORDABLE.into()),
                Err(_) => return Err(error.context("recording a parked worker message")),
            }
            todo.push(range);
        }
        Ok(verdicts)
    }

    /// One transaction for the whole batch. Returns the verdicts to send once it has committed.
    async fn write(&self, batch: &[Incoming]) -> Result<Vec<(String, LeaseVerdict)>> {
        // Parking publishes to NATS: done before the log's lock is taken, never under it, and
        // only for messages not parked already (a redelivery, or a batch tried again).
        let to_park: HashMap<Uuid, (&Message, &str)> = batch
            .iter()
            .filter_map(|item| {
                let reason = item.decoded.as_ref().err()?;
                Some((parked_id(&item.message), (&item.message, reason.as_str())))
            })
            .collect();
        let mut appends = Vec::new();
        if !to_park.is_empty() {
            let ids: Vec<Uuid> = to_park.keys().copied().collect();
            let parked = existing_event_ids(&self.pool, &ids).await?;
            for (id, (message, reason)) in
                to_park.into_iter().filter(|(id, _)| !parked.contains(id))
            {
                appends.push(self.park(message, reason, id).await?);
            }
        }
        let words = prepared_words(batch);
        let mut log = event_log::begin_with_words(&self.pool, words).await?;
        // The streams that a transaction which lets the log's lock go early may append to (the
        // runs of data messages, whichever lane they came by), and the parked messages', before
        // anything about them is read: another ingester's transaction on them, one that has let
        // the lock go included, is waited for. A job's stream is appended to only under the
        // log's lock, so a heartbeat waits for no run's data.
        let streams: Vec<Uuid> = batch
            .iter()
            .filter_map(|item| item.decoded.as_ref().ok())
            .filter(|m| Lane::of(&m.body) == Lane::Data)
            .map(|m| m.run_id.0)
            .chain(appends.iter().map(|a| a.stream_id))
            .collect();
        log.lock_streams(&streams).await?;
        // Under the locks: recorded meanwhile by another ingester is recorded.
        let recorded = log
            .existing_event_ids(&appends.iter().map(|a| a.stream_id).collect::<Vec<_>>())
            .await?;
        appends.retain(|a| !recorded.contains(&a.stream_id));
        let messages: Vec<&WorkerMessage> = batch
            .iter()
            .filter_map(|i| i.decoded.as_ref().ok())
            .collect();
        let ids: Vec<Uuid> = messages.iter().map(|m| m.event_id.0).collect();
        let mut seen = recorded_jobs(&mut log, &ids).await?;
        let mut jobs = load_jobs(&mut log, &messages).await?;

        let now = Utc::now();
        let mut verdicts = Vec::new();
        let (mut written, mut duplicates, mut refused) = (0u64, 0u64, 0u64);
        for msg in messages {
            let Some(state) = jobs.get_mut(&msg.job_id.0) else {
                refused += 1;
                let reason = format!("job {} is not in this deployment's log", msg.job_id);
                verdicts.push(self.verdict(msg, LeaseDecision::Revoked { reason }));
                continue;
            };
            match seen.get(&msg.event_id.0) {
                None => {
                    seen.insert(msg.event_id.0, Some(msg.job_id.0));
                }
                Some(job) if *job == Some(msg.job_id.0) => {
                    // A redelivery: written before, so only answer again what was answered then.
                    duplicates += 1;
                    if matches!(msg.body, WorkerEvent::Claim { .. } | WorkerEvent::Heartbeat) {
                        verdicts.push(self.verdict(msg, state.current_verdict(msg)));
                    }
                    continue;
                }
                Some(job) => {
                    return Err(ReusedEventId {
                        id: msg.event_id.0,
                        job: msg.job_id.0,
                        taken_by: *job,
                    }
                    .into());
                }
            }
            let decision = job::decide(state, msg, now, self.lease);
            let metadata = Metadata {
                correlation_id: Some(msg.job_id.0),
                causation_id: None,
                actor: Some(format!("worker:{}", msg.worker_id)),
            };
            // The message's own id goes on the first event it causes, which is what makes a
            // redelivery recognisable.
            let mut ids =
                std::iter::once(msg.event_id.0).chain(std::iter::repeat_with(Uuid::now_v7));
            let mut wrap = |event: Event| NewEvent {
                event_id: ids.next().expect("endless"),
                event,
                metadata: metadata.clone(),
            };
            if decision.job_events.is_empty() && decision.run_events.is_empty() {
                refused += 1;
            } else {
                written += 1;
            }
            if !decision.job_events.is_empty() {
                let expected = Expected::Exact(state.version);
                for event in &decision.job_events {
                    state.apply(event);
                }
                let events = decision.job_events.into_iter().map(&mut wrap).collect();
                appends.push(StreamAppend {
                    stream_id: msg.job_id.0,
                    expected,
                    events,
                });
            }
            if !decision.run_events.is_empty() {
                let events = decision.run_events.into_iter().map(&mut wrap).collect();
                appends.push(StreamAppend {
                    stream_id: msg.run_id.0,
                    expected: Expected::Any,
                    events,
                });
            }
            if let Some(decision) = decision.verdict {
                verdicts.push(self.verdict(msg, decision));
            }
        }
        for result in log.append_many(appends).await? {
            result.context("a worker event conflicted with the log")?;
        }
        log.commit().await?;
        let m = &self.metrics.ingested;
        m.with_label_values(&["written"]).inc_by(written);
        m.with_label_values(&["duplicate"]).inc_by(duplicates);
        m.with_label_values(&["refused"]).inc_by(refused);
        m.with_label_values(&["parked"])
            .inc_by(batch.iter().filter(|i| i.decoded.is_err()).count() as u64);
        Ok(verdicts)
    }

    /// Copies a message to the dead-letter stream and returns the event that records it there,
    /// whose stream and event id is `id`.
    async fn park(&self, message: &Message, reason: &str, id: Uuid) -> Result<StreamAppend> {
        // Both are recorded as text: control characters (a NUL in a quoted input) cannot be.
        let printable = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(MAX_REASON_CHARS)
                .collect()
        };
        let (subject, reason) = (printable(&message.subject), printable(reason));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Prl-Reason", reason.as_str());
        // A re-park of the same message within the duplicate window is stored once.
        headers.insert("Nats-Msg-Id", format!("dead-{id}").as_str());
        // The bytes are parked as they came, so their encoding goes with them.
        if let Some(encoding) = message
            .headers
            .as_ref()
            .and_then(|h| h.get(encoding::HEADER))
        {
            headers.insert(encoding::HEADER, encoding.clone());
        }
        let ack = self
            .js
            .publish_with_headers(
                self.topology.dead_letter_subject(&subject),
                headers,
                message.payload.clone(),
            )
            .await?
            .await
            .context("parking a worker message")?;
        tracing::warn!(%subject, %reason, "parked a worker message");
        let event = Event::WorkerMessageParked {
            subject,
            reason,
            dead_letter_sequence: ack.sequence,
            bytes: message.payload.len(),
        };
        Ok(StreamAppend {
            stream_id: id,
            expected: Expected::NoStream,
            events: vec![NewEvent {
                event_id: id,
                event,
                metadata: Metadata {
                    actor: Some("ingester".into()),
                    ..Default::default()
                },
            }],
        })
    }

    fn verdict(&self, msg: &WorkerMessage, decision: LeaseDecision) -> (String, LeaseVerdict) {
        let verdict = LeaseVerdict {
            job_id: msg.job_id,
            attempt: msg.attempt,
            worker_id: msg.worker_id.clone(),
            decision,
        };
        (self.topology.lease_subject(msg.job_id), verdict)
    }
}

/// Takes batches off the stream and decodes them, until the stream ends, the ingester stops
/// taking them, or shutdown. A batch waits for one message, then lingers briefly for more, and
/// keeps growing for as long as the writer is busy with the one before (`writer_waiting` is
/// false): a quiet stream costs its first message at most `LINGER` of latency, and a busy one is
/// written in batches as large as the writer's pace allows, since each transaction has a cost of
/// its own (the step rows it refreshes, its commit).
async fn receive(
    mut messages: impl futures::Stream<Item = Result<Message, impl std::fmt::Display>> + Unpin,
    batch_size: usize,
    batches: tokio::sync::mpsc::Sender<Result<Vec<Incoming>>>,
    mut writer_waiting: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    loop {
        // Only one batch waits while another is written: the next is taken once the writer has
        // taken this one's place, so at most two batches are unacknowledged.
        let Ok(place) = batches.reserve().await else {
            return;
        };
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            first = messages.next() => first,
        };
        let Some(first) = first else { return };
        let mut batch = vec![];
        let mut bytes = 0;
        let mut next = Some(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        let hand_off = async {
            tokio::time::sleep_until(deadline).await;
            // A writer gone is not waited for.
            let _ = writer_waiting.wait_for(|&waiting| waiting).await;
        };
        tokio::pin!(hand_off);
        while let Some(message) = next.take() {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    place.send(Err(anyhow::anyhow!("receiving: {e}")));
                    return;
                }
            };
            let json = encoding::decode(message.headers.as_ref(), &message.payload);
            let length = json.as_ref().map_or(message.payload.len(), |j| j.len());
            bytes += length;
            let decoded = json.and_then(|json| {
                serde_json::from_slice::<WorkerMessage>(&json)
                    .map_err(|e| format!("not a worker message: {e}"))
            });
            let words = match &decoded {
                Ok(WorkerMessage {
                    body: WorkerEvent::Trajectories(batch),
                    ..
                }) => Some(Arc::new(projections::trajectory_words(batch))),
                _ => None,
            };
            batch.push(Incoming {
                message,
                decoded,
                bytes: length,
                words,
            });
            if batch.len() < batch_size && bytes < MAX_BATCH_BYTES {
                next = tokio::select! {
                    biased;
                    message = messages.next() => message,
                    () = &mut hand_off => None,
                };
            }
        }
        place.send(Ok(batch));
    }
}

/// Splits a batch into at most `writers` parts, each written in a transaction of its own at
/// the same time as the others. A job's messages all go to one part, in their order, so no two
/// parts append to one stream; jobs go, the largest first, to the part with the fewest bytes so
/// far. Messages that could not be decoded (no job) go to the first part.
fn split_by_job<T>(
    batch: Vec<T>,
    writers: usize,
    job_and_bytes: impl Fn(&T) -> (Option<Uuid>, usize),
) -> Vec<Vec<T>> {
    let mut jobs: Vec<(Option<Uuid>, usize, Vec<T>)> = Vec::new();
    let mut index: HashMap<Option<Uuid>, usize> = HashMap::new();
    for item in batch {
        let (job, bytes) = job_and_bytes(&item);
        let i = *index.entry(job).or_insert_with(|| {
            jobs.push((job, 0, Vec::new()));
            jobs.len() - 1
        });
        jobs[i].1 += bytes;
        jobs[i].2.push(item);
    }
    // Undecodable messages first, then the largest jobs; ties keep the batch's order.
    jobs.sort_by_key(|(job, bytes, _)| (job.is_some(), std::cmp::Reverse(*bytes)));
    let mut parts: Vec<(usize, Vec<T>)> = (0..writers.max(1)).map(|_| (0, Vec::new())).collect();
    for (_, bytes, items) in jobs {
        let part = parts
            .iter_mut()
            .min_by_key(|(b, _)| *b)
            .expect("at least one part");
        part.0 += bytes;
        part.1.extend(items);
    }
    parts
        .into_iter()
        .map(|(_, items)| items)
        .filter(|items| !items.is_empty())
        .collect()
}

/// The words of the batch's trajectory messages, by the id of the event each causes first (its
/// `TrajectoriesRecorded`). An id that two messages share is left out: which of them is recorded
/// is decided under the lock, so that event finds its own words there.
fn prepared_words(batch: &[Incoming]) -> PreparedWords {
    let mut words = PreparedWords::new();
    let mut shared = HashSet::new();
    for item in batch {
        if let (Ok(message), Some(w)) = (&item.decoded, &item.words)
            && words.insert(message.event_id.0, w.clone()).is_some()
        {
            shared.insert(message.event_id.0);
        }
    }
    words.retain(|id, _| !shared.contains(id));
    words
}

/// Hands a batch back to JetStream for delivery again at once.
async fn nak(batch: Result<Vec<Incoming>>) -> Result<()> {
    for item in batch.into_iter().flatten() {
        item.message
            .ack_with(AckKind::Nak(None))
            .await
            .map_err(|e| anyhow::anyhow!("nak: {e}"))?;
    }
    Ok(())
}

/// Aborts a task when the one that started it is done with it.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The id of the `WorkerMessageParked` event (and its stream) that records `message`: derived
/// from its place in its stream, so that parking it again records nothing new.
fn parked_id(message: &Message) -> Uuid {
    match message.info() {
        Ok(info) => derived_id(&[
            b"prl parked ",
            info.stream.as_bytes(),
            &info.stream_sequence.to_be_bytes(),
        ]),
        Err(_) => Uuid::now_v7(),
    }
}

/// The job each of `ids` that the log holds was written for (its event's correlation id).
async fn recorded_jobs(log: &mut LogTx, ids: &[Uuid]) -> Result<HashMap<Uuid, Option<Uuid>>> {
    let rows: Vec<(Uuid, Option<String>)> = sqlx::query_as(
        "SELECT event_id, metadata->>'correlation_id' FROM events WHERE event_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(log.conn())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, job)| (id, job.and_then(|j| j.parse().ok())))
        .collect())
}

/// A message whose event id is already an event of another job (or of none): not a redelivery,
/// so not dropped as one; the message is at fault (a worker that reuses ids).
#[derive(Debug, thiserror::Error)]
#[error("event id {id} of a message of job {job} is taken by {}", match taken_by {
    Some(other) => format!("a message of job {other}"),
    None => "an event of no job".to_owned(),
})]
struct ReusedEventId {
    id: Uuid,
    job: Uuid,
    taken_by: Option<Uuid>,
}

/// Whether a failed write was refused because of what its messages hold, rather than for a reason
/// no message causes (an outage, a schema that does not match): only then can splitting the batch
/// find a culprit.
fn blames_the_message(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if cause.is::<ReusedEventId>() {
            return true;
        }
        let database = match cause.downcast_ref::<AppendError>() {
            Some(AppendError::Conflict { .. }) => return true,
            Some(AppendError::Database(e)) => Some(e),
            None => cause.downcast_ref::<sqlx::Error>(),
        };
        match database {
            Some(sqlx::Error::Database(e)) => e.code().is_some_and(|code| refuses_the_data(&code)),
            Some(sqlx::Error::Encode(_)) => true,
            _ => false,
        }
    })
}

/// SQLSTATEs that refuse the data written: data exceptions (a NUL byte, a number out of range),
/// integrity constraint violations, and program limits (a value too large). Any other error, a
/// lost connection, a shutdown or a schema that does not match, is no message's fault: the batch
/// is retried until it goes through, never parked for it. A binary COPY's field in a format its
/// column does not read (22P03) or a row of the wrong width (22P04) is such a mismatch: every
/// field's type and count is fixed in code, whatever a message holds.
fn refuses_the_data(code: &str) -> bool {
    matches!(code.get(..2), Some("22" | "23" | "54")) && !matches!(code, "22P03" | "22P04")
}

/// The jobs the messages name, as the log has them.
async fn load_jobs(
    log: &mut LogTx,
    messages: &[&WorkerMessage],
) -> Result<HashMap<Uuid, job::Job>> {
    let ids: Vec<Uuid> = messages
        .iter()
        .map(|m| m.job_id.0)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    Ok(projections::jobs::load(log.conn(), &ids).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_split_by_job_in_order_and_by_size() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        // (job, bytes, order in the batch)
        let batch = vec![
            (Some(a), 10, 0),
            (Some(b), 50, 1),
            (None, 1, 2),
            (Some(a), 10, 3),
            (Some(c), 30, 4),
            (Some(a), 10, 5),
        ];
        let parts = split_by_job(batch.clone(), 2, |&(job, bytes, _)| (job, bytes));
        let order = |part: &Vec<(Option<Uuid>, usize, i32)>| -> Vec<i32> {
            part.iter().map(|m| m.2).collect()
        };
        // The undecodable message to the first part, b (50 bytes) to the second, then a and c
        // (30 each; a came first) to the first, which has fewer bytes each time; each job's
        // messages in the batch's order.
        assert_eq!(
            parts.iter().map(order).collect::<Vec<_>>(),
            [vec![2, 0, 3, 5, 4], vec![1]]
        );
        let one = split_by_job(batch.clone(), 1, |&(job, bytes, _)| (job, bytes));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].len(), batch.len());
        let many = split_by_job(batch, 8, |&(job, bytes, _)| (job, bytes));
        assert_eq!(many.len(), 4, "one part per job, none empty");
    }

    #[test]
    fn outages_are_not_blamed_on_the_messages() {
        let outage = anyhow::Error::from(sqlx::Error::PoolTimedOut).context("writing");
        assert!(!blames_the_message(&outage));
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!blames_the_message(&anyhow::Error::from(sqlx::Error::Io(
            io
        ))));
        assert!(!blames_the_message(&anyhow::anyhow!("nats: timed out")));
        for code in [
            "08006", "57P01", "40001", "42703", "53300", "22P03", "22P04",
        ] {
            assert!(!refuses_the_data(code), "{code}");
        }
        assert!(
            refuses_the_data("22P05") && refuses_the_data("23505") && refuses_the_data("54000")
        );
    }

    #[test]
    fn a_conflict_is_blamed_on_the_messages_and_a_decoding_error_is_not() {
        let conflict = AppendError::Conflict {
            stream_id: Uuid::nil(),
            expected: Expected::Exact(3),
            actual: 4,
        };
        assert!(blames_the_message(
            &anyhow::Error::from(conflict).context("a worker event conflicted with the log")
        ));
        // Reading what the log holds back is the deployment's problem, not the message's.
        let json = serde_json::from_str::<u32>("x").unwrap_err();
        assert!(!blames_the_message(&anyhow::Error::from(json)));
    }
}
