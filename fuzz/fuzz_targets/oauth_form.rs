//! Urlencoded input: the OAuth2 token endpoint's form body and the admin
//! routes' query strings. Nothing may panic; a parsed form has no repeated key.
//! The same bytes as a `Content-Type` value: a media type is accepted only
//! when its type and subtype are the expected ones, whatever the case and
//! the parameters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::audit::query::parse_time;
use portcullis::email::normalize;
use portcullis::http::admin::{AuditQuery, KeyQuery, UsersQuery};
use portcullis::http::extract::{is_media_type, MediaType};
use portcullis::http::oauth::parse_form;

/// The `type/subtype` of a Content-Type value, lower-cased.
fn essence(data: &[u8]) -> String {
    let text = std::str::from_utf8(data).expect("an accepted media type is text");
    text.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fuzz_target!(|data: &[u8]| {
    if is_media_type(data, MediaType::Form) {
        assert_eq!(essence(data), "application/x-www-form-urlencoded");
    }
    if is_media_type(data, MediaType::Json) {
        let essence = essence(data);
        assert!(
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json")),
            "{essence}"
        );
    }
    if let Ok(form) = parse_form::<portcullis::http::oauth::TokenForm>(data) {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(data).expect("parse_form accepted it");
        let names: std::collections::HashSet<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(pairs.len(), names.len(), "no parameter may be repeated");
        if let Some(username) = &form.username {
            let _ = normalize(username);
        }
    }
    if let Ok(q) = serde_urlencoded::from_bytes::<AuditQuery>(data) {
        for t in [q.since, q.until].into_iter().flatten() {
            let _ = parse_time(&t, 1_800_000_000_000);
        }
    }
    let _ = serde_urlencoded::from_bytes::<KeyQuery>(data);
    let _ = serde_urlencoded::from_bytes::<UsersQuery>(data);
});
