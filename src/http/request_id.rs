//! `X-Request-Id` on every response, and one log line per request.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest};
use uuid::Uuid;

use crate::telemetry::fold::{self, Line};

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request, stored in the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The id of `req`, if the middleware ran.
    pub fn of(req: &HttpRequest) -> Option<String> {
        req.extensions().get::<RequestId>().map(|r| r.0.clone())
    }
}

/// A client's id is kept when it is 1 to 128 characters of `[A-Za-z0-9._:-]`.
pub fn is_acceptable(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Middleware: assigns the id, logs the request once, echoes the id back.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .map(HeaderValue::as_bytes)
        .filter(|v| is_acceptable(v))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let mut res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "<unmatched>".to_owned());
    if let Some(state) = res
        .request()
        .app_data::<actix_web::web::Data<super::AppState>>()
    {
        state
            .metrics
            .http_requests
            .with_label_values(&[route.as_str(), res.status().as_str()])
            .inc();
    }
    let status = res.status().as_u16();
    // Milliseconds to two decimals, logged as a number (JSON logs sum and
    // compare it without parsing).
    let latency_ms = (started.elapsed().as_secs_f64() * 100_000.0).round() / 100.0;
    let line = match res
        .request()
        .app_data::<actix_web::web::Data<super::AppState>>()
    {
        Some(state) => {
            // Folded per (route, status, client): the client as the limiter keys it.
            let client = match res.request().peer_addr() {
                Some(peer) => state.limiter.ip_key(
                    state
                        .trusted_proxies
                        .resolve(peer.ip(), res.request().headers()),
                ),
                None => String::new(),
            };
            let (line, closed) =
                state
                    .request_lines
                    .observe(&route, status, &client, state.auth.now());
            fold::log_summaries(closed);
            line
        }
        None => Line::Write,
    };
    match line {
        Line::Write => tracing::info!(
            method = %method,
            route = %route,
            status,
            latency_ms,
            request_id = %id,
            "request"
        ),
        Line::Fold => tracing::debug!(
            method = %method,
            route = %route,
            status,
            latency_ms,
            request_id = %id,
            "request"
        ),
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceptable_ids() {
        assert!(is_acceptable(b"abc-123_x.y:z"));
        assert!(is_acceptable(&[b'a'; 128]));
        assert!(!is_acceptable(&[b'a'; 129]));
        assert!(!is_acceptable(b""));
        assert!(!is_acceptable(b"has space"));
        assert!(!is_acceptable(b"new\nline"));
        assert!(!is_acceptable("ü".as_bytes()));
    }
}
