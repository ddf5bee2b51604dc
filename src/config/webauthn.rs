//! `[webauthn]`: who the passkeys are for (SPEC section 14). Both keys follow
//! `server.public_url` when empty; `auth::passkeys` turns them into the
//! relying party.

use serde::{Deserialize, Serialize};

use super::web::is_host;
use super::{invalid, ConfigError};

/// `[webauthn]`: the relying party of passkeys (SPEC section 14).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebauthnConfig {
    /// The relying party id: a domain name; empty: the host of `public_url`.
    pub rp_id: String,
    /// The origins a browser may sign in from (`https://auth.example.com`);
    /// empty: the origin of `public_url`. On `localhost` any port is accepted.
    pub origins: Vec<String>,
}

impl WebauthnConfig {
    /// Checks what the types alone cannot, naming the key at fault.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.rp_id.is_empty()
            && (!is_host(&self.rp_id) || self.rp_id.parse::<std::net::IpAddr>().is_ok())
        {
            return Err(invalid(
                "webauthn.rp_id",
                "must be a domain name such as example.com (browsers refuse an IP address)",
            ));
        }
        for (i, origin) in self.origins.iter().enumerate() {
            let parsed = url::Url::parse(origin).ok().filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
            });
            if parsed.is_none() {
                return Err(invalid(
                    &format!("webauthn.origins[{i}]"),
                    format!("{origin:?} is not an origin such as https://auth.example.com"),
                ));
            }
        }
        Ok(())
    }
}
