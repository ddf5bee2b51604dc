//! Configuration: defaults, then a TOML file, then `PORTCULLIS_<SECTION>__<KEY>`
//! environment variables, then command-line flags. Every value is validated before
//! the server binds, and every error names its key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    /// The file this was read from, if any.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// `[accounts]`: what an account may hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    /// Live sessions per user; a sign-in beyond it revokes the least recently
    /// used one.
    pub max_sessions: u32,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self { max_sessions: 100 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: String,
    /// Peers allowed to set `X-Forwarded-For` / `X-Real-IP`.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// The externally visible base URL.
    pub public_url: String,
    /// HTTP worker threads; 0 = number of CPU cores.
    pub workers: usize,
    /// Process log format.
    pub log_format: LogFormat,
    /// Time a client has to send a request's line and headers; then 408.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body once its headers are in; then 408.
    pub body_timeout: Duration,
    /// How long an idle keep-alive connection is kept open.
    pub keep_alive: Duration,
    /// Open connections at most, over all workers; more wait to be accepted.
    pub max_connections: usize,
    /// Largest request head (request line plus every header name and value).
    pub max_header_bytes: usize,
    /// Most header lines in one request.
    pub max_headers: usize,
}

/// How the process log is written.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where accounts, sessions and the audit log live.
    pub backend: StorageBackend,
    pub data_dir: PathBuf,
    /// 64 hex characters; empty = `data_dir/encryption.key`.
    pub encryption_key: String,
    /// `postgres://user:password@host:port/database`; used with `backend = "postgres"`.
    pub postgres_url: String,
}

