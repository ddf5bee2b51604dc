//! The provider's machine endpoints (SPEC section 13): discovery, the token
//! endpoint (`authorization_code`, `refresh_token`), userinfo, revocation
//! (RFC 7009), introspection (RFC 7662) and RP-initiated logout. Every
//! endpoint a client authenticates to runs under the `client_auth_ip` rule;
//! errors are RFC 6749 section 5.2's.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{has_scope, id_token, Client, ScopedClaims};
use crate::audit::event::Action;
use crate::auth::grants::{is_verifier, CodeRequest};
use crate::auth::service::AuthError;
use crate::auth::tokens::AccessClaims;
use crate::config::{ClientAuthMethod, SCOPES};
use crate::error::ApiError;
use crate::http::context::Caller;
use crate::http::guard::{guarded, NotAFailure};
use crate::http::oauth::{oauth_error, read_form, to_oauth};
use crate::http::state::AppState;
use crate::pages::browser::{removal, Browser, SESSION_COOKIE};
use crate::pages::{render, see_other, Layout, MessagePage};
use crate::ratelimit::Guarded;
use crate::store::oidc::grants_refresh_token;
use crate::store::{RotationAudit, Session};

/// `GET /.well-known/openid-configuration`
pub async fn discovery(state: web::Data<AppState>) -> HttpResponse {
    let issuer = &state.oidc.issuer;
    let mut algs = vec!["RS256"];
    if state.auth.tokens().algorithm() == jsonwebtoken::Algorithm::EdDSA {
        algs.push("EdDSA");
    }
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/oidc/authorize"),
            "token_endpoint": format!("{issuer}/oidc/token"),
            "userinfo_endpoint": format!("{issuer}/oidc/userinfo"),
            "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
            "revocation_endpoint": format!("{issuer}/oidc/revoke"),
            "introspection_endpoint": format!("{issuer}/oidc/introspect"),
            "end_session_endpoint": format!("{issuer}/oidc/logout"),
            "scopes_supported": SCOPES,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "prompt_values_supported": ["none", "login", "consent", "select_account"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "amr", "sid", "at_hash", "azp",
                "email", "email_verified", "name", "preferred_username", "groups"],
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "authorization_response_iss_parameter_supported": true,
            "frontchannel_logout_supported": false,
            "backchannel_logout_supported": false,
        }))
}

/// The form of the token, revocation and introspection endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClientForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    token: Option<String>,
    token_type_hint: Option<String>,
}

/// `401 invalid_client` (with a Basic challenge when Basic was tried).
fn invalid_client(basic: bool, description: &str) -> HttpResponse {
    let mut res = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    if basic {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"portcullis\""),
        );
    }
    res
}

fn bad(error: &'static str, description: &str) -> HttpResponse {
    oauth_error(StatusCode::BAD_REQUEST, error, description)
}

/// The `Authorization: Basic` credentials, form-decoded (RFC 6749 section 2.3.1).
fn basic_credentials(req: &HttpRequest) -> Result<Option<(String, String)>, ()> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| ())?;
    let Some(encoded) = text
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, rest)| rest.trim())
    else {
        return Err(());
    };
    let decoded = STANDARD.decode(encoded).map_err(|_| ())?;
    let decoded = String::from_utf8(decoded).map_err(|_| ())?;
    let (id, secret) = decoded.split_once(':').ok_or(())?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((unescape(id), unescape(secret))))
}

