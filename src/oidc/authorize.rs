//! `GET /oidc/authorize` and the consent page (`/ui/consent`): the
//! authorization code flow with PKCE (SPEC section 13). One check serves
//! both: an unknown client or redirect is a 400 page, never a redirect;
//! other errors go back to the client (RFC 6749 section 4.1.2.1) with `iss`
//! (RFC 9207); a browser without a (fresh enough) session signs in first.

use std::collections::HashSet;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{has_scope, Client};
use crate::audit::event::Action;
use crate::auth::service::Profile;
use crate::auth::tokens::AccessClaims;
use crate::config::{Consent, SCOPES};
use crate::http::context::Caller;
use crate::http::state::AppState;
use crate::pages::browser::Browser;
use crate::pages::{query_value, render, see_other, Layout, MessagePage, Posted};
use crate::store::{Amr, OidcCode};

/// The parameters of an authorization request (and `login_after`, ours:
/// see [`LoginAfter`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    prompt: Option<String>,
    max_age: Option<String>,
    response_mode: Option<String>,
    request: Option<String>,
    request_uri: Option<String>,
    login_after: Option<String>,
}

/// A request that passed every check, from a signed-in browser.
struct Checked {
    client: Arc<Client>,
    query: AuthorizeQuery,
    redirect_uri: String,
    /// The granted scopes, in a fixed order.
    scope: String,
    profile: Arc<Profile>,
    claims: AccessClaims,
    prompt: HashSet<String>,
}

/// An answer that ends the request before a code.
type Early = Box<HttpResponse>;

/// The 400 page for a request that cannot go back to its client.
fn bad_request_page(state: &AppState, browser: &Browser, message: &str) -> Early {
    let page = MessagePage {
        layout: Layout::new(state, browser, "This sign-in link is not valid"),
        message: message.to_owned(),
        alert: true,
        link: "/",
        link_text: "Go to your account",
    };
    Box::new(render(StatusCode::BAD_REQUEST, browser, &page, None))
}

/// `redirect_uri` with `params` added to its query.
pub(super) fn with_params(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut pairs = url.query_pairs_mut();
                for (k, v) in params {
                    pairs.append_pair(k, v);
                }
            }
            url.to_string()
        }
        Err(_) => redirect_uri.to_owned(),
    }
}

/// An error sent back to the client (RFC 6749 section 4.1.2.1, RFC 9207).
fn error_redirect(
    state: &AppState,
    redirect_uri: &str,
    query: &AuthorizeQuery,
    error: &str,
    description: &str,
) -> Early {
    let issuer = state.oidc.issuer.clone();
    let mut params = vec![
        ("error", error),
        ("error_description", description),
        ("iss", issuer.as_str()),
    ];
    if let Some(s) = &query.state {
        params.push(("state", s));
    }
    Box::new(see_other(&with_params(redirect_uri, &params)).finish())
}

/// Parses a query, refusing a repeated parameter.
fn parse_query(text: &str) -> Result<AuthorizeQuery, &'static str> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(text).map_err(|_| "the request cannot be read")?;
    let mut seen = HashSet::new();
    if pairs.iter().any(|(k, _)| !seen.insert(k.as_str())) {
        return Err("the request repeats a parameter");
    }
    serde_urlencoded::from_str(text).map_err(|_| "the request cannot be read")
}