/// Where durable state lives.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// One SQLite file in `data_dir` (one host).
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by every instance (needs the `postgres` cargo feature).
    Postgres,
}

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub retention_days: u32,
    pub coalesce_window: Duration,
}

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

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            trusted_proxies: Vec::new(),
            max_body_bytes: 16_384,
            public_url: String::new(),
            workers: 0,
            log_format: LogFormat::Text,
            header_timeout: Duration::secs(5),
            body_timeout: Duration::secs(10),
            keep_alive: Duration::secs(5),
            max_connections: 10_000,
            max_header_bytes: 16_384,
            max_headers: 64,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Sqlite,
            data_dir: PathBuf::from("./data"),
            encryption_key: String::new(),
            postgres_url: String::new(),
        }
    }
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

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: 365,
            coalesce_window: Duration::secs(60),
        }
    }
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

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
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

    /// Checks every value that a type alone cannot, naming the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        SocketAddr::from_str(&s.bind).map_err(|_| {
            invalid(
                "server.bind",
                format!("`{}` is not an address like 127.0.0.1:8080", s.bind),
            )
        })?;
        if s.max_body_bytes < 256 || s.max_body_bytes > 16 * 1024 * 1024 {
            return Err(invalid(
                "server.max_body_bytes",
                "must be between 256 and 16777216",
            ));
        }
        let http = |url: &str| url.starts_with("http://") || url.starts_with("https://");
        if !s.public_url.is_empty() && !http(&s.public_url) {
            return Err(invalid(
                "server.public_url",
                "must start with http:// or https:// (or be empty: http://<bind>)",
            ));
        }
        if s.workers > 1024 {
            return Err(invalid("server.workers", "must be at most 1024"));
        }
        for (key, d) in [
            ("server.header_timeout", s.header_timeout),
            ("server.body_timeout", s.body_timeout),
            ("server.keep_alive", s.keep_alive),
        ] {
            if d.as_millis_i64() < 1 || d.as_secs() > 3600 {
                return Err(invalid(key, "must be between 1ms and 1h"));
            }
        }
        if !(1..=1_000_000).contains(&s.max_connections) {
            return Err(invalid(
                "server.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        if !(1024..=65_536).contains(&s.max_header_bytes) {
            return Err(invalid(
                "server.max_header_bytes",
                "must be between 1024 and 65536",
            ));
        }
        // The HTTP parser itself refuses more than 96 header lines.
        if !(8..=96).contains(&s.max_headers) {
            return Err(invalid("server.max_headers", "must be between 8 and 96"));
        }

        let key = &self.storage.encryption_key;
        if !key.is_empty() && (key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(invalid(
                "storage.encryption_key",
                "must be 64 hex characters (256 bits) or empty",
            ));
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return Err(invalid("storage.data_dir", "must not be empty"));
        }
        if self.storage.backend == StorageBackend::Postgres {
            if !cfg!(feature = "postgres") {
                return Err(invalid(
                    "storage.backend",
                    "\"postgres\" needs portcullis built with the `postgres` feature \
                     (cargo build --release --features postgres)",
                ));
            }
            let url = &self.storage.postgres_url;
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(invalid(
                    "storage.postgres_url",
                    "backend = \"postgres\" needs a postgres://user:password@host:port/database URL",
                ));
            }
            if key.is_empty() {
                return Err(invalid(
                    "storage.encryption_key",
                    "backend = \"postgres\" needs the key set here (the same on every instance), \
                     not a key file that each host would make its own",
                ));
            }
        }

        let t = &self.tokens;
        if t.issuer.is_empty() {
            return Err(invalid("tokens.issuer", "must not be empty"));
        }
        if t.audience.is_empty() {
            return Err(invalid("tokens.audience", "must not be empty"));
        }
        if t.algorithm == Algorithm::HS256 && t.secret.len() < 32 {
            return Err(invalid(
                "tokens.secret",
                "HS256 needs a secret of at least 32 bytes",
            ));
        }
        for (key, d) in [
            ("tokens.access_ttl", t.access_ttl),
            ("tokens.refresh_ttl", t.refresh_ttl),
            ("tokens.session_ttl", t.session_ttl),
        ] {
            if d.as_secs() < 1 {
                return Err(invalid(key, "must be at least 1s"));
            }
        }

        let p = &self.passwords;
        if p.min_length < 1 {
            return Err(invalid("passwords.min_length", "must be at least 1"));
        }
        if p.max_length < p.min_length || p.max_length > 1024 {
            return Err(invalid(
                "passwords.max_length",
                "must be between min_length and 1024",
            ));
        }
        if p.min_strength > 4 {
            return Err(invalid(
                "passwords.min_strength",
                "must be a zxcvbn score from 0 to 4",
            ));
        }
        argon2::Params::new(
            p.argon2_memory_kib,
            p.argon2_iterations,
            p.argon2_parallelism,
            None,
        )
        .map_err(|e| {
            invalid(
                "passwords.argon2_memory_kib",
                format!("argon2 parameters rejected: {e}"),
            )
        })?;
        if p.max_concurrent_hashes > 256 {
            return Err(invalid(
                "passwords.max_concurrent_hashes",
                "must be at most 256",
            ));
        }

        let r = &self.rate_limit;
        if r.max_keys < 1 {
            return Err(invalid("rate_limit.max_keys", "must be at least 1"));
        }
        if !(32..=128).contains(&r.ipv6_prefix) {
            return Err(invalid(
                "rate_limit.ipv6_prefix",
                "must be between 32 and 128",
            ));
        }
        for (name, rule) in &r.rules {
            if !DEFAULT_RULES.iter().any(|(known, _, _)| known == name) {
                let names: Vec<&str> = DEFAULT_RULES.iter().map(|r| r.0).collect();
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

        let r = &self.rate_limit;
        if r.store == LimitStoreKind::Redis {
            if !cfg!(feature = "redis") {
                return Err(invalid(
                    "rate_limit.store",
                    "\"redis\" needs portcullis built with the `redis` feature \
                     (cargo build --release --features redis)",
                ));
            }
            if !r.redis_url.starts_with("redis://") {
                return Err(invalid(
                    "rate_limit.redis_url",
                    "store = \"redis\" needs a redis://[user:password@]host:port[/db] URL",
                ));
            }
        }

        if self.audit.coalesce_window.as_secs() < 1 {
            return Err(invalid("audit.coalesce_window", "must be at least 1s"));
        }

        let m = &self.mail;
        if m.transport == MailTransport::Smtp
            && !(m.smtp_url.starts_with("smtp://") || m.smtp_url.starts_with("smtps://"))
        {
            return Err(invalid(
                "mail.smtp_url",
                "smtp transport needs an smtp:// or smtps:// URL",
            ));
        }
        if !m.reset_url.is_empty() && !m.reset_url.contains("{token}") {
            return Err(invalid(
                "mail.reset_url",
                "must contain {token} (or be empty: {public_url}/ui/reset-password?token={token})",
            ));
        }

        if !(1..=100_000).contains(&self.accounts.max_sessions) {
            return Err(invalid(
                "accounts.max_sessions",
                "must be between 1 and 100000",
            ));
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

fn path_text(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." {
        "config".to_owned()
    } else {
        text
    }
}

/// Writes `PORTCULLIS_<SECTION>__<KEY>[__<KEY>…]` variables into the TOML tree.
/// A value becomes a string when the key's default is a string; otherwise it is
/// read as a TOML value (`10`, `true`, `["10.0.0.0/8"]`).
/// The defaults as a TOML tree: every key there is.
fn default_tree() -> toml::Table {
    toml::Value::try_from(Config::default())
        .ok()
        .and_then(|v| v.as_table().cloned())
        .unwrap_or_default()
}

/// The first line of an error message (serde and toml add context lines).
fn one_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim().to_owned()
}

/// Refuses a key that `defaults` does not have, with the same words whether
/// it came from the file or the environment.
fn known_keys(
    tree: &toml::Table,
    defaults: &toml::Table,
    at: &mut Vec<String>,
) -> Result<(), String> {
    for (key, value) in tree {
        at.push(key.clone());
        let dotted = at.join(".");
        match (defaults.get(key), value) {
            (Some(toml::Value::Table(d)), toml::Value::Table(t)) => known_keys(t, d, at)?,
            (Some(d), toml::Value::Table(_)) if !d.is_table() => {
                return Err(format!("{dotted}: is a key, not a section"));
            }
            (Some(_), _) => {}
            (None, _) => {
                let names = defaults
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                let parent = &at[..at.len() - 1];
                return Err(if parent.is_empty() {
                    format!("{dotted}: unknown section (sections: {names})")
                } else if parent == ["rate_limit", "rules"] {
                    format!("{dotted}: unknown rate-limit rule (rules: {names})")
                } else {
                    format!(
                        "{dotted}: unknown key (keys of [{}]: {names})",
                        parent.join(".")
                    )
                });
            }
        }
        at.pop();
    }
    Ok(())
}

/// Every key there is, as the variable that sets it.
fn env_names(table: &toml::Table, at: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let name = if at.is_empty() {
            key.to_ascii_uppercase()
        } else {
            format!("{at}__{}", key.to_ascii_uppercase())
        };
        match value {
            toml::Value::Table(t) => env_names(t, &name, out),
            _ => out.push(name),
        }
    }
}

/// Whether `name` is one of the variables Kubernetes gives every pod for a
/// Service named `portcullis` (`PORTCULLIS_SERVICE_HOST`, `PORTCULLIS_PORT`,
/// `PORTCULLIS_PORT_8080_TCP_ADDR`, …): not ours, and never a key (keys
/// have a `__`), so they are passed over rather than refused.
fn kubernetes_service_link(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        return false;
    };
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    };
    if rest == "SERVICE_HOST" || rest == "SERVICE_PORT" || rest == "PORT" {
        return true;
    }
    if let Some(port_name) = rest.strip_prefix("SERVICE_PORT_") {
        return word(port_name);
    }
    let Some(port) = rest.strip_prefix("PORT_") else {
        return false;
    };
    let mut parts = port.splitn(3, '_');
    let number = parts.next().unwrap_or_default();
    let protocol = parts.next().unwrap_or_default();
    let field = parts.next();
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && matches!(protocol, "TCP" | "UDP" | "SCTP")
        && field.is_none_or(|f| matches!(f, "PROTO" | "PORT" | "ADDR"))
}

