//! Forward authentication (SPEC section 12): `GET /authz/auth-request` for
//! nginx's `auth_request`, `GET /authz/forward-auth` for Traefik's
//! `forwardAuth` and Caddy's `forward_auth`. A proxy asks about each request
//! of the apps it protects; the answer lets it through with who is asking,
//! sends the browser to sign in, or refuses. Never a 2xx by accident:
//! anything odd is refused.

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};

use super::context::Caller;
use super::extract::{bearer_token, cookie};
use super::AppState;
use crate::audit::Action;
use crate::audit_log::FoldKey;
use crate::auth::crypto::sha256;
use crate::auth::service::Profile;
use crate::auth::sessions::BROWSER_COOKIE;
use crate::authz::{Decision, Forwarded};
use crate::config::Policy;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::ForwardAuthOutcome as Outcome;
use crate::store::Amr;

/// Which door the proxy came in by: how the request is described, and how
/// "sign in first" is said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    /// nginx: `X-Original-URL`; 401 with `Location` (nginx redirects).
    AuthRequest,
    /// Traefik, Caddy: `X-Forwarded-*`; a browser is redirected itself.
    ForwardAuth,
}

/// `GET /authz/auth-request`: nginx `auth_request`.
#[utoipa::path(get, path = "/authz/auth-request", tag = "forward auth",
    params(("X-Original-URL" = String, Header, description = "The absolute URL asked for"),
        ("X-Original-Method" = String, Header, description = "Its method")),
    responses((status = 200, description = "Allowed: Remote-User, Remote-Email, Remote-Name, Remote-Groups"),
        (status = 400, body = ErrorBody), (status = 401, description = "Sign in first: Location is the login page"),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn auth_request(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    check(&req, &state, Door::AuthRequest).await
}

/// `GET /authz/forward-auth`: Traefik `forwardAuth`, Caddy `forward_auth`.
#[utoipa::path(get, path = "/authz/forward-auth", tag = "forward auth",
    params(("X-Forwarded-Method" = String, Header, description = "The method asked with"),
        ("X-Forwarded-Proto" = String, Header, description = "http or https"),
        ("X-Forwarded-Host" = String, Header, description = "The host asked for"),
        ("X-Forwarded-Uri" = String, Header, description = "The path and query asked for")),
    responses((status = 200, description = "Allowed: Remote-User, Remote-Email, Remote-Name, Remote-Groups"),
        (status = 302, description = "A browser, to the login page"), (status = 303, description = "A browser's non-GET, to the login page"),
        (status = 400, body = ErrorBody), (status = 401, description = "Sign in first"),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn forward_auth(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    check(&req, &state, Door::ForwardAuth).await
}

async fn check(req: &HttpRequest, state: &AppState, door: Door) -> HttpResponse {
    let trusted = req
        .peer_addr()
        .is_some_and(|peer| state.trusted_proxies.contains(&peer.ip()));
    if !trusted {
        state.metrics.forward_auth(Outcome::Untrusted);
        return ApiError::Refused {
            code: "untrusted_proxy",
            message: "forward-auth questions are answered only to server.trusted_proxies",
        }
        .error_response();
    }
    // A client that sends identity headers of its own is trying something:
    // whatever the proxy does with them, this request goes no further.
    // (Header names are lower case here.)
    let forged = req.headers().keys().any(|name| {
        let name = name.as_str();
        name.len() > 7 && (name.starts_with("remote-") || name.starts_with("remote_"))
    });
    if forged {
        state.metrics.forward_auth(Outcome::Malformed);
        return ApiError::BadRequest {
            code: "invalid_forwarded_request",
            message: "the request carries a Remote-* header of its own".into(),
        }
        .error_response();
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let asked = match door {
        Door::AuthRequest => {
            Forwarded::from_url(header("x-original-method"), header("x-original-url"))
        }
        Door::ForwardAuth => Forwarded::from_parts(
            header("x-forwarded-method"),
            header("x-forwarded-proto"),
            header("x-forwarded-host"),
            header("x-forwarded-uri"),
        ),
    };
    let asked = match asked {
        Ok(asked) => asked,
        Err(malformed) => {
            state.metrics.forward_auth(Outcome::Malformed);
            return ApiError::BadRequest {
                code: "invalid_forwarded_request",
                message: malformed.0.to_owned(),
            }
            .error_response();
        }
    };
    let decision = state.forward_auth.decide(&asked);
    match decision.policy {
        Policy::Bypass => {
            state.metrics.forward_auth(Outcome::Bypass);
            return HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish();
        }
        Policy::Deny => return denied(req, state, &asked, &decision, None).await,
        Policy::OneFactor | Policy::TwoFactor => {}
    }
    let Some((amr, profile)) = who(req, state).await else {
        return sign_in(state, req, &asked, door);
    };
    if decision.policy == Policy::TwoFactor && !amr.is_multi_factor() {
        return sign_in(state, req, &asked, door);
    }
    if !decision.admits(&profile.user.email, &profile.groups) {
        return denied(req, state, &asked, &decision, Some(&profile)).await;
    }
    state.metrics.forward_auth(Outcome::Allowed);
    let mut res = HttpResponse::Ok();
    res.insert_header((header::CACHE_CONTROL, "no-store"));
    let user = &profile.user;
    for (name, value) in [
        ("remote-user", user.email.as_str()),
        ("remote-email", user.email.as_str()),
        ("remote-name", user.name.as_deref().unwrap_or_default()),
    ] {
        if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            res.insert_header((name, value));
        }
    }
    if let Ok(groups) = HeaderValue::from_str(&profile.groups.join(",")) {
        res.insert_header(("remote-groups", groups));
    }
    res.finish()
}

/// The signed-in user asking, by the browser's session cookie or a Bearer
/// access token, with the factors of their session. No storage is read for
/// a session seen lately (and a revoked one is refused at once).
async fn who(req: &HttpRequest, state: &AppState) -> Option<(Amr, Arc<Profile>)> {
    if let Some(cookie) = cookie(req, BROWSER_COOKIE) {
        if let Ok((session, profile)) = state.auth.browser_identity(cookie).await {
            return Some((session.amr, profile));
        }
    }
    let claims = state.auth.authorize_shared(bearer_token(req)?).ok()?;
    let profile = state.auth.current_profile(&claims).await.ok()?;
    Some((
        Amr::from_values(claims.amr.iter().map(String::as_str)),
        profile,
    ))
}

/// Not signed in, or without the second factor the rule asks for: on to the
/// login page, which returns to the app.
fn sign_in(state: &AppState, req: &HttpRequest, asked: &Forwarded<'_>, door: Door) -> HttpResponse {
    state.metrics.forward_auth(Outcome::SignIn);
    let rd: String = url::form_urlencoded::byte_serialize(asked.url().as_bytes()).collect();
    let login = format!(
        "{}/ui/login?rd={rd}",
        state.config.server.public_url.trim_end_matches('/')
    );
    let browser = door == Door::ForwardAuth && is_browser(req);
    let mut res = if !browser {
        let mut res = HttpResponse::Unauthorized();
        res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        res
    } else if matches!(asked.method, "GET" | "HEAD") {
        HttpResponse::Found()
    } else {
        HttpResponse::SeeOther()
    };
    if door == Door::AuthRequest || browser {
        res.insert_header((header::LOCATION, login));
    }
    res.insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// A browser navigating: it accepts HTML and is not a script's request.
fn is_browser(req: &HttpRequest) -> bool {
    let accepts_html = req
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"));
    let xhr = req
        .headers()
        .get("x-requested-with")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("xmlhttprequest"));
    accepts_html && !xhr
}

/// 403, audited as `forward_auth_denied` and folded like 429s (per address,
/// rule, policy and user), so a client hammering a forbidden app costs rows
/// per minute.
async fn denied(
    req: &HttpRequest,
    state: &AppState,
    asked: &Forwarded<'_>,
    decision: &Decision<'_>,
    profile: Option<&Profile>,
) -> HttpResponse {
    state.metrics.forward_auth(Outcome::Forbidden);
    // Who asked is read only here: an allowed check has no use for it.
    let caller = match Caller::from_request(req, &mut Payload::None).into_inner() {
        Ok(caller) => caller,
        Err(e) => return e.error_response(),
    };
    let user = profile.map(|p| p.user.id);
    // Folded per address (an IPv6 /64 as the limiter groups it), rule and
    // user: none of which a client can vary freely (the host can be).
    let digest = sha256(
        format!(
            "{}\0{}\0{}\0{}",
            state.limiter.ip_key(caller.ip).as_str(),
            decision
                .rule
                .map_or(-1, |r| i64::try_from(r).unwrap_or(i64::MAX)),
            decision.policy.as_str(),
            user.map(|u| u.to_string()).unwrap_or_default()
        )
        .as_bytes(),
    );
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    let event = || {
        let mut event = caller
            .event(Action::ForwardAuthDenied)
            .extra("host", asked.host.as_str())
            .extra("path", asked.path.chars().take(256).collect::<String>())
            .extra("method", asked.method)
            .extra("policy", decision.policy.as_str());
        if let Some(rule) = decision.rule {
            event = event.extra("rule", rule);
        }
        if let Some(user) = user {
            event = event.user(user);
        }
        event
    };
    if let Err(e) = state.audit.fold(FoldKey::Denial(id), event).await {
        return ApiError::from(e).error_response();
    }
    ApiError::Forbidden.error_response()
}
