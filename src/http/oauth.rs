//! `POST /auth/token`: the OAuth2 token endpoint (RFC 6749) for the password
//! and refresh_token grants, sharing the login and refresh logic and rules.

use std::collections::HashMap;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::SecretString;
use serde_json::json;

use super::accounts::{password_login, rotate_refresh, LoginOutcome};
use super::context::Caller;
use super::extract::{has_media_type, MediaType};
use super::guard::{guarded, NotAFailure};
use super::AppState;
use crate::auth::email::normalize;
use crate::auth::service::TokenPair;
use crate::error::{insert_rate_headers, ApiError};
use crate::ratelimit::Guarded;

/// An RFC 6749 §5.2 error (or our 429 / 503 in the same shape).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(json!({ "error": error, "error_description": description }))
}

/// A request refused before any grant logic ran.
struct Reject {
    status: StatusCode,
    description: String,
}

impl Reject {
    fn invalid_request(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            description: description.into(),
        }
    }

    fn into_response(self) -> HttpResponse {
        oauth_error(self.status, "invalid_request", &self.description)
    }
}

/// Maps our errors to the token endpoint's vocabulary.
fn to_oauth(e: &ApiError) -> HttpResponse {
    match e {
        ApiError::InvalidCredentials
        | ApiError::InvalidRefreshToken
        | ApiError::RefreshTokenReused
        | ApiError::InvalidMfaCode
        | ApiError::InvalidToken(_) => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &e.to_string())
        }
        ApiError::TooManyRequests(blocked) => {
            let mut res = HttpResponse::TooManyRequests()
                .insert_header((header::RETRY_AFTER, blocked.retry_after.to_string()))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(json!({
                    "error": "too_many_requests",
                    "error_description": blocked.message(),
                    "retry_after": blocked.retry_after,
                }));
            insert_rate_headers(res.headers_mut(), &blocked.headers());
            res
        }
        ApiError::Overloaded | ApiError::Unavailable(_) => {
            let mut res = oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &e.to_string(),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            res
        }
        ApiError::LimiterUnavailable(_) => {
            // Logs the cause.
            let _ = actix_web::ResponseError::error_response(e);
            let mut res = oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &e.to_string(),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, crate::error::LIMITER_RETRY_AFTER);
            res
        }
        ApiError::Validation(_)
        | ApiError::BadRequest { .. }
        | ApiError::PayloadTooLarge { .. } => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string())
        }
        _ => {
            // Logs the cause; the client sees the OAuth shape.
            let _ = actix_web::ResponseError::error_response(e);
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error",
            )
        }
    }
}

fn token_body(pair: &TokenPair) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(json!({
            "access_token": pair.access_token,
            "token_type": "Bearer",
            "expires_in": pair.expires_in,
            "refresh_token": pair.refresh_token,
        }))
}

/// Reads the form body: `application/x-www-form-urlencoded`, within the body limit.
async fn read_form(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<HashMap<String, String>, Reject> {
    if !has_media_type(req, MediaType::Form) {
        return Err(Reject::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let read = super::limits::within(
        super::limits::body_timeout(req),
        payload.to_bytes_limited(limit),
    );
    let bytes = match read.await {
        Ok(Ok(Ok(bytes))) => bytes,
        Ok(Ok(Err(_))) => return Err(Reject::invalid_request("cannot read the request body")),
        Err(_) => {
            return Err(Reject {
                status: StatusCode::REQUEST_TIMEOUT,
                description: "the request body did not arrive in time".into(),
            })
        }
        Ok(Err(_)) => {
            return Err(Reject {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                description: format!("the body is larger than {limit} bytes"),
            })
        }
    };
    parse_form(&bytes).map_err(Reject::invalid_request)
}

/// Parses an `application/x-www-form-urlencoded` body into its parameters.
/// RFC 6749 §3.2: a parameter must not be repeated. The error is for the client.
pub fn parse_form(bytes: &[u8]) -> Result<HashMap<String, String>, String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes)
        .map_err(|_| "the body is not a valid form".to_owned())?;
    let mut form = HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if form.contains_key(&k) {
            return Err(format!("parameter `{k:.32}` is repeated"));
        }
        form.insert(k, v);
    }
    Ok(form)
}

fn required<'a>(form: &'a HashMap<String, String>, name: &str) -> Result<&'a str, Reject> {
    form.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Reject::invalid_request(format!("missing parameter `{name}`")))
}

/// `POST /auth/token`
pub async fn token(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let form = match read_form(&req, payload, state.config.server.max_body_bytes).await {
        Ok(form) => form,
        Err(reject) => return reject.into_response(),
    };
    let grant = match required(&form, "grant_type") {
        Ok(g) => g,
        Err(reject) => return reject.into_response(),
    };
    let result = match grant {
        "password" => {
            let (username, password) =
                match (required(&form, "username"), required(&form, "password")) {
                    (Ok(u), Ok(p)) => (u, SecretString::from(p.to_owned())),
                    (Err(reject), _) | (_, Err(reject)) => return reject.into_response(),
                };
            let account = normalize(username);
            guarded(&state, &caller, Guarded::Login, Some(&account), async {
                match password_login(&state, &caller, &account, password, false).await {
                    Ok(LoginOutcome::Tokens(pair)) => Ok(token_body(&pair)),
                    // The password was right: a 400, not a success, and no session.
                    Ok(LoginOutcome::MfaRequired { .. }) => {
                        let mut res = oauth_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_grant",
                            "two-factor authentication required; use /auth/login",
                        );
                        res.extensions_mut().insert(NotAFailure);
                        Ok(res)
                    }
                    Err(e) => Ok(to_oauth(&e)),
                }
            })
            .await
        }
        "refresh_token" => {
            let refresh = match required(&form, "refresh_token") {
                Ok(r) => r,
                Err(reject) => return reject.into_response(),
            };
            guarded(&state, &caller, Guarded::Refresh, None, async {
                match rotate_refresh(&state, &caller, refresh).await {
                    Ok(pair) => Ok(token_body(&pair)),
                    Err(e) => Ok(to_oauth(&e)),
                }
            })
            .await
        }
        other => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!(
                    "grant_type `{other:.32}` is not supported; use password or refresh_token"
                ),
            )
        }
    };
    match result {
        Ok(res) => res,
        Err(e) => to_oauth(&e),
    }
}
