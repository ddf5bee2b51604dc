//! Passkey routes (SPEC section 14): adding, listing and removing one's
//! passkeys, and signing in with one. The account routes take a bearer
//! token, or the session cookie from our own pages (the passkey script),
//! whose `Origin` must then be ours.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::accounts::token_response;
use super::context::Caller;
use super::extract::{bearer_token, cookie, JsonBody};
use super::guard::guarded;
use super::origin::same_origin;
use super::AppState;
use crate::audit::Action;
use crate::auth::passkeys::{parse_passkey_name, Asserted};
use crate::auth::sessions::{Opened, SignIn, BROWSER_COOKIE};
use crate::auth::tokens::AccessClaims;
use crate::error::{ApiError, ErrorBody};
use crate::ratelimit::Guarded;
use crate::store::{PasskeyRow, Purpose, SessionKind};
use crate::time_fmt::rfc3339_ms;

/// A ceremony begun: its id and webauthn-rs's options for
/// `navigator.credentials.create()` or `.get()` (binary fields base64url).
#[derive(Debug, Serialize, ToSchema)]
pub struct Begun<T: Serialize> {
    pub challenge_id: String,
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object)]
    pub public_key: T,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterFinishBody {
    pub challenge_id: String,
    /// The `PublicKeyCredential` of `navigator.credentials.create()`, as
    /// webauthn-rs reads it.
    #[schema(value_type = Object)]
    pub credential: Box<RegisterPublicKeyCredential>,
    /// Up to 64 characters; default "Passkey".
    pub name: Option<String>,
    /// The current password: needed when the session was signed into more
    /// than ten minutes ago, so that a stolen token alone cannot add a way in.
    #[schema(value_type = Option<String>)]
    pub password: Option<secrecy::SecretString>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginStartBody {
    /// The account, to name its passkeys; without it any discoverable one.
    pub email: Option<String>,
    /// A sign-in waiting for its second step (from `mfa_required`).
    #[schema(value_type = Option<String>)]
    pub mfa_token: Option<secrecy::SecretString>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginFinishBody {
    pub challenge_id: String,
    /// The `PublicKeyCredential` of `navigator.credentials.get()`.
    #[schema(value_type = Object)]
    pub credential: Box<PublicKeyCredential>,
    pub remember_me: Option<bool>,
}

/// A passkey as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyView {
    pub id: Uuid,
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; null before its first sign-in.
    pub last_used_at: Option<String>,
}

impl From<&PasskeyRow> for PasskeyView {
    fn from(row: &PasskeyRow) -> Self {
        Self {
            id: row.id,
            name: row.name.clone(),
            created_at: rfc3339_ms(row.created_at),
            last_used_at: row.last_used_at.map(rfc3339_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyList {
    pub passkeys: Vec<PasskeyView>,
}

/// Who manages passkeys: the bearer of an access token, or a signed-in
/// browser calling from our own origin (an `Origin` header is required on
/// a change: every browser sends one with a script's POST and DELETE). The
/// caller of a browser's call is the pages' (`via: "web"`).
async fn owner(
    req: &HttpRequest,
    state: &AppState,
    caller: Caller,
) -> Result<(AccessClaims, Caller), ApiError> {
    if let Some(token) = bearer_token(req) {
        return Ok((state.auth.authorize(token)?, caller));
    }
    let Some(session) = cookie(req, BROWSER_COOKIE) else {
        return Err(ApiError::InvalidToken(
            "a bearer access token or a session cookie is required",
        ));
    };
    let changes = req.method() != actix_web::http::Method::GET;
    if changes && (req.headers().get(header::ORIGIN).is_none() || !same_origin(req, &state.config))
    {
        return Err(ApiError::Refused {
            code: "cross_origin",
            message: "a request with the session cookie must come from this server's own pages",
        });
    }
    let (claims, _) = state
        .auth
        .browser_session(session)
        .await
        .map_err(|_| ApiError::InvalidToken("the session has ended; sign in again"))?;
    Ok((claims, caller.via_web()))
}

/// The account whose passkeys a request manages (see [`owner`]), and its
/// caller: an extractor, so that it is asked before the body is read.
pub struct Owner {
    claims: AccessClaims,
    caller: Caller,
}

impl FromRequest for Owner {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let caller = Caller::from_request(&req, payload).into_inner();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))?;
            let (claims, caller) = owner(&req, state, caller?).await?;
            Ok(Self { claims, caller })
        })
    }
}

