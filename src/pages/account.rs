//! The account page (`/ui/account`: profile, groups, password, two-step
//! verification, passkeys, sessions) and TOTP setup (`/ui/account/totp`). Each action
//! is the JSON route's: same domain call, same rule and key, same audit.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use secrecy::SecretString;
use serde::Deserialize;
use uuid::Uuid;

use super::browser::{removal, Browser, SESSION_COOKIE};
use super::sign_in::query;
use super::{render, see_other, sign_in_first, Failure, Layout, Posted};
use crate::audit::Action;
use crate::auth::tokens::AccessClaims;
use crate::email::normalize;
use crate::error::ApiError;
use crate::http::context::Caller;
use crate::http::guard::guarded_as;
use crate::http::state::AppState;
use crate::ratelimit::Guarded;
use crate::store::SessionKind;
use crate::time_fmt::rfc3339_ms;

/// A session as the account page lists it.
pub struct SessionRow {
    pub id: Uuid,
    pub kind: String,
    pub device: String,
    pub ip: String,
    pub created_at: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    layout: Layout,
    error: Option<String>,
    notice: Option<String>,
    email: String,
    name: Option<String>,
    groups: Vec<String>,
    created_at: String,
    mfa_enabled: bool,
    passkeys: usize,
    sessions: Vec<SessionRow>,
    min_length: usize,
}

/// The notices a finished action sends back to the page (by name, so that
/// nothing a link carries is shown as text).
fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "password" => "Your password was changed. Your other sessions were signed out.",
        "revoked" => "That session was signed out.",
        "totp_off" => "Two-step verification is off.",
        _ => return None,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct DoneQuery {
    done: String,
}

async fn account_page(
    state: &AppState,
    browser: &Browser,
    claims: &AccessClaims,
    error: Option<String>,
    notice: Option<String>,
) -> Result<AccountPage, ApiError> {
    let profile = state.auth.current_profile(claims).await?;
    let sessions = state
        .auth
        .sessions(claims)
        .await?
        .into_iter()
        .map(|s| SessionRow {
            current: s.id == claims.sid,
            id: s.id,
            kind: match (s.kind, &s.grant) {
                (SessionKind::Browser, _) => "Browser".to_owned(),
                (SessionKind::Oidc, Some(grant)) => {
                    format!("{} (signed in with portcullis)", grant.client_id)
                }
                _ => "App (API)".to_owned(),
            },
            device: s
                .user_agent
                .as_deref()
                .map(short_agent)
                .unwrap_or_else(|| "unknown device".into()),
            ip: s.ip_address.unwrap_or_default(),
            created_at: rfc3339_ms(s.created_at)[..16].replace('T', " "),
        })
        .collect();
    Ok(AccountPage {
        layout: Layout::new(state, browser, "Your account").section("account"),
        error,
        notice,
        email: profile.user.email.clone(),
        name: profile.user.name.clone(),
        groups: profile.groups.clone(),
        created_at: rfc3339_ms(profile.user.created_at)[..10].to_owned(),
        mfa_enabled: profile.mfa_enabled,
        passkeys: state.auth.passkeys(claims.sub).await?.len(),
        sessions,
        min_length: state.config.passwords.min_length,
    })
}

/// A user agent cut to what tells devices apart.
fn short_agent(ua: &str) -> String {
    let browser = ["Firefox", "Edg", "Chrome", "Safari", "curl", "python"]
        .into_iter()
        .find(|b| ua.contains(b));
    let system = ["Android", "iPhone", "iPad", "Windows", "Mac OS", "Linux"]
        .into_iter()
        .find(|s| ua.contains(s));
    match (browser, system) {
        (Some(b), Some(s)) => format!("{} on {s}", if b == "Edg" { "Edge" } else { b }),
        (Some(b), None) => b.to_owned(),
        _ => ua.chars().take(40).collect(),
    }
}

