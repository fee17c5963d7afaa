//! A client of Ray's Jobs REST API (the dashboard's `/api/jobs/`): submit an entrypoint under a
//! submission id of prl's choosing, read its status, stop it.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct RayJobs {
    http: reqwest::Client,
    /// The dashboard's address, such as `http://head:8265`.
    base: String,
}

/// Where a Ray job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RayStatus {
    Pending,
    Running,
    Stopped,
    Succeeded,
    Failed,
}

impl RayStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RayStatus::Stopped | RayStatus::Succeeded | RayStatus::Failed
        )
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct RayJob {
    pub status: RayStatus,
    #[serde(default)]
    pub message: Option<String>,
}

impl RayJobs {
    pub fn new(address: &str) -> Result<RayJobs> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(RayJobs {
            http,
            base: address.trim_end_matches('/').to_owned(),
        })
    }

    /// The job submitted under `id`, if there is one.
    pub async fn get(&self, id: &str) -> Result<Option<RayJob>> {
        let response = self
            .http
            .get(format!("{}/api/jobs/{id}", self.base))
            .send()
            .await
            .with_context(|| format!("asking Ray at {} for job {id}", self.base))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = ok(response).await?;
        Ok(Some(response.json().await.context("reading Ray's job")?))
    }

    /// Submits `entrypoint` under the submission id `id`.
    pub async fn submit(
        &self,
        id: &str,
        entrypoint: &str,
        env: &BTreeMap<String, String>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<()> {
        let body = json!({
            "entrypoint": entrypoint,
            "submission_id": id,
            "runtime_env": {"env_vars": env},
            "metadata": metadata,
        });
        let response = self
            .http
            .post(format!("{}/api/jobs/", self.base))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("submitting job {id} to Ray at {}", self.base))?;
        ok(response).await.map(drop)
    }

    /// Asks Ray to stop the job (SIGTERM to its entrypoint, then SIGKILL).
    pub async fn stop(&self, id: &str) -> Result<()> {
        let response = self
            .http
            .post(format!("{}/api/jobs/{id}/stop", self.base))
            .send()
            .await
            .with_context(|| format!("stopping Ray job {id}"))?;
        ok(response).await.map(drop)
    }

    /// The job's driver log (its entrypoint's output).
    pub async fn logs(&self, id: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Logs {
            logs: String,
        }
        let response = self
            .http
            .get(format!("{}/api/jobs/{id}/logs", self.base))
            .send()
            .await?;
        Ok(ok(response).await?.json::<Logs>().await?.logs)
    }
}

async fn ok(response: reqwest::Response) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    bail!("Ray answered {status}: {}", body.trim())
}
