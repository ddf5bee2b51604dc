//! `POST /auth/token`: the OAuth2 token endpoint (RFC 6749) for the password
//! and refresh_token grants, sharing the login and refresh logic and rules.

use std::collections::HashSet;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::accounts::{password_login, rotate_refresh, LoginOutcome};
use super::context::Caller;
use super::extract::{has_media_type, MediaType};
use super::guard::{guarded, NotAFailure};
use super::AppState;
use crate::auth::service::TokenPair;
use crate::email::normalize;
use crate::error::{insert_rate_headers, ApiError};
use crate::ratelimit::Guarded;
use crate::store::SessionKind;

/// The body of `POST /auth/token` (`application/x-www-form-urlencoded`).
/// Parameters it does not name (`client_id`, `client_secret`) are ignored, as
/// RFC 6749 §3.2 asks.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TokenForm {
    /// `password` or `refresh_token`.
    #[schema(required = true)]
    pub grant_type: Option<String>,
    /// The email, for the password grant.
    pub username: Option<String>,
    #[schema(value_type = Option<String>)]
    pub password: Option<SecretString>,
    #[schema(value_type = Option<String>)]
    pub refresh_token: Option<SecretString>,
    /// Accepted and ignored.
    pub scope: Option<String>,
}

/// A successful token answer (RFC 6749 §5.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthToken {
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds.
    pub expires_in: i64,
    pub refresh_token: String,
}

/// An error answer (RFC 6749 §5.2), also for our 429 and 503.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_grant`, `unsupported_grant_type`,
    /// `too_many_requests`, `temporarily_unavailable` or `server_error`.
    pub error: &'static str,
    pub error_description: String,
    /// Seconds, with `too_many_requests`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// An RFC 6749 §5.2 error (or our 503 in the same shape).
pub(crate) fn oauth_error(
    status: StatusCode,
    error: &'static str,
    description: &str,
) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(OAuthError {
            error,
            error_description: description.to_owned(),
            retry_after: None,
        })
}

/// A request refused before any grant logic ran.
pub(crate) struct Reject {
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

    pub(crate) fn into_response(self) -> HttpResponse {
        oauth_error(self.status, "invalid_request", &self.description)
    }
}

/// Maps our errors to the token endpoint's vocabulary.
pub(crate) fn to_oauth(e: &ApiError) -> HttpResponse {
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
                .json(OAuthError {
                    error: "too_many_requests",
                    error_description: blocked.message(),
                    retry_after: Some(blocked.retry_after),
                });
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
        .json(OAuthToken {
            access_token: pair.access_token.clone(),
            token_type: "Bearer",
            expires_in: pair.expires_in,
            refresh_token: pair.refresh_token.clone(),
        })
}

/// Reads the form body: `application/x-www-form-urlencoded`, within the body limit.
pub(crate) async fn read_form<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<T, Reject> {
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

/// Parses an `application/x-www-form-urlencoded` body. RFC 6749 §3.2: a
/// parameter must not be repeated. The error is for the client.
pub fn parse_form<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes)
        .map_err(|_| "the body is not a valid form".to_owned())?;
    let mut seen = HashSet::with_capacity(pairs.len());
    for (k, _) in &pairs {
        if !seen.insert(k.as_str()) {
            return Err(format!("parameter `{k:.32}` is repeated"));
        }
    }
    serde_urlencoded::from_bytes(bytes).map_err(|_| "the body is not a valid form".to_owned())
}

/// A parameter that must be present and not empty.
fn required<'a, T: ?Sized>(
    value: Option<&'a T>,
    name: &str,
    text: impl Fn(&'a T) -> &'a str,
) -> Result<&'a str, Reject> {
    value
        .map(text)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Reject::invalid_request(format!("missing parameter `{name}`")))
}

/// `POST /auth/token`
#[utoipa::path(post, path = "/auth/token", tag = "oauth2",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = OAuthToken), (status = 400, body = OAuthError), (status = 408, body = OAuthError),
        (status = 413, body = OAuthError), (status = 429, body = OAuthError), (status = 503, body = OAuthError)))]
pub async fn token(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let form: TokenForm = match read_form(&req, payload, state.config.server.max_body_bytes).await {
        Ok(form) => form,
        Err(reject) => return reject.into_response(),
    };
    let grant = match required(form.grant_type.as_deref(), "grant_type", |g| g) {
        Ok(g) => g,
        Err(reject) => return reject.into_response(),
    };
    let result = match grant {
        "password" => {
            let (username, password) = match (
                required(form.username.as_deref(), "username", |u| u),
                required(form.password.as_ref(), "password", |p| p.expose_secret()),
            ) {
                (Ok(u), Ok(p)) => (u, SecretString::from(p)),
                (Err(reject), _) | (_, Err(reject)) => return reject.into_response(),
            };
            let account = normalize(username);
            guarded(&state, &caller, Guarded::Login, Some(&account), async {
                match password_login(&state, &caller, &account, password, false, SessionKind::Api)
                    .await
                {
                    Ok(LoginOutcome::Opened(opened)) => Ok(token_body(&opened.into_tokens()?)),
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
            let refresh = match required(form.refresh_token.as_ref(), "refresh_token", |r| {
                r.expose_secret()
            }) {
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
