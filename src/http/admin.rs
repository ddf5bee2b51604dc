//! Administration routes (admin bearer token; else 403 `forbidden`).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use secrecy::SecretString;

use super::context::Caller;
use super::extract::{AdminUser, JsonBody};
use super::reset::send_later;
use super::AppState;
use crate::audit::chain::Verdict;
use crate::audit::query::{parse_time, Filter, Page};
use crate::audit::Action;
use crate::auth::crypto::new_opaque_token;
use crate::auth::groups::{parse_groups, with_admins};
use crate::auth::service::{AuthError, ResetRequest};
use crate::control::{self, ClearError};
use crate::error::{ApiError, ErrorBody};
use crate::ratelimit::RuleName;
use crate::time_fmt::rfc3339_ms;

/// Query of `GET` and `DELETE /admin/rate-limits`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    /// An address (`203.0.113.7`), an IPv6 prefix (`2001:db8:1:2::/64`) or an email.
    pub key: Option<String>,
    /// One rule, for `DELETE` (every rule when absent).
    pub rule: Option<String>,
}

/// One tracked key under one rule.
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitEntry {
    pub rule: &'static str,
    pub key: String,
    /// Counted events inside the window.
    pub count: u32,
    pub limit: u32,
    /// Seconds until the key may try again; 0 unless it is blocked.
    pub retry_after: u64,
}

/// `GET /admin/rate-limits`
#[derive(Debug, Serialize, ToSchema)]
pub struct Limits {
    pub limits: Vec<LimitEntry>,
}

/// An account as administrators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserView {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub created_at: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub mfa_enabled: bool,
    /// Its groups; an administrator is also in `admins`.
    pub groups: Vec<String>,
}

/// `GET /admin/users`
#[derive(Debug, Serialize, ToSchema)]
pub struct Users {
    pub users: Vec<AdminUserView>,
}

/// `GET /admin/rate-limits?key=`: keys with counted events (at most 1000).
#[utoipa::path(get, path = "/admin/rate-limits", tag = "admin", security(("bearer" = [])), params(KeyQuery),
    responses((status = 200, body = Limits), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
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
    let limits = state
        .limiter
        .inspect(key)
        .await
        .map_err(ApiError::LimiterUnavailable)?
        .into_iter()
        .map(|v| LimitEntry {
            rule: v.rule.as_str(),
            key: v.key,
            count: v.count,
            limit: v.limit,
            retry_after: v.retry_after,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Limits { limits }))
}

/// `DELETE /admin/rate-limits?key=[&rule=]`: clears a key under one rule or all.
#[utoipa::path(delete, path = "/admin/rate-limits", tag = "admin", security(("bearer" = [])), params(KeyQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
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
    let event = caller
        .event(Action::RateLimitCleared)
        .extra("actor_id", admin.user.id.to_string());
    control::clear(&state.limiter, &state.audit, key, rule, event)
        .await
        .map_err(|e| match e {
            ClearError::Limiter(e) => ApiError::LimiterUnavailable(e),
            ClearError::Audit(e) => ApiError::from(e),
        })?;
    Ok(HttpResponse::NoContent().finish())
}

/// Query of `GET /admin/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// One audit action, such as `login_failed`.
    pub action: Option<String>,
    pub user_id: Option<String>,
    pub ip: Option<String>,
    /// RFC 3339 or an age such as `15m`, `2h`, `7d`.
    pub since: Option<String>,
    /// RFC 3339 or an age such as `15m`, `2h`, `7d`.
    pub until: Option<String>,
    /// Default 100, at most 1000.
    pub limit: Option<u32>,
    /// The `next_before_id` of the previous page.
    pub before_id: Option<i64>,
}

/// `GET /admin/audit`: events newest first, filtered, paged by `before_id`.
#[utoipa::path(get, path = "/admin/audit", tag = "admin", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = Page), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
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
    Ok(HttpResponse::Ok().json(page))
}

/// `GET /admin/audit/verify`
#[utoipa::path(get, path = "/admin/audit/verify", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Verdict), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn audit_verify(
    state: web::Data<AppState>,
    _admin: AdminUser,
) -> Result<HttpResponse, ApiError> {
    let verdict = state.audit.verify().await?;
    Ok(HttpResponse::Ok().json(verdict))
}

