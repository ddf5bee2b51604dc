//! Extractors with our error bodies: JSON bodies, bearer tokens, user agents.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::error::{PathError, QueryPayloadError, UrlencodedError};
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::auth::tokens::AccessClaims;
use crate::error::ApiError;

/// A JSON request body: `Content-Type: application/json`, at most
/// `server.max_body_bytes`, valid UTF-8 throughout, a JSON object, and every
/// required field present with the right type. Anything else is a 400 (413 for
/// size) with our error body, before any handler logic runs.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T> JsonBody<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = has_media_type(req, MediaType::Json);
        let body = read_body(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::BadRequest {
                    code: "invalid_content_type",
                    message: "the body must be JSON with Content-Type: application/json".into(),
                });
            }
            parse_json(&body.await?).map(JsonBody)
        })
    }
}

/// The whole request body, within `server.max_body_bytes` (413) and the
/// body's deadline (408); for every extractor that reads a body.
pub fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
) -> LocalBoxFuture<'static, Result<web::Bytes, ApiError>> {
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map_or(16_384, |s| s.config.server.max_body_bytes);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let deadline = super::limits::body_timeout(req);
    let body = web::Payload::from_request(req, payload).into_inner();
    Box::pin(async move {
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let body =
            body.map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        super::limits::within(deadline, body.to_bytes_limited(limit))
            .await?
            .map_err(|_| ApiError::PayloadTooLarge { limit })?
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))
    })
}

/// The media types request bodies come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/json`, or any `application/*+json`.
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
}

/// Whether a `Content-Type` value names `expected`, matched as RFC 9110
/// §8.3.1 says: type and subtype case-insensitively, whatever the parameters
/// (`application/json; charset=utf-8`,
/// `application/x-www-form-urlencoded;charset=UTF-8`). A value that does not
/// parse as a media type matches nothing.
pub fn is_media_type(content_type: &[u8], expected: MediaType) -> bool {
    let Some(mime) = std::str::from_utf8(content_type)
        .ok()
        .and_then(|text| text.trim().parse::<mime::Mime>().ok())
    else {
        return false;
    };
    if mime.type_() != mime::APPLICATION {
        return false;
    }
    match expected {
        MediaType::Json => mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON),
        MediaType::Form => mime.subtype() == mime::WWW_FORM_URLENCODED,
    }
}

/// Whether the request's `Content-Type` names `expected` (see [`is_media_type`]).
pub fn has_media_type(req: &HttpRequest, expected: MediaType) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| is_media_type(v.as_bytes(), expected))
}

/// Parses a request body into `T`, classifying the failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let invalid_json = |message: String| ApiError::BadRequest {
        code: "invalid_json",
        message,
    };
    let text = std::str::from_utf8(bytes)
        .map_err(|_| invalid_json("the body is not valid UTF-8".into()))?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(invalid_json(
            "the body is empty; a JSON object is required".into(),
        ));
    }
    if !trimmed.starts_with('{') {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            ApiError::bad_request(format!("invalid request body: {e}"))
        } else {
            invalid_json(format!("the body is not valid JSON: {e}"))
        }
    })
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

/// The value of the first cookie called `name`, read straight from the
/// `Cookie` headers (no allocation: forward auth reads one on every check).
pub fn cookie<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// The `User-Agent` header as text, if it is printable.
pub fn user_agent(req: &HttpRequest) -> Option<&str> {
    req.headers().get(header::USER_AGENT)?.to_str().ok()
}

/// A request from an administrator: a valid token whose account is an enabled
/// admin right now (not merely when the token was issued). Else 401 or 403.
#[derive(Debug, Clone)]
pub struct AdminUser {
    pub claims: AccessClaims,
    pub user: crate::store::User,
}

impl FromRequest for AdminUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let Authenticated(claims) = authenticate(&req)?;
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))?;
            let user = state.auth.current_user(&claims).await?;
            if !user.is_admin {
                return Err(ApiError::Forbidden);
            }
            Ok(AdminUser { claims, user })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{is_media_type, MediaType};

    #[test]
    fn media_types_match_as_rfc_9110_says() {
        for json in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            " application/json ",
            "application/merge-patch+json",
        ] {
            assert!(is_media_type(json.as_bytes(), MediaType::Json), "{json}");
            assert!(!is_media_type(json.as_bytes(), MediaType::Form), "{json}");
        }
        for form in [
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded;charset=UTF-8",
            "APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8",
        ] {
            assert!(is_media_type(form.as_bytes(), MediaType::Form), "{form}");
            assert!(!is_media_type(form.as_bytes(), MediaType::Json), "{form}");
        }
        for neither in [
            "",
            "text/json",
            "text/plain",
            "application/jsonp",
            "json",
            "application/json; charset",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded-x",
        ] {
            assert!(
                !is_media_type(neither.as_bytes(), MediaType::Json),
                "{neither}"
            );
            assert!(
                !is_media_type(neither.as_bytes(), MediaType::Form),
                "{neither}"
            );
        }
        assert!(!is_media_type(b"application/json\xff", MediaType::Json));
    }
}
