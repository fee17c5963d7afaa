//! A small client of the REST API. Refusals are turned into sentences that name what is wrong.

use anyhow::{Context, Result, bail};
use prl_api::domain::status::ExperimentStatus;
use prl_api::routes::analytics::StrategyPoint;
use prl_api::routes::events::FeedPage;
use prl_api::routes::experiments::{Accepted, ExperimentDetail, ExperimentPage};
use prl_api::routes::results::ResultsTable;
use prl_schema::spec::ExperimentSpec;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// The API refused a request (4xx): the request itself is wrong, and sending it again will not
/// help. Other failures (unreachable, 5xx) may pass.
#[derive(Debug)]
pub struct Refused {
    pub status: reqwest::StatusCode,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the API refused it ({}): {}", self.status, self.message)
    }
}

impl std::error::Error for Refused {}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: Option<String>, token: Option<String>) -> Self {
        let base = base
            .unwrap_or_else(|| "http://127.0.0.1:8080".into())
            .trim_end_matches('/')
            .to_owned();
        Client {
            http: reqwest::Client::new(),
            base,
            token,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T> {
        let response = request.send().await.with_context(|| {
            format!(
                "could not reach the prl API at {} (is `prl up` running?)",
                self.base
            )
        })?;
        let status = response.status();
        if status.is_success() {
            return response
                .json()
                .await
                .context("the API answered with something unexpected");
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["message"].as_str().unwrap_or("no explanation given");
        let message = match body["field"].as_str() {
            Some(field) if !field.is_empty() => format!("{field}: {message}"),
            _ => message.to_owned(),
        };
        if status.is_client_error() {
            return Err(Refused { status, message }.into());
        }
        bail!("the API answered {status}: {message}")
    }

    /// Starts a live run, or finds the one its `key` started (`POST /api/v1/live-runs`).
    pub async fn live_start(
        &self,
        request: &serde_json::Value,
    ) -> Result<prl_api::routes::live_runs::LiveRun> {
        self.send(
            self.authorised(self.http.post(self.url("/api/v1/live-runs")))
                .json(request),
        )
        .await
    }

    /// Records a batch of a live run; what was recorded.
    pub async fn live_batch(
        &self,
        id: Uuid,
        batch: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        self.send(
            self.authorised(
                self.http
                    .post(self.url(&format!("/api/v1/live-runs/{id}/batches"))),
            )
            .json(batch),
        )
        .await
    }

    pub async fn live_finish(
        &self,
        id: Uuid,
        request: &serde_json::Value,
    ) -> Result<prl_api::routes::live_runs::LiveRun> {
        self.send(
            self.authorised(
                self.http
                    .post(self.url(&format!("/api/v1/live-runs/{id}/finish"))),
            )
            .json(request),
        )
        .await
    }

    /// Parses the file here first, so that a bad spec is reported with its file name.
    pub async fn submit_file(&self, path: &Path) -> Result<Uuid> {
        self.submit(&super::suite::read_spec(path)?).await
    }

    pub async fn submit(&self, spec: &ExperimentSpec) -> Result<Uuid> {
        let request = self
            .authorised(self.http.post(self.url("/api/v1/experiments")))
            .header("Idempotency-Key", Uuid::now_v7().to_string())
            .json(spec);
        let accepted: Accepted = self.send(request).await?;
        Ok(accepted.id)
    }

    /// The newest experiment submitted with exactly this spec that has not failed or been
    /// cancelled, with its status: what lets a suite started again reuse what it ran before.
    pub async fn find_submitted(
        &self,
        spec: &ExperimentSpec,
    ) -> Result<Option<(Uuid, ExperimentStatus)>> {
        let mut query = vec![("limit", "200"), ("name", spec.name.as_str())];
        // The last tag is the most specific (a suite's seed), so it narrows the search most.
        query.extend(spec.tags.last().map(|tag| ("tag", tag.as_str())));
        let page: ExperimentPage = self
            .send(self.authorised(self.http.get(self.url("/api/v1/experiments")).query(&query)))
            .await?;
        for found in page.items.into_iter().map(|x| x.summary) {
            let alive = found.status.is_active() || found.status == ExperimentStatus::Completed;
            if alive
                && found.name == spec.name.as_str()
                && self.detail(found.id).await?.spec.as_ref() == Some(spec)
            {
                return Ok(Some((found.id, found.status)));
            }
        }
        Ok(None)
    }

    pub async fn detail(&self, id: Uuid) -> Result<ExperimentDetail> {
        self.send(
            self.authorised(
                self.http
                    .get(self.url(&format!("/api/v1/experiments/{id}"))),
            ),
        )
        .await
    }

    pub async fn results(&self, ids: &[Uuid]) -> Result<ResultsTable> {
        self.of_experiments("/api/v1/results", ids).await
    }

    /// Per prompt, the sampled responses behind each result of `results`.
    pub async fn prompt_scores(
        &self,
        ids: &[Uuid],
    ) -> Result<Vec<prl_api::routes::results::PromptScores>> {
        self.of_experiments("/api/v1/results/prompts", ids).await
    }

    /// A GET that names experiments as `?experiments=ID,ID`.
    async fn of_experiments<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        ids: &[Uuid],
    ) -> Result<T> {
        let list: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        self.send(
            self.authorised(
                self.http
                    .get(self.url(path))
                    .query(&[("experiments", list.join(","))]),
            ),
        )
        .await
    }

    /// The strategy-evolution series of runs.
    pub async fn strategy(&self, runs: &[Uuid]) -> Result<Vec<StrategyPoint>> {
        let runs: Vec<String> = runs.iter().map(Uuid::to_string).collect();
        self.send(
            self.authorised(self.http.get(self.url("/api/v1/analytics/strategy")))
                .query(&[("runs", runs.join(","))]),
        )
        .await
    }

    /// Asks for an evaluation of a run's checkpoint; returns the experiment that runs it.
    pub async fn evaluate(&self, run: Uuid, request: &serde_json::Value) -> Result<Uuid> {
        let request = self
            .authorised(
                self.http
                    .post(self.url(&format!("/api/v1/runs/{run}/evaluations"))),
            )
            .json(request);
        let accepted: Accepted = self.send(request).await?;
        Ok(accepted.id)
    }

    pub async fn import(
        &self,
        request: &prl_api::routes::imports::ImportRequest,
    ) -> Result<prl_api::routes::imports::Imported> {
        let request = self
            .authorised(self.http.post(self.url("/api/v1/imports")))
            .json(request);
        self.send(request).await
    }

    pub async fn register_dataset(
        &self,
        registration: &prl_api::routes::datasets::Registration,
    ) -> Result<prl_api::routes::datasets::DatasetView> {
        let request = self
            .authorised(self.http.post(self.url("/api/v1/datasets")))
            .json(registration);
        self.send(request).await
    }

    /// Streams a dataset file to the API, which checks it and puts it in the artifact store.
    pub async fn upload_dataset_file(
        &self,
        path: &Path,
        format: prl_schema::datasets::Format,
    ) -> Result<prl_api::routes::datasets::StoredDatasetFile> {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let size = file.metadata().await?.len();
        // `jsonl` or `verl`, as in dataset references.
        let format = format.prefix().trim_end_matches(':');
        let request = self
            .authorised(self.http.post(self.url("/api/v1/datasets/files")))
            .query(&[("format", format)])
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::from(file));
        self.send(request)
            .await
            .with_context(|| format!("uploading {}", path.display()))
    }

