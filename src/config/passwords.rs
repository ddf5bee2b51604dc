//! `[passwords]`: the password policy and the cost of hashing.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordsConfig {
    pub min_length: usize,
    pub max_length: usize,
    pub min_strength: u8,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    pub max_concurrent_hashes: usize,
    pub max_queued_hashes: usize,
}

impl Default for PasswordsConfig {
    fn default() -> Self {
        Self {
            min_length: 12,
            max_length: 128,
            min_strength: 3,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            max_concurrent_hashes: 0,
            max_queued_hashes: 256,
        }
    }
}

impl PasswordsConfig {
    /// Checks what the types alone cannot, naming the key at fault.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.min_length < 1 {
            return Err(invalid("passwords.min_length", "must be at least 1"));
        }
        if self.max_length < self.min_length || self.max_length > 1024 {
            return Err(invalid(
                "passwords.max_length",
                "must be between min_length and 1024",
            ));
        }
        if self.min_strength > 4 {
            return Err(invalid(
                "passwords.min_strength",
                "must be a zxcvbn score from 0 to 4",
            ));
        }
        argon2::Params::new(
            self.argon2_memory_kib,
            self.argon2_iterations,
            self.argon2_parallelism,
            None,
        )
        .map_err(|e| {
            invalid(
                "passwords.argon2_memory_kib",
                format!("argon2 parameters rejected: {e}"),
            )
        })?;
        if self.max_concurrent_hashes > 256 {
            return Err(invalid(
                "passwords.max_concurrent_hashes",
                "must be at most 256",
            ));
        }
        Ok(())
    }
}
