//! `[accounts]`: what an account may hold.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// `[accounts]`: what an account may hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    /// Live sessions per user; a sign-in beyond it revokes the least recently
    /// used one.
    pub max_sessions: u32,
    /// Anyone may create an account (`POST /auth/register`, the register
    /// page); when false only administrators add users.
    pub open_registration: bool,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            max_sessions: 100,
            open_registration: true,
        }
    }
}

impl AccountsConfig {
    /// Checks what the types alone cannot, naming the key at fault.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.max_sessions) {
            return Err(invalid(
                "accounts.max_sessions",
                "must be between 1 and 100000",
            ));
        }
        Ok(())
    }
}
