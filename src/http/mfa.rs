//! Two-factor routes: TOTP setup, enable, disable, backup codes, and the
//! second step of a login.

use actix_web::{web, HttpResponse};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::accounts::token_response;
use super::context::Caller;
use super::extract::{Authenticated, JsonBody};
use super::guard::guarded;
use super::AppState;
use crate::audit::Action;
use crate::auth::mfa::{Factor, PendingLogin};
use crate::auth::service::{AuthError, TokenPair};
use crate::auth::sessions::Opened;
use crate::email::normalize;
use crate::error::{ApiError, ErrorBody};
use crate::ratelimit::Guarded;
use crate::store::SessionKind;
use webauthn_rs::prelude::PublicKeyCredential;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CodeBody {
    /// A TOTP code or a backup code.
    #[schema(value_type = String)]
    pub code: SecretString,
}

/// Turning TOTP on or off: the current password and a code.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordAndCode {
    #[schema(value_type = String)]
    pub password: SecretString,
    #[schema(value_type = String)]
    pub code: SecretString,
}

/// The second step: a code, or a passkey's answer to the challenge of
/// `POST /auth/passkeys/login/start` `{mfa_token}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MfaLoginBody {
    #[schema(value_type = String)]
    pub mfa_token: SecretString,
    /// A TOTP code or a backup code.
    #[schema(value_type = Option<String>)]
    pub code: Option<SecretString>,
    pub passkey_challenge_id: Option<String>,
    /// The `PublicKeyCredential` of `navigator.credentials.get()`.
    #[schema(value_type = Option<Object>)]
    pub credential: Option<Box<PublicKeyCredential>>,
}

impl MfaLoginBody {
    /// The factor brought: a code or a passkey, not both.
    fn factor(&self) -> Result<Factor<'_>, ApiError> {
        match (&self.code, &self.passkey_challenge_id, &self.credential) {
            (Some(code), None, None) => Ok(Factor::Code(code.expose_secret())),
            (None, Some(challenge_id), Some(credential)) => Ok(Factor::Passkey {
                challenge_id,
                credential,
            }),
            _ => Err(ApiError::bad_request(
                "send either `code`, or `passkey_challenge_id` and `credential`",
            )),
        }
    }
}

/// A new TOTP secret awaiting confirmation.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpSetup {
    /// Base32.
    pub secret: String,
    pub otpauth_url: String,
}

/// Single-use backup codes, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupCodes {
    pub backup_codes: Vec<String>,
}

/// On the bearer routes a wrong code is a 400 (the caller is authenticated);
/// only the login step answers 401.
pub fn on_bearer_route(e: AuthError) -> ApiError {
    match e {
        AuthError::InvalidMfaCode => ApiError::BadRequest {
            code: "invalid_mfa_code",
            message: "the two-factor code is wrong, used or expired".into(),
        },
        other => other.into(),
    }
}

/// Backup codes are shown once and never cached.
fn codes_response(backup_codes: Vec<String>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(BackupCodes { backup_codes })
}

/// `POST /auth/mfa/totp/setup`
#[utoipa::path(post, path = "/auth/mfa/totp/setup", tag = "two-factor", security(("bearer" = [])),
    responses((status = 200, body = TotpSetup), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn setup(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let (secret, otpauth_url) = state
        .auth
        .totp_setup(&auth.0)
        .await
        .map_err(on_bearer_route)?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(TotpSetup {
            secret,
            otpauth_url,
        }))
}

/// `POST /auth/mfa/totp/enable`
#[utoipa::path(post, path = "/auth/mfa/totp/enable", tag = "two-factor", security(("bearer" = [])), request_body = PasswordAndCode,
    responses((status = 200, body = BackupCodes), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn enable(
    state: web::Data<AppState>,
    caller: Caller,
    auth: Authenticated,
    body: JsonBody<PasswordAndCode>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let account = normalize(&auth.0.email);
    guarded(
        &state,
        &caller,
        Guarded::SecondFactorChange,
        Some(&account),
        async {
            let codes = state
                .auth
                .totp_enable(
                    &auth.0,
                    body.password,
                    body.code.expose_secret(),
                    vec![caller.event(Action::MfaEnabled).user(auth.0.sub)],
                )
                .await
                .map_err(on_bearer_route)?;
            Ok(codes_response(codes))
        },
    )
    .await
}

/// `POST /auth/mfa/totp/disable`
#[utoipa::path(post, path = "/auth/mfa/totp/disable", tag = "two-factor", security(("bearer" = [])), request_body = PasswordAndCode,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn disable(
    state: web::Data<AppState>,
    caller: Caller,
    auth: Authenticated,
    body: JsonBody<PasswordAndCode>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let account = normalize(&auth.0.email);
    guarded(
        &state,
        &caller,
        Guarded::SecondFactorChange,
        Some(&account),
        async {
            state
                .auth
                .totp_disable(
                    &auth.0,
                    body.password,
                    body.code.expose_secret(),
                    vec![caller.event(Action::MfaDisabled).user(auth.0.sub)],
                )
                .await
                .map_err(on_bearer_route)?;
            Ok(HttpResponse::NoContent().finish())
        },
    )
    .await
}

