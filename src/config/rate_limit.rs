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
    pub rules: BTreeMap<RuleName, RuleConfig>,
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

/// A rule of SPEC section 6, by its configuration name (`[rate_limit.rules.<name>]`);
/// what it keys on and counts is the limiter's (`ratelimit::rules`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleName {
    LoginIp,
    LoginAccount,
    Mfa,
    RegisterIp,
    RegisterIpHourly,
    RefreshIp,
    ResetRequestIp,
    ResetRequestAccount,
    ResetConfirmIp,
    ClientAuthIp,
    PasskeyStartIp,
}

impl RuleName {
    pub const ALL: [RuleName; 11] = [
        Self::LoginIp,
        Self::LoginAccount,
        Self::Mfa,
        Self::RegisterIp,
        Self::RegisterIpHourly,
        Self::RefreshIp,
        Self::ResetRequestIp,
        Self::ResetRequestAccount,
        Self::ResetConfirmIp,
        Self::ClientAuthIp,
        Self::PasskeyStartIp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginIp => "login_ip",
            Self::LoginAccount => "login_account",
            Self::Mfa => "mfa",
            Self::RegisterIp => "register_ip",
            Self::RegisterIpHourly => "register_ip_hourly",
            Self::RefreshIp => "refresh_ip",
            Self::ResetRequestIp => "reset_request_ip",
            Self::ResetRequestAccount => "reset_request_account",
            Self::ResetConfirmIp => "reset_confirm_ip",
            Self::ClientAuthIp => "client_auth_ip",
            Self::PasskeyStartIp => "passkey_start_ip",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

// By name, as text: a map keyed by rules reads and writes like one keyed
// by strings (and an error names the key).
impl Serialize for RuleName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RuleName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::parse(&name).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
            serde::de::Error::custom(format!(
                "unknown rate-limit rule `{name}` (rules: {})",
                names.join(", ")
            ))
        })
    }
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
pub const DEFAULT_RULES: [(RuleName, u32, u64); 11] = [
    (RuleName::LoginIp, 5, 900),
    (RuleName::LoginAccount, 20, 900),
    (RuleName::Mfa, 5, 900),
    (RuleName::RegisterIp, 5, 900),
    (RuleName::RegisterIpHourly, 20, 3600),
    (RuleName::RefreshIp, 5, 900),
    (RuleName::ResetRequestIp, 5, 900),
    (RuleName::ResetRequestAccount, 3, 3600),
    (RuleName::ResetConfirmIp, 5, 900),
    (RuleName::ClientAuthIp, 20, 900),
    (RuleName::PasskeyStartIp, 30, 60),
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
                (name, rule)
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
            let name = name.as_str();
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
