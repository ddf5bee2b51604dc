//! Signing in and out: `/`, `/ui/login`, `/ui/login/mfa`, `/ui/logout`,
//! `/ui/register` and the first run's `/ui/setup`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use secrecy::SecretString;
use serde::Deserialize;
use webauthn_rs::prelude::PublicKeyCredential;

use super::browser::{
    mfa_cookie, mfa_cookie_name, removal, safe_redirect, session_cookie, Browser, SESSION_COOKIE,
};
use super::{render, see_other, Failure, Layout, MessagePage, Posted};
use crate::audit::Action;
use crate::auth::mfa::Factor;
use crate::auth::service::ClientInfo;
use crate::auth::sessions::{Opened, SignIn};
use crate::authz::Forwarded;
use crate::config::Policy;
use crate::email::normalize;
use crate::error::ApiError;
use crate::http::accounts::{password_login, register_account, LoginOutcome};
use crate::http::context::Caller;
use crate::http::guard::guarded_as;
use crate::http::mfa::second_step;
use crate::http::passkeys::passkey_login;
use crate::http::state::AppState;
use crate::ratelimit::Guarded;
use crate::store::{Amr, Session, SessionKind, User};

/// Where a signed-in browser goes when no `rd` says otherwise.
const HOME: &str = "/ui/account";

/// A form of no fields but its token.
#[derive(Deserialize, Default)]
pub(super) struct Nothing {}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RdQuery {
    rd: String,
    token: String,
    /// `1`: sign in again even when signed in (an OpenID Connect client's
    /// `prompt=login` or `max_age`).
    fresh: String,
}

/// The query of a page, leniently: what cannot be read is absent.
pub fn query<T: serde::de::DeserializeOwned + Default>(req: &HttpRequest) -> T {
    serde_urlencoded::from_str(req.query_string()).unwrap_or_default()
}

/// `GET /`: the account when signed in, else the login page.
pub(super) async fn root(browser: Browser) -> HttpResponse {
    let to = if browser.signed_in.is_some() {
        HOME
    } else {
        "/ui/login"
    };
    see_other(to).finish()
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    error: Option<String>,
    notice: Option<String>,
    email: String,
    rd: String,
    remember_me: bool,
    open_registration: bool,
    /// "Sign in with a passkey" is offered.
    passkeys: bool,
}

impl LoginPage {
    fn new(state: &AppState, browser: &Browser, rd: Option<&str>) -> Self {
        Self {
            layout: Layout::new(state, browser, "Sign in"),
            error: None,
            notice: None,
            email: String::new(),
            rd: rd.unwrap_or_default().to_owned(),
            remember_me: false,
            open_registration: state.config.accounts.open_registration,
            passkeys: state.auth.passkeys_on(),
        }
    }
}

/// `GET /ui/login[?rd=]`
pub(super) async fn login_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
) -> HttpResponse {
    let q: RdQuery = query(&req);
    let rd = safe_redirect(&q.rd, &state.config);
    if let Some((claims, profile)) = browser.signed_in.as_ref().filter(|_| q.fresh.is_empty()) {
        let factors = Amr::from_values(claims.amr.iter().map(String::as_str));
        return match rd.as_deref() {
            Some(rd) if asks_second_factor(&state, rd) && !factors.is_multi_factor() => {
                step_up(&state, &browser, profile, rd).await
            }
            _ => see_other(rd.as_deref().unwrap_or(HOME)).finish(),
        };
    }
    let page = LoginPage::new(&state, &browser, rd.as_deref());
    render(StatusCode::OK, &browser, &page, rd.as_deref())
}

/// Whether the app at `rd` is behind a forward-auth rule of `two_factor`.
fn asks_second_factor(state: &AppState, rd: &str) -> bool {
    Forwarded::from_url(Some("GET"), Some(rd))
        .is_ok_and(|asked| state.forward_auth.decide(&asked).policy == Policy::TwoFactor)
}

