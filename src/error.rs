//! The one mapping from failures to HTTP: every error body is
//! `{"error": "<code>", "message": "<text>"}`, sometimes with more fields.

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::ratelimit::{Blocked, LimitError, RateHeaders};
use crate::store::StoreError;

/// `Retry-After` of a refusal because the shared rate-limit store is down: an
/// outage of a service lasts longer than a busy moment, so clients wait longer.
pub const LIMITER_RETRY_AFTER: HeaderValue = HeaderValue::from_static("5");

/// Adds `RateLimit-Limit`, `-Remaining`, `-Reset` and `-Policy`.
pub fn insert_rate_headers(headers: &mut HeaderMap, h: &RateHeaders) {
    let pairs = [
        ("ratelimit-limit", h.limit.to_string()),
        ("ratelimit-remaining", h.remaining.to_string()),
        ("ratelimit-reset", h.reset_secs.to_string()),
        ("ratelimit-policy", h.policy.clone()),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

pub use crate::auth::service::FieldErrors;

/// Every error a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request validation failed")]
    Validation(FieldErrors),
    /// A malformed request (bad JSON, wrong content type, missing field).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("{0}")]
    HeadersTooLarge(String),
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("refresh token is invalid or expired")]
    InvalidRefreshToken,
    #[error("refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    #[error("{0}")]
    InvalidToken(&'static str),
    #[error("current password is incorrect")]
    InvalidCurrentPassword,
    #[error("the two-factor code is wrong, used or expired")]
    InvalidMfaCode,
    #[error("you do not have access to this resource")]
    Forbidden,
    /// A 403 with its own code (`registration_closed`, `invalid_csrf_token`).
    #[error("{message}")]
    Refused {
        code: &'static str,
        message: &'static str,
    },
    #[error("{0}")]
    NotFound(&'static str),
    /// Passkeys are off on this server, and why.
    #[error("{0}")]
    PasskeysOff(String),
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    #[error("{}", .0.message())]
    TooManyRequests(Box<Blocked>),
    #[error("the server is busy; retry shortly")]
    Overloaded,
    /// The shared rate-limit store cannot be reached: guarded routes fail closed.
    #[error("rate limiting is unavailable, so this request cannot be checked; retry shortly")]
    LimiterUnavailable(#[source] LimitError),
    #[error("storage is unavailable; retry shortly")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The stable snake_case code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation(_) => "validation_error",
            Self::BadRequest { code, .. } => code,
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::HeadersTooLarge(_) => "headers_too_large",
            Self::InvalidCredentials => "invalid_credentials",
            Self::EmailTaken => "email_taken",
            Self::InvalidRefreshToken => "invalid_refresh_token",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::InvalidToken(_) => "invalid_token",
            Self::InvalidCurrentPassword => "invalid_current_password",
            Self::InvalidMfaCode => "invalid_mfa_code",
            Self::Forbidden => "forbidden",
            Self::Refused { code, .. } => code,
            Self::NotFound(_) => "not_found",
            Self::PasskeysOff(_) => "passkeys_unavailable",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::TooManyRequests(_) => "too_many_requests",
            Self::Overloaded => "overloaded",
            Self::LimiterUnavailable(_) => "rate_limiter_unavailable",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// A malformed-request error with the `invalid_request` code.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            code: "invalid_request",
            message: message.into(),
        }
    }

    /// A validation error on one field.
    pub fn field(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Validation(FieldErrors::from([(field, reason.into())]))
    }
}

impl From<crate::audit_log::AuditError> for ApiError {
    fn from(err: crate::audit_log::AuditError) -> Self {
        Self::Unavailable(anyhow::anyhow!(err))
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::Unavailable(e) => Self::Unavailable(e),
            StoreError::Duplicate(e) | StoreError::Other(e) => Self::Internal(e),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::BadRequest { .. } | Self::InvalidCurrentPassword => {
                StatusCode::BAD_REQUEST
            }
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::InvalidCredentials
            | Self::InvalidRefreshToken
            | Self::RefreshTokenReused
            | Self::InvalidMfaCode
            | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::EmailTaken => StatusCode::CONFLICT,
            Self::Forbidden | Self::Refused { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) | Self::PasskeysOff(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded | Self::Unavailable(_) | Self::LimiterUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Internal(e) => tracing::error!(error = format!("{e:#}"), "internal error"),
            Self::Unavailable(e) => tracing::warn!(error = format!("{e:#}"), "storage unavailable"),
            Self::LimiterUnavailable(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable; request refused");
            }
            _ => {}
        }
        let mut body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
            fields: match self {
                Self::Validation(fields) => Some(fields.clone()),
                _ => None,
            },
            retry_after: None,
        };
        let mut res = HttpResponse::build(self.status_code());
        match self {
            Self::MethodNotAllowed(allow) => {
                res.insert_header((header::ALLOW, *allow));
            }
            Self::TooManyRequests(blocked) => {
                body.retry_after = Some(blocked.retry_after);
                res.insert_header((header::RETRY_AFTER, blocked.retry_after.to_string()));
            }
            Self::Overloaded | Self::Unavailable(_) => {
                res.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            Self::LimiterUnavailable(_) => {
                res.insert_header((header::RETRY_AFTER, LIMITER_RETRY_AFTER));
            }
            // The rest of the body may still be on its way: the connection ends here.
            Self::RequestTimeout => {
                res.force_close();
            }
            Self::InvalidToken(_) => {
                res.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                ));
            }
            _ => {}
        }
        res.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        let mut response = res.json(body);
        if let Self::TooManyRequests(blocked) = self {
            insert_rate_headers(response.headers_mut(), &blocked.headers());
        }
        response
    }
}

