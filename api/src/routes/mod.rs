//! HTTP routes. Each module is one family of endpoints; `configure` mounts them all.

pub mod events;
pub mod experiments;
pub mod health;
pub mod openapi;
pub mod web_ui;

use crate::error::ApiError;
use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PathConfig::default().error_handler(|err, _| {
        ApiError::BadParameter {
            parameter: "id",
            reason: format!("the path is invalid: {err}"),
        }
        .into()
    }))
    .app_data(web::QueryConfig::default().error_handler(|err, _| {
        let text = err.to_string();
        let parameter = query_parameter_named_in(&text);
        ApiError::BadParameter {
            parameter,
            reason: format!("the query is invalid: {text}"),
        }
        .into()
    }))
    .service(
        web::scope("/api/v1")
            .service(experiments::submit)
            .service(experiments::list)
            .service(experiments::get)
            .service(experiments::cancel)
            .service(events::feed),
    )
    .service(health::healthz)
    .service(health::metrics)
    .service(openapi::document)
    .service(openapi::docs())
    .service(web_ui::index);
}

/// serde_urlencoded names the field in its message; map it back to a static name for the body.
fn query_parameter_named_in(message: &str) -> &'static str {
    const KNOWN: &[&str] = &["after", "limit", "status", "tag", "name", "cursor"];
    KNOWN
        .iter()
        .find(|p| message.contains(&format!("`{p}`")) || message.contains(&format!("field {p}")))
        .copied()
        .unwrap_or("query")
}