/// A signed-in browser sent back by an app that asks for a second factor:
/// the second step of a sign-in (its success opens a session with both
/// factors), or, for an account without one, the way to set it up.
async fn step_up(
    state: &AppState,
    browser: &Browser,
    profile: &crate::auth::service::Profile,
    rd: &str,
) -> HttpResponse {
    let second_factors = match state.auth.second_factors(profile.user.id).await {
        Ok(methods) => methods,
        Err(e) => return super::error_page(state, browser, e.into()),
    };
    if second_factors.is_empty() {
        let page = MessagePage {
            layout: Layout::new(state, browser, "Two-step verification needed"),
            message: "This app asks for two-step verification. Set it up on your account, then open the app again.".into(),
            alert: false,
            link: "/ui/account/totp",
            link_text: "Set up two-step verification",
        };
        return render(StatusCode::FORBIDDEN, browser, &page, None);
    }
    match state.auth.start_mfa(&profile.user, false).await {
        Ok((mfa_token, expires_in)) => {
            see_other(&format!("/ui/login/mfa?rd={}", super::query_value(rd)))
                .cookie(mfa_cookie(&state.config, mfa_token, expires_in))
                .finish()
        }
        Err(e) => super::error_page(state, browser, e.into()),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct LoginForm {
    email: String,
    password: String,
    remember_me: String,
    rd: String,
    /// A passkey's answer (the script fills these two).
    challenge_id: String,
    credential: String,
}

/// `POST /ui/login`: the login of `POST /auth/login`, with a cookie.
pub(super) async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Posted<LoginForm>,
) -> HttpResponse {
    let pending_mfa = has_pending_mfa(&req, &state);
    let Posted {
        caller,
        browser,
        form: f,
    } = post;
    let rd = safe_redirect(&f.rd, &state.config);
    let remember_me = matches!(f.remember_me.as_str(), "true" | "on" | "1");
    let page = |failure: &Failure| LoginPage {
        error: Some(failure.message.clone()),
        email: f.email.trim().chars().take(320).collect(),
        remember_me,
        ..LoginPage::new(&state, &browser, rd.as_deref())
    };
    if !f.credential.is_empty() {
        let show = |e: ApiError| {
            let mut failure = Failure::of(e);
            if failure.status == StatusCode::UNAUTHORIZED {
                failure.message =
                    "That passkey did not work here. Try again, or use your password.".into();
            }
            failure.render(&browser, &page(&failure), rd.as_deref())
        };
        let Ok(credential) = serde_json::from_str::<PublicKeyCredential>(&f.credential) else {
            return show(ApiError::bad_request(
                "the passkey's answer is not readable",
            ));
        };
        return guarded_as(
            &state,
            &caller,
            Guarded::PasskeyLogin,
            None,
            async {
                let opened = passkey_login(
                    &state,
                    &caller,
                    &f.challenge_id,
                    &credential,
                    remember_me,
                    SessionKind::Browser,
                )
                .await?;
                signed_in(&state, opened, rd.as_deref(), pending_mfa)
            },
            &show,
        )
        .await;
    }
    if f.email.trim().is_empty() || f.password.is_empty() {
        let failure = Failure::bad("Enter your email and your password.");
        return failure.render(&browser, &page(&failure), rd.as_deref());
    }
    let account = normalize(&f.email);
    let password = SecretString::from(f.password.clone());
    let show = |e: ApiError| {
        let failure = Failure::of(e);
        failure.render(&browser, &page(&failure), rd.as_deref())
    };
    guarded_as(
        &state,
        &caller,
        Guarded::Login,
        Some(&account),
        async {
            match password_login(
                &state,
                &caller,
                &account,
                password,
                remember_me,
                SessionKind::Browser,
            )
            .await?
            {
                LoginOutcome::Opened(opened) => {
                    signed_in(&state, opened, rd.as_deref(), pending_mfa)
                }
                LoginOutcome::MfaRequired {
                    mfa_token,
                    expires_in,
                    ..
                } => {
                    let next = match &rd {
                        Some(rd) => format!("/ui/login/mfa?rd={}", super::query_value(rd)),
                        None => "/ui/login/mfa".to_owned(),
                    };
                    Ok(see_other(&next)
                        .cookie(mfa_cookie(&state.config, mfa_token, expires_in))
                        .finish())
                }
            }
        },
        &show,
    )
    .await
}

/// The answer to a sign-in: the new session's cookie (a new one at every
/// sign-in: nothing an attacker set before survives it), the pending second
/// step's cookie cleared if the browser has one, and on to `rd`.
fn signed_in(
    state: &AppState,
    opened: Opened,
    rd: Option<&str>,
    pending_mfa: bool,
) -> Result<HttpResponse, ApiError> {
    let Opened::Browser { cookie, session } = opened else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "a sign-in page opened an API session"
        )));
    };
    let mut res = see_other(rd.unwrap_or(HOME));
    res.cookie(session_cookie(
        &state.config,
        cookie,
        max_age(state, &session),
    ));
    if pending_mfa {
        res.cookie(removal(&state.config, mfa_cookie_name(&state.config)));
    }
    Ok(res.finish())
}