/// The JSON body of every error answer: a stable code and a message for
/// people; `fields` on validation errors, `retry_after` on 429.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable snake_case code.
    pub error: &'static str,
    pub message: String,
    /// The reason each field was refused (`validation_error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub fields: Option<FieldErrors>,
    /// Seconds until a slot frees (`too_many_requests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl From<crate::auth::service::AuthError> for ApiError {
    fn from(err: crate::auth::service::AuthError) -> Self {
        use crate::auth::service::AuthError as E;
        match err {
            E::Validation(fields) => Self::Validation(fields),
            E::InvalidCredentials { .. } => Self::InvalidCredentials,
            E::EmailTaken => Self::EmailTaken,
            E::InvalidRefreshToken => Self::InvalidRefreshToken,
            E::RefreshTokenReused { .. } => Self::RefreshTokenReused,
            E::InvalidToken(e) => Self::InvalidToken(e.message()),
            E::InvalidCurrentPassword => Self::InvalidCurrentPassword,
            E::InvalidMfaCode => Self::InvalidMfaCode,
            E::MfaState(code) => Self::BadRequest {
                code,
                message: match code {
                    "mfa_already_enabled" => "two-factor authentication is already on".into(),
                    "mfa_not_set_up" => "call /auth/mfa/totp/setup first".into(),
                    _ => "two-factor authentication is not on".into(),
                },
            },
            E::InvalidResetToken => Self::BadRequest {
                code: "invalid_or_expired_token",
                message: "the reset token is invalid, expired or already used".into(),
            },
            E::NotFound => Self::NotFound("no such resource"),
            E::InvalidGrant(why) => Self::BadRequest {
                code: "invalid_grant",
                message: why.into(),
            },
            E::PasskeysOff(why) => Self::PasskeysOff(why),
            E::ReauthenticationRequired => Self::Refused {
                code: "reauthentication_required",
                message: "this change needs a sign-in within the last ten minutes, or the current password",
            },
            E::PasskeyRejected(why) => Self::BadRequest {
                code: "invalid_passkey",
                message: why.into(),
            },
            E::Overloaded => Self::Overloaded,
            E::Store(e) => e.into(),
            E::Internal(e) => Self::Internal(e),
        }
    }
}