/// `GET /ui/account`
pub(super) async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
) -> HttpResponse {
    let Some(claims) = browser.claims().cloned() else {
        return sign_in_first(&state, "/ui/account");
    };
    let q: DoneQuery = query(&req);
    let notice = notice(&q.done).map(str::to_owned);
    match account_page(&state, &browser, &claims, None, notice).await {
        Ok(page) => render(StatusCode::OK, &browser, &page, None),
        Err(e) => super::error_page(&state, &browser, e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ActionForm {
    action: String,
    csrf_token: String,
    current_password: String,
    new_password: String,
    password: String,
    code: String,
    session_id: String,
}

/// `POST /ui/account`: one of `password`, `revoke` (`session_id`),
/// `logout_all`, `totp_disable` (`password`, `code`), `backup_codes` (`code`).
pub(super) async fn act(state: web::Data<AppState>, post: Posted<ActionForm>) -> HttpResponse {
    let Posted {
        caller,
        browser,
        form: f,
    } = post;
    let Some(claims) = browser.claims().cloned() else {
        return sign_in_first(&state, "/ui/account");
    };
    let account = normalize(&claims.email);
    // The page again with the failure; its status and headers are the API's.
    let fail = |e: ApiError| Failure::of(e);
    match f.action.as_str() {
        "password" => {
            let (current, new) = (
                SecretString::from(f.current_password.clone()),
                SecretString::from(f.new_password.clone()),
            );
            let outcome = guarded_failure(&state, &caller, Guarded::Login, &account, async {
                let event = caller
                    .event(Action::PasswordChanged)
                    .user(claims.sub)
                    .resource("user", claims.sub);
                state
                    .auth
                    .change_password(&claims, current, new, vec![event])
                    .await?;
                Ok(see_other("/ui/account?done=password").finish())
            })
            .await;
            finish(&state, &browser, &claims, outcome).await
        }
        "revoke" => {
            let Ok(id) = Uuid::parse_str(f.session_id.trim()) else {
                return failed(
                    &state,
                    &browser,
                    &claims,
                    Failure::bad("That session does not exist."),
                )
                .await;
            };
            let event = caller
                .event(Action::SessionRevoked)
                .user(claims.sub)
                .resource("session", id);
            match state.auth.revoke_session(&claims, id, vec![event]).await {
                Ok(()) if id == claims.sid => see_other("/ui/login")
                    .cookie(removal(&state.config, SESSION_COOKIE))
                    .finish(),
                Ok(()) => see_other("/ui/account?done=revoked").finish(),
                Err(e) => failed(&state, &browser, &claims, fail(e.into())).await,
            }
        }
        "logout_all" => {
            let event = caller
                .event(Action::LogoutAll)
                .user(claims.sub)
                .resource("user", claims.sub);
            match state.auth.logout_all(&claims, vec![event]).await {
                Ok(_) => see_other("/ui/login")
                    .cookie(removal(&state.config, SESSION_COOKIE))
                    .finish(),
                Err(e) => failed(&state, &browser, &claims, fail(e.into())).await,
            }
        }
        "totp_disable" => {
            let password = SecretString::from(f.password.clone());
            let outcome = guarded_failure(
                &state,
                &caller,
                Guarded::SecondFactorChange,
                &account,
                async {
                    state
                        .auth
                        .totp_disable(
                            &claims,
                            password,
                            f.code.trim(),
                            vec![caller.event(Action::MfaDisabled).user(claims.sub)],
                        )
                        .await
                        .map_err(crate::http::mfa::on_bearer_route)?;
                    Ok(see_other("/ui/account?done=totp_off").finish())
                },
            )
            .await;
            finish(&state, &browser, &claims, outcome).await
        }
        "backup_codes" => {
            let outcome = guarded_failure(&state, &caller, Guarded::Mfa, &account, async {
                let codes = state
                    .auth
                    .regenerate_backup_codes(
                        &claims,
                        f.code.trim(),
                        vec![caller
                            .event(Action::BackupCodesRegenerated)
                            .user(claims.sub)],
                    )
                    .await
                    .map_err(crate::http::mfa::on_bearer_route)?;
                Ok(codes_page(&state, &browser, codes))
            })
            .await;
            finish(&state, &browser, &claims, outcome).await
        }
        _ => {
            failed(
                &state,
                &browser,
                &claims,
                Failure::bad("This form could not be read."),
            )
            .await
        }
    }
}

/// Runs `work` under `group`'s rules for the account; a refusal comes back as
/// its [`Failure`] so that the page can be drawn again around it.
async fn guarded_failure<Fut>(
    state: &AppState,
    caller: &Caller,
    group: Guarded,
    account: &str,
    work: Fut,
) -> Result<HttpResponse, Failure>
where
    Fut: std::future::Future<Output = Result<HttpResponse, ApiError>>,
{
    let failure = std::cell::RefCell::new(None);
    let show = |e: ApiError| {
        let f = Failure::of(e);
        let status = f.status;
        *failure.borrow_mut() = Some(f);
        HttpResponse::build(status).finish()
    };
    let response = guarded_as(state, caller, group, Some(account), work, &show).await;
    match failure.into_inner() {
        Some(mut f) => {
            // The rate-limit headers the guard put on its answer.
            f.take_headers(&response);
            Err(f)
        }
        None => Ok(response),
    }
}

async fn finish(
    state: &AppState,
    browser: &Browser,
    claims: &AccessClaims,
    outcome: Result<HttpResponse, Failure>,
) -> HttpResponse {
    match outcome {
        Ok(response) => response,
        Err(failure) => failed(state, browser, claims, failure).await,
    }
}

async fn failed(
    state: &AppState,
    browser: &Browser,
    claims: &AccessClaims,
    failure: Failure,
) -> HttpResponse {
    match account_page(state, browser, claims, Some(failure.message.clone()), None).await {
        Ok(page) => failure.render(browser, &page, None),
        Err(e) => super::error_page(state, browser, e),
    }
}

#[derive(Template)]
#[template(path = "totp.html")]
struct TotpPage {
    layout: Layout,
    error: Option<String>,
    qr_svg: String,
    secret: String,
    /// Vouches for `secret` when the form comes back (see [`totp_setup_page`]).
    shown: String,
    backup_codes: Option<Vec<String>>,
}

fn codes_page(state: &AppState, browser: &Browser, codes: Vec<String>) -> HttpResponse {
    let page = TotpPage {
        layout: Layout::new(state, browser, "Backup codes").section("account"),
        error: None,
        qr_svg: String::new(),
        secret: String::new(),
        shown: String::new(),
        backup_codes: Some(codes),
    };
    render(StatusCode::OK, browser, &page, None)
}

/// The setup page with a new secret, as `POST /auth/mfa/totp/setup` makes
/// one; after a wrong code, the same secret again, but only when the form
/// vouches that this page showed it (`shown`), so that a secret someone else
/// set up earlier is never offered.
async fn totp_setup_page(
    state: &AppState,
    browser: &Browser,
    claims: &AccessClaims,
    error: Option<String>,
    shown: Option<&str>,
) -> Result<TotpPage, ApiError> {
    let pending = match shown {
        Some(shown) => state
            .auth
            .totp_pending(claims)
            .await?
            .filter(|(secret, _)| {
                state
                    .auth
                    .form_token_matches(&secret_binding(secret), shown)
            }),
        None => None,
    };
    let (secret, url) = match pending {
        Some(pending) => pending,
        None => state
            .auth
            .totp_setup(claims)
            .await
            .map_err(crate::http::mfa::on_bearer_route)?,
    };
    Ok(TotpPage {
        layout: Layout::new(state, browser, "Two-step verification").section("account"),
        error,
        qr_svg: qr_svg(&url),
        shown: state.auth.form_token(&secret_binding(&secret)),
        secret,
        backup_codes: None,
    })
}

fn secret_binding(secret: &str) -> String {
    format!("totp secret:{secret}")
}

/// The `otpauth://` URL as an inline SVG QR code (drawn here: no request
/// leaves the page).
fn qr_svg(url: &str) -> String {
    match qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build()
            .split_once("<svg")
            .map(|(_, svg)| format!("<svg{svg}"))
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// `GET /ui/account/totp`
pub(super) async fn totp_page(state: web::Data<AppState>, browser: Browser) -> HttpResponse {
    let Some(claims) = browser.claims().cloned() else {
        return sign_in_first(&state, "/ui/account/totp");
    };
    match totp_setup_page(&state, &browser, &claims, None, None).await {
        Ok(page) => render(StatusCode::OK, &browser, &page, None),
        Err(e) if e.code() == "mfa_already_enabled" => see_other("/ui/account").finish(),
        Err(e) => super::error_page(&state, &browser, e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct EnableForm {
    code: String,
    password: String,
    shown: String,
}

/// `POST /ui/account/totp`: `POST /auth/mfa/totp/enable`; then the backup
/// codes, shown once.
pub(super) async fn totp_enable(
    state: web::Data<AppState>,
    post: Posted<EnableForm>,
) -> HttpResponse {
    let Posted {
        caller,
        browser,
        form: f,
    } = post;
    let Some(claims) = browser.claims().cloned() else {
        return sign_in_first(&state, "/ui/account/totp");
    };
    let account = normalize(&claims.email);
    let password = SecretString::from(f.password.clone());
    let outcome = guarded_failure(
        &state,
        &caller,
        Guarded::SecondFactorChange,
        &account,
        async {
            let codes = state
                .auth
                .totp_enable(
                    &claims,
                    password,
                    f.code.trim(),
                    vec![caller.event(Action::MfaEnabled).user(claims.sub)],
                )
                .await
                .map_err(crate::http::mfa::on_bearer_route)?;
            Ok(codes_page(&state, &browser, codes))
        },
    )
    .await;
    match outcome {
        Ok(response) => response,
        Err(failure) => totp_failed(&state, &browser, &claims, failure, Some(&f.shown)).await,
    }
}

async fn totp_failed(
    state: &AppState,
    browser: &Browser,
    claims: &AccessClaims,
    failure: Failure,
    shown: Option<&str>,
) -> HttpResponse {
    match totp_setup_page(state, browser, claims, Some(failure.message.clone()), shown).await {
        Ok(page) => failure.render(browser, &page, None),
        Err(e) => super::error_page(state, browser, e),
    }
}