/// A `PORTCULLIS_` variable that names no key: what it may have meant.
fn no_such_variable(name: &str, defaults: &toml::Table) -> ConfigError {
    let given = &name[ENV_PREFIX.len()..];
    let mut names = Vec::new();
    env_names(defaults, "", &mut names);
    let meant: Vec<String> = names
        .iter()
        .filter(|n| n.replace("__", "_") == given || n.rsplit("__").next() == Some(given))
        .map(|n| format!("{ENV_PREFIX}{n}"))
        .collect();
    let hint = if meant.is_empty() {
        format!("variables are {ENV_PREFIX}<SECTION>__<KEY>, such as {ENV_PREFIX}SERVER__BIND")
    } else {
        format!("did you mean {}?", meant.join(" or "))
    };
    ConfigError::Parse {
        origin: format!("environment variable {name}"),
        message: format!("names no configuration key ({hint})"),
    }
}

/// Writes every `PORTCULLIS_<SECTION>__<KEY>` variable into `tree`; one that
/// names no key is an error, worded as for the same key in a file.
fn apply_env(
    tree: &mut toml::Table,
    env: &[(String, String)],
    defaults: &toml::Table,
) -> Result<(), ConfigError> {
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !kubernetes_service_link(k))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            return Err(no_such_variable(name, defaults));
        }
        let from_env = |message: String| ConfigError::Parse {
            origin: format!("environment variable {name}"),
            message,
        };
        let value = match lookup(defaults, &path) {
            Some(toml::Value::String(_)) => toml::Value::String(raw.clone()),
            _ => parse_env_value(raw),
        };
        let mut alone = toml::Table::new();
        insert(&mut alone, &path, value.clone()).map_err(from_env)?;
        known_keys(&alone, defaults, &mut Vec::new()).map_err(from_env)?;
        insert(tree, &path, value).map_err(|reason| invalid(name, reason))?;
    }
    Ok(())
}