/// Whether the browser carries the cookie of a sign-in waiting for its
/// second step.
fn has_pending_mfa(req: &HttpRequest, state: &AppState) -> bool {
    req.cookie(mfa_cookie_name(&state.config)).is_some()
}

/// A remembered session's cookie lasts as long as the session; another one
/// until the browser closes.
fn max_age(state: &AppState, session: &Session) -> Option<i64> {
    session
        .remember_me
        .then(|| session.expires_at - state.auth.now())
}

#[derive(Template)]
#[template(path = "login_mfa.html")]
struct MfaPage {
    layout: Layout,
    error: Option<String>,
    email: String,
    rd: String,
    /// The account has TOTP: the code form is shown.
    totp: bool,
    /// The account has a passkey: its ceremony, begun for this page.
    passkey: Option<PasskeyChallenge>,
}

/// A second-step ceremony as the page carries it to the script.
struct PasskeyChallenge {
    challenge_id: String,
    /// webauthn-rs's request options, as JSON.
    options: String,
}

impl MfaPage {
    /// The page of `pending`: the code form when the account has TOTP, the
    /// passkey button (and a new ceremony) when it has a passkey.
    async fn of(
        state: &AppState,
        browser: &Browser,
        pending: &crate::auth::mfa::PendingLogin,
        rd: Option<&str>,
        error: Option<String>,
    ) -> Result<Self, ApiError> {
        let methods = state.auth.second_factors(pending.user.id).await?;
        let passkey = if methods.contains(&"passkey") && state.auth.passkeys_on() {
            let started = state.auth.start_passkey_second_factor(pending).await?;
            Some(PasskeyChallenge {
                challenge_id: started.challenge_id,
                options: serde_json::to_string(&started.options.public_key)
                    .map_err(|e| ApiError::Internal(e.into()))?,
            })
        } else {
            None
        };
        Ok(Self {
            layout: Layout::new(state, browser, "Two-step verification"),
            error,
            email: pending.user.email.clone(),
            rd: rd.unwrap_or_default().to_owned(),
            // An account whose second factor went meanwhile still gets a form.
            totp: methods.contains(&"totp") || passkey.is_none(),
            passkey,
        })
    }
}

/// `GET /ui/login/mfa`: the second step of a sign-in whose password was right.
pub(super) async fn mfa_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
) -> HttpResponse {
    let q: RdQuery = query(&req);
    let rd = safe_redirect(&q.rd, &state.config);
    let Some(pending) = pending(&req, &state).await else {
        return see_other("/ui/login").finish();
    };
    match MfaPage::of(&state, &browser, &pending, rd.as_deref(), None).await {
        Ok(page) => render(StatusCode::OK, &browser, &page, rd.as_deref()),
        Err(e) => super::error_page(&state, &browser, e),
    }
}

