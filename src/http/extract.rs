//! Extractors with our error bodies: JSON bodies, bearer tokens, user agents.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError, UrlencodedError};
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};

use super::AppState;
use crate::auth::tokens::AccessClaims;
use crate::error::ApiError;

/// JSON body settings: the size limit and our error mapping.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req| json_error(err).into())
}

fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit },
        JsonPayloadError::ContentType => ApiError::BadRequest {
            code: "invalid_content_type",
            message: "the body must be JSON with Content-Type: application/json".into(),
        },
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::bad_request(format!("invalid request body: {e}"))
        }
        JsonPayloadError::Deserialize(e) => ApiError::BadRequest {
            code: "invalid_json",
            message: format!("the body is not valid JSON: {e}"),
        },
        other => ApiError::bad_request(format!("cannot read the request body: {other}")),
    }
}

/// Form body settings (OAuth2 token endpoint).
pub fn form_config(limit: usize) -> web::FormConfig {
    web::FormConfig::default()
        .limit(limit)
        .error_handler(|err, _req| match err {
            UrlencodedError::Overflow { limit, .. } => ApiError::PayloadTooLarge { limit }.into(),
            other => ApiError::bad_request(format!("invalid form body: {other}")).into(),
        })
}

/// Query string settings.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req| {
        ApiError::bad_request(format!("invalid query string: {err}")).into()
    })
}

/// Path parameter settings.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|_: PathError, _req| ApiError::NotFound("no such resource").into())
}

/// A request whose bearer access token is valid and not revoked.
#[derive(Debug, Clone)]
pub struct Authenticated(pub AccessClaims);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Authenticated, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))?;
    let token =
        bearer_token(req).ok_or(ApiError::InvalidToken("a bearer access token is required"))?;
    let claims = state.auth.authorize(token).map_err(ApiError::from)?;
    Ok(Authenticated(claims))
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The `User-Agent` header as text, if it is printable.
pub fn user_agent(req: &HttpRequest) -> Option<&str> {
    req.headers().get(header::USER_AGENT)?.to_str().ok()
}