    pub async fn datasets(&self) -> Result<Vec<prl_api::routes::datasets::DatasetView>> {
        self.send(self.authorised(self.http.get(self.url("/api/v1/datasets"))))
            .await
    }

    pub async fn dead_letters(&self) -> Result<Vec<prl_api::routes::dead_letters::DeadLetter>> {
        self.send(self.authorised(self.http.get(self.url("/api/v1/dead-letters"))))
            .await
    }

    pub async fn workers(&self) -> Result<Vec<prl_api::routes::workers::WorkerView>> {
        self.send(self.authorised(self.http.get(self.url("/api/v1/workers"))))
            .await
    }

    pub async fn redrive(&self, id: Uuid) -> Result<prl_api::routes::dead_letters::DeadLetter> {
        let url = self.url(&format!("/api/v1/dead-letters/{id}/redrive"));
        self.send(self.authorised(self.http.post(url))).await
    }

    pub async fn cancel(&self, id: Uuid, reason: Option<String>) -> Result<ExperimentStatus> {
        let request = self
            .authorised(
                self.http
                    .post(self.url(&format!("/api/v1/experiments/{id}/cancel"))),
            )
            .json(&serde_json::json!({ "reason": reason }));
        let accepted: Accepted = self.send(request).await?;
        Ok(accepted.status)
    }

    pub async fn print_list(
        &self,
        status: Option<String>,
        tag: Option<String>,
        name: Option<String>,
        limit: u32,
    ) -> Result<()> {
        let mut query = vec![("limit", limit.to_string())];
        query.extend(status.map(|s| ("status", s)));
        query.extend(tag.map(|s| ("tag", s)));
        query.extend(name.map(|s| ("name", s)));
        let page: ExperimentPage = self
            .send(self.authorised(self.http.get(self.url("/api/v1/experiments")).query(&query)))
            .await?;
        if page.items.is_empty() {
            println!("no experiments");
        }
        for x in page.items.into_iter().map(|x| x.summary) {
            println!(
                "{}  {:<10} {}  {}{}",
                x.id,
                x.status,
                x.submitted_at.format("%Y-%m-%d %H:%M"),
                x.name,
                if x.tags.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", x.tags.join(", "))
                }
            );
        }
        Ok(())
    }

    pub async fn print_events(&self, mut after: i64, follow: bool) -> Result<()> {
        loop {
            let request = self
                .authorised(self.http.get(self.url("/api/v1/events")))
                .query(&[("after", after.to_string()), ("limit", "500".into())]);
            let page: FeedPage = self.send(request).await?;
            for e in &page.events {
                let (event_type, payload) = e.event.to_parts();
                println!(
                    "{:>8}  {}  {:<11} {}  v{:<4} {event_type}  {payload}",
                    e.position,
                    e.recorded_at.format("%H:%M:%S%.3f"),
                    e.stream_type.as_str(),
                    e.stream_id,
                    e.version
                );
            }
            after = page.last_position;
            if page.events.is_empty() {
                if !follow {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
