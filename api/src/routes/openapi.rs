//! The OpenAPI 3 document, generated from the handlers, and its interactive docs page.

use actix_web::{HttpResponse, get};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(title = "prl", description = "Parallel-R1 experiment platform"),
    paths(
        super::experiments::submit,
        super::experiments::list,
        super::experiments::get,
        super::experiments::cancel,
        super::events::feed,
        super::events::stream,
        super::results::table,
        super::results::prompt_scores,
        super::evaluations::list,
        super::evaluations::evaluate,
        super::analytics::strategy,
        super::analytics::comparison,
        super::analytics::search,
        super::analytics::metrics,
        super::analytics::checkpoints,
        super::imports::import,
        super::datasets::register,
        super::datasets::list,
        super::dead_letters::list,
        super::dead_letters::redrive,
        super::health::healthz,
        super::health::metrics,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[get("/api/openapi.json")]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// Swagger UI at `/api/docs/`, served from assets built into the binary (no CDN).
pub fn docs() -> SwaggerUi {
    SwaggerUi::new("/api/docs/{_:.*}").url("/api/docs/openapi.json", ApiDoc::openapi())
}