/// Writes `top` over `base`, merging tables key by key (so a file that sets one
/// key of a rule keeps the rule's other defaults).
fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(first)?;
    if rest.is_empty() {
        return Some(value);
    }
    match value {
        toml::Value::Table(t) => lookup(t, rest),
        _ => None,
    }
}

fn insert(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        return Err("empty key".into());
    };
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => insert(t, rest, value),
        _ => Err(format!("`{first}` is not a section")),
    }
}

/// A span of time written as a string: `"900s"`, `"15m"`, `"1h"`, `"30d"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// A duration of whole seconds.
    pub const fn secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }

    /// Milliseconds, saturating at `i64::MAX`.
    pub fn as_millis_i64(&self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }

    pub fn std(&self) -> std::time::Duration {
        self.0
    }
}

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a duration like \"900s\", \"15m\", \"1h\" or \"30d\"")]
pub struct DurationError(String);

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || DurationError(text.chars().take(40).collect());
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() || digits.len() > 12 {
            return Err(err());
        }
        let n: u64 = digits.parse().map_err(|_| err())?;
        let ms = match unit {
            "ms" => n,
            "s" => n * 1_000,
            "m" => n * 60_000,
            "h" => n * 3_600_000,
            "d" => n * 86_400_000,
            _ => return Err(err()),
        };
        Ok(Self(std::time::Duration::from_millis(ms)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let (n, unit) = if !ms.is_multiple_of(1000) {
            (ms, "ms")
        } else {
            let s = ms / 1000;
            match s {
                0 => (0, "s"),
                s if s % 86_400 == 0 => (s / 86_400, "d"),
                s if s % 3_600 == 0 => (s / 3_600, "h"),
                s if s % 60 == 0 => (s / 60, "m"),
                s => (s, "s"),
            }
        };
        write!(f, "{n}{unit}")
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({self})")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load(file: Option<&str>, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        } else {
            std::fs::write(&path, "").unwrap();
        }
        Config::load_from(Some(&path), &env(vars), &Overrides::default())
    }

    #[test]
    fn durations_parse_and_print() {
        for (text, secs) in [
            ("900s", 900),
            ("15m", 900),
            ("1h", 3600),
            ("30d", 2_592_000),
        ] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.as_secs(), secs, "{text}");
        }
        assert_eq!(Duration::secs(900).to_string(), "15m");
        assert_eq!(Duration::secs(61).to_string(), "61s");
        assert_eq!("250ms".parse::<Duration>().unwrap().to_string(), "250ms");
        for bad in [
            "",
            "15",
            "m",
            "-5m",
            "1.5h",
            "15 m",
            "15min",
            "99999999999999h",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let loaded = load(None, &[]).unwrap();
        assert!(loaded.file.is_some());
        assert_eq!(
            Config {
                file: None,
                ..loaded
            },
            Config::default()
        );
    }

    #[test]
    fn file_then_env_then_flags() {
        let file = "[server]\nbind = \"127.0.0.1:7000\"\nmax_body_bytes = 4096\n";
        let cfg = load(Some(file), &[("PORTCULLIS_SERVER__BIND", "0.0.0.0:9000")]).unwrap();
        assert_eq!(cfg.server.bind, "0.0.0.0:9000");
        assert_eq!(cfg.server.max_body_bytes, 4096);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file).unwrap();
        let flags = Overrides {
            bind: Some("127.0.0.1:1234".into()),
            data_dir: Some("/tmp/x".into()),
            log_format: Some(LogFormat::Json),
        };
        let vars = env(&[("PORTCULLIS_SERVER__BIND", "0.0.0.0:9000")]);
        let cfg = Config::load_from(Some(&path), &vars, &flags).unwrap();
        assert_eq!(cfg.server.bind, "127.0.0.1:1234");
        assert_eq!(cfg.storage.data_dir, PathBuf::from("/tmp/x"));
    }

    /// A variable that names no key is refused with the words a file's typo
    /// gets, in one line, and a hint where one can be guessed.
    #[test]
    fn env_typos_are_errors_worded_as_file_typos() {
        let cases = [
            (
                "PORTCULLIS_SERVER_BIND",
                "did you mean PORTCULLIS_SERVER__BIND?",
            ),
            ("PORTCULLIS_BIND", "did you mean PORTCULLIS_SERVER__BIND?"),
            ("PORTCULLIS_FOO", "PORTCULLIS_<SECTION>__<KEY>"),
            ("PORTCULLIS_FOO__BAR", "foo: unknown section"),
            (
                "PORTCULLIS_SERVER__BIND__PORT",
                "server.bind: is a key, not a section",
            ),
        ];
        for (name, words) in cases {
            let err = load(None, &[(name, "127.0.0.1:9000")])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("environment variable {name}: ")),
                "{err}"
            );
            assert!(err.contains(words), "{name}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        for (file, var) in [
            ("[server]\nbnid = \"x\"\n", "PORTCULLIS_SERVER__BNID"),
            (
                "[rate_limit.rules.login_ipp]\nlimit = 3\n",
                "PORTCULLIS_RATE_LIMIT__RULES__LOGIN_IPP__LIMIT",
            ),
            ("[mial]\nfrom = \"x\"\n", "PORTCULLIS_MIAL__FROM"),
        ] {
            let from_file = load(Some(file), &[]).unwrap_err().to_string();
            let from_env = load(None, &[(var, "3")]).unwrap_err().to_string();
            let said = |e: &str| e.split_once(": ").map(|(_, m)| m.to_owned()).unwrap();
            assert_eq!(said(&from_file), said(&from_env), "{file}");
            assert!(!from_file.contains('\n'), "{from_file}");
        }
        let rule = load(
            None,
            &[("PORTCULLIS_RATE_LIMIT__RULES__LOGIN_IPP__LIMIT", "3")],
        )
        .unwrap_err();
        assert!(
            rule.to_string()
                .contains("login_ipp: unknown rate-limit rule (rules: login_account, login_ip"),
            "{rule}"
        );
        // A bad value set by a variable names the variable, whatever the file.
        let err = load(
            Some("[server]\n"),
            &[("PORTCULLIS_RATE_LIMIT__RULES__LOGIN_IP__LIMIT", "-1")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("environment variable PORTCULLIS_RATE_LIMIT__RULES__LOGIN_IP__LIMIT: rate_limit.rules.login_ip.limit"), "{err}");
    }

    /// The variables Kubernetes sets for a Service named portcullis are
    /// not refused; anything else without a `__` is.
    #[test]
    fn kubernetes_service_links_are_passed_over() {
        let links = [
            ("PORTCULLIS_SERVICE_HOST", "10.0.0.1"),
            ("PORTCULLIS_SERVICE_PORT", "8080"),
            ("PORTCULLIS_SERVICE_PORT_HTTP", "8080"),
            ("PORTCULLIS_PORT", "tcp://10.0.0.1:8080"),
            ("PORTCULLIS_PORT_8080_TCP", "tcp://10.0.0.1:8080"),
            ("PORTCULLIS_PORT_8080_TCP_PROTO", "tcp"),
            ("PORTCULLIS_PORT_8080_TCP_PORT", "8080"),
            ("PORTCULLIS_PORT_8080_TCP_ADDR", "10.0.0.1"),
        ];
        let loaded = load(None, &links).unwrap();
        assert_eq!(
            Config {
                file: None,
                ..loaded
            },
            Config::default()
        );
        for not_a_link in [
            "PORTCULLIS_PORT_HTTP",
            "PORTCULLIS_PORT_8080_XTP",
            "PORTCULLIS_SERVICE_HOSTS",
        ] {
            assert!(load(None, &[(not_a_link, "1")]).is_err(), "{not_a_link}");
        }
    }

    #[test]
    fn nested_env_keys_and_types() {
        let cfg = load(
            None,
            &[
                ("PORTCULLIS_RATE_LIMIT__RULES__LOGIN_IP__LIMIT", "10"),
                ("PORTCULLIS_RATE_LIMIT__RULES__MFA__ENABLED", "false"),
                ("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
                ("PORTCULLIS_TOKENS__ISSUER", "1234"),
                ("OTHER_PROGRAM__SETTING", "not ours"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.rate_limit.rules["login_ip"].limit, 10);
        assert!(!cfg.rate_limit.rules["mfa"].enabled);
        assert_eq!(cfg.server.trusted_proxies.len(), 1);
        assert_eq!(cfg.tokens.issuer, "1234");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = load(Some("[server]\nbnid = \"x\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bnid"), "{err}");
        let err = load(None, &[("PORTCULLIS_SERVER__NOPE", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
        let err = load(
            Some("[rate_limit.rules.made_up]\nlimit = 1\nwindow = \"1m\"\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("rate_limit.rules.made_up"), "{err}");
    }

    #[test]
    fn bad_values_name_key_and_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "[rate_limit.rules.login_ip]\nlimit = -1\nwindow = \"15m\"\n",
                "rate_limit.rules.login_ip.limit",
            ),
            ("[tokens]\naccess_ttl = \"soon\"\n", "tokens.access_ttl"),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/99\"]\n",
                "server.trusted_proxies",
            ),
            (
                "[tokens]\nalgorithm = \"HS256\"\nsecret = \"short\"\n",
                "tokens.secret",
            ),
            ("[tokens]\nalgorithm = \"none\"\n", "tokens.algorithm"),
            ("[server]\nbind = \"localhost\"\n", "server.bind"),
            (
                "[storage]\nencryption_key = \"abc\"\n",
                "storage.encryption_key",
            ),
            ("[passwords]\nmin_strength = 9\n", "passwords.min_strength"),
            ("[mail]\nreset_url = \"http://x/\"\n", "mail.reset_url"),
            (
                "[server]\nheader_timeout = \"0s\"\n",
                "server.header_timeout",
            ),
            ("[server]\nbody_timeout = \"2h\"\n", "server.body_timeout"),
            ("[server]\nkeep_alive = \"never\"\n", "server.keep_alive"),
            ("[server]\nmax_connections = 0\n", "server.max_connections"),
            (
                "[server]\nmax_header_bytes = 100\n",
                "server.max_header_bytes",
            ),
            ("[server]\nmax_headers = 200\n", "server.max_headers"),
        ];
        for (file, key) in cases {
            let err = load(Some(file), &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{file:?} gave {err}");
        }
    }

    #[test]
    fn masked_output_hides_secrets_and_reloads() {
        let mut cfg = Config::default();
        cfg.tokens.algorithm = Algorithm::HS256;
        cfg.tokens.secret = "s".repeat(40);
        cfg.storage.encryption_key = "ab".repeat(32);
        let text = cfg.to_masked_toml();
        assert!(!text.contains(&"s".repeat(40)));
        assert!(!text.contains(&"ab".repeat(32)));
        assert!(text.contains("\"***\""));
        let plain = Config::default().to_masked_toml();
        let back: Config = toml::from_str(&plain).unwrap();
        assert_eq!(back, Config::default());
    }

    #[cfg(not(feature = "redis"))]
    #[test]
    fn a_redis_limiter_without_the_feature_names_the_feature() {
        let file = "[rate_limit]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n";
        let err = load(Some(file), &[]).unwrap_err().to_string();
        assert!(err.contains("rate_limit.store"), "{err}");
        assert!(err.contains("`redis` feature"), "{err}");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn a_redis_limiter_needs_a_redis_url_and_masks_it() {
        let err = load(Some("[rate_limit]\nstore = \"redis\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("rate_limit.redis_url"), "{err}");
        let url = "redis://:hunter2hunter2@10.0.0.5:6379/2";
        let cfg = load(
            None,
            &[
                ("PORTCULLIS_RATE_LIMIT__STORE", "redis"),
                ("PORTCULLIS_RATE_LIMIT__REDIS_URL", url),
            ],
        )
        .unwrap();
        assert_eq!(cfg.rate_limit.store, LimitStoreKind::Redis);
        assert_eq!(cfg.rate_limit.redis_url, url);
        assert!(!cfg.to_masked_toml().contains("hunter2"));
    }

    #[cfg(not(feature = "postgres"))]
    #[test]
    fn a_postgres_store_without_the_feature_names_the_feature() {
        let file = "[storage]\nbackend = \"postgres\"\npostgres_url = \"postgres://x@db/p\"\n";
        let err = load(Some(file), &[]).unwrap_err().to_string();
        assert!(err.contains("storage.backend"), "{err}");
        assert!(err.contains("`postgres` feature"), "{err}");
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn a_postgres_store_needs_its_url_and_a_shared_key() {
        let key = "ab".repeat(32);
        let url = "postgres://portcullis:hunter2hunter2@db:5432/auth";
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("PORTCULLIS_STORAGE__BACKEND", "postgres")],
                "storage.postgres_url",
            ),
            (
                &[
                    ("PORTCULLIS_STORAGE__BACKEND", "postgres"),
                    ("PORTCULLIS_STORAGE__POSTGRES_URL", url),
                ],
                "storage.encryption_key",
            ),
        ];
        for (vars, key_named) in cases {
            let err = load(None, vars).unwrap_err().to_string();
            assert!(err.contains(key_named), "{vars:?} gave {err}");
        }
        let cfg = load(
            None,
            &[
                ("PORTCULLIS_STORAGE__BACKEND", "postgres"),
                ("PORTCULLIS_STORAGE__POSTGRES_URL", url),
                ("PORTCULLIS_STORAGE__ENCRYPTION_KEY", &key),
            ],
        )
        .unwrap();
        assert_eq!(cfg.storage.backend, StorageBackend::Postgres);
        assert!(!cfg.to_masked_toml().contains("hunter2"));
    }

    #[test]
    fn an_unknown_limit_store_is_refused() {
        let err = load(Some("[rate_limit]\nstore = \"memcached\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("rate_limit.store"), "{err}");
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// `config.example.toml` loads, and documents exactly the defaults.
    #[test]
    fn example_config_is_complete_and_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let loaded = Config::load_from(Some(&path), &[], &Overrides::default()).unwrap();
        assert_eq!(
            Config {
                file: None,
                ..loaded
            },
            Config::default()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let file = toml::Value::Table(text.parse::<toml::Table>().unwrap());
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        assert_eq!(
            key_paths(&file),
            key_paths(&defaults),
            "every key is listed"
        );
    }

    fn key_paths(value: &toml::Value) -> Vec<String> {
        let mut out = Vec::new();
        if let toml::Value::Table(t) = value {
            for (k, v) in t {
                let nested = key_paths(v);
                if nested.is_empty() {
                    out.push(k.clone());
                }
                out.extend(nested.into_iter().map(|n| format!("{k}.{n}")));
            }
        }
        out.sort();
        out
    }
}