/// The checks of an authorization request, shared by the endpoint and the
/// consent page. `query_text` is the request's query.
async fn check(state: &AppState, browser: &Browser, query_text: &str) -> Result<Checked, Early> {
    let query = parse_query(query_text).map_err(|m| bad_request_page(state, browser, m))?;
    let client_id = query.client_id.as_deref().unwrap_or_default();
    let client = match state.oidc.clients.get(client_id).await {
        Ok(Some(client)) => client,
        Ok(None) => {
            return Err(bad_request_page(
                state,
                browser,
                "The app that sent you here is not known to this server (unknown client_id).",
            ))
        }
        Err(e) => return Err(Box::new(crate::pages::error_page(state, browser, e.into()))),
    };
    let redirect_uri = match query.redirect_uri.as_deref() {
        Some(uri) if client.redirects_to(uri) => uri.to_owned(),
        _ => {
            return Err(bad_request_page(
                state,
                browser,
                "The app that sent you here gave an address to come back to that it has not registered (redirect_uri).",
            ))
        }
    };
    let fail = |error: &str, description: &str| {
        error_redirect(state, &redirect_uri, &query, error, description)
    };
    if query.request.is_some() {
        return Err(fail(
            "request_not_supported",
            "request objects are not supported",
        ));
    }
    if query.request_uri.is_some() {
        return Err(fail(
            "request_uri_not_supported",
            "request_uri is not supported",
        ));
    }
    let Some(response_type) = query.response_type.as_deref() else {
        return Err(fail("invalid_request", "missing parameter response_type"));
    };
    if response_type != "code" {
        return Err(fail(
            "unsupported_response_type",
            "only response_type=code is supported",
        ));
    }
    if query.response_mode.as_deref().is_some_and(|m| m != "query") {
        return Err(fail(
            "invalid_request",
            "only response_mode=query is supported",
        ));
    }
    // Scopes: openid is required; each must be allowed to this client.
    let asked: Vec<&str> = query
        .scope
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    if !asked.contains(&"openid") {
        return Err(fail("invalid_scope", "the scope must include openid"));
    }
    let allowed = client.config.allowed_scopes();
    if let Some(bad) = asked.iter().find(|s| !allowed.iter().any(|a| a == *s)) {
        let bad: String = bad.chars().take(40).collect();
        return Err(fail(
            "invalid_scope",
            &format!("scope {bad:?} is not allowed to this client"),
        ));
    }
    let scope = SCOPES
        .iter()
        .filter(|s| asked.contains(s))
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    // PKCE: S256 only, required of public clients.
    match (
        &query.code_challenge,
        query.code_challenge_method.as_deref(),
    ) {
        (Some(challenge), Some("S256")) => {
            let ok = challenge.len() == 43
                && challenge
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(fail(
                    "invalid_request",
                    "code_challenge must be the base64url SHA-256 of the verifier",
                ));
            }
        }
        (Some(_), _) => {
            return Err(fail(
                "invalid_request",
                "code_challenge_method must be S256 (plain is not accepted)",
            ))
        }
        (None, Some(_)) => {
            return Err(fail(
                "invalid_request",
                "code_challenge_method without code_challenge",
            ))
        }
        (None, None) if client.is_public() => {
            return Err(fail(
                "invalid_request",
                "a public client must send a PKCE code_challenge (S256)",
            ))
        }
        (None, None) => {}
    }
    if query.nonce.as_deref().is_some_and(|n| n.len() > 512) {
        return Err(fail(
            "invalid_request",
            "nonce is longer than 512 characters",
        ));
    }
    if query.state.as_deref().is_some_and(|s| s.len() > 2048) {
        return Err(fail(
            "invalid_request",
            "state is longer than 2048 characters",
        ));
    }
    let prompt: HashSet<String> = query
        .prompt
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(bad) = prompt
        .iter()
        .find(|p| !matches!(p.as_str(), "none" | "login" | "consent" | "select_account"))
    {
        let bad: String = bad.chars().take(40).collect();
        return Err(fail(
            "invalid_request",
            &format!("prompt {bad:?} is not known"),
        ));
    }
    if prompt.contains("none") && prompt.len() > 1 {
        return Err(fail("invalid_request", "prompt=none cannot be combined"));
    }
    let max_age = match query.max_age.as_deref() {
        None => None,
        Some(text) => match text.parse::<u32>() {
            Ok(seconds) => Some(i64::from(seconds)),
            Err(_) => {
                return Err(fail(
                    "invalid_request",
                    "max_age must be a number of seconds",
                ))
            }
        },
    };
    // The browser's session: present, and fresh enough for prompt=login
    // (the sign-in it asked for) and max_age.
    let now_ms = state.auth.now();
    let login = LoginAfter::new(&state.oidc.login_key, &query);
    // A sign-in made after this request sent the browser to sign in.
    let after = query
        .login_after
        .as_deref()
        .and_then(|text| login.verify(text, now_ms));
    let signed_in = browser.signed_in.as_ref().filter(|(claims, _)| {
        let auth_ms = claims.auth_time.saturating_mul(1000);
        let since = after.is_some_and(|after| auth_ms >= after);
        let fresh_for_age = since
            || max_age.is_none_or(|age| now_ms.saturating_sub(auth_ms) <= age.saturating_mul(1000));
        let fresh_for_login = since || !prompt.contains("login");
        fresh_for_age && fresh_for_login
    });
    let Some((claims, profile)) = signed_in else {
        if prompt.contains("none") {
            return Err(fail("login_required", "the user is not signed in"));
        }
        // Back here after the sign-in, without asking for one again.
        let mut back: Vec<(String, String)> =
            serde_urlencoded::from_str(query_text).unwrap_or_default();
        back.retain(|(k, _)| k != "login_after" && !(k == "prompt" && prompt.contains("login")));
        let fresh = browser.signed_in.is_some() || prompt.contains("login");
        if fresh {
            back.push(("login_after".into(), login.sign(now_ms)));
        }
        let back = format!(
            "{}/oidc/authorize?{}",
            state.oidc.issuer,
            serde_urlencoded::to_string(&back).unwrap_or_default()
        );
        let login = format!(
            "/ui/login?rd={}{}",
            query_value(&back),
            if fresh { "&fresh=1" } else { "" }
        );
        return Err(Box::new(see_other(&login).finish()));
    };
    Ok(Checked {
        client,
        redirect_uri,
        scope,
        profile: profile.clone(),
        claims: claims.clone(),
        prompt,
        query,
    })
}

