//! `[web]`: the pages for people (SPEC section 11).

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// `[web]`: the pages for people (SPEC section 11).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Serve the pages under `/ui/` (and `/` redirecting to them).
    pub enabled: bool,
    /// The name shown in the pages' titles and headers.
    pub title: String,
    /// The `Domain` of the session cookie, so that one sign-in covers every
    /// app under it (`example.com` covers `*.example.com`); empty: this host only.
    pub cookie_domain: String,
    /// Hosts that `rd` may send a person back to after signing in, besides
    /// `public_url`'s: exact hosts or `*.suffix`.
    pub allowed_redirect_domains: Vec<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            title: "portcullis".into(),
            cookie_domain: String::new(),
            allowed_redirect_domains: Vec::new(),
        }
    }
}

impl WebConfig {
    /// Checks what the types alone cannot, naming the key at fault.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let title = self.title.trim();
        if title.is_empty() || title.chars().count() > 64 || title.chars().any(char::is_control) {
            return Err(invalid(
                "web.title",
                "must be 1 to 64 characters, without control characters",
            ));
        }
        if !self.cookie_domain.is_empty() && !is_host(self.cookie_domain.trim_start_matches('.')) {
            return Err(invalid(
                "web.cookie_domain",
                "must be a domain name such as example.com",
            ));
        }
        for (i, domain) in self.allowed_redirect_domains.iter().enumerate() {
            if !is_host(domain.strip_prefix("*.").unwrap_or(domain)) {
                return Err(invalid(
                    &format!("web.allowed_redirect_domains[{i}]"),
                    format!("{domain:?} is not a host or *.suffix"),
                ));
            }
        }
        Ok(())
    }
}

/// A host name (letters, digits, `-` and `.`), lower case, or an IP address.
pub(super) fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && (host.parse::<std::net::IpAddr>().is_ok()
            || host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            }))
}
