//! `[server]`: where and how the server listens.

use std::net::SocketAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Duration};

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

impl ServerConfig {
    /// Checks what the types alone cannot, naming the key at fault.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        SocketAddr::from_str(&self.bind).map_err(|_| {
            invalid(
                "server.bind",
                format!("`{}` is not an address like 127.0.0.1:8080", self.bind),
            )
        })?;
        if self.max_body_bytes < 256 || self.max_body_bytes > 16 * 1024 * 1024 {
            return Err(invalid(
                "server.max_body_bytes",
                "must be between 256 and 16777216",
            ));
        }
        let http = |url: &str| url.starts_with("http://") || url.starts_with("https://");
        if !self.public_url.is_empty() && !http(&self.public_url) {
            return Err(invalid(
                "server.public_url",
                "must start with http:// or https:// (or be empty: http://<bind>)",
            ));
        }
        if self.workers > 1024 {
            return Err(invalid("server.workers", "must be at most 1024"));
        }
        for (key, d) in [
            ("server.header_timeout", self.header_timeout),
            ("server.body_timeout", self.body_timeout),
            ("server.keep_alive", self.keep_alive),
        ] {
            if d.as_millis_i64() < 1 || d.as_secs() > 3600 {
                return Err(invalid(key, "must be between 1ms and 1h"));
            }
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(invalid(
                "server.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        if !(1024..=65_536).contains(&self.max_header_bytes) {
            return Err(invalid(
                "server.max_header_bytes",
                "must be between 1024 and 65536",
            ));
        }
        // The HTTP parser itself refuses more than 96 header lines.
        if !(8..=96).contains(&self.max_headers) {
            return Err(invalid("server.max_headers", "must be between 8 and 96"));
        }
        Ok(())
    }
}
