//! Account routes: register, login, refresh, me, password change.

use actix_web::http::header;
use actix_web::{web, HttpResponse, ResponseError};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::context::Caller;
use super::extract::{Authenticated, JsonBody};
use super::guard::guarded;
use super::AppState;
use crate::audit::{Action, NewEvent};
use crate::auth::service::{AuthError, TokenPair};
use crate::auth::sessions::{Opened, SignIn};
use crate::email::{normalize, Email};
use crate::error::{ApiError, ErrorBody};
use crate::ratelimit::Guarded;
use crate::store::{Amr, RotationAudit, SessionKind, User};
use crate::time_fmt::rfc3339_ms;

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterBody {
    pub email: String,
    #[schema(value_type = String)]
    pub password: SecretString,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginBody {
    pub email: String,
    #[schema(value_type = String)]
    pub password: SecretString,
    /// Absent or null means false.
    #[serde(default)]
    pub remember_me: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshBody {
    #[schema(value_type = String)]
    pub refresh_token: SecretString,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangePasswordBody {
    #[schema(value_type = String)]
    pub current_password: SecretString,
    #[schema(value_type = String)]
    pub new_password: SecretString,
}

/// The public view of an account.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            name: u.name.clone(),
            created_at: rfc3339_ms(u.created_at),
        }
    }
}

/// `/auth/me`: the account with its flags.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    #[serde(flatten)]
    pub user: UserView,
    pub mfa_enabled: bool,
    pub is_admin: bool,
    /// Its groups; an administrator is also in `admins`.
    pub groups: Vec<String>,
}

/// The answer to a right password when the account has a second factor: the
/// login finishes at `/auth/login/mfa`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaRequired {
    /// Always true.
    pub mfa_required: bool,
    /// Opaque; spent by one success or five wrong codes.
    pub mfa_token: String,
    /// Seconds.
    pub expires_in: i64,
    /// The second factors the account has: `"totp"` (a code, or a backup
    /// code), `"passkey"`.
    #[schema(value_type = Vec<String>)]
    pub methods: Vec<&'static str>,
}

/// What `/auth/login` answers with 200.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginResponse {
    Tokens(TokenPair),
    SecondFactor(MfaRequired),
}

/// A token pair response; never cached.
pub fn token_response(pair: &TokenPair) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(pair)
}

/// `POST /auth/register`
#[utoipa::path(post, path = "/auth/register", tag = "accounts", request_body = RegisterBody,
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn register(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    guarded(&state, &caller, Guarded::Register, None, async {
        let user = register_account(
            &state,
            &caller,
            &body.email,
            body.password,
            body.name.as_deref(),
        )
        .await?;
        Ok(HttpResponse::Created().json(UserView::from(&user)))
    })
    .await
}

/// Creates an account and audits the outcome, shared by `/auth/register` and
/// the register page. Call inside `guarded` for the register rule.
pub async fn register_account(
    state: &AppState,
    caller: &Caller,
    email: &str,
    password: SecretString,
    name: Option<&str>,
) -> Result<User, ApiError> {
    if !state.config.accounts.open_registration {
        return Err(ApiError::Refused {
            code: "registration_closed",
            message: "registration is closed: an administrator adds users",
        });
    }
    match state
        .auth
        .register(
            email,
            password,
            name,
            false,
            vec![caller.event(Action::RegistrationSuccess)],
        )
        .await
    {
        Ok(user) => Ok(user),
        Err(e) => {
            let error = ApiError::from(e);
            if error.status_code().is_client_error() {
                let event = with_attempted_email(
                    caller
                        .event(Action::RegistrationFailed)
                        .extra("reason", error.code()),
                    email,
                );
                state.audit(event).await?;
            }
            Err(error)
        }
    }
}

/// The first step of a login, shared by `/auth/login`, the password grant
/// and the login page.
pub enum LoginOutcome {
    /// Signed in: a session of the kind asked for.
    Opened(Opened),
    /// Password right, second factor pending: not yet a successful login.
    MfaRequired {
        mfa_token: String,
        expires_in: i64,
        /// What the second step may be: `"totp"`, `"passkey"`.
        methods: Vec<&'static str>,
    },
}

