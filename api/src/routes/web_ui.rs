//! The web UI's entry page. For now a page that links to what exists.

use actix_web::{HttpResponse, get};

const INDEX: &str = include_str!("../../../web/index.html");

#[get("/")]
pub async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX)
}
