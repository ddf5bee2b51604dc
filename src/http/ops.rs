//! Operational routes: health and the public keys.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// `GET /health`: 200 when the database answers, else 503.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    match state.auth.store().ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ok" })),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "error": "unavailable",
                "message": "the database is not usable",
            }))
        }
    }
}

/// `GET /.well-known/jwks.json`: the public signing keys.
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(state.auth.tokens().jwks())
}
