//! `GET /openapi.json`: the OpenAPI 3 description of every route, built with
//! utoipa from the declarations below. A test compares its paths with the
//! router's, so a route cannot be added without being described.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error body: a stable code and a message; `fields` on validation
/// errors, `retry_after` on 429.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: String,
    message: String,
    fields: Option<BTreeMap<String, String>>,
    retry_after: Option<u64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RegisterRequest {
    email: String,
    password: String,
    name: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LoginRequest {
    email: String,
    password: String,
    remember_me: Option<bool>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RefreshRequest {
    refresh_token: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MfaLoginRequest {
    mfa_token: String,
    code: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ResetRequestRequest {
    email: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ResetConfirmRequest {
    token: String,
    new_password: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CodeRequest {
    code: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DisableMfaRequest {
    password: String,
    code: String,
}

/// `application/x-www-form-urlencoded` body of `/auth/token`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenForm {
    grant_type: String,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct User {
    id: uuid::Uuid,
    email: String,
    name: Option<String>,
    created_at: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Me {
    id: uuid::Uuid,
    email: String,
    name: Option<String>,
    created_at: String,
    mfa_enabled: bool,
    is_admin: bool,
}

/// A token pair (seconds).
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
pub struct TokenPair {
    access_token: String,
    refresh_token: String,
    token_type: String,
    expires_in: i64,
    refresh_expires_in: i64,
    session_id: uuid::Uuid,
}

/// `/auth/login` answers either a token pair or this, when TOTP is on.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
pub struct MfaRequired {
    mfa_required: bool,
    mfa_token: String,
    expires_in: i64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OAuthToken {
    access_token: String,
    token_type: String,
    expires_in: i64,
    refresh_token: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OAuthError {
    error: String,
    error_description: String,
    retry_after: Option<u64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Session {
    id: uuid::Uuid,
    created_at: String,
    last_used_at: String,
    expires_at: String,
    ip_address: Option<String>,
    user_agent: Option<String>,
    current: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Sessions {
    sessions: Vec<Session>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Message {
    message: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TotpSetup {
    secret: String,
    otpauth_url: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BackupCodes {
    backup_codes: Vec<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AuditEvent {
    id: i64,
    created_at: String,
    action: String,
    user_id: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    ip_address: Option<String>,
    user_agent: Option<String>,
    extra_data: serde_json::Value,
    request_id: Option<String>,
    prev_hash: String,
    hash: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AuditPage {
    events: Vec<AuditEvent>,
    next_before_id: Option<i64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AuditVerdict {
    ok: bool,
    checked: u64,
    first_bad_id: Option<i64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Limit {
    rule: String,
    key: String,
    count: u32,
    limit: u32,
    retry_after: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Limits {
    limits: Vec<Limit>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AdminUser {
    id: uuid::Uuid,
    email: String,
    name: Option<String>,
    created_at: String,
    is_admin: bool,
    disabled: bool,
    mfa_enabled: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Users {
    users: Vec<AdminUser>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    status: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Jwks {
    keys: Vec<serde_json::Value>,
}

/// What `/auth/login` answers with 200.
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum LoginResponse {
    Tokens(TokenPair),
    SecondFactor(MfaRequired),
}

// Route declarations. Each stub stands for the handler of the same path.

#[utoipa::path(post, path = "/auth/register", tag = "accounts", request_body = RegisterRequest,
    responses((status = 201, body = User), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn register() {}

#[utoipa::path(post, path = "/auth/login", tag = "accounts", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn login() {}

#[utoipa::path(post, path = "/auth/login/mfa", tag = "two-factor", request_body = MfaLoginRequest,
    responses((status = 200, body = TokenPair), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn login_mfa() {}

#[utoipa::path(post, path = "/auth/token", tag = "oauth2",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = OAuthToken), (status = 400, body = OAuthError), (status = 413, body = OAuthError),
        (status = 429, body = OAuthError), (status = 503, body = OAuthError)))]
#[allow(dead_code)]
fn token() {}

#[utoipa::path(post, path = "/auth/refresh", tag = "sessions", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn refresh() {}

#[utoipa::path(post, path = "/auth/logout", tag = "sessions", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn logout() {}

#[utoipa::path(post, path = "/auth/logout-all", tag = "sessions", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn logout_all() {}

#[utoipa::path(get, path = "/auth/me", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn me() {}

#[utoipa::path(get, path = "/auth/sessions", tag = "sessions", security(("bearer" = [])),
    responses((status = 200, body = Sessions), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn sessions() {}

#[utoipa::path(delete, path = "/auth/sessions/{id}", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn revoke_session() {}

#[utoipa::path(post, path = "/auth/password/change", tag = "accounts", security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn change_password() {}

#[utoipa::path(post, path = "/auth/password-reset/request", tag = "password reset", request_body = ResetRequestRequest,
    responses((status = 202, body = Message), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn reset_request() {}

#[utoipa::path(post, path = "/auth/password-reset/confirm", tag = "password reset", request_body = ResetConfirmRequest,
    responses((status = 200, body = Message), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn reset_confirm() {}

#[utoipa::path(post, path = "/auth/mfa/totp/setup", tag = "two-factor", security(("bearer" = [])),
    responses((status = 200, body = TotpSetup), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn totp_setup() {}

#[utoipa::path(post, path = "/auth/mfa/totp/enable", tag = "two-factor", security(("bearer" = [])), request_body = CodeRequest,
    responses((status = 200, body = BackupCodes), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn totp_enable() {}

#[utoipa::path(post, path = "/auth/mfa/totp/disable", tag = "two-factor", security(("bearer" = [])), request_body = DisableMfaRequest,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn totp_disable() {}

#[utoipa::path(post, path = "/auth/mfa/backup-codes", tag = "two-factor", security(("bearer" = [])), request_body = CodeRequest,
    responses((status = 200, body = BackupCodes), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn backup_codes() {}

#[utoipa::path(get, path = "/admin/users", tag = "admin", security(("bearer" = [])),
    params(("email" = Option<String>, Query, description = "Part of the email address")),
    responses((status = 200, body = Users), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn admin_users() {}

#[utoipa::path(post, path = "/admin/users/{id}/{verb}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id"), ("verb" = String, Path, description = "`disable` or `enable`")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn admin_user_state() {}

#[utoipa::path(get, path = "/admin/audit", tag = "admin", security(("bearer" = [])),
    params(("action" = Option<String>, Query), ("user_id" = Option<String>, Query), ("ip" = Option<String>, Query),
        ("since" = Option<String>, Query, description = "RFC 3339 or an age such as 15m"),
        ("until" = Option<String>, Query, description = "RFC 3339 or an age such as 15m"),
        ("limit" = Option<u32>, Query, description = "Default 100, at most 1000"), ("before_id" = Option<i64>, Query)),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn admin_audit() {}

#[utoipa::path(get, path = "/admin/audit/verify", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = AuditVerdict), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn admin_audit_verify() {}

#[utoipa::path(get, path = "/admin/rate-limits", tag = "admin", security(("bearer" = [])),
    params(("key" = Option<String>, Query, description = "An address, IPv6 prefix or email")),
    responses((status = 200, body = Limits), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn admin_rate_limits() {}

#[utoipa::path(delete, path = "/admin/rate-limits", tag = "admin", security(("bearer" = [])),
    params(("key" = String, Query), ("rule" = Option<String>, Query)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn admin_clear_rate_limits() {}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations", responses((status = 200, body = Jwks)))]
#[allow(dead_code)]
fn jwks() {}

#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
#[allow(dead_code)]
fn health() {}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
#[allow(dead_code)]
fn metrics() {}

#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "This document")))]
#[allow(dead_code)]
fn openapi() {}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "portcullis", description = "Authentication server: accounts, sessions, two-factor, rate limits, audit log."),
    paths(register, login, login_mfa, token, refresh, logout, logout_all, me, sessions, revoke_session,
        change_password, reset_request, reset_confirm, totp_setup, totp_enable, totp_disable, backup_codes,
        admin_users, admin_user_state, admin_audit, admin_audit_verify, admin_rate_limits,
        admin_clear_rate_limits, jwks, health, metrics, openapi),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|_| "{}".to_owned())
    })
}

/// `GET /openapi.json`
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}