/// Whether the user must be asked before `checked.client` gets its scopes.
async fn needs_consent(
    state: &AppState,
    browser: &Browser,
    checked: &Checked,
) -> Result<bool, Early> {
    if checked.prompt.contains("consent") {
        return Ok(true);
    }
    match checked.client.config.consent {
        Consent::Implicit => Ok(false),
        Consent::Always => Ok(true),
        Consent::Once => {
            let given = state
                .auth
                .consented(checked.profile.user.id, &checked.client.config.id)
                .await
                .map_err(|e| Box::new(crate::pages::error_page(state, browser, e.into())))?;
            Ok(!given.is_some_and(|given| checked.scope.split(' ').all(|s| has_scope(&given, s))))
        }
    }
}

/// Issues a code and sends the browser back to the client with it.
async fn issue(state: &AppState, caller: &Caller, checked: Checked) -> HttpResponse {
    let code = OidcCode {
        client_id: checked.client.config.id.clone(),
        user_id: checked.profile.user.id,
        redirect_uri: checked.redirect_uri.clone(),
        scope: checked.scope.clone(),
        nonce: checked.query.nonce.clone(),
        code_challenge: checked.query.code_challenge.clone(),
        auth_time: checked.claims.auth_time.saturating_mul(1000),
        amr: Amr::from_values(checked.claims.amr.iter().map(String::as_str)),
        created_at: 0,
        expires_at: 0,
    };
    let audit = vec![caller.event(Action::OidcCodeIssued)];
    match state.auth.issue_code(code, audit).await {
        Ok(code) => {
            let issuer = state.oidc.issuer.clone();
            let mut params = vec![("code", code.as_str()), ("iss", issuer.as_str())];
            if let Some(s) = &checked.query.state {
                params.push(("state", s));
            }
            see_other(&with_params(&checked.redirect_uri, &params)).finish()
        }
        Err(e) => actix_web::ResponseError::error_response(&crate::error::ApiError::from(e)),
    }
}

/// `GET /oidc/authorize`
pub async fn authorize(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
    caller: Caller,
) -> HttpResponse {
    let checked = match check(&state, &browser, req.query_string()).await {
        Ok(c) => c,
        Err(early) => return *early,
    };
    match needs_consent(&state, &browser, &checked).await {
        Err(early) => *early,
        Ok(true) if checked.prompt.contains("none") => *error_redirect(
            &state,
            &checked.redirect_uri,
            &checked.query,
            "consent_required",
            "the user has not allowed this client yet",
        ),
        Ok(true) => see_other(&format!("/ui/consent?{}", req.query_string())).finish(),
        Ok(false) => issue(&state, &caller.via_web(), checked).await,
    }
}

/// `login_after`: the moment an authorization request sent the browser to
/// sign in again (for `prompt=login` or `max_age`), so that the request, back
/// from the login page, takes a sign-in newer than that as the one it asked
/// for. Signed over the request's client, redirect and nonce, and good for
/// [`LoginAfter::FOR_MS`]: a link cannot skip the sign-in by carrying a
/// made-up or an old one.
struct LoginAfter {
    key: [u8; 32],
    bound: String,
}

