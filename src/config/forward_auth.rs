//! `[forward_auth]`: who may reach which app behind a reverse proxy (SPEC
//! section 12). Rules are checked here, at start-up, with errors that name
//! the rule and the key; `authz::Rules` compiles them for the hot path.

use serde::{Deserialize, Serialize};

use super::web::is_host;
use super::{invalid, ConfigError};

/// What a rule asks of a request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Anyone, signed in or not; no identity headers.
    Bypass,
    /// A signed-in user.
    OneFactor,
    /// A user signed in with a second factor (TOTP, backup code, passkey).
    TwoFactor,
    /// No one.
    Deny,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bypass => "bypass",
            Self::OneFactor => "one_factor",
            Self::TwoFactor => "two_factor",
            Self::Deny => "deny",
        }
    }
}

/// One `[[forward_auth.rules]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthRule {
    /// An exact host or `*.suffix` (hosts compared without port).
    pub domain: String,
    /// Path prefixes; none: every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Methods; none: every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    pub policy: Policy,
    /// `group:NAME` or `user:EMAIL`; any one suffices; none: every user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
}

/// `[forward_auth]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardAuthConfig {
    /// For a request that no rule matches.
    pub default_policy: Policy,
    /// First match wins.
    pub rules: Vec<ForwardAuthRule>,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        Self {
            default_policy: Policy::Deny,
            rules: Vec::new(),
        }
    }
}

impl ForwardAuthConfig {
    /// Checks every rule, naming the rule and key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, rule) in self.rules.iter().enumerate() {
            let key = |k: &str| format!("forward_auth.rules[{i}].{k}");
            let host = rule.domain.strip_prefix("*.").unwrap_or(&rule.domain);
            if !is_host(host) {
                return Err(invalid(
                    &key("domain"),
                    format!(
                        "{:?} is not a host or *.suffix (lower case, without scheme, port or path)",
                        rule.domain
                    ),
                ));
            }
            for path in &rule.paths {
                if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ')
                {
                    return Err(invalid(
                        &key("paths"),
                        format!("{path:?} must start with / and hold no spaces"),
                    ));
                }
            }
            for method in &rule.methods {
                if !is_method(method) {
                    return Err(invalid(
                        &key("methods"),
                        format!("{method:?} is not an upper-case method such as GET"),
                    ));
                }
            }
            for subject in &rule.subjects {
                let ok = match subject.split_once(':') {
                    Some(("group", name)) => crate::group_name::is_group_name(name),
                    Some(("user", email)) => crate::email::Email::parse(email).is_ok(),
                    _ => false,
                };
                if !ok {
                    return Err(invalid(
                        &key("subjects"),
                        format!("{subject:?} is not group:NAME or user:EMAIL"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// An HTTP method as rules name it: an upper-case token.
pub fn is_method(method: &str) -> bool {
    (1..=20).contains(&method.len()) && method.bytes().all(|b| b.is_ascii_uppercase())
}