/// Authenticates the client of a request as it registered to: Basic, the
/// form's `client_secret`, or (a public client) its `client_id` alone.
async fn authenticate(
    state: &AppState,
    req: &HttpRequest,
    form: &ClientForm,
) -> Result<Arc<Client>, HttpResponse> {
    let basic = basic_credentials(req)
        .map_err(|()| invalid_client(true, "the Authorization header is not Basic credentials"))?;
    let (id, secret, method) = match (&basic, &form.client_secret) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "invalid_request",
                "send the client's credentials one way, not two",
            ))
        }
        (Some((id, secret)), None) => {
            if form.client_id.as_deref().is_some_and(|c| c != id) {
                return Err(bad(
                    "invalid_request",
                    "client_id differs from the Basic credentials",
                ));
            }
            (
                id.clone(),
                Some(secret.clone()),
                ClientAuthMethod::ClientSecretBasic,
            )
        }
        (None, Some(secret)) => (
            form.client_id.clone().unwrap_or_default(),
            Some(secret.clone()),
            ClientAuthMethod::ClientSecretPost,
        ),
        (None, None) => (
            form.client_id.clone().unwrap_or_default(),
            None,
            ClientAuthMethod::None,
        ),
    };
    let is_basic = basic.is_some();
    let client = match state.oidc.clients.get(&id).await {
        Ok(Some(client)) => client,
        Ok(None) => return Err(invalid_client(is_basic, "unknown client")),
        Err(e) => return Err(to_oauth(&ApiError::from(e))),
    };
    if client.method() != method {
        return Err(invalid_client(
            is_basic,
            &format!(
                "this client authenticates with {}",
                client.method().as_str()
            ),
        ));
    }
    if let Some(secret) = secret {
        match client.secret_matches(&state.auth, &secret).await {
            Ok(true) => {}
            Ok(false) => return Err(invalid_client(is_basic, "wrong client secret")),
            Err(e) => return Err(to_oauth(&ApiError::from(e))),
        }
    }
    Ok(client)
}

