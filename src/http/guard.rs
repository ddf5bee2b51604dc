//! Runs a handler's work under the rate limiter: reserve before anything is
//! checked, settle with the outcome, and put the `RateLimit-*` headers on the
//! answer, whatever it is.

use std::future::Future;

use actix_web::{HttpResponse, ResponseError};

use super::context::Caller;
use super::AppState;
use crate::audit::Action;
use crate::error::{insert_rate_headers, ApiError};
use crate::ratelimit::{Check, Guarded, KeyKind, Outcome, Refused};

/// Marks a 4xx answer that is not the client's failure (the password grant of
/// an account with two-factor on: the password was right), so its slots are
/// given back like a success's.
#[derive(Debug, Clone, Copy)]
pub struct NotAFailure;

/// Reserves slots of `group` for the caller (and `account`), runs `work`,
/// settles. A blocked request gets its 429 — audited, folded per rule and key —
/// without `work` ever running.
pub async fn guarded<Fut>(
    state: &AppState,
    caller: &Caller,
    group: Guarded,
    account: Option<&str>,
    work: Fut,
) -> Result<HttpResponse, ApiError>
where
    Fut: Future<Output = Result<HttpResponse, ApiError>>,
{
    run_guarded(state, caller, group, account, work, None).await
}

/// [`guarded`] for a door that shows its failures in its own way (the pages):
/// every refusal, the 429 included, is `render`ed, with the same status and
/// the rate-limit headers.
pub async fn guarded_as<Fut>(
    state: &AppState,
    caller: &Caller,
    group: Guarded,
    account: Option<&str>,
    work: Fut,
    render: &dyn Fn(ApiError) -> HttpResponse,
) -> HttpResponse
where
    Fut: Future<Output = Result<HttpResponse, ApiError>>,
{
    run_guarded(state, caller, group, account, work, Some(render))
        .await
        .unwrap_or_else(render)
}

async fn run_guarded<Fut>(
    state: &AppState,
    caller: &Caller,
    group: Guarded,
    account: Option<&str>,
    work: Fut,
    render: Option<&dyn Fn(ApiError) -> HttpResponse>,
) -> Result<HttpResponse, ApiError>
where
    Fut: Future<Output = Result<HttpResponse, ApiError>>,
{
    let ip_key = state.limiter.ip_key(caller.ip);
    let reservation = match state.limiter.reserve(group, &ip_key, account).await {
        Ok(r) => r,
        Err(Refused::Unavailable(e)) => {
            state.metrics.rate_limit_unavailable.inc();
            return Err(ApiError::LimiterUnavailable(e));
        }
        Err(Refused::Blocked(blocked)) => {
            state
                .metrics
                .rate_limit_rejections
                .with_label_values(&[blocked.rule.name.as_str()])
                .inc();
            if matches!(group, Guarded::Login | Guarded::PasskeyLogin) {
                state.metrics.login("rate_limited");
            }
            let event = caller.event(Action::LoginRateLimited);
            let text = match blocked.rule.name.key_kind() {
                KeyKind::Ip => ip_key.as_str(),
                KeyKind::Account => account.unwrap_or_default(),
            };
            let shown = || state.limiter.shown(blocked.rule.name, text);
            state
                .audit
                .rate_limited(blocked.rule.name, blocked.key, shown, event)
                .await?;
            return Err(ApiError::TooManyRequests(Box::new(blocked)));
        }
    };
    let result = work.await;
    let status = match &result {
        Ok(res) => res.status(),
        Err(e) => e.status_code(),
    };
    let settled_as_success =
        matches!(&result, Ok(res) if res.extensions().contains::<NotAFailure>());
    let outcome = if status.is_server_error() {
        Outcome::ServerError
    } else if status.is_client_error() && !settled_as_success {
        match &result {
            Err(e) => failed_check(e).map_or(Outcome::Failure, Outcome::Failed),
            Ok(_) => Outcome::Failure,
        }
    } else {
        Outcome::Success
    };
    state.limiter.settle(&reservation, outcome).await;
    let mut response = match (result, render) {
        (Ok(response), _) => response,
        (Err(e), Some(render)) => render(e),
        (Err(e), None) => e.error_response(),
    };
    if let Some(headers) = state.limiter.headers(&reservation).await {
        insert_rate_headers(response.headers_mut(), &headers);
    }
    Ok(response)
}

/// The secret a refusal says was wrong, if any: a route that checks a
/// password and a code counts each only under its own rules.
fn failed_check(e: &ApiError) -> Option<Check> {
    match e.code() {
        "invalid_credentials" | "invalid_current_password" => Some(Check::Password),
        "invalid_mfa_code" => Some(Check::SecondFactor),
        _ => None,
    }
}
