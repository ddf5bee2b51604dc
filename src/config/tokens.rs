//! `[tokens]`: how access tokens are signed and how long sessions live.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Duration};

/// Signing algorithm of access tokens.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Algorithm {
    EdDSA,
    HS256,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    pub issuer: String,
    pub audience: String,
    pub algorithm: Algorithm,
    /// HS256 secret (at least 32 bytes); unused with EdDSA.
    pub secret: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub session_ttl: Duration,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            issuer: "portcullis".into(),
            audience: "portcullis".into(),
            algorithm: Algorithm::EdDSA,
            secret: String::new(),
            access_ttl: Duration::secs(3600),
            refresh_ttl: Duration::secs(30 * 86_400),
            session_ttl: Duration::secs(86_400),
        }
    }
}

impl TokensConfig {
    /// Checks what the types alone cannot, naming the key at fault.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.issuer.is_empty() {
            return Err(invalid("tokens.issuer", "must not be empty"));
        }
        if self.audience.is_empty() {
            return Err(invalid("tokens.audience", "must not be empty"));
        }
        if self.algorithm == Algorithm::HS256 && self.secret.len() < 32 {
            return Err(invalid(
                "tokens.secret",
                "HS256 needs a secret of at least 32 bytes",
            ));
        }
        for (key, d) in [
            ("tokens.access_ttl", self.access_ttl),
            ("tokens.refresh_ttl", self.refresh_ttl),
            ("tokens.session_ttl", self.session_ttl),
        ] {
            if d.as_secs() < 1 {
                return Err(invalid(key, "must be at least 1s"));
            }
        }
        Ok(())
    }
}
