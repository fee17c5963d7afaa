//! Liveness of the API's connections, and Prometheus metrics.

use crate::messaging::supervisor::TaskHealth;
use crate::state::AppState;
use actix_web::{HttpResponse, get, web};
use serde::Serialize;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` when both connections work and every background task runs, `degraded` otherwise.
    pub status: &'static str,
    pub database: String,
    pub nats: String,
    /// The background tasks (relay, ingesters, lease monitor, job reconciler, live feed):
    /// whether each runs, and how often it panicked and was started again.
    pub tasks: std::collections::BTreeMap<&'static str, TaskHealth>,
}

/// Reports whether PostgreSQL and NATS answer and the background tasks run. 503 when not.
#[utoipa::path(responses((status = 200, body = Health), (status = 503, body = Health)))]
#[get("/healthz")]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let database = match sqlx::query("SELECT 1").execute(&state.pool).await {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("error: {e}"),
    };
    let nats = match state.nats.connection_state() {
        async_nats::connection::State::Connected => "ok".to_owned(),
        other => format!("error: {other:?}"),
    };
    let tasks = state.tasks.snapshot();
    let healthy = database == "ok" && nats == "ok" && tasks.values().all(|t| t.running);
    let body = Health {
        status: if healthy { "ok" } else { "degraded" },
        database,
        nats,
        tasks,
    };
    if healthy {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text exposition.
#[utoipa::path(responses((status = 200, content_type = "text/plain", body = String)))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
