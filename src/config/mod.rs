//! Configuration: defaults, then a TOML file, then `PORTCULLIS_<SECTION>__<KEY>`
//! environment variables, then command-line flags. Every value is validated before
//! the server binds, and every error names its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod accounts;
mod audit;
mod duration;
mod env;
mod forward_auth;
mod mail;
mod oidc;
mod passwords;
mod rate_limit;
mod server;
mod storage;
mod tokens;
mod web;
mod webauthn;

pub use accounts::AccountsConfig;
pub use audit::AuditConfig;
pub use duration::{Duration, DurationError};
pub use forward_auth::{ForwardAuthConfig, ForwardAuthRule, Policy};
pub use mail::{MailConfig, MailTransport};
pub use oidc::{
    check_uri, is_client_id, ClientAuthMethod, Consent, IdTokenAlg, OidcClientConfig, OidcConfig,
    SCOPES,
};
pub use passwords::PasswordsConfig;
pub use rate_limit::{LimitStoreKind, RateLimitConfig, RuleConfig, RuleName, DEFAULT_RULES};
pub use server::{LogFormat, ServerConfig};
pub use storage::{StorageBackend, StorageConfig};
pub use tokens::{Algorithm, TokensConfig};
pub use web::WebConfig;
pub use webauthn::WebauthnConfig;

use env::{apply_env, default_tree, known_keys, one_line, overlay, path_text};

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "PORTCULLIS_";

/// The configuration file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "portcullis.toml";

/// The whole configuration. Field names are the TOML keys of SPEC section 3.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub tokens: TokensConfig,
    pub passwords: PasswordsConfig,
    pub rate_limit: RateLimitConfig,
    pub audit: AuditConfig,
    pub mail: MailConfig,
    pub accounts: AccountsConfig,
    pub web: WebConfig,
    pub forward_auth: ForwardAuthConfig,
    pub oidc: OidcConfig,
    pub webauthn: WebauthnConfig,
    /// The file this was read from, if any.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// A configuration problem, always naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid configuration: {key}: {reason}")]
    Invalid { key: String, reason: String },
}

pub(super) fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Overrides given on the command line; they win over everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub bind: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Loads the layered configuration: defaults, the file (`path`, else
    /// `./portcullis.toml` when present), the process environment, then `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        // Only our variables must be text; another program's need not be.
        let mut env = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| n.starts_with(ENV_PREFIX)) else {
                continue;
            };
            let value = value.into_string().map_err(|_| ConfigError::Parse {
                origin: format!("environment variable {name}"),
                message: "is not valid UTF-8".into(),
            })?;
            env.push((name.to_owned(), value));
        }
        Self::load_from(path, &env, overrides)
    }

    /// [`Config::load`] with an explicit environment, for tests.
    pub fn load_from(
        path: Option<&Path>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                default.is_file().then_some(default)
            }
        };
        let text = match &file {
            Some(p) => std::fs::read_to_string(p).map_err(|error| ConfigError::Read {
                path: p.clone(),
                error,
            })?,
            None => String::new(),
        };
        let origin = file
            .as_ref()
            .map_or_else(|| "environment".to_owned(), |p| p.display().to_string());
        let mut config = Self::parse(&text, &origin, env)?;
        config.file = file;
        if let Some(bind) = &overrides.bind {
            config.server.bind = bind.clone();
        }
        if let Some(dir) = &overrides.data_dir {
            config.storage.data_dir = dir.clone();
        }
        if let Some(format) = overrides.log_format {
            config.server.log_format = format;
        }
        config.validate()?;
        Ok(config)
    }

    /// The configuration of a TOML document (`origin` names it in errors) under
    /// the environment `env`, before command-line overrides and validation.
    pub fn parse(text: &str, origin: &str, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut tree = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Parse {
                origin: origin.to_owned(),
                message: one_line(e.message()),
            })?;
        let defaults = default_tree();
        known_keys(&tree, &defaults, &mut Vec::new()).map_err(|message| ConfigError::Parse {
            origin: origin.to_owned(),
            message,
        })?;
        apply_env(&mut tree, env, &defaults)?;
        let mut merged = toml::Value::try_from(Config::default())
            .ok()
            .and_then(|v| v.as_table().cloned())
            .unwrap_or_default();
        overlay(&mut merged, tree);
        serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
            // A bad value set by a variable is told as that variable's.
            let key = path_text(e.path());
            let variable = env.iter().map(|(k, _)| k).find(|k| {
                k.strip_prefix(ENV_PREFIX)
                    .is_some_and(|rest| rest.replace("__", ".").eq_ignore_ascii_case(&key))
            });
            ConfigError::Parse {
                origin: variable.map_or_else(
                    || origin.to_owned(),
                    |name| format!("environment variable {name}"),
                ),
                message: format!("{key}: {}", one_line(&e.inner().to_string())),
            }
        })
    }

    /// Checks every value that a type alone cannot, naming the key at fault:
    /// each section checks itself.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.storage.validate()?;
        self.tokens.validate()?;
        self.passwords.validate()?;
        self.rate_limit.validate()?;
        self.audit.validate()?;
        self.mail.validate()?;
        self.accounts.validate()?;
        self.web.validate()?;
        self.forward_auth.validate()?;
        self.oidc.validate()?;
        self.webauthn.validate()?;
        if self.tokens.algorithm == Algorithm::HS256 {
            if let Some((i, c)) = self
                .oidc
                .clients
                .iter()
                .enumerate()
                .find(|(_, c)| c.id_token_signed_response_alg == IdTokenAlg::EdDSA)
            {
                return Err(invalid(
                    &format!(
                        "oidc.clients[{i}] ({:?}).id_token_signed_response_alg",
                        c.id
                    ),
                    "EdDSA id_tokens need tokens.algorithm = \"EdDSA\"",
                ));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, every secret replaced by `"***"`.
    pub fn to_masked_toml(&self) -> String {
        let mut masked = self.clone();
        for secret in [
            &mut masked.storage.encryption_key,
            &mut masked.tokens.secret,
            &mut masked.mail.smtp_url,
            &mut masked.rate_limit.redis_url,
            &mut masked.storage.postgres_url,
        ] {
            if !secret.is_empty() {
                *secret = "***".into();
            }
        }
        for client in &mut masked.oidc.clients {
            for secret in [&mut client.secret, &mut client.secret_hash] {
                if !secret.is_empty() {
                    *secret = "***".into();
                }
            }
        }
        toml::to_string_pretty(&masked).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The path of the SQLite database.
    pub fn database_path(&self) -> PathBuf {
        self.storage.data_dir.join("portcullis.db")
    }

    /// Fills the URLs left empty from the address the server listens on:
    /// `public_url` is `http://<bound>` (an unspecified address such as
    /// 0.0.0.0 becomes the loopback one, the only one known to reach it), and
    /// `reset_url` is `{public_url}/ui/reset-password?token={token}`.
    pub fn resolve_urls(&mut self, bound: SocketAddr) {
        if self.server.public_url.is_empty() {
            let mut shown = bound;
            if shown.ip().is_unspecified() {
                shown.set_ip(match shown {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            self.server.public_url = format!("http://{shown}");
        }
        if self.mail.reset_url.is_empty() {
            self.mail.reset_url = format!(
                "{}/ui/reset-password?token={{token}}",
                self.server.public_url.trim_end_matches('/')
            );
        }
    }
}

#[cfg(test)]
mod tests;
