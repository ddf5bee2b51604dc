//! A forgotten password: `/ui/forgot-password` asks for the mail,
//! `/ui/reset-password?token=` is its link.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use secrecy::SecretString;
use serde::Deserialize;

use super::browser::Browser;
use super::sign_in::query;
use super::{render, Failure, Layout, Posted};
use crate::email::normalize;
use crate::error::ApiError;
use crate::http::guard::guarded_as;
use crate::http::reset::{confirm_reset, request_reset};
use crate::http::state::AppState;
use crate::ratelimit::Guarded;

#[derive(Template)]
#[template(path = "forgot.html")]
struct ForgotPage {
    layout: Layout,
    error: Option<String>,
    sent: bool,
    email: String,
}

/// `GET /ui/forgot-password`
pub(super) async fn forgot_page(state: web::Data<AppState>, browser: Browser) -> HttpResponse {
    let page = ForgotPage {
        layout: Layout::new(&state, &browser, "Reset your password"),
        error: None,
        sent: false,
        email: String::new(),
    };
    render(StatusCode::OK, &browser, &page, None)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ForgotForm {
    email: String,
}

/// `POST /ui/forgot-password`: `POST /auth/password-reset/request`; the same
/// answer whether or not the account exists.
pub(super) async fn forgot(state: web::Data<AppState>, post: Posted<ForgotForm>) -> HttpResponse {
    let Posted {
        caller,
        browser,
        form: f,
    } = post;
    let page = |error: Option<String>, sent: bool, email: &str| ForgotPage {
        layout: Layout::new(&state, &browser, "Reset your password"),
        error,
        sent,
        email: email.trim().chars().take(320).collect(),
    };
    if f.email.trim().is_empty() {
        let failure = Failure::bad("Enter the email of your account.");
        return failure.render(
            &browser,
            &page(Some(failure.message.clone()), false, ""),
            None,
        );
    }
    let account = normalize(&f.email);
    let show = |e: ApiError| {
        let failure = Failure::of(e);
        failure.render(
            &browser,
            &page(Some(failure.message.clone()), false, &f.email),
            None,
        )
    };
    guarded_as(
        &state,
        &caller,
        Guarded::ResetRequest,
        Some(&account),
        async {
            request_reset(&state, &caller, &f.email).await?;
            Ok(render(
                StatusCode::OK,
                &browser,
                &page(None, true, &f.email),
                None,
            ))
        },
        &show,
    )
    .await
}

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage {
    layout: Layout,
    error: Option<String>,
    done: bool,
    token: String,
    min_length: usize,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct TokenQuery {
    token: String,
}

/// `GET /ui/reset-password?token=`: the link of the reset mail. The token is
/// checked when the form is sent (a look does not spend it).
pub(super) async fn reset_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
) -> HttpResponse {
    let q: TokenQuery = query(&req);
    let page = ResetPage {
        layout: Layout::new(&state, &browser, "Choose a new password"),
        error: q
            .token
            .is_empty()
            .then(|| "This link is incomplete. Open the whole link from the mail.".into()),
        done: false,
        token: q.token.chars().take(64).collect(),
        min_length: state.config.passwords.min_length,
    };
    let status = if page.error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(status, &browser, &page, None)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ResetForm {
    token: String,
    new_password: String,
}

/// `POST /ui/reset-password`: `POST /auth/password-reset/confirm`.
pub(super) async fn reset(state: web::Data<AppState>, post: Posted<ResetForm>) -> HttpResponse {
    let Posted {
        caller,
        browser,
        form: f,
    } = post;
    let page = |error: Option<String>, done: bool, token: &str| ResetPage {
        layout: Layout::new(&state, &browser, "Choose a new password"),
        error,
        done,
        token: token.chars().take(64).collect(),
        min_length: state.config.passwords.min_length,
    };
    let show = |e: ApiError| {
        let failure = Failure::of(e);
        failure.render(
            &browser,
            &page(Some(failure.message.clone()), false, &f.token),
            None,
        )
    };
    let password = SecretString::from(f.new_password.clone());
    guarded_as(
        &state,
        &caller,
        Guarded::ResetConfirm,
        None,
        async {
            confirm_reset(&state, &caller, &f.token, password).await?;
            Ok(render(
                StatusCode::OK,
                &browser,
                &page(None, true, ""),
                None,
            ))
        },
        &show,
    )
    .await
}
