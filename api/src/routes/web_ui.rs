//! The web UI: the single-page app built into `web.dir` (`web/dist`). Every GET that no other
//! route answers gets the app's `index.html`, so that a link into the app (a comparison, a run)
//! can be shared and reloaded; unknown `/api/` paths still get a JSON 404.

use crate::error::ApiError;
use actix_files::{Files, NamedFile};
use actix_web::dev::{HttpServiceFactory, ServiceRequest, ServiceResponse, fn_service};
use actix_web::{HttpResponse, Responder};
use std::path::Path;

/// Shown when the UI has not been built, with the command that builds it.
const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>prl</title>\
<body style=\"font-family:system-ui;max-width:40rem;margin:3rem auto\"><h1>prl</h1>\
<p>The web UI is not built. Run <code>bash deploy/setup.sh</code> (or <code>npm ci &amp;&amp; npm run build</code> \
in <code>web/</code>), or point <code>PRL_WEB__DIR</code> at a built copy.</p>\
<p>The REST API is up: see <a href=\"/api/docs/\">its documentation</a>.</p></body></html>";

/// The static files, with the app's index as the answer to every other GET.
pub fn service(dir: &Path) -> impl HttpServiceFactory + use<> {
    let index = dir.join("index.html");
    let fallback = fn_service(move |req: ServiceRequest| {
        let index = index.clone();
        async move {
            let (req, _) = req.into_parts();
            let response = app_page(&req, &index).await;
            Ok(ServiceResponse::new(req, response))
        }
    });
    // Only file names are looked up on disk; `/` and the app's routes come to the fallback, which
    // serves the app's page with `no-cache`, while the hashed assets it names can be cached.
    Files::new("/", dir)
        .use_etag(true)
        .path_filter(|path, _| path.extension().is_some())
        .default_handler(fallback)
}

async fn app_page(req: &actix_web::HttpRequest, index: &Path) -> HttpResponse {
    let path = req.path();
    if path == "/api" || path.starts_with("/api/") {
        return actix_web::ResponseError::error_response(&ApiError::NotFound(format!(
            "the endpoint {path}"
        )));
    }
    // A missing file (an asset of an older build) is a 404, not the app: a browser would run
    // HTML as a script or a stylesheet.
    let last = path.rsplit('/').next().unwrap_or("");
    if path.starts_with("/assets/") || last.contains('.') {
        return HttpResponse::NotFound().finish();
    }
    match NamedFile::open_async(index).await {
        Ok(file) => file
            .use_etag(true)
            .customize()
            .insert_header(("Cache-Control", "no-cache"))
            .respond_to(req)
            .map_into_boxed_body(),
        Err(_) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(NOT_BUILT),
    }
}