impl LoginAfter {
    const FOR_MS: i64 = 30 * 60 * 1000;

    fn new(key: &[u8; 32], query: &AuthorizeQuery) -> Self {
        let part = |v: &Option<String>| v.clone().unwrap_or_default();
        Self {
            key: *key,
            bound: format!(
                "{}\n{}\n{}",
                part(&query.client_id),
                part(&query.redirect_uri),
                part(&query.nonce)
            ),
        }
    }

    fn mac(&self, at_ms: i64) -> String {
        use base64::Engine;
        let mac = crate::auth::crypto::hmac_sha256(
            &self.key,
            &[self.bound.as_bytes(), b"\n", at_ms.to_string().as_bytes()],
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&mac[..16])
    }

    fn sign(&self, now_ms: i64) -> String {
        // Whole seconds: a sign-in's auth_time has no finer grain.
        let at = now_ms.div_euclid(1000).saturating_mul(1000);
        format!("{at}.{}", self.mac(at))
    }

    /// The moment `text` names, when this server signed it for this request
    /// within the last [`LoginAfter::FOR_MS`].
    fn verify(&self, text: &str, now_ms: i64) -> Option<i64> {
        let (at, mac) = text.split_once('.')?;
        let at: i64 = at.parse().ok().filter(|at| *at >= 0)?;
        let fresh = now_ms.saturating_sub(at) <= Self::FOR_MS;
        (fresh && crate::auth::crypto::constant_time_eq(self.mac(at).as_bytes(), mac.as_bytes()))
            .then_some(at)
    }
}

/// The consent page.
#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage {
    layout: Layout,
    client: String,
    email: String,
    scopes: Vec<&'static str>,
    /// Where the answer goes (scheme, host and port of the redirect URI), so
    /// that a person can tell the app from one that borrowed its name.
    back_to: String,
    request: String,
}

/// What each scope lets the app read, in words.
fn scope_words(scope: &str) -> Vec<&'static str> {
    let mut words = vec!["Know that it is you (an identifier that stays the same)"];
    if has_scope(scope, "profile") {
        words.push("Read your name");
    }
    if has_scope(scope, "email") {
        words.push("Read your email address");
    }
    if has_scope(scope, "groups") {
        words.push("Read your groups");
    }
    if has_scope(scope, "offline_access") {
        words.push("Keep access while you are away");
    }
    words
}

/// `GET /ui/consent?<the authorization request>`
pub async fn consent_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
) -> HttpResponse {
    let checked = match check(&state, &browser, req.query_string()).await {
        Ok(c) => c,
        Err(early) => return *early,
    };
    let page = ConsentPage {
        layout: Layout::new(&state, &browser, "Allow access"),
        client: checked.client.display_name().to_owned(),
        email: checked.profile.user.email.clone(),
        scopes: scope_words(&checked.scope),
        back_to: url::Url::parse(&checked.redirect_uri)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default(),
        request: req.query_string().to_owned(),
    };
    render(StatusCode::OK, &browser, &page, Some(&checked.redirect_uri))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConsentForm {
    request: String,
    decision: String,
}

/// `POST /ui/consent`: `decision=allow` issues the code (and remembers the
/// consent); `decision=deny` sends `access_denied` back to the client.
pub async fn consent(state: web::Data<AppState>, post: Posted<ConsentForm>) -> HttpResponse {
    let Posted {
        caller,
        browser,
        form,
    } = post;
    let checked = match check(&state, &browser, &form.request).await {
        Ok(c) => c,
        Err(early) => return *early,
    };
    match form.decision.as_str() {
        "allow" => {
            let audit = vec![caller.event(Action::OidcConsentGranted)];
            if let Err(e) = state
                .auth
                .grant_consent(
                    checked.profile.user.id,
                    &checked.client.config.id,
                    &checked.scope,
                    audit,
                )
                .await
            {
                return crate::pages::error_page(&state, &browser, e.into());
            }
            issue(&state, &caller, checked).await
        }
        "deny" => *error_redirect(
            &state,
            &checked.redirect_uri,
            &checked.query,
            "access_denied",
            "the user did not allow access",
        ),
        _ => *bad_request_page(&state, &browser, "Choose Allow or Deny."),
    }
}
