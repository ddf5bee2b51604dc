//! Session routes: logout, logout-all, list and revoke.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::context::Caller;
use super::extract::Authenticated;
use super::AppState;
use crate::audit::Action;
use crate::error::{ApiError, ErrorBody};
use crate::time_fmt::rfc3339_ms;

/// A live session as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    /// `api` (a token pair), `browser` (the web pages' cookie) or `oidc`
    /// (a grant to an OpenID Connect client).
    pub kind: &'static str,
    /// The client of an `oidc` session.
    pub client_id: Option<String>,
    /// The factors it was opened with (RFC 8176).
    pub amr: Vec<&'static str>,
    pub created_at: String,
    pub last_used_at: String,
    pub expires_at: String,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    /// The session of the token that asked.
    pub current: bool,
}

/// `GET /auth/sessions`
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// `POST /auth/logout`
#[utoipa::path(post, path = "/auth/logout", tag = "sessions", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn logout(
    state: web::Data<AppState>,
    caller: Caller,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let event = caller
        .event(Action::Logout)
        .user(auth.0.sub)
        .resource("session", auth.0.sid);
    state.auth.logout(&auth.0, vec![event]).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /auth/logout-all`
#[utoipa::path(post, path = "/auth/logout-all", tag = "sessions", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn logout_all(
    state: web::Data<AppState>,
    caller: Caller,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let event = caller
        .event(Action::LogoutAll)
        .user(auth.0.sub)
        .resource("user", auth.0.sub);
    state.auth.logout_all(&auth.0, vec![event]).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /auth/sessions`
#[utoipa::path(get, path = "/auth/sessions", tag = "sessions", security(("bearer" = [])),
    responses((status = 200, body = SessionList), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let sessions = state.auth.sessions(&auth.0).await?;
    let views: Vec<SessionView> = sessions
        .into_iter()
        .map(|s| SessionView {
            current: s.id == auth.0.sid,
            id: s.id,
            kind: s.kind.as_str(),
            client_id: s.grant.map(|g| g.client_id),
            amr: s.amr.values().collect(),
            created_at: rfc3339_ms(s.created_at),
            last_used_at: rfc3339_ms(s.last_used_at),
            expires_at: rfc3339_ms(s.expires_at),
            ip_address: s.ip_address,
            user_agent: s.user_agent,
        })
        .collect();
    Ok(HttpResponse::Ok().json(SessionList { sessions: views }))
}

/// `DELETE /auth/sessions/{id}`: 404 for unknown ids and other users' sessions alike.
#[utoipa::path(delete, path = "/auth/sessions/{id}", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    auth: Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("no such session"))?;
    let event = caller
        .event(Action::SessionRevoked)
        .user(auth.0.sub)
        .resource("session", id);
    state.auth.revoke_session(&auth.0, id, vec![event]).await?;
    Ok(HttpResponse::NoContent().finish())
}