/// Checks the password, audits the outcome, and opens a session of `kind`
/// (or a second-factor challenge). Call inside `guarded` for the login rules.
pub async fn password_login(
    state: &AppState,
    caller: &Caller,
    account: &str,
    password: SecretString,
    remember_me: bool,
    kind: SessionKind,
) -> Result<LoginOutcome, ApiError> {
    let user = match state.auth.authenticate(account, password).await {
        Ok(user) => user,
        Err(AuthError::InvalidCredentials { reason, user_id }) => {
            let mut event = with_attempted_email(
                caller
                    .event(Action::LoginFailed)
                    .extra("reason", reason.as_str()),
                account,
            );
            if let Some(id) = user_id {
                event = event.user(id);
            }
            state.metrics.login("failure");
            state.audit(event).await?;
            return Err(ApiError::InvalidCredentials);
        }
        Err(e) => return Err(e.into()),
    };
    let methods = state.auth.second_factors(user.id).await?;
    if !methods.is_empty() {
        let (mfa_token, expires_in) = state.auth.start_mfa(&user, remember_me).await?;
        state.metrics.login("mfa_required");
        return Ok(LoginOutcome::MfaRequired {
            mfa_token,
            expires_in,
            methods,
        });
    }
    let event = caller
        .event(Action::LoginSuccess)
        .extra("remember_me", remember_me);
    let opened_at = state.auth.now();
    let sign_in = SignIn {
        kind,
        remember_me,
        amr: Amr::PWD,
    };
    let opened = state
        .auth
        .open_session(&user, sign_in, &caller.client_info(), vec![event])
        .await?;
    state
        .limiter
        .login_succeeded(&state.limiter.ip_key(caller.ip), account, opened_at)
        .await;
    state.metrics.login("success");
    Ok(LoginOutcome::Opened(opened))
}

/// Rotates a refresh token and audits the outcome, shared by `/auth/refresh`
/// and the refresh grant. Call inside `guarded` for the refresh rule.
pub async fn rotate_refresh(
    state: &AppState,
    caller: &Caller,
    refresh_token: &str,
) -> Result<TokenPair, ApiError> {
    let audit = RotationAudit {
        refreshed: caller.event(Action::TokenRefreshed),
        reused: caller.event(Action::RefreshTokenReused),
    };
    match state.auth.refresh(refresh_token, None, audit).await {
        Ok((_, _, pair)) => Ok(pair),
        Err(AuthError::RefreshTokenReused { .. }) => Err(ApiError::RefreshTokenReused),
        Err(e) => Err(e.into()),
    }
}

/// `POST /auth/login`
#[utoipa::path(post, path = "/auth/login", tag = "accounts", request_body = LoginBody,
    responses((status = 200, body = LoginResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn login(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let account = normalize(&body.email);
    guarded(&state, &caller, Guarded::Login, Some(&account), async {
        let remember_me = body.remember_me.unwrap_or(false);
        match password_login(
            &state,
            &caller,
            &account,
            body.password,
            remember_me,
            SessionKind::Api,
        )
        .await?
        {
            LoginOutcome::Opened(opened) => Ok(token_response(&opened.into_tokens()?)),
            LoginOutcome::MfaRequired {
                mfa_token,
                expires_in,
                methods,
            } => Ok(HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(LoginResponse::SecondFactor(MfaRequired {
                    mfa_required: true,
                    mfa_token,
                    expires_in,
                    methods,
                }))),
        }
    })
    .await
}

/// `POST /auth/refresh`
#[utoipa::path(post, path = "/auth/refresh", tag = "sessions", request_body = RefreshBody,
    responses((status = 200, body = TokenPair), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn refresh(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    guarded(&state, &caller, Guarded::Refresh, None, async {
        let pair = rotate_refresh(&state, &caller, body.0.refresh_token.expose_secret()).await?;
        Ok(token_response(&pair))
    })
    .await
}

/// `GET /auth/me`
#[utoipa::path(get, path = "/auth/me", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = MeView), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn me(state: web::Data<AppState>, auth: Authenticated) -> Result<HttpResponse, ApiError> {
    let profile = state.auth.current_profile(&auth.0).await?;
    Ok(HttpResponse::Ok().json(MeView {
        user: UserView::from(&profile.user),
        mfa_enabled: profile.mfa_enabled,
        is_admin: profile.user.is_admin,
        groups: profile.groups.clone(),
    }))
}

/// `POST /auth/password/change`: guarded like a login, keyed by the token's account.
#[utoipa::path(post, path = "/auth/password/change", tag = "accounts", security(("bearer" = [])),
    request_body = ChangePasswordBody,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn change_password(
    state: web::Data<AppState>,
    caller: Caller,
    auth: Authenticated,
    body: JsonBody<ChangePasswordBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let account = normalize(&auth.0.email);
    guarded(&state, &caller, Guarded::Login, Some(&account), async {
        let event = caller
            .event(Action::PasswordChanged)
            .user(auth.0.sub)
            .resource("user", auth.0.sub);
        state
            .auth
            .change_password(
                &auth.0,
                body.current_password,
                body.new_password,
                vec![event],
            )
            .await?;
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

/// An attempted email as the audit log keeps it: the normalized address when
/// it is one, else only `email_malformed: true`, so that a password typed into
/// the email field never lands in the log.
pub(crate) fn with_attempted_email(event: NewEvent, raw: &str) -> NewEvent {
    match Email::parse(raw) {
        Ok(email) => event.extra("email", email.as_str()),
        Err(_) => event.extra("email_malformed", true),
    }
}
