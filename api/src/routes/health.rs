//! Liveness of the API's connections, and Prometheus metrics.

use crate::state::AppState;
use actix_web::{HttpResponse, get, web};
use serde::Serialize;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` when both connections work, `degraded` otherwise.
    pub status: &'static str,
    pub database: String,
    pub nats: String,
}

/// Reports whether PostgreSQL and NATS answer. 503 when either does not.
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
    let healthy = database == "ok" && nats == "ok";
    let body = Health {
        status: if healthy { "ok" } else { "degraded" },
        database,
        nats,
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
