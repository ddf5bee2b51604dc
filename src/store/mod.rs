//! The storage wing: every table of portcullis, on SQLite or PostgreSQL.
//!
//! The domain sees one type, [`Store`], whose methods are grouped by
//! aggregate, one file each: [`accounts`] (users, admins, passwords, reset
//! tokens), [`sessions`] (sessions, refresh tokens, revocations),
//! [`second_factor`] (TOTP, backup codes, challenges), [`passkeys`]
//! (WebAuthn credentials and ceremonies), [`keys`] (signing
//! keys), [`rate_limits`] (saved windows) and [`audit`] (the chain's rows).
//! Each statement is written once and runs on either database through the
//! seam in `db/`; each decision (rotation, reuse, revoke-all, the session
//! bound, code replacement) is taken once, in the aggregate's file, with the
//! time its caller gives.
//!
//! A new table is a new file here: its rows, its statements, its methods.

pub mod accounts;
pub mod audit;
mod db;
pub mod groups;
pub mod keys;
pub mod oidc;
pub mod passkeys;
pub mod rate_limits;
pub mod second_factor;
pub mod sessions;

use std::path::Path;
use std::sync::Arc;

use crate::audit::event::NewEvent;
use crate::clock::Millis;
use crate::config::{Config, StorageBackend};
use crate::metrics::Metrics;
use db::Db;

pub use accounts::{NewUser, User};
pub use audit::{AccountChange, Recovery, RECOVERY_ACTIONS};
pub use groups::GroupChange;
pub use keys::SigningKeyRow;
pub use oidc::{Exchange, OidcCode, Redemption};
pub use passkeys::{Ceremony, PasskeyRow, Purpose};
pub use rate_limits::RateLimitRow;
pub use second_factor::{MfaChallenge, TotpRow};
pub use sessions::{
    Amr, Grant, LiveSession, RecentLogin, Revoked, Rotation, RotationAudit, Session, SessionKind,
    SessionLimit,
};

/// Audit rows that describe a change: they commit in the same transaction as
/// the change, or neither does.
pub type Audit = Vec<NewEvent>;

/// Gives every row without a time the time of its change.
fn stamped(mut audit: Audit, now: Millis) -> Audit {
    for event in &mut audit {
        event.at.get_or_insert(now);
    }
    audit
}

/// The rows of a change that revoked sessions say how many.
fn with_revoked(audit: Audit, revoked: usize) -> Audit {
    audit
        .into_iter()
        .map(|e| e.extra("sessions_revoked", revoked))
        .collect()
}

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already registered")]
    EmailTaken,
    /// The database is busy, locked, read-only or full: worth retrying later.
    #[error("storage unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// A row with the same key exists.
    #[error("storage conflict: {0:#}")]
    Duplicate(anyhow::Error),
    #[error("storage error: {0:#}")]
    Other(anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Every table, on the configured database. Clones share it.
#[derive(Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Opens the configured database (creating the SQLite file, or applying
    /// the PostgreSQL schema, as needed). The one place that chooses a backend.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        match config.storage.backend {
            StorageBackend::Sqlite => Self::sqlite(&config.database_path()),
            #[cfg(feature = "postgres")]
            StorageBackend::Postgres => Self::postgres(&config.storage.postgres_url).await,
            #[cfg(not(feature = "postgres"))]
            StorageBackend::Postgres => anyhow::bail!(
                "storage.backend = \"postgres\" needs portcullis built with the `postgres` feature"
            ),
        }
    }

    /// The SQLite database at `path`, created if needed.
    pub fn sqlite(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            db: Db::Sqlite(db::sqlite::Sqlite::open(path)?),
        })
    }

    /// The PostgreSQL database at `url`, its schema applied (once, even when
    /// several instances start together).
    #[cfg(feature = "postgres")]
    pub async fn postgres(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            db: Db::Postgres(db::postgres::Postgres::connect(url).await?),
        })
    }

    /// Whether the database is PostgreSQL (shared by several instances).
    pub fn is_shared(&self) -> bool {
        !matches!(self.db, Db::Sqlite(_))
    }

    /// Reports audit rows written and commit latency to `metrics` from now on.
    pub fn attach_metrics(&self, metrics: Arc<Metrics>) {
        self.db.attach_metrics(metrics);
    }

    /// Commits what is queued (SQLite's writer) and lets go of the database.
    pub async fn stop(&self) {
        self.db.stop().await;
    }

    /// Whether the database answers a query that reads a table.
    pub async fn ping(&self) -> StoreResult<()> {
        self.db
            .run(|c| {
                Box::pin(async move {
                    c.query_one(
                        "SELECT count(*) FROM (SELECT 1 FROM users LIMIT 1) AS one",
                        &[],
                        |r| r.get::<i64>(0),
                    )
                    .await
                })
            })
            .await
            .map(|_| ())
    }

    /// Announces `payload` to every instance listening on `channel`
    /// (PostgreSQL's `pg_notify`; nothing on SQLite, which one process owns).
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub async fn notify(&self, channel: &str, payload: &str) -> StoreResult<()> {
        match &self.db {
            Db::Sqlite(_) => Ok(()),
            #[cfg(feature = "postgres")]
            Db::Postgres(db) => db.notify(channel, payload).await,
        }
    }
}

/// The SQLite writer's connection and one batch of its work, without its
/// thread: for the benchmarks' baselines only.
#[doc(hidden)]
pub mod bench {
    pub use super::db::sqlite::writer::{append_alone as append, open_writer};
}

/// Listens for announcements on `channel` of the PostgreSQL database at `url`.
#[cfg(feature = "postgres")]
pub use db::postgres::listen;

#[cfg(test)]
mod tests;
