//! Administration routes (admin bearer token; else 403 `forbidden`).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::extract::AdminUser;
use super::AppState;
use crate::error::ApiError;
use crate::ratelimit::RuleName;

#[derive(Debug, Deserialize)]
pub struct KeyQuery {
    pub key: Option<String>,
    pub rule: Option<String>,
}

/// `GET /admin/rate-limits?key=`: keys with counted events (at most 1000).
pub async fn rate_limits(
    state: web::Data<AppState>,
    _admin: AdminUser,
    query: web::Query<KeyQuery>,
) -> Result<HttpResponse, ApiError> {
    let key = query
        .key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let limits: Vec<_> = state
        .limiter
        .inspect(key)
        .await
        .into_iter()
        .map(|v| {
            json!({
                "rule": v.rule.as_str(),
                "key": v.key,
                "count": v.count,
                "limit": v.limit,
                "retry_after": v.retry_after,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "limits": limits })))
}

/// `DELETE /admin/rate-limits?key=[&rule=]`: clears a key under one rule or all.
pub async fn clear_rate_limits(
    state: web::Data<AppState>,
    _admin: AdminUser,
    query: web::Query<KeyQuery>,
) -> Result<HttpResponse, ApiError> {
    let Some(key) = query
        .key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return Err(ApiError::field("key", "is required"));
    };
    let rule = match query.rule.as_deref().filter(|r| !r.is_empty()) {
        None => None,
        Some(name) => Some(
            RuleName::parse(name)
                .ok_or_else(|| ApiError::field("rule", format!("`{name:.64}` is not a rule")))?,
        ),
    };
    state.limiter.clear(key, rule).await;
    Ok(HttpResponse::NoContent().finish())
}