async fn pending(req: &HttpRequest, state: &AppState) -> Option<crate::auth::mfa::PendingLogin> {
    let token = req.cookie(mfa_cookie_name(&state.config))?;
    state.auth.pending_login(token.value()).await.ok()
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct CodeForm {
    code: String,
    rd: String,
    /// A passkey's answer (the script fills these two).
    challenge_id: String,
    credential: String,
}

/// `POST /ui/login/mfa`: the second step of `POST /auth/login/mfa`.
pub(super) async fn mfa(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Posted<CodeForm>,
) -> HttpResponse {
    let Posted {
        caller,
        browser,
        form: f,
    } = post;
    let rd = safe_redirect(&f.rd, &state.config);
    let Some(pending) = pending(&req, &state).await else {
        // Expired, spent by five wrong codes, or never started.
        let mut page = LoginPage::new(&state, &browser, rd.as_deref());
        page.error = Some("Your sign-in expired. Enter your password again.".into());
        return render(StatusCode::UNAUTHORIZED, &browser, &page, rd.as_deref());
    };
    // The page again with a failure: a new ceremony, when the account has
    // a passkey (the one tried is spent).
    let again = |failure: Failure| {
        let (state, browser, pending, rd) = (&state, &browser, &pending, rd.clone());
        async move {
            match MfaPage::of(
                state,
                browser,
                pending,
                rd.as_deref(),
                Some(failure.message.clone()),
            )
            .await
            {
                Ok(page) => failure.render(browser, &page, rd.as_deref()),
                Err(e) => super::error_page(state, browser, e),
            }
        }
    };
    let credential = if f.credential.is_empty() {
        None
    } else {
        match serde_json::from_str::<PublicKeyCredential>(&f.credential) {
            Ok(credential) => Some(credential),
            Err(_) => {
                return again(Failure::bad(
                    "The passkey's answer is not readable. Try again.",
                ))
                .await
            }
        }
    };
    let factor = match &credential {
        Some(credential) => Factor::Passkey {
            challenge_id: &f.challenge_id,
            credential,
        },
        None if f.code.trim().is_empty() => {
            return again(Failure::bad("Enter the code from your authenticator app.")).await
        }
        None => Factor::Code(f.code.trim()),
    };
    let account = pending.user.email.clone();
    let refused = std::cell::RefCell::new(None);
    let show = |e: ApiError| {
        let mut failure = Failure::of(e);
        if credential.is_some() && failure.status == StatusCode::UNAUTHORIZED {
            failure.message = "That passkey did not work. Try again.".into();
        }
        let mut res = HttpResponse::build(failure.status);
        let response = res.finish();
        refused.replace(Some(failure));
        response
    };
    let res = guarded_as(
        &state,
        &caller,
        Guarded::Mfa,
        Some(&account),
        async {
            let opened =
                second_step(&state, &caller, &pending, factor, SessionKind::Browser).await?;
            signed_in(&state, opened, rd.as_deref(), true)
        },
        &show,
    )
    .await;
    match refused.into_inner() {
        Some(mut failure) => {
            failure.take_headers(&res);
            again(failure).await
        }
        None => res,
    }
}

/// `POST /ui/logout`: ends this browser's session (as `POST /auth/logout`).
pub(super) async fn logout(state: web::Data<AppState>, post: Posted<Nothing>) -> HttpResponse {
    let Posted {
        caller, browser, ..
    } = post;
    if let Some(claims) = browser.claims() {
        let event = caller
            .event(Action::Logout)
            .user(claims.sub)
            .resource("session", claims.sid);
        if let Err(e) = state.auth.logout(claims, vec![event]).await {
            return super::error_page(&state, &browser, e.into());
        }
    }
    see_other("/ui/login")
        .cookie(removal(&state.config, SESSION_COOKIE))
        .finish()
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    layout: Layout,
    open: bool,
    action: &'static str,
    setup_token: Option<String>,
    error: Option<String>,
    email_error: Option<String>,
    password_error: Option<String>,
    email: String,
    name: String,
    min_length: usize,
}

impl RegisterPage {
    fn new(state: &AppState, browser: &Browser, setup_token: Option<String>) -> Self {
        let heading = if setup_token.is_some() {
            "First run"
        } else {
            "Create an account"
        };
        Self {
            layout: Layout::new(state, browser, heading),
            open: setup_token.is_some() || state.config.accounts.open_registration,
            action: if setup_token.is_some() {
                "/ui/setup"
            } else {
                "/ui/register"
            },
            setup_token,
            error: None,
            email_error: None,
            password_error: None,
            email: String::new(),
            name: String::new(),
            min_length: state.config.passwords.min_length,
        }
    }
}

/// `GET /ui/register`
pub(super) async fn register_page(state: web::Data<AppState>, browser: Browser) -> HttpResponse {
    if browser.signed_in.is_some() {
        return see_other(HOME).finish();
    }
    let page = RegisterPage::new(&state, &browser, None);
    let status = if page.open {
        StatusCode::OK
    } else {
        StatusCode::FORBIDDEN
    };
    render(status, &browser, &page, None)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RegisterForm {
    email: String,
    password: String,
    name: String,
    token: String,
}

/// `POST /ui/register`: `POST /auth/register`, then signed in.
pub(super) async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Posted<RegisterForm>,
) -> HttpResponse {
    let pending_mfa = has_pending_mfa(&req, &state);
    create_account(state, post, false, pending_mfa).await
}

/// `GET /ui/setup?token=`: while no administrator exists, the form that
/// creates the first one; 404 otherwise.
pub(super) async fn setup_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
) -> HttpResponse {
    let q: RdQuery = query(&req);
    if !state.auth.setup_open(&q.token).await.unwrap_or(false) {
        return no_setup(&state, &browser);
    }
    let page = RegisterPage::new(&state, &browser, Some(q.token));
    render(StatusCode::OK, &browser, &page, None)
}

