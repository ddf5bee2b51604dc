//! The tamper-evident audit log of SPEC section 7.
//!
//! [`AuditLog::record`] hands an event to the writer thread and returns once its
//! row is committed: a handler that records an event answers only after that.
//! Rate-limited attempts are folded per (rule, key) per `coalesce_window` by
//! [`AuditLog::rate_limited`], so a flood costs rows per minute while every
//! attempt is still counted. The query side opens its own read connections.

pub mod chain;
pub mod event;
pub mod query;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use event::{Action, EventRow, NewEvent, Origin};
use writer::Writer;

use crate::clock::{Millis, SharedClock};
use crate::metrics::Metrics;
use crate::ratelimit::key::{KeyId, Shown};
use crate::ratelimit::RuleName;
use crate::store::sqlite::configure_connection;

/// An audit write that did not happen; the request must fail closed.
#[derive(Debug, thiserror::Error)]
#[error("audit log unavailable: {0}")]
pub struct AuditError(pub String);

/// Attempts folded into one row, per (rule, key).
#[derive(Debug)]
struct Fold {
    /// What is shown of the key.
    key: Shown,
    opened_at: Millis,
    followers: u64,
    first_at: Millis,
    last_at: Millis,
    template: NewEvent,
}

/// Where the rows go.
enum Backend {
    /// The SQLite writer thread, and the file the read side opens.
    Sqlite { writer: Writer, db_path: PathBuf },
    /// A PostgreSQL database shared by several instances.
    #[cfg(feature = "postgres")]
    Postgres {
        store: crate::store::postgres::PgStore,
    },
}

/// The audit log handle shared by every handler.
pub struct AuditLog {
    backend: Backend,
    folds: Mutex<HashMap<(RuleName, KeyId), Fold>>,
    clock: SharedClock,
    coalesce_ms: Millis,
}

impl AuditLog {
    /// Starts a writer of its own on the database at `db_path` (the schema
    /// must exist). The server shares the store's writer instead
    /// ([`AuditLog::with_writer`]).
    pub fn start(
        db_path: &Path,
        clock: SharedClock,
        coalesce_ms: Millis,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        Ok(Self::with_writer(
            Writer::start(db_path)?,
            db_path,
            clock,
            coalesce_ms,
            metrics,
        ))
    }

    /// The audit log on an existing writer (the one that also commits the
    /// store's changes, so that a change and its rows commit together).
    pub fn with_writer(
        writer: Writer,
        db_path: &Path,
        clock: SharedClock,
        coalesce_ms: Millis,
        metrics: Arc<Metrics>,
    ) -> Self {
        writer.attach_metrics(metrics);
        Self::on(
            Backend::Sqlite {
                writer,
                db_path: db_path.to_path_buf(),
            },
            clock,
            coalesce_ms,
        )
    }

    /// The audit log in the PostgreSQL database of `store`.
    #[cfg(feature = "postgres")]
    pub fn postgres(
        store: crate::store::postgres::PgStore,
        clock: SharedClock,
        coalesce_ms: Millis,
        metrics: Arc<Metrics>,
    ) -> Self {
        store.attach_metrics(metrics);
        Self::on(Backend::Postgres { store }, clock, coalesce_ms)
    }

    /// The SQLite writer, for tests that drive it directly.
    #[cfg(test)]
    pub(crate) fn sqlite_writer(&self) -> Option<&Writer> {
        match &self.backend {
            Backend::Sqlite { writer, .. } => Some(writer),
            #[cfg(feature = "postgres")]
            Backend::Postgres { .. } => None,
        }
    }

    fn on(backend: Backend, clock: SharedClock, coalesce_ms: Millis) -> Self {
        Self {
            backend,
            folds: Mutex::new(HashMap::new()),
            clock,
            coalesce_ms,
        }
    }

    /// Appends an event; resolves once its row is committed.
    pub async fn record(&self, mut event: NewEvent) -> Result<i64, AuditError> {
        let now = self.clock.now_ms();
        event.at.get_or_insert(now);
        match &self.backend {
            Backend::Sqlite { writer, .. } => writer.append(event).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres { store } => {
                let ids = store
                    .append(std::slice::from_ref(&event), now)
                    .await
                    .map_err(|e| AuditError(e.to_string()))?;
                ids.first()
                    .copied()
                    .ok_or_else(|| AuditError("no row was written".into()))
            }
        }
    }

