//! `prl watch`: a progress bar per stage, redrawn from the API until the experiment ends.

use super::client::Client;
use anyhow::Result;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use prl_api::domain::status::ExperimentStatus;
use std::time::Duration;
use uuid::Uuid;

/// Follows the experiment, then fails unless it completed, so that scripts stop on a failed or
/// cancelled one.
pub async fn until_completed(client: &Client, id: Uuid) -> Result<()> {
    match watch(client, id).await? {
        ExperimentStatus::Completed => Ok(()),
        status => anyhow::bail!("experiment {id} ended {status}, not completed"),
    }
}

/// Returns the final status.
pub async fn watch(client: &Client, id: Uuid) -> Result<ExperimentStatus> {
    let detail = client.detail(id).await?;
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>18} [{bar:30}] {pos}/{len} {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let stage_bars: Vec<ProgressBar> = detail
        .stages
        .iter()
        .map(|s| {
            let bar = bars.add(ProgressBar::new(1));
            bar.set_style(style.clone());
            bar.set_prefix(format!("{} ({})", s.name, s.kind));
            bar
        })
        .collect();
    loop {
        let detail = client.detail(id).await?;
        for (stage, bar) in detail.stages.iter().zip(&stage_bars) {
            let run = detail.runs.iter().find(|r| Some(r.id) == stage.run_id);
            let total = run
                .and_then(|r| r.latest_metrics["total_steps"].as_f64())
                .unwrap_or(1.0) as u64;
            let step = run.and_then(|r| r.last_step).unwrap_or(0) as u64;
            bar.set_length(total.max(1));
            bar.set_position(if stage.status == "completed" {
                total.max(1)
            } else {
                step
            });
            let attempt = run
                .filter(|r| r.attempt > 1)
                .map(|r| format!(" (attempt {})", r.attempt))
                .unwrap_or_default();
            let waiting = detail
                .jobs
                .iter()
                .find(|j| Some(j.id) == stage.job_id)
                .and_then(|j| j.waiting.as_ref())
                .map(|w| format!(" ({w})"))
                .unwrap_or_default();
            bar.set_message(format!("{}{attempt}{waiting}", stage.status));
        }
        if !detail.summary.status.is_active() {
            for bar in &stage_bars {
                bar.abandon();
            }
            let reason = detail
                .summary
                .status_reason
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            println!("experiment {id} {}{reason}", detail.summary.status);
            return Ok(detail.summary.status);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