fn no_setup(state: &AppState, browser: &Browser) -> HttpResponse {
    let page = MessagePage {
        layout: Layout::new(state, browser, "Nothing to set up"),
        message: "This setup link is not valid: it was used, it expired, or an administrator already exists. A server without an administrator logs a new link at each start.".into(),
        alert: true,
        link: "/ui/login",
        link_text: "Sign in",
    };
    render(StatusCode::NOT_FOUND, browser, &page, None)
}

/// `POST /ui/setup`: creates the first administrator, then signed in.
pub(super) async fn setup(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Posted<RegisterForm>,
) -> HttpResponse {
    let pending_mfa = has_pending_mfa(&req, &state);
    create_account(state, post, true, pending_mfa).await
}

async fn create_account(
    state: web::Data<AppState>,
    post: Posted<RegisterForm>,
    first_admin: bool,
    pending_mfa: bool,
) -> HttpResponse {
    let Posted {
        caller,
        browser,
        form: f,
    } = post;
    let setup_token = first_admin.then(|| f.token.clone());
    if first_admin && !state.auth.setup_open(&f.token).await.unwrap_or(false) {
        return no_setup(&state, &browser);
    }
    let page = |failure: &Failure| RegisterPage {
        // A problem of one field is said next to it; the alert points there.
        error: Some(
            if failure.field("email").is_some() || failure.field("password").is_some() {
                "Check the field marked below.".to_owned()
            } else {
                failure.message.clone()
            },
        ),
        email_error: failure.field("email"),
        password_error: failure.field("password"),
        email: f.email.trim().chars().take(320).collect(),
        name: f.name.chars().take(100).collect(),
        ..RegisterPage::new(&state, &browser, setup_token.clone())
    };
    let show = |e: ApiError| {
        let failure = Failure::of(e);
        failure.render(&browser, &page(&failure), None)
    };
    let password = SecretString::from(f.password.clone());
    let name = Some(f.name.as_str()).filter(|n| !n.trim().is_empty());
    guarded_as(
        &state,
        &caller,
        Guarded::Register,
        None,
        async {
            let user = if first_admin {
                let event = caller
                    .event(Action::RegistrationSuccess)
                    .extra("first_admin", true);
                state
                    .auth
                    .create_first_admin(&f.token, &f.email, password, name, vec![event])
                    .await?
            } else {
                register_account(&state, &caller, &f.email, password, name).await?
            };
            let opened = open_browser_session(&state, &caller, &user).await?;
            signed_in(&state, opened, None, pending_mfa)
        },
        &show,
    )
    .await
}

/// A new account's first session, as a login would open it.
async fn open_browser_session(
    state: &AppState,
    caller: &Caller,
    user: &User,
) -> Result<Opened, ApiError> {
    let sign_in = SignIn {
        kind: SessionKind::Browser,
        remember_me: false,
        amr: Amr::PWD,
    };
    let event = caller
        .event(Action::LoginSuccess)
        .extra("remember_me", false);
    let client: ClientInfo = caller.client_info();
    Ok(state
        .auth
        .open_session(user, sign_in, &client, vec![event])
        .await?)
}
