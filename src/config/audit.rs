//! `[audit]`: retention and the folding of floods.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Duration};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub retention_days: u32,
    pub coalesce_window: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: 365,
            coalesce_window: Duration::secs(60),
        }
    }
}

impl AuditConfig {
    /// Checks what the types alone cannot, naming the key at fault.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.coalesce_window.as_secs() < 1 {
            return Err(invalid("audit.coalesce_window", "must be at least 1s"));
        }
        Ok(())
    }
}
