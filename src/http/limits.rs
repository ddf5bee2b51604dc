//! Caps on what a request may carry before any handler sees it, and the
//! deadline for its body. The HTTP parser bounds a request head at 128 KiB and
//! 96 header lines and closes connections whose head is late
//! (`server.header_timeout`); these tighter, configured caps answer with our
//! JSON error instead.

use std::future::Future;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpRequest};

use super::AppState;
use crate::config::ServerConfig;
use crate::error::ApiError;

/// Bytes of a request head as the caps count them: the request line and every
/// header line, without the framing (`": "`, CRLF).
pub fn head_bytes(req: &HttpRequest) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + "HTTP/1.1".len();
    req.headers().iter().fold(line, |n, (name, value)| {
        n + name.as_str().len() + value.len()
    })
}

/// Refuses a request whose head is over `server.max_header_bytes` or has more
/// than `server.max_headers` lines: 431 with our error body.
pub fn check_head(req: &HttpRequest, cfg: &ServerConfig) -> Result<(), ApiError> {
    let lines = req.headers().len();
    if lines > cfg.max_headers {
        return Err(ApiError::HeadersTooLarge(format!(
            "the request has {lines} header lines; at most {} are accepted",
            cfg.max_headers
        )));
    }
    let bytes = head_bytes(req);
    if bytes > cfg.max_header_bytes {
        return Err(ApiError::HeadersTooLarge(format!(
            "the request head is {bytes} bytes; at most {} are accepted",
            cfg.max_header_bytes
        )));
    }
    Ok(())
}

/// Middleware applying [`check_head`].
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let verdict = match req.app_data::<web::Data<AppState>>() {
        Some(state) => check_head(req.request(), &state.config.server),
        None => Ok(()),
    };
    match verdict {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(e) => Ok(req.error_response(e).map_into_right_body()),
    }
}

/// How long a request's body may take to arrive (`server.body_timeout`).
pub fn body_timeout(req: &HttpRequest) -> Duration {
    req.app_data::<web::Data<AppState>>()
        .map_or(Duration::from_secs(10), |s| {
            s.config.server.body_timeout.std()
        })
}

/// Awaits a body read for at most `limit`; 408 after that.
pub async fn within<T>(limit: Duration, read: impl Future<Output = T>) -> Result<T, ApiError> {
    tokio::time::timeout(limit, read)
        .await
        .map_err(|_| ApiError::RequestTimeout)
}
