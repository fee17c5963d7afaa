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
        super::live_runs::start,
        super::live_runs::get,
        super::live_runs::record,
        super::live_runs::finish,
        super::datasets::register,
        super::datasets::upload_file,
        super::datasets::list,
        super::dead_letters::list,
        super::dead_letters::redrive,
        super::workers::list,
        super::health::healthz,
        super::health::metrics,
    ),
    modifiers(&BearerAuth, &CommonResponses)
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

/// The answers every operation under `/api/v1` may give besides its own, documented once here
/// rather than on each handler: 400 for a malformed path, query or body, 401 when a token is
/// needed (writes always, reads when protected), 413 and 422 for a body over its limit or with
/// a string that cannot be stored, and 503 while the database or NATS is out of reach.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") {
                continue;
            }
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                let mut answers = vec![
                    (
                        "400",
                        "The path, a query parameter or the body is malformed.",
                    ),
                    ("401", "A bearer token is required."),
                    ("503", "The database or NATS is out of reach; try again."),
                ];
                if operation.request_body.is_some() {
                    answers.push(("413", "The body is over its limit."));
                    answers.push(("422", "A field of the body is invalid."));
                }
                for (status, description) in answers {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description).into());
                }
            }
        }
    }
}

/// The methods the document lists for `path` (templates such as `/experiments/{id}` match any one
/// segment in place of `{id}`), for the `Allow` header of a 405.
pub fn methods_of(path: &str) -> Vec<&'static str> {
    const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    static TABLE: std::sync::LazyLock<Vec<(Vec<String>, Vec<&'static str>)>> =
        std::sync::LazyLock::new(|| {
            ApiDoc::openapi()
                .paths
                .paths
                .into_iter()
                .map(|(template, item)| {
                    let served = [
                        item.get.is_some(),
                        item.post.is_some(),
                        item.put.is_some(),
                        item.patch.is_some(),
                        item.delete.is_some(),
                    ];
                    let methods = METHODS.into_iter().zip(served);
                    let segments = template.split('/').map(str::to_owned).collect();
                    let allowed = methods.into_iter().filter(|m| m.1).map(|m| m.0).collect();
                    (segments, allowed)
                })
                .collect()
        });
    let segments: Vec<&str> = path.split('/').collect();
    let matching: Vec<&Vec<&'static str>> = TABLE
        .iter()
        .filter(|(template, _)| {
            template.len() == segments.len()
                && template.iter().zip(&segments).all(|(t, s)| {
                    t == s || (t.starts_with('{') && t.ends_with('}') && !s.is_empty())
                })
        })
        .map(|(_, methods)| methods)
        .collect();
    METHODS
        .into_iter()
        .filter(|m| matching.iter().any(|methods| methods.contains(m)))
        .collect()
}

/// The document as served: utoipa's, with the spec's schemas replaced by the ones generated from
/// the spec types (`prl_schema::spec::json_schemas`), which carry their bounds and defaults, and
/// the live stream's events described as SSE events.
pub fn document_json() -> &'static serde_json::Value {
    static DOCUMENT: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document is JSON");
        let schemas = doc["components"]["schemas"]
            .as_object_mut()
            .expect("the document has schemas");
        let spec = prl_schema::spec::json_schemas();
        let evaluation = evaluation_request(&spec);
        schemas.extend(spec);
        doc["paths"]["/api/v1/runs/{id}/evaluations"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"] = evaluation;
        // A dataset file is sent as its bytes.
        doc["paths"]["/api/v1/datasets/files"]["post"]["requestBody"]["content"]["application/octet-stream"]
            ["schema"] = serde_json::json!({"type": "string", "format": "binary"});
        // A Server-Sent Events response is described per event (`id`, `event`, `data`), the
        // notice being the JSON inside `data`.
        doc["paths"]["/api/v1/events/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"]
            ["schema"] = serde_json::json!({
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "event": {"type": "string"},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": "#/components/schemas/EventNotice"}
                }
            }
        });
        doc
    });
    &DOCUMENT
}

/// `POST /runs/{id}/evaluations`'s body: an eval stage without its `kind`, whose `name` may be left
/// out, plus the checkpoint's `step`.
fn evaluation_request(spec: &serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
    let mut stage = spec["StageSpec"]["oneOf"]
        .as_array()
        .and_then(|stages| {
            stages
                .iter()
                .find(|s| s["properties"]["kind"]["const"] == "eval")
        })
        .cloned()
        .expect("the spec has an eval stage");
    let properties = stage["properties"]
        .as_object_mut()
        .expect("an object schema");
    properties.remove("kind");
    // They default to the run's own, not the stage's usual.
    for field in ["attention", "mode"] {
        if let Some(property) = properties.get_mut(field).and_then(|p| p.as_object_mut()) {
            property.remove("default");
        }
    }
    properties.insert(
        "step".into(),
        serde_json::json!({
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "The checkpoint's step; the run's newest when left out."
        }),
    );
    if let Some(required) = stage["required"].as_array_mut() {
        required.retain(|field| field != "kind" && field != "name");
    }
    stage["description"] = "An eval stage (its `name` may be left out; `attention` and `mode` \
                            default to the run's own), plus the checkpoint's `step`."
        .into();
    stage
}

#[get("/api/openapi.json")]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(document_json())
}

/// Swagger UI at `/api/docs/`, served from assets built into the binary (no CDN), reading the
/// document above.
pub fn docs() -> SwaggerUi {
    SwaggerUi::new("/api/docs/{_:.*}").config(utoipa_swagger_ui::Config::from("/api/openapi.json"))
}