/// Query of `GET /admin/users`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// Part of the email address.
    pub email: Option<String>,
}

/// `GET /admin/users?email=`: accounts whose email contains the filter.
#[utoipa::path(get, path = "/admin/users", tag = "admin", security(("bearer" = [])), params(UsersQuery),
    responses((status = 200, body = Users), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
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
    let mut groups = state.auth.all_groups().await?;
    let users = state
        .auth
        .list_users(filter)
        .await?
        .into_iter()
        .take(1000)
        .map(|(u, mfa_enabled)| AdminUserView {
            groups: with_admins(groups.remove(&u.id).unwrap_or_default(), u.is_admin),
            mfa_enabled,
            disabled: u.is_disabled(),
            created_at: rfc3339_ms(u.created_at),
            id: u.id,
            email: u.email,
            name: u.name,
            is_admin: u.is_admin,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Users { users }))
}

/// `POST /admin/users/{id}/disable`: also revokes every session at once.
#[utoipa::path(post, path = "/admin/users/{id}/disable", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn disable_user(
    state: web::Data<AppState>,
    caller: Caller,
    admin: AdminUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_disabled(&state, &caller, &admin, &id, true).await
}

/// `POST /admin/users/{id}/enable`
#[utoipa::path(post, path = "/admin/users/{id}/enable", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn enable_user(
    state: web::Data<AppState>,
    caller: Caller,
    admin: AdminUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_disabled(&state, &caller, &admin, &id, false).await
}

async fn set_disabled(
    state: &AppState,
    caller: &Caller,
    admin: &AdminUser,
    id: &str,
    disabled: bool,
) -> Result<HttpResponse, ApiError> {
    let user_id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound("no such user"))?;
    disable_user_as(state, caller, admin.user.id, user_id, disabled).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Disables (revoking every session) or enables an account for administrator
/// `actor`; shared by the API and the admin page.
pub async fn disable_user_as(
    state: &AppState,
    caller: &Caller,
    actor: Uuid,
    user_id: Uuid,
    disabled: bool,
) -> Result<(), ApiError> {
    if disabled && user_id == actor {
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
        .extra("actor_id", actor.to_string());
    if !state
        .auth
        .set_disabled(user_id, disabled, vec![event])
        .await?
    {
        return Err(ApiError::NotFound("no such user"));
    }
    Ok(())
}

/// Body of `PUT /admin/users/{id}/groups`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct GroupsBody {
    /// Every group the user is to be in (`admins` aside): `[a-z0-9_-]{1,64}`.
    pub groups: Vec<String>,
}

/// The groups of a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupsView {
    /// Sorted; `admins` for an administrator.
    pub groups: Vec<String>,
}

