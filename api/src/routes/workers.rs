//! The trainer daemons that announce themselves (`prl_bus::workers`): where they run, on which
//! device, with which labels, what they hold, and when they were last heard from.

use crate::auth::ReadAccess;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{HttpResponse, get, web};
use prl_schema::jobs::WorkerInfo;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerView {
    #[serde(flatten)]
    pub info: WorkerInfo,
    /// `active`, or `lost` when it has not been heard from for 20 s (it died, or cannot reach
    /// NATS); a lost daemon is listed for a day.
    pub status: String,
    /// Seconds since it was last heard from.
    pub seconds_since_seen: f64,
}

/// Every trainer daemon heard from in the last day, by worker id.
#[utoipa::path(context_path = "/api/v1", responses((status = 200, body = Vec<WorkerView>)))]
#[get("/workers")]
pub async fn list(_: ReadAccess, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let js = async_nats::jetstream::new(state.nats.clone());
    let unavailable = |e: anyhow::Error| ApiError::Unavailable(format!("{e:#}"));
    let bucket = state.topology.workers(&js).await.map_err(unavailable)?;
    let workers = prl_bus::workers::list(&bucket).await.map_err(unavailable)?;
    let now = chrono::Utc::now();
    let views: Vec<WorkerView> = workers
        .into_iter()
        .map(|info| {
            let since = (now - info.seen_at).as_seconds_f64().max(0.0);
            let lost = prl_bus::workers::is_lost(&info, now);
            WorkerView {
                info,
                status: if lost { "lost" } else { "active" }.into(),
                seconds_since_seen: since,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}
