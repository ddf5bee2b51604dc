//! Password reset by email: request a link, confirm with its token.

use actix_web::{web, HttpResponse, ResponseError};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::context::Caller;
use super::extract::JsonBody;
use super::guard::guarded;
use super::AppState;
use crate::audit::Action;
use crate::auth::service::ResetRequest;
use crate::email::normalize;
use crate::error::{ApiError, ErrorBody};
use crate::ratelimit::Guarded;

#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestBody {
    pub email: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ConfirmBody {
    /// The token of the link in the reset mail.
    #[schema(value_type = String)]
    pub token: SecretString,
    #[schema(value_type = String)]
    pub new_password: SecretString,
}

/// A sentence for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub message: &'static str,
}

const REQUESTED: &str =
    "If an account exists for this address, a password reset link has been sent to it.";

/// `POST /auth/password-reset/request`: 202 whether or not the account exists.
#[utoipa::path(post, path = "/auth/password-reset/request", tag = "password reset", request_body = RequestBody,
    responses((status = 202, body = Message), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn request(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody<RequestBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let account = normalize(&body.email);
    guarded(
        &state,
        &caller,
        Guarded::ResetRequest,
        Some(&account),
        async {
            request_reset(&state, &caller, &body.email).await?;
            Ok(HttpResponse::Accepted().json(Message { message: REQUESTED }))
        },
    )
    .await
}

/// Issues a reset token and mails its link after the answer, when the account
/// exists; shared by the API and the forgot-password page. Call inside
/// `guarded` for the reset-request rules.
pub async fn request_reset(
    state: &web::Data<AppState>,
    caller: &Caller,
    email: &str,
) -> Result<(), ApiError> {
    let requested = caller.event(Action::PasswordResetRequested);
    if let ResetRequest::Issued { user, token } = state.auth.request_reset(email, requested).await?
    {
        // The token and its row are committed. Every transport sends after
        // the answer, so its timing does not tell whether the account
        // exists; a mail that cannot go out is one more row.
        let failed = caller
            .event(Action::PasswordResetRequested)
            .user(user.id)
            .extra("account_exists", true);
        let link = state.config.mail.reset_url.replace("{token}", &token);
        let text = format!(
            "Someone asked to reset the password of your account {}.\n\n\
             To choose a new password, open this link within one hour:\n\n{link}\n\n\
             If it was not you, ignore this message; your password stays as it is.\n",
            user.email
        );
        send_later(state, user.email, "Reset your password", text, failed);
    }
    Ok(())
}

/// Sends a mail after the answer; a mail that cannot go out is audited as
/// `failed` with `mail_error` (and `mail: "failed"`).
pub fn send_later(
    state: &web::Data<AppState>,
    to: String,
    subject: &'static str,
    text: String,
    failed: crate::audit::NewEvent,
) {
    let job_state = state.clone();
    state.mail_queue.spawn(async move {
        let state = job_state;
        if let Err(e) = state.mailer.send(&to, subject, text).await {
            tracing::error!(error = %e, recipient = %to, "mail not sent");
            let event = failed.extra("mail_error", format!("{e:#}"));
            if let Err(e) = state.audit(event).await {
                tracing::error!(error = %e, "cannot audit a failed mail");
            }
        }
    });
}

/// `POST /auth/password-reset/confirm`: sets the password, revokes every session.
#[utoipa::path(post, path = "/auth/password-reset/confirm", tag = "password reset", request_body = ConfirmBody,
    responses((status = 200, body = Message), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn confirm(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody<ConfirmBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    guarded(&state, &caller, Guarded::ResetConfirm, None, async {
        confirm_reset(
            &state,
            &caller,
            body.token.expose_secret(),
            body.new_password,
        )
        .await?;
        Ok(HttpResponse::Ok().json(Message {
            message: "Your password has been reset. Every session was signed out.",
        }))
    })
    .await
}

/// Sets a new password through a reset token and audits the outcome; shared
/// by the API and the reset page. Call inside `guarded` for the reset rule.
pub async fn confirm_reset(
    state: &AppState,
    caller: &Caller,
    token: &str,
    new_password: SecretString,
) -> Result<(), ApiError> {
    match state
        .auth
        .confirm_reset(
            token,
            new_password,
            vec![caller.event(Action::PasswordResetSuccess)],
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let error = ApiError::from(e);
            if error.status_code().is_client_error() {
                let event = caller
                    .event(Action::PasswordResetFailed)
                    .extra("reason", error.code());
                state.audit(event).await?;
            }
            Err(error)
        }
    }
}