/// `PUT /admin/users/{id}/groups`: sets the user's groups.
#[utoipa::path(put, path = "/admin/users/{id}/groups", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")), request_body = GroupsBody,
    responses((status = 200, body = GroupsView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn set_groups(
    state: web::Data<AppState>,
    caller: Caller,
    admin: AdminUser,
    id: web::Path<String>,
    body: JsonBody<GroupsBody>,
) -> Result<HttpResponse, ApiError> {
    let user_id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("no such user"))?;
    let groups = set_groups_as(&state, &caller, admin.user.id, user_id, &body.0.groups).await?;
    Ok(HttpResponse::Ok().json(GroupsView { groups }))
}

/// Sets a user's groups for administrator `actor` (audited `groups_changed`
/// with `added` and `removed`); shared by the API and the admin page.
pub async fn set_groups_as(
    state: &AppState,
    caller: &Caller,
    actor: Uuid,
    user_id: Uuid,
    groups: &[String],
) -> Result<Vec<String>, ApiError> {
    let event = caller
        .event(Action::GroupsChanged)
        .user(user_id)
        .extra("actor_id", actor.to_string());
    state
        .auth
        .set_groups(user_id, groups, event)
        .await
        .map_err(|e| match e {
            AuthError::NotFound => ApiError::NotFound("no such user"),
            other => other.into(),
        })
}

/// `POST /admin/users/{id}/mfa/reset`: turns off a lost second factor.
#[utoipa::path(post, path = "/admin/users/{id}/mfa/reset", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn reset_mfa(
    state: web::Data<AppState>,
    caller: Caller,
    admin: AdminUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user_id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("no such user"))?;
    reset_mfa_as(&state, &caller, admin.user.id, user_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Turns off a user's second factor for administrator `actor` (TOTP, backup
/// codes, every session; audited `mfa_reset`) and tells the user by mail;
/// shared by the API and the admin page.
pub async fn reset_mfa_as(
    state: &web::Data<AppState>,
    caller: &Caller,
    actor: Uuid,
    user_id: Uuid,
) -> Result<(), ApiError> {
    let event = caller
        .event(Action::MfaReset)
        .extra("actor_id", actor.to_string());
    let user = state
        .auth
        .reset_mfa(user_id, vec![event])
        .await
        .map_err(|e| match e {
            AuthError::NotFound => ApiError::NotFound("no such user"),
            other => other.into(),
        })?;
    let text = format!(
        "An administrator turned off two-step verification for your account {}, \
         and signed out every session.\n\n\
         Sign in with your password, then set up two-step verification again \
         from your account page:\n\n{}/ui/account\n\n\
         If you did not ask for this, tell your administrator.\n",
        user.email,
        state.config.server.public_url.trim_end_matches('/')
    );
    // Recorded only if the mail cannot go out: the reset itself is the row above.
    let failed = caller
        .event(Action::MfaReset)
        .user(user.id)
        .extra("actor_id", actor.to_string())
        .extra("mail_only", true);
    send_later(
        state,
        user.email,
        "Two-step verification was turned off",
        text,
        failed,
    );
    Ok(())
}

/// Body of `POST /admin/users`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewUserBody {
    pub email: String,
    /// Without one, the user is mailed a link to choose it.
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub password: Option<SecretString>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `POST /admin/users`: adds a user (also when registration is closed).
#[utoipa::path(post, path = "/admin/users", tag = "admin", security(("bearer" = [])), request_body = NewUserBody,
    responses((status = 201, body = AdminUserView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn create_user(
    state: web::Data<AppState>,
    caller: Caller,
    admin: AdminUser,
    body: JsonBody<NewUserBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let groups = parse_groups(&body.groups).map_err(|reason| ApiError::field("groups", reason))?;
    let mailed = body.password.is_none();
    // A password nobody knows until the user sets one through the mail.
    let password = body.password.unwrap_or_else(|| {
        let policy = &state.config.passwords;
        let len = policy.min_length.max(43).min(policy.max_length);
        let random: String = std::iter::repeat_with(new_opaque_token)
            .flat_map(|t| t.chars().collect::<Vec<_>>())
            .take(len)
            .collect();
        SecretString::from(random)
    });
    let event = caller
        .event(Action::UserCreated)
        .extra("actor_id", admin.user.id.to_string())
        .extra("password_set", !mailed);
    let user = state
        .auth
        .register(
            &body.email,
            password,
            body.name.as_deref(),
            false,
            vec![event],
        )
        .await?;
    let groups = if groups.is_empty() {
        Vec::new()
    } else {
        set_groups_as(&state, &caller, admin.user.id, user.id, &groups).await?
    };
    if mailed {
        let requested = caller
            .event(Action::PasswordResetRequested)
            .extra("actor_id", admin.user.id.to_string());
        if let ResetRequest::Issued { user, token } =
            state.auth.request_reset(&user.email, requested).await?
        {
            let link = state.config.mail.reset_url.replace("{token}", &token);
            let text = format!(
                "An account was made for you ({}) at {}.\n\n\
                 Choose your password with this link within one hour:\n\n{link}\n\n\
                 If the link has expired, ask for a new one on the sign-in page \
                 (\"Forgot your password?\").\n",
                user.email, state.config.web.title
            );
            let failed = caller
                .event(Action::PasswordResetRequested)
                .user(user.id)
                .extra("account_exists", true);
            send_later(&state, user.email, "Your new account", text, failed);
        }
    }
    Ok(HttpResponse::Created().json(AdminUserView {
        id: user.id,
        email: user.email,
        name: user.name,
        created_at: rfc3339_ms(user.created_at),
        is_admin: false,
        disabled: false,
        mfa_enabled: false,
        groups,
    }))
}
