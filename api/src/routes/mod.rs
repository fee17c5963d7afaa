//! HTTP routes. Each module is one family of endpoints; `configure` mounts them all.

pub mod analytics;
pub mod body;
pub mod datasets;
pub mod dead_letters;
pub mod evaluations;
pub mod events;
pub mod experiments;
pub mod health;
pub mod imports;
pub mod live_runs;
pub mod openapi;
pub mod params;
pub mod results;
pub mod web_ui;
pub mod workers;

use crate::error::ApiError;
use actix_web::{guard, web};

/// Mounts every route; the web UI, served from `web_dir`, answers whatever the others do not.
pub fn configure(cfg: &mut web::ServiceConfig, web_dir: &std::path::Path) {
    cfg.app_data(web::PathConfig::default().error_handler(|err, _| {
        ApiError::bad_parameter("id", format!("the path is invalid: {err}")).into()
    }))
    .app_data(web::QueryConfig::default().error_handler(|err, _| {
        let text = err.to_string();
        let parameter = parameter_named_in(&text).unwrap_or("query");
        ApiError::bad_parameter(parameter, format!("the query is invalid: {text}")).into()
    }))
    .service(
        web::scope("/api/v1")
            .service(experiments::submit)
            .service(experiments::list)
            .service(experiments::get)
            .service(experiments::cancel)
            .service(events::feed)
            .service(events::stream)
            .service(results::table)
            .service(results::prompt_scores)
            .service(evaluations::list)
            .service(evaluations::evaluate)
            .service(analytics::strategy)
            .service(analytics::comparison)
            .service(analytics::search)
            .service(analytics::metrics)
            .service(analytics::checkpoints)
            .service(imports::import)
            .service(live_runs::start)
            .service(live_runs::get)
            .service(live_runs::record)
            .service(live_runs::finish)
            .service(datasets::register)
            .service(datasets::upload_file)
            .service(datasets::list)
            .service(workers::list)
            .service(dead_letters::list)
            .service(dead_letters::redrive)
            .default_service(web::to(unknown_endpoint)),
    )
    .service(crate::mlflow::service())
    .service(health::healthz)
    .service(health::metrics)
    .service(openapi::document)
    .service(openapi::docs())
    // The web UI's files answer GET and HEAD only; other methods get a 405 that says so.
    .route(
        "/{path:.*}",
        web::route()
            .guard(guard::Not(guard::Any(guard::Get()).or(guard::Head())))
            .to(unknown_endpoint),
    )
    .service(web_ui::service(web_dir));
}

/// A JSON 405 naming the methods a path answers, or a 404 for an API path that answers none.
async fn unknown_endpoint(
    req: actix_web::HttpRequest,
) -> Result<actix_web::HttpResponse, ApiError> {
    let path = req.path();
    let mut allow = openapi::methods_of(path);
    if allow.is_empty() && !(path == "/api" || path.starts_with("/api/")) {
        // The web UI's pages and files.
        allow = vec!["GET", "HEAD"];
    }
    if allow.is_empty() {
        return Err(ApiError::NotFound(format!(
            "the endpoint {} {}",
            req.method(),
            req.path()
        )));
    }
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.path().to_owned(),
        allow,
    })
}

/// A 404 unless the run exists.
async fn require_run(pool: &sqlx::PgPool, run: uuid::Uuid) -> Result<(), ApiError> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM runs WHERE id = $1")
        .bind(run)
        .fetch_optional(pool)
        .await?;
    found
        .map(drop)
        .ok_or_else(|| ApiError::NotFound(format!("run {run}")))
}

/// serde names an unknown or missing field between backticks.
fn parameter_named_in(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}
