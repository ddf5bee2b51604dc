//! `[rate_limit]`: where windows live and the rules of SPEC section 6.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Duration};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Where windows live: in this process, or in Redis shared by every instance.
    pub store: LimitStoreKind,
    /// `redis://[user:password@]host:port[/db]`; used with `store = "redis"`.
    pub redis_url: String,
    pub max_keys: u64,
    pub ipv6_prefix: u8,
    pub rules: BTreeMap<String, RuleConfig>,
}

/// Where rate-limit windows live.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LimitStoreKind {
    /// A moka cache in this process (one instance).
    #[default]
    Memory,
    /// Redis, shared by every instance (needs the `redis` cargo feature).
    Redis,
}

/// One tunable rate-limit rule (`[rate_limit.rules.<name>]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub limit: u32,
    pub window: Duration,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// The rules of SPEC section 6 with their default limits and windows.
pub const DEFAULT_RULES: &[(&str, u32, u64)] = &[
    ("login_ip", 5, 900),
    ("login_account", 20, 900),
    ("mfa", 5, 900),
    ("register_ip", 5, 900),
    ("register_ip_hourly", 20, 3600),
    ("refresh_ip", 5, 900),
    ("reset_request_ip", 5, 900),
    ("reset_request_account", 3, 3600),
    ("reset_confirm_ip", 5, 900),
];

impl Default for RateLimitConfig {
    fn default() -> Self {
        let rules = DEFAULT_RULES
            .iter()
            .map(|&(name, limit, window)| {
                let rule = RuleConfig {
                    limit,
                    window: Duration::secs(window),
                    enabled: true,
                };
                (name.to_owned(), rule)
            })
            .collect();
        Self {
            store: LimitStoreKind::Memory,
            redis_url: String::new(),
            max_keys: 1_000_000,
            ipv6_prefix: 64,
            rules,
        }
    }
}

impl RateLimitConfig {
    /// Checks what the types alone cannot, naming the key at fault.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_keys < 1 {
            return Err(invalid("rate_limit.max_keys", "must be at least 1"));
        }
        if !(32..=128).contains(&self.ipv6_prefix) {
            return Err(invalid(
                "rate_limit.ipv6_prefix",
                "must be between 32 and 128",
            ));
        }
        for (name, rule) in &self.rules {
            if !DEFAULT_RULES.iter().any(|(known, _, _)| known == name) {
                let names: Vec<&str> = DEFAULT_RULES.iter().map(|known| known.0).collect();
                return Err(invalid(
                    &format!("rate_limit.rules.{name}"),
                    format!("unknown rule; known rules are {}", names.join(", ")),
                ));
            }
            if rule.limit < 1 {
                return Err(invalid(
                    &format!("rate_limit.rules.{name}.limit"),
                    "must be at least 1",
                ));
            }
            if rule.window.as_secs() < 1 {
                return Err(invalid(
                    &format!("rate_limit.rules.{name}.window"),
                    "must be at least 1s",
                ));
            }
        }

        if self.store == LimitStoreKind::Redis {
            if !cfg!(feature = "redis") {
                return Err(invalid(
                    "rate_limit.store",
                    "\"redis\" needs portcullis built with the `redis` feature \
                     (cargo build --release --features redis)",
                ));
            }
            if !self.redis_url.starts_with("redis://") {
                return Err(invalid(
                    "rate_limit.redis_url",
                    "store = \"redis\" needs a redis://[user:password@]host:port[/db] URL",
                ));
            }
        }
        Ok(())
    }
}
