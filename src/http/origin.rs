//! Whether a request that changes something came from our own pages: the
//! check of every form (SPEC section 11), and of the JSON routes that the
//! passkey script calls with the session cookie instead of a bearer token.

use actix_web::http::header;
use actix_web::HttpRequest;
use url::Url;

use crate::config::Config;

/// Whether a POST came from our own pages: no `Sec-Fetch-Site` of another
/// site, and an `Origin`, when sent (and not `null`), of `public_url` or of
/// the host asked.
pub fn same_origin(req: &HttpRequest, config: &Config) -> bool {
    let headers = req.headers();
    let site = headers.get("sec-fetch-site").map(|s| s.as_bytes());
    if site.is_some_and(|s| !matches!(s, b"same-origin" | b"none")) {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    // Under `Referrer-Policy: no-referrer` browsers send `Origin: null` with
    // their own pages' forms too: then only a `Sec-Fetch-Site` that says
    // same-origin vouches for it.
    if origin == "null" {
        return site == Some(b"same-origin");
    }
    let public = Url::parse(&config.server.public_url).ok();
    if public
        .as_ref()
        .is_some_and(|p| p.origin().ascii_serialization() == origin)
    {
        return true;
    }
    // The host the browser asked for (behind a proxy that keeps `Host`).
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Ok(origin) = Url::parse(origin) else {
        return false;
    };
    let asked = match origin.port() {
        Some(port) => format!("{}:{port}", origin.host_str().unwrap_or_default()),
        None => origin.host_str().unwrap_or_default().to_owned(),
    };
    let scheme = public.as_ref().map_or("http", |p| p.scheme());
    origin.scheme() == scheme && asked.eq_ignore_ascii_case(host)
}