/// `POST /auth/mfa/backup-codes`
#[utoipa::path(post, path = "/auth/mfa/backup-codes", tag = "two-factor", security(("bearer" = [])), request_body = CodeBody,
    responses((status = 200, body = BackupCodes), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn backup_codes(
    state: web::Data<AppState>,
    caller: Caller,
    auth: Authenticated,
    body: JsonBody<CodeBody>,
) -> Result<HttpResponse, ApiError> {
    let account = normalize(&auth.0.email);
    guarded(&state, &caller, Guarded::Mfa, Some(&account), async {
        let codes = state
            .auth
            .regenerate_backup_codes(
                &auth.0,
                body.0.code.expose_secret(),
                vec![caller
                    .event(Action::BackupCodesRegenerated)
                    .user(auth.0.sub)],
            )
            .await
            .map_err(on_bearer_route)?;
        Ok(codes_response(codes))
    })
    .await
}

/// `POST /auth/login/mfa`: the second step. Success completes the login: it
/// clears earlier failures, marks the device known and is audited as
/// `mfa_success` and `login_success`.
#[utoipa::path(post, path = "/auth/login/mfa", operation_id = "login_mfa", tag = "two-factor", request_body = MfaLoginBody,
    responses((status = 200, body = TokenPair), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn login(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody<MfaLoginBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let factor = body.factor()?;
    let pending = state
        .auth
        .pending_login(body.mfa_token.expose_secret())
        .await?;
    let account = pending.user.email.clone();
    guarded(&state, &caller, Guarded::Mfa, Some(&account), async {
        let opened = second_step(&state, &caller, &pending, factor, SessionKind::Api).await?;
        Ok(token_response(&opened.into_tokens()?))
    })
    .await
}

/// The second step of a sign-in, shared by `/auth/login/mfa` and the page:
/// a right code or passkey opens a session of `kind`, clears earlier failures, marks the
/// device known and is audited as `mfa_success` and `login_success`; a wrong
/// one is `mfa_failed`. Call inside `guarded` for the `mfa` rule.
pub async fn second_step(
    state: &AppState,
    caller: &Caller,
    pending: &PendingLogin,
    factor: Factor<'_>,
    kind: SessionKind,
) -> Result<Opened, ApiError> {
    let opened_at = state.auth.now();
    let passkey = matches!(factor, Factor::Passkey { .. });
    match state
        .auth
        .finish_mfa(
            pending,
            factor,
            kind,
            &caller.client_info(),
            vec![
                caller.event(Action::MfaSuccess),
                with_method(caller.event(Action::LoginSuccess), passkey)
                    .extra("mfa", true)
                    .extra("remember_me", pending.challenge.remember_me),
            ],
            vec![caller.event(Action::MfaFailed)],
        )
        .await
    {
        Ok(opened) => {
            let ip_key = state.limiter.ip_key(caller.ip);
            state
                .limiter
                .login_succeeded(&ip_key, &pending.user.email, opened_at)
                .await;
            state.metrics.login("mfa_success");
            Ok(opened)
        }
        // Its `mfa_failed` row was committed with the failure count.
        Err(AuthError::InvalidMfaCode) => {
            state.metrics.login("mfa_failure");
            Err(ApiError::InvalidMfaCode)
        }
        Err(e) => Err(e.into()),
    }
}

/// A sign-in row of a passkey names it (`method: "passkey"`, SPEC section 14).
fn with_method(event: crate::audit::NewEvent, passkey: bool) -> crate::audit::NewEvent {
    if passkey {
        event.extra("method", "passkey")
    } else {
        event
    }
}
