//! `[storage]`: where data lives and the key that seals it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

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

impl StorageConfig {
    /// Checks what the types alone cannot, naming the key at fault.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let key = &self.encryption_key;
        if !key.is_empty() && (key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(invalid(
                "storage.encryption_key",
                "must be 64 hex characters (256 bits) or empty",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("storage.data_dir", "must not be empty"));
        }
        if self.backend == StorageBackend::Postgres {
            if !cfg!(feature = "postgres") {
                return Err(invalid(
                    "storage.backend",
                    "\"postgres\" needs portcullis built with the `postgres` feature \
                     (cargo build --release --features postgres)",
                ));
            }
            let url = &self.postgres_url;
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
        Ok(())
    }
}