fn no_store(mut res: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    res.insert_header((header::CACHE_CONTROL, "no-store"));
    res
}

/// `POST /auth/passkeys/register/start`
#[utoipa::path(post, path = "/auth/passkeys/register/start", operation_id = "passkey_register_start", tag = "passkeys", security(("bearer" = [])),
    responses((status = 200, body = Object, description = "`{challenge_id, publicKey}`: creation options"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn register_start(
    state: web::Data<AppState>,
    owner: Owner,
) -> Result<HttpResponse, ApiError> {
    let claims = owner.claims;
    let user = state.auth.current_user(&claims).await?;
    let started = state.auth.start_passkey_registration(&user).await?;
    Ok(no_store(HttpResponse::Ok()).json(Begun {
        challenge_id: started.challenge_id,
        public_key: started.options.public_key,
    }))
}

/// `POST /auth/passkeys/register/finish`: needs a session signed into within
/// the last ten minutes, or the current `password` (under the login rules).
#[utoipa::path(post, path = "/auth/passkeys/register/finish", operation_id = "passkey_register_finish", tag = "passkeys", security(("bearer" = [])),
    request_body = RegisterFinishBody,
    responses((status = 201, body = PasskeyView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn register_finish(
    state: web::Data<AppState>,
    owner: Owner,
    body: JsonBody<RegisterFinishBody>,
) -> Result<HttpResponse, ApiError> {
    let Owner { claims, caller } = owner;
    let body = body.into_inner();
    let name = parse_passkey_name(body.name.as_deref()).map_err(|e| ApiError::field("name", e))?;
    let account = crate::email::normalize(&claims.email);
    guarded(&state, &caller, Guarded::Login, Some(&account), async {
        let user = state.auth.current_user(&claims).await?;
        state
            .auth
            .confirm_recent_sign_in(&claims, &user, body.password.clone())
            .await?;
        let row = state
            .auth
            .finish_passkey_registration(
                &user,
                &body.challenge_id,
                &body.credential,
                name,
                vec![caller.event(Action::PasskeyAdded)],
            )
            .await?;
        Ok(no_store(HttpResponse::Created()).json(PasskeyView::from(&row)))
    })
    .await
}

/// `GET /auth/passkeys`
#[utoipa::path(get, path = "/auth/passkeys", operation_id = "list_passkeys", tag = "passkeys", security(("bearer" = [])),
    responses((status = 200, body = PasskeyList), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(state: web::Data<AppState>, owner: Owner) -> Result<HttpResponse, ApiError> {
    let claims = owner.claims;
    let rows = state.auth.passkeys(claims.sub).await?;
    Ok(no_store(HttpResponse::Ok()).json(PasskeyList {
        passkeys: rows.iter().map(PasskeyView::from).collect(),
    }))
}

/// `DELETE /auth/passkeys/{id}`: needs a session signed into within the
/// last ten minutes (403 `reauthentication_required`), so that a stolen
/// token cannot quietly take a passkey-only account's second factor away.
#[utoipa::path(delete, path = "/auth/passkeys/{id}", operation_id = "remove_passkey", tag = "passkeys", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The passkey")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn remove(
    state: web::Data<AppState>,
    owner: Owner,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Owner { claims, caller } = owner;
    let id = Uuid::parse_str(&path).map_err(|_| ApiError::NotFound("no such passkey"))?;
    let user = state.auth.current_user(&claims).await?;
    state
        .auth
        .confirm_recent_sign_in(&claims, &user, None)
        .await?;
    state
        .auth
        .remove_passkey(claims.sub, id, vec![caller.event(Action::PasskeyRemoved)])
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /auth/passkeys/login/start`: a sign-in with a passkey alone, or
/// (with `mfa_token`) the second step after a password.
#[utoipa::path(post, path = "/auth/passkeys/login/start", operation_id = "passkey_login_start", tag = "passkeys", request_body = LoginStartBody,
    responses((status = 200, body = Object, description = "`{challenge_id, publicKey}`: request options"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn login_start(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody<LoginStartBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    guarded(&state, &caller, Guarded::PasskeyStart, None, async {
        let started = match &body.mfa_token {
            Some(token) => {
                let pending = state
                    .auth
                    .pending_login(secrecy::ExposeSecret::expose_secret(token))
                    .await?;
                state.auth.start_passkey_second_factor(&pending).await?
            }
            None => {
                let email = body.email.as_deref().map(crate::email::normalize);
                state.auth.start_passkey_login(email.as_deref()).await?
            }
        };
        Ok(no_store(HttpResponse::Ok()).json(Begun {
            challenge_id: started.challenge_id,
            public_key: started.options.public_key,
        }))
    })
    .await
}

/// `POST /auth/passkeys/login/finish`
#[utoipa::path(post, path = "/auth/passkeys/login/finish", operation_id = "passkey_login_finish", tag = "passkeys", request_body = LoginFinishBody,
    responses((status = 200, body = crate::auth::service::TokenPair), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn login_finish(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody<LoginFinishBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    guarded(&state, &caller, Guarded::PasskeyLogin, None, async {
        let opened = passkey_login(
            &state,
            &caller,
            &body.challenge_id,
            &body.credential,
            body.remember_me.unwrap_or(false),
            SessionKind::Api,
        )
        .await?;
        Ok(token_response(&opened.into_tokens()?))
    })
    .await
}

/// A sign-in with a passkey alone, shared by `/auth/passkeys/login/finish`
/// and the login page: a verified passkey opens a session of `kind` with
/// both its factors, audited `login_success` (`method: "passkey"`); anything
/// else is `login_failed` (`reason`: `passkey_invalid` or `passkey_counter`)
/// and 401. Call inside `guarded` for [`Guarded::PasskeyLogin`].
pub async fn passkey_login(
    state: &AppState,
    caller: &Caller,
    challenge_id: &str,
    credential: &PublicKeyCredential,
    remember_me: bool,
    kind: SessionKind,
) -> Result<Opened, ApiError> {
    let asserted = state
        .auth
        .assert_passkey(challenge_id, credential, Purpose::Login, None)
        .await;
    let Asserted { user, amr, .. } = match asserted {
        Ok(asserted) => asserted,
        Err(Ok((failure, user_id))) => {
            let mut event = caller
                .event(Action::LoginFailed)
                .extra("method", "passkey")
                .extra("reason", failure.as_str());
            if let Some(id) = user_id {
                event = event.user(id);
            }
            state.metrics.login("failure");
            state.audit(event).await?;
            return Err(ApiError::InvalidCredentials);
        }
        Err(Err(e)) => return Err(e.into()),
    };
    let opened_at = state.auth.now();
    let event = caller
        .event(Action::LoginSuccess)
        .extra("method", "passkey")
        .extra("remember_me", remember_me);
    let sign_in = SignIn {
        kind,
        remember_me,
        amr,
    };
    let opened = state
        .auth
        .open_session(&user, sign_in, &caller.client_info(), vec![event])
        .await?;
    state
        .limiter
        .login_succeeded(&state.limiter.ip_key(caller.ip), &user.email, opened_at)
        .await;
    state.metrics.login("success");
    Ok(opened)
}
