//! Operational routes: health and the public keys.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::auth::tokens::Jwks;

/// `GET /health`: `{"status": "ok"}`, or when the database is not usable,
/// `unavailable` with an error code and message.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'static str>,
}

/// `GET /health`: 200 when the database answers, else 503.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    match state.auth.storage_ready().await {
        Ok(()) => HttpResponse::Ok().json(Health {
            status: "ok",
            error: None,
            message: None,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            HttpResponse::ServiceUnavailable().json(Health {
                status: "unavailable",
                error: Some("unavailable"),
                message: Some("the database is not usable"),
            })
        }
    }
}

/// `GET /.well-known/jwks.json`: the public signing keys.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations", responses((status = 200, body = Jwks)))]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    let mut jwks = state.auth.tokens().jwks().clone();
    match state.oidc.rsa.jwks().await {
        Ok(rsa) => jwks.keys.extend(rsa),
        Err(e) => {
            tracing::error!(error = %e, "cannot load the RSA key");
            return actix_web::ResponseError::error_response(&crate::error::ApiError::Unavailable(
                e,
            ));
        }
    }
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(jwks)
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let depth = i64::try_from(state.auth.hash_queue_depth()).unwrap_or(i64::MAX);
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