    /// Records a refused attempt. The first per (rule, key) in a coalescing
    /// window is written (count 1) and awaited; the ones that follow are counted
    /// and written as one row when the window closes ([`AuditLog::flush_folds`]).
    /// The row names the key by what is shown of it (never a text that is
    /// not an address in an account's place).
    /// `shown` is asked only for the first attempt of a fold, as it may cost
    /// more than the rest of a refusal.
    pub async fn rate_limited(
        &self,
        rule: RuleName,
        key: KeyId,
        shown: impl FnOnce() -> Shown,
        event: NewEvent,
    ) -> Result<(), AuditError> {
        let now = self.clock.now_ms();
        let (closed, shown) = {
            let mut folds = self.folds.lock().unwrap_or_else(|e| e.into_inner());
            let id = (rule, key);
            match folds.get_mut(&id) {
                Some(fold) if now < fold.opened_at.saturating_add(self.coalesce_ms) => {
                    if fold.followers == 0 {
                        fold.first_at = now;
                    }
                    fold.followers += 1;
                    fold.last_at = now;
                    return Ok(());
                }
                _ => {
                    let template = event.clone();
                    let shown = shown();
                    let previous = folds.insert(
                        id,
                        Fold {
                            key: shown,
                            opened_at: now,
                            followers: 0,
                            first_at: now,
                            last_at: now,
                            template,
                        },
                    );
                    (previous.filter(|f| f.followers > 0), shown)
                }
            }
        };
        if let Some(fold) = closed {
            self.record(folded_event(rule, fold)).await?;
        }
        let first = event
            .at_time(now)
            .extra("rule", rule.as_str())
            .extra("key", shown.as_str())
            .extra("count", 1);
        self.record(first).await.map(|_| ())
    }

    /// Writes the folded rows of windows that have closed (all of them with
    /// `force`, at shutdown).
    pub async fn flush_folds(&self, force: bool) -> Result<usize, AuditError> {
        let now = self.clock.now_ms();
        let closed: Vec<((RuleName, KeyId), Fold)> = {
            let mut folds = self.folds.lock().unwrap_or_else(|e| e.into_inner());
            let ids: Vec<(RuleName, KeyId)> = folds
                .iter()
                .filter(|(_, f)| force || now >= f.opened_at.saturating_add(self.coalesce_ms))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| folds.remove(&id).map(|f| (id, f)))
                .collect()
        };
        let mut written = 0;
        for ((rule, _), fold) in closed {
            if fold.followers > 0 {
                self.record(folded_event(rule, fold)).await?;
                written += 1;
            }
        }
        Ok(written)
    }

    /// Flushes every fold and stops the writer after it has written what it holds.
    pub async fn shutdown(&self) {
        if let Err(e) = self.flush_folds(true).await {
            tracing::error!(error = %e, "cannot flush folded audit rows");
        }
        match &self.backend {
            Backend::Sqlite { writer, .. } => writer.stop().await,
            #[cfg(feature = "postgres")]
            Backend::Postgres { .. } => {}
        }
    }

    /// A page of events matching `filter`, newest first.
    pub async fn list(&self, filter: query::Filter) -> Result<query::Page, AuditError> {
        match &self.backend {
            Backend::Sqlite { .. } => self.read(move |conn| query::list(conn, &filter)).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres { store, .. } => store
                .list(&filter)
                .await
                .map_err(|e| AuditError(e.to_string())),
        }
    }

    /// Walks the whole chain.
    pub async fn verify(&self) -> Result<chain::Verdict, AuditError> {
        match &self.backend {
            Backend::Sqlite { .. } => self.read(|conn| chain::verify(conn)).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres { store, .. } => {
                store.verify().await.map_err(|e| AuditError(e.to_string()))
            }
        }
    }

    /// Runs `f` with a fresh read connection on the SQLite file, on a blocking
    /// thread (an error with another backend).
    pub async fn read<T, F>(&self, f: F) -> Result<T, AuditError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let path = match &self.backend {
            Backend::Sqlite { db_path, .. } => db_path.clone(),
            #[cfg(feature = "postgres")]
            Backend::Postgres { .. } => {
                return Err(AuditError("the audit log is not in SQLite".into()))
            }
        };
        tokio::task::spawn_blocking(move || {
            let mut conn =
                rusqlite::Connection::open(&path).map_err(|e| AuditError(e.to_string()))?;
            configure_connection(&conn).map_err(|e| AuditError(e.to_string()))?;
            f(&mut conn).map_err(|e| AuditError(e.to_string()))
        })
        .await
        .map_err(|e| AuditError(e.to_string()))?
    }

    /// Applies retention now: deletes rows older than `older_than_ms`.
    pub async fn prune(
        &self,
        older_than_ms: Millis,
        origin: Origin,
        actor: Option<String>,
    ) -> Result<u64, AuditError> {
        let now = self.clock.now_ms();
        let cutoff = now.saturating_sub(older_than_ms);
        match &self.backend {
            Backend::Sqlite { .. } => {
                self.read(move |conn| query::prune(conn, cutoff, &origin, actor.as_deref(), now))
                    .await
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres { store, .. } => store
                .prune(cutoff, &origin, actor.as_deref(), now)
                .await
                .map_err(|e| AuditError(e.to_string())),
        }
    }
}

impl NewEvent {
    fn at_time(mut self, at: Millis) -> Self {
        self.at = Some(at);
        self
    }
}

fn folded_event(rule: RuleName, fold: Fold) -> NewEvent {
    fold.template
        .at_time(fold.last_at)
        .extra("rule", rule.as_str())
        .extra("key", fold.key.as_str())
        .extra("count", fold.followers)
        .extra("first_at", crate::time_fmt::rfc3339_ms(fold.first_at))
        .extra("last_at", crate::time_fmt::rfc3339_ms(fold.last_at))
}

#[cfg(test)]
mod tests;