/// A token answer (RFC 6749 section 5.1, OIDC Core 3.1.3.3).
#[derive(Debug, Serialize)]
struct TokenAnswer {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    id_token: String,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

fn no_store(body: &impl Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(body)
}

/// `POST /oidc/token`
pub async fn token(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    as_client(state, caller, req, payload, |state, caller, client, form| async move {
        Ok(match form.grant_type.as_deref() {
            Some("authorization_code") => code_grant(&state, &caller, &client, &form).await,
            Some("refresh_token") => refresh_grant(&state, &caller, &client, &form).await,
            Some(other) => bad(
                "unsupported_grant_type",
                &format!(
                    "grant_type `{:.32}` is not supported here; use authorization_code or refresh_token",
                    other
                ),
            ),
            None => bad("invalid_request", "missing parameter `grant_type`"),
        })
    })
    .await
}

/// What the token, revocation and introspection endpoints share: the form
/// read, the client authenticated under the `client_auth_ip` rule (a refused
/// client counts as a failure there, nothing after it does), then `work` as
/// that client.
async fn as_client<F, Fut>(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
    work: F,
) -> HttpResponse
where
    F: FnOnce(web::Data<AppState>, Caller, Arc<Client>, ClientForm) -> Fut,
    Fut: std::future::Future<Output = Result<HttpResponse, ApiError>>,
{
    let form: ClientForm = match read_form(&req, payload, state.config.server.max_body_bytes).await
    {
        Ok(form) => form,
        Err(reject) => return reject.into_response(),
    };
    let caller = caller.via("oidc");
    let result = guarded(&state, &caller, Guarded::ClientAuth, None, async {
        match authenticate(&state, &req, &form).await {
            // Only a refused client counts against the address: a client's
            // own address must not be blocked for everyone by someone
            // feeding it bad codes to exchange.
            Ok(client) => {
                work(state.clone(), caller.clone(), client, form)
                    .await
                    .map(|mut answer| {
                        answer.extensions_mut().insert(NotAFailure);
                        answer
                    })
            }
            Err(refused) => Ok(refused),
        }
    })
    .await;
    result.unwrap_or_else(|e| to_oauth(&e))
}

/// The `token` parameter of revocation and introspection.
fn token_param(form: &ClientForm) -> Option<&str> {
    form.token
        .as_deref()
        .filter(|t| !t.is_empty() && t.len() <= 4096)
}

fn no_token() -> HttpResponse {
    bad("invalid_request", "missing parameter `token`")
}

async fn code_grant(
    state: &AppState,
    caller: &Caller,
    client: &Client,
    form: &ClientForm,
) -> HttpResponse {
    let (Some(code), Some(redirect_uri)) = (form.code.as_deref(), form.redirect_uri.as_deref())
    else {
        return bad("invalid_request", "code and redirect_uri are required");
    };
    if let Some(v) = form.code_verifier.as_deref() {
        if !is_verifier(v) {
            return bad(
                "invalid_request",
                "code_verifier must be 43 to 128 unreserved characters",
            );
        }
    }
    let request = CodeRequest {
        code,
        client_id: &client.config.id,
        redirect_uri,
        code_verifier: form.code_verifier.as_deref(),
        refresh_always: client.config.refresh_tokens,
    };
    let granted = match state
        .auth
        .redeem_code(
            request,
            &caller.client_info(),
            caller.event(Action::OidcTokensIssued),
            caller.event(Action::OidcCodeReused),
        )
        .await
    {
        Ok(granted) => granted,
        Err(AuthError::InvalidGrant(why)) => return bad("invalid_grant", why),
        Err(e) => return to_oauth(&ApiError::from(e)),
    };
    let scope = granted.code.scope.clone();
    let refresh = grants_refresh_token(&scope, client.config.refresh_tokens)
        .then(|| granted.tokens.refresh_token.clone());
    answer(
        state,
        client,
        &granted.session,
        granted.code.nonce.as_deref(),
        granted.tokens.access_token,
        granted.tokens.expires_in,
        refresh,
    )
    .await
}

async fn refresh_grant(
    state: &AppState,
    caller: &Caller,
    client: &Client,
    form: &ClientForm,
) -> HttpResponse {
    let Some(refresh_token) = form.refresh_token.as_deref().filter(|t| !t.is_empty()) else {
        return bad("invalid_request", "missing parameter `refresh_token`");
    };
    let audit = RotationAudit {
        refreshed: caller
            .event(Action::TokenRefreshed)
            .extra("client_id", client.config.id.clone()),
        reused: caller
            .event(Action::RefreshTokenReused)
            .extra("client_id", client.config.id.clone()),
    };
    match state
        .auth
        .refresh(refresh_token, Some(&client.config.id), audit)
        .await
    {
        Ok((_, session, pair)) => {
            if let Some(asked) = form.scope.as_deref() {
                let granted = session.grant.as_ref().map_or("", |g| g.scope.as_str());
                if !asked
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .all(|s| has_scope(granted, s))
                {
                    return bad("invalid_scope", "a refresh cannot widen the scope");
                }
            }
            answer(
                state,
                client,
                &session,
                None,
                pair.access_token,
                pair.expires_in,
                Some(pair.refresh_token),
            )
            .await
        }
        Err(AuthError::RefreshTokenReused { .. }) => bad(
            "invalid_grant",
            "this refresh token was used before: the grant is revoked",
        ),
        Err(AuthError::InvalidRefreshToken) => bad(
            "invalid_grant",
            "the refresh token is not valid for this client",
        ),
        Err(e) => to_oauth(&ApiError::from(e)),
    }
}

/// Tokens and an id_token for `session`.
async fn answer(
    state: &AppState,
    client: &Client,
    session: &Session,
    nonce: Option<&str>,
    access_token: String,
    expires_in: i64,
    refresh_token: Option<String>,
) -> HttpResponse {
    let profile = match state.auth.profile_of(session.user_id).await {
        Ok(profile) => profile,
        Err(_) => return bad("invalid_grant", "the account is disabled"),
    };
    let id_token = match id_token(
        &state.oidc,
        &state.auth,
        client,
        session,
        &profile,
        nonce,
        &access_token,
    )
    .await
    {
        Ok(token) => token,
        Err(e) => return to_oauth(&ApiError::Internal(e)),
    };
    no_store(&TokenAnswer {
        access_token,
        token_type: "Bearer",
        expires_in,
        id_token,
        scope: session
            .grant
            .as_ref()
            .map(|g| g.scope.clone())
            .unwrap_or_default(),
        refresh_token,
    })
}

/// The Bearer token of a request, if it has one.
fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// `401` with the Bearer challenge of RFC 6750.
fn bearer_refused(error: &str, description: &str) -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((
            header::WWW_AUTHENTICATE,
            format!("Bearer error=\"{error}\", error_description=\"{description}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"error": error, "error_description": description}))
}

/// The form of a `POST /oidc/userinfo` that carries its token in the body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UserinfoForm {
    access_token: Option<String>,
}

/// `GET, POST /oidc/userinfo`: the claims of the token's scopes. The token
/// comes as a Bearer header, or in a POST's form body (RFC 6750 section 2.2).
pub async fn userinfo(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let from_body;
    let token = match bearer(&req) {
        Some(token) => token,
        None if req.method() == actix_web::http::Method::POST => {
            let form: UserinfoForm =
                match read_form(&req, payload, state.config.server.max_body_bytes).await {
                    Ok(form) => form,
                    Err(reject) => return reject.into_response(),
                };
            match form.access_token {
                Some(token) => {
                    from_body = token;
                    &from_body
                }
                None => return bearer_refused("invalid_request", "send the access token"),
            }
        }
        None => {
            return bearer_refused("invalid_request", "send the access token as a Bearer token")
        }
    };
    let claims = match state.auth.authorize_grant(token) {
        Ok(claims) => claims,
        Err(_) => return bearer_refused("invalid_token", "the access token is not valid"),
    };
    let scope = claims.scope.as_deref().unwrap_or_default();
    if !has_scope(scope, "openid") {
        return HttpResponse::Forbidden()
            .insert_header((
                header::WWW_AUTHENTICATE,
                "Bearer error=\"insufficient_scope\", scope=\"openid\"",
            ))
            .json(json!({"error": "insufficient_scope", "error_description": "the token was not granted openid"}));
    }
    let profile = match state.auth.profile_of(claims.sub).await {
        Ok(profile) => profile,
        Err(AuthError::InvalidToken(_)) => {
            return bearer_refused("invalid_token", "the account is disabled")
        }
        Err(e) => return to_oauth(&ApiError::from(e)),
    };
    #[derive(Serialize)]
    struct UserInfo {
        sub: String,
        #[serde(flatten)]
        claims: ScopedClaims,
    }
    no_store(&UserInfo {
        sub: claims.sub.to_string(),
        claims: ScopedClaims::of(&profile, scope),
    })
}

/// What a token presented to revocation or introspection turned out to be.
enum Presented {
    Access(Arc<AccessClaims>),
    Refresh(Session),
    Nothing,
}

/// Finds `token` among `client`'s grants (a token of another client, or of
/// no client, is nothing to it).
async fn presented(state: &AppState, client: &Client, token: &str) -> Result<Presented, ApiError> {
    if token.matches('.').count() == 2 {
        return Ok(match state.auth.authorize_grant(token) {
            Ok(claims) if claims.client_id.as_deref() == Some(client.config.id.as_str()) => {
                Presented::Access(claims)
            }
            _ => Presented::Nothing,
        });
    }
    Ok(
        match state
            .auth
            .grant_of_refresh_token(token, &client.config.id)
            .await?
        {
            Some(session) => Presented::Refresh(session),
            None => Presented::Nothing,
        },
    )
}

/// `POST /oidc/revoke` (RFC 7009): ends the grant a token belongs to; 200
/// whether or not the token was known.
pub async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    as_client(
        state,
        caller,
        req,
        payload,
        |state, caller, client, form| async move {
            let Some(token) = token_param(&form) else {
                return Ok(no_token());
            };
            // token_type_hint is only a hint (RFC 7009 section 2.1): both kinds are looked for.
            let _ = &form.token_type_hint;
            let session = match presented(&state, &client, token).await? {
                Presented::Access(claims) => state.auth.live_session(claims.sid).await?,
                Presented::Refresh(session) => Some(session),
                Presented::Nothing => None,
            };
            if let Some(session) = session {
                let audit = vec![caller
                    .event(Action::OidcTokenRevoked)
                    .extra("client_id", client.config.id.clone())];
                state.auth.revoke_grant(&session, audit).await?;
            }
            Ok(HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish())
        },
    )
    .await
}

/// `POST /oidc/introspect` (RFC 7662): whether a token of this client is
/// active, and what it is.
pub async fn introspect(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    as_client(
        state,
        caller,
        req,
        payload,
        |state, _caller, client, form| async move {
            if client.is_public() {
                return Ok(invalid_client(
                    false,
                    "introspection needs a confidential client",
                ));
            }
            let Some(token) = token_param(&form) else {
                return Ok(no_token());
            };
            let mut body = match presented(&state, &client, token).await? {
                Presented::Access(c) => json!({
                    "active": true,
                    "token_type": "Bearer",
                    "client_id": c.client_id,
                    "scope": c.scope,
                    "sub": c.sub,
                    "username": c.email,
                    "iss": c.iss,
                    "aud": c.aud,
                    "exp": c.exp,
                    "iat": c.iat,
                    "nbf": c.nbf,
                    "sid": c.sid,
                }),
                Presented::Refresh(s) => json!({
                    "active": true,
                    "token_type": "refresh_token",
                    "client_id": client.config.id,
                    "scope": s.grant.as_ref().map(|g| g.scope.clone()),
                    "sub": s.user_id,
                    "exp": s.expires_at.div_euclid(1000),
                    "sid": s.id,
                }),
                Presented::Nothing => json!({"active": false}),
            };
            // No email in the token (the grant has no `email` scope), no username.
            if body["username"] == "" {
                if let Some(fields) = body.as_object_mut() {
                    fields.remove("username");
                }
            }
            Ok(no_store(&body))
        },
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LogoutQuery {
    id_token_hint: Option<String>,
    post_logout_redirect_uri: Option<String>,
    client_id: Option<String>,
    state: Option<String>,
}

/// The claims of an id_token hint that logout reads.
#[derive(Debug, Deserialize)]
struct Hint {
    aud: String,
    sub: String,
    iat: i64,
}

/// `GET /oidc/logout`: RP-initiated logout. With an id_token we signed for
/// the signed-in user, the browser session ends and the browser goes to a
/// registered `post_logout_redirect_uri` (with `state`); without one, a
/// page asks the person to confirm (a link alone must not sign anyone out).
pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    browser: Browser,
    caller: Caller,
) -> HttpResponse {
    let q: LogoutQuery = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let hint: Option<Hint> = match q.id_token_hint.as_deref() {
        Some(t) if t.len() <= 8192 => match state.oidc.rsa.verify(t).await {
            Some(hint) => Some(hint),
            // An EdDSA id_token, signed with the access-token key.
            None => state.auth.tokens().verify_jwt(t),
        },
        _ => None,
    };
    // An expired id_token serves (OIDC RP-Initiated Logout 1.0, section 2),
    // but not one older than any grant lives: a hint that leaked long ago
    // from some log signs nobody out.
    let oldest = state
        .auth
        .now()
        .saturating_sub(state.config.tokens.refresh_ttl.as_millis_i64());
    let hint = hint.filter(|h| h.iat.saturating_mul(1000) >= oldest);
    let client_id = hint
        .as_ref()
        .map(|h| h.aud.clone())
        .or_else(|| q.client_id.clone());
    let client = match client_id.as_deref() {
        Some(id) => state.oidc.clients.get(id).await.ok().flatten(),
        None => None,
    };
    let back = match (&client, q.post_logout_redirect_uri.as_deref()) {
        (Some(c), Some(uri)) if c.config.post_logout_redirect_uris.iter().any(|u| u == uri) => {
            let mut params = Vec::new();
            if let Some(s) = &q.state {
                params.push(("state", s.as_str()));
            }
            Some(super::authorize::with_params(uri, &params))
        }
        _ => None,
    };
    let claims = browser.claims().cloned();
    let hint_matches = match (&hint, &claims) {
        (Some(h), Some(c)) => h.sub == c.sub.to_string(),
        (Some(_), None) => true,
        _ => false,
    };
    if !hint_matches && claims.is_some() {
        let page = MessagePage {
            layout: Layout::new(&state, &browser, "Sign out?"),
            message: "An app asked to sign you out of portcullis. Sign out from your account page if you want to.".into(),
            alert: false,
            link: "/ui/account",
            link_text: "Open your account",
        };
        return render(StatusCode::OK, &browser, &page, None);
    }
    if let Some(claims) = &claims {
        let event = caller
            .via("oidc")
            .event(Action::OidcLogout)
            .user(claims.sub)
            .resource("session", claims.sid)
            .extra("client_id", client_id.clone().unwrap_or_default());
        if let Err(e) = state.auth.logout(claims, vec![event]).await {
            return crate::pages::error_page(&state, &browser, e.into());
        }
    }
    let cookie = removal(&state.config, SESSION_COOKIE);
    match back {
        Some(to) => see_other(&to).cookie(cookie).finish(),
        None => {
            let page = MessagePage {
                layout: Layout::new(&state, &browser, "Signed out"),
                message: "You are signed out.".into(),
                alert: false,
                link: "/ui/login",
                link_text: "Sign in again",
            };
            let mut res = render(StatusCode::OK, &browser, &page, None);
            let _ = res.add_cookie(&cookie);
            res
        }
    }
}
