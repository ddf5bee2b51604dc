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

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let depth = i64::try_from(state.auth.hasher().queue_depth()).unwrap_or(i64::MAX);
    state.metrics.hash_queue_depth.set(depth);
    if let Some(keys) = state.limiter.store().tracked_keys() {
        state
            .metrics
            .rate_limit_keys
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
