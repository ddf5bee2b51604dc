//! The rules of SPEC section 6: what each one keys on, counts and guards.

use crate::clock::Millis;
use crate::config::RateLimitConfig;
pub use crate::config::RuleName;

/// What a rule's key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The client IP (IPv6 grouped by prefix).
    Ip,
    /// The normalized email address, known or not.
    Account,
}

/// Which answers a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    /// Every request; the slot is never given back.
    All,
    /// Only requests answered with a 4xx after parsing; success gives the slot back.
    Failures,
}

impl RuleName {
    pub fn key_kind(self) -> KeyKind {
        match self {
            Self::LoginAccount | Self::Mfa | Self::ResetRequestAccount => KeyKind::Account,
            _ => KeyKind::Ip,
        }
    }

    pub fn counts(self) -> Counts {
        match self {
            Self::RegisterIpHourly
            | Self::ResetRequestIp
            | Self::ResetRequestAccount
            | Self::PasskeyStartIp => Counts::All,
            _ => Counts::Failures,
        }
    }

    /// A dense index, for tables keyed by rule.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether a request that failed `check` is a failure under this rule. The
    /// login rules count wrong passwords, `mfa` wrong codes; where a route
    /// checks both (turning TOTP on or off), each rule counts only its own.
    pub fn counts_failed(self, check: Check) -> bool {
        match self {
            Self::LoginIp | Self::LoginAccount => check == Check::Password,
            Self::Mfa => check == Check::SecondFactor,
            _ => true,
        }
    }
}

/// Which secret a refused request got wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Password,
    SecondFactor,
}

/// A group of routes that share rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    /// `/auth/login`, the password grant of `/auth/token`, `/auth/password/change`.
    Login,
    /// `/auth/login/mfa` and every TOTP / backup code check.
    Mfa,
    /// `/auth/passkeys/login/finish` and the login page's passkey: the
    /// account is known only from the answer, so only the address counts.
    PasskeyLogin,
    /// `/auth/passkeys/login/start`: each stores a ceremony, so each counts.
    PasskeyStart,
    /// Turning TOTP on or off: the current password under the login rules,
    /// the code under `mfa`.
    SecondFactorChange,
    Register,
    /// `/auth/refresh` and the refresh grant of `/auth/token`.
    Refresh,
    ResetRequest,
    ResetConfirm,
    /// `/oidc/token`, `/oidc/introspect`, `/oidc/revoke`: a client's secret.
    ClientAuth,
}

impl Guarded {
    pub fn rules(self) -> &'static [RuleName] {
        use RuleName::*;
        match self {
            Self::Login => &[LoginIp, LoginAccount],
            Self::Mfa => &[Mfa],
            Self::PasskeyLogin => &[LoginIp],
            Self::PasskeyStart => &[PasskeyStartIp],
            Self::SecondFactorChange => &[LoginIp, LoginAccount, Mfa],
            Self::Register => &[RegisterIp, RegisterIpHourly],
            Self::Refresh => &[RefreshIp],
            Self::ResetRequest => &[ResetRequestIp, ResetRequestAccount],
            Self::ResetConfirm => &[ResetConfirmIp],
            Self::ClientAuth => &[ClientAuthIp],
        }
    }

    /// The human text of a 429 on these routes.
    pub fn blocked_message(self, retry_after: u64) -> String {
        match self {
            Self::Login | Self::PasskeyLogin => {
                format!("Too many login attempts. Try again in {retry_after} seconds.")
            }
            _ => format!("Too many requests. Try again in {retry_after} seconds."),
        }
    }
}

/// A rule's limit and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub name: RuleName,
    pub limit: u32,
    pub window_ms: Millis,
}

impl Rule {
    /// `RateLimit-Policy` value, for example `5;w=900`.
    pub fn policy(&self) -> String {
        format!("{};w={}", self.limit, self.window_ms / 1000)
    }
}

/// The enabled rules.
#[derive(Debug, Clone)]
pub struct Rules([Option<Rule>; RuleName::ALL.len()]);

impl Rules {
    pub fn from_config(cfg: &RateLimitConfig) -> Self {
        let mut rules = [None; RuleName::ALL.len()];
        for name in RuleName::ALL {
            if let Some(c) = cfg.rules.get(&name).filter(|c| c.enabled) {
                rules[name.index()] = Some(Rule {
                    name,
                    limit: c.limit,
                    window_ms: c.window.as_millis_i64(),
                });
            }
        }
        Self(rules)
    }

    /// The rule, if enabled.
    pub fn get(&self, name: RuleName) -> Option<&Rule> {
        self.0[name.index()].as_ref()
    }

    pub fn enabled(&self) -> impl Iterator<Item = &Rule> {
        self.0.iter().flatten()
    }

    /// The longest window of any enabled rule.
    pub fn longest_window_ms(&self) -> Millis {
        self.enabled().map(|r| r.window_ms).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn defaults_match_the_spec_table() {
        let rules = Rules::from_config(&Config::default().rate_limit);
        let table: Vec<(&str, u32, i64)> = rules
            .enabled()
            .map(|r| (r.name.as_str(), r.limit, r.window_ms / 1000))
            .collect();
        assert_eq!(
            table,
            vec![
                ("login_ip", 5, 900),
                ("login_account", 20, 900),
                ("mfa", 5, 900),
                ("register_ip", 5, 900),
                ("register_ip_hourly", 20, 3600),
                ("refresh_ip", 5, 900),
                ("reset_request_ip", 5, 900),
                ("reset_request_account", 3, 3600),
                ("reset_confirm_ip", 5, 900),
                ("client_auth_ip", 20, 900),
                // Beyond the table: each passkey sign-in start stores a challenge.
                ("passkey_start_ip", 30, 60),
            ]
        );
        for name in RuleName::ALL {
            assert_eq!(RuleName::parse(name.as_str()), Some(name));
        }
        assert_eq!(rules.get(RuleName::LoginIp).unwrap().policy(), "5;w=900");
    }

    #[test]
    fn disabled_rules_are_absent() {
        let mut cfg = Config::default().rate_limit;
        cfg.rules.get_mut(&RuleName::Mfa).unwrap().enabled = false;
        let rules = Rules::from_config(&cfg);
        assert!(rules.get(RuleName::Mfa).is_none());
        assert_eq!(rules.enabled().count(), RuleName::ALL.len() - 1);
    }
}
