//! Administration routes (admin bearer token; else 403 `forbidden`).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::context::Caller;
use super::extract::AdminUser;
use super::AppState;
use crate::audit::query::{page_json, parse_time, Filter};
use crate::audit::Action;
use crate::error::ApiError;
use crate::ratelimit::RuleName;
use crate::time_fmt::rfc3339_ms;
use uuid::Uuid;

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
        .map_err(ApiError::LimiterUnavailable)?
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
    caller: Caller,
    admin: AdminUser,
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
    state
        .limiter
        .clear(key, rule)
        .await
        .map_err(ApiError::LimiterUnavailable)?;
    let event = caller
        .event(Action::RateLimitCleared)
        .resource("rate_limit", key)
        .extra("actor_id", admin.user.id.to_string())
        .extra("key", key)
        .extra("rule", rule.map_or("*", RuleName::as_str));
    state.audit(event).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Query of `GET /admin/audit`.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    pub action: Option<String>,
    pub user_id: Option<String>,
    pub ip: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<u32>,
    pub before_id: Option<i64>,
}

/// `GET /admin/audit`: events newest first, filtered, paged by `before_id`.
pub async fn audit(
    state: web::Data<AppState>,
    _admin: AdminUser,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let now = state.auth.now();
    let time = |field: &'static str, value: Option<String>| -> Result<Option<i64>, ApiError> {
        match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(text) => parse_time(text, now).map(Some).ok_or_else(|| {
                ApiError::field(field, "must be RFC 3339 or an age such as 15m, 2h, 7d")
            }),
        }
    };
    let nonempty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if let Some(action) = nonempty(q.action.clone()) {
        if Action::parse(&action).is_none() {
            return Err(ApiError::field(
                "action",
                format!("`{action:.64}` is not an audit action"),
            ));
        }
    }
    let filter = Filter {
        action: nonempty(q.action),
        user_id: nonempty(q.user_id),
        ip: nonempty(q.ip),
        since: time("since", q.since)?,
        until: time("until", q.until)?,
        limit: q.limit,
        before_id: q.before_id,
    };
    let page = state.audit.list(filter).await?;
    Ok(HttpResponse::Ok().json(page_json(&page)))
}

/// `GET /admin/audit/verify`
pub async fn audit_verify(
    state: web::Data<AppState>,
    _admin: AdminUser,
) -> Result<HttpResponse, ApiError> {
    let verdict = state.audit.verify().await?;
    Ok(HttpResponse::Ok().json(verdict))
}

/// Query of `GET /admin/users`.
#[derive(Debug, Deserialize)]
pub struct UsersQuery {
    pub email: Option<String>,
}

/// `GET /admin/users?email=`: accounts whose email contains the filter.
pub async fn users(
    state: web::Data<AppState>,
    _admin: AdminUser,
    query: web::Query<UsersQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = query
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned);
    let users = state.auth.store().list_users(filter).await?;
    let mut out = Vec::with_capacity(users.len());
    for u in users.iter().take(1000) {
        out.push(json!({
            "id": u.id,
            "email": u.email,
            "name": u.name,
            "created_at": rfc3339_ms(u.created_at),
            "is_admin": u.is_admin,
            "disabled": u.is_disabled(),
            "mfa_enabled": state.auth.mfa_enabled(u.id).await?,
        }));
    }
    Ok(HttpResponse::Ok().json(json!({ "users": out })))
}

/// `POST /admin/users/{id}/disable` and `/enable`.
pub async fn set_disabled(
    state: web::Data<AppState>,
    caller: Caller,
    admin: AdminUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, verb) = path.into_inner();
    let disabled = match verb.as_str() {
        "disable" => true,
        "enable" => false,
        _ => return Err(ApiError::NotFound("no such route")),
    };
    let user_id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("no such user"))?;
    if disabled && user_id == admin.user.id {
        return Err(ApiError::BadRequest {
            code: "cannot_disable_self",
            message: "an administrator cannot disable their own account".into(),
        });
    }
    let action = if disabled {
        Action::UserDisabled
    } else {
        Action::UserEnabled
    };
    let event = caller
        .event(action)
        .user(user_id)
        .resource("user", user_id)
        .extra("actor_id", admin.user.id.to_string());
    if !state
        .auth
        .set_disabled(user_id, disabled, vec![event])
        .await?
    {
        return Err(ApiError::NotFound("no such user"));
    }
    Ok(HttpResponse::NoContent().finish())
}
