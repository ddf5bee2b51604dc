//! `[mail]`: how mail leaves the server.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// How mail leaves the server.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    Outbox,
    Smtp,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    pub transport: MailTransport,
    pub smtp_url: String,
    pub from: String,
    pub reset_url: String,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            transport: MailTransport::Outbox,
            smtp_url: String::new(),
            from: "portcullis <no-reply@localhost>".into(),
            reset_url: String::new(),
        }
    }
}

impl MailConfig {
    /// Checks what the types alone cannot, naming the key at fault.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.transport == MailTransport::Smtp
            && !(self.smtp_url.starts_with("smtp://") || self.smtp_url.starts_with("smtps://"))
        {
            return Err(invalid(
                "mail.smtp_url",
                "smtp transport needs an smtp:// or smtps:// URL",
            ));
        }
        if !self.reset_url.is_empty() && !self.reset_url.contains("{token}") {
            return Err(invalid(
                "mail.reset_url",
                "must contain {token} (or be empty: {public_url}/ui/reset-password?token={token})",
            ));
        }
        Ok(())
    }
}
