//! The audit log of SPEC section 7: how the server records.
//!
//! [`AuditLog::record`] appends an event to the chain in the storage wing
//! (`store::audit`) and returns once its row is committed: a handler that
//! records an event answers only after that. Rate-limited attempts are
//! folded per (rule, key) per `coalesce_window` by [`AuditLog::rate_limited`],
//! so a flood costs rows per minute while every attempt is still counted.
//! Retention ([`AuditLog::prune`]) and verification go through the store too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::audit::{chain, query, NewEvent, Origin};
use crate::clock::{Millis, SharedClock};
use crate::metrics::Metrics;
use crate::ratelimit::key::{KeyId, Shown};
use crate::ratelimit::RuleName;
use crate::store::{Store, StoreError};

/// An audit write that did not happen; the request must fail closed.
#[derive(Debug, thiserror::Error)]
#[error("audit log unavailable: {0}")]
pub struct AuditError(pub String);

/// What refusals fold by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FoldKey {
    /// A 429: the rule and the key it counted.
    Limit(RuleName, KeyId),
    /// A forward-auth denial: a digest of who was refused what.
    Denial([u8; 16]),
}

/// Attempts folded into one row, per [`FoldKey`].
#[derive(Debug)]
struct Fold {
    opened_at: Millis,
    followers: u64,
    first_at: Millis,
    last_at: Millis,
    template: NewEvent,
}

/// The audit log handle shared by every handler.
pub struct AuditLog {
    store: Store,
    folds: Mutex<HashMap<FoldKey, Fold>>,
    clock: SharedClock,
    coalesce_ms: Millis,
}

impl From<StoreError> for AuditError {
    fn from(err: StoreError) -> Self {
        AuditError(err.to_string())
    }
}

impl AuditLog {
    /// The audit log in `store`'s database, reporting rows written to `metrics`.
    pub fn new(
        store: Store,
        clock: SharedClock,
        coalesce_ms: Millis,
        metrics: Arc<Metrics>,
    ) -> Self {
        store.attach_metrics(metrics);
        Self {
            store,
            folds: Mutex::new(HashMap::new()),
            clock,
            coalesce_ms,
        }
    }

    /// Appends an event; resolves once its row is committed.
    pub async fn record(&self, mut event: NewEvent) -> Result<i64, AuditError> {
        let now = self.clock.now_ms();
        event.at.get_or_insert(now);
        Ok(self.store.append_audit(event, now).await?)
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
        self.fold(FoldKey::Limit(rule, key), || {
            event
                .extra("rule", rule.as_str())
                .extra("key", shown().as_str())
        })
        .await
    }

    /// Records a refusal folded like a 429 by `id`: the first in a
    /// coalescing window is written (count 1) and awaited; the ones that
    /// follow are one row with their count when the window closes. `event`
    /// is made only for the first.
    pub async fn fold(
        &self,
        id: FoldKey,
        event: impl FnOnce() -> NewEvent,
    ) -> Result<(), AuditError> {
        let now = self.clock.now_ms();
        let (closed, first) = {
            let mut folds = self.folds.lock().unwrap_or_else(|e| e.into_inner());
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
                    let template = event();
                    let previous = folds.insert(
                        id,
                        Fold {
                            opened_at: now,
                            followers: 0,
                            first_at: now,
                            last_at: now,
                            template: template.clone(),
                        },
                    );
                    (previous.filter(|f| f.followers > 0), template)
                }
            }
        };
        if let Some(fold) = closed {
            self.record(folded_event(fold)).await?;
        }
        self.record(first.at_time(now).extra("count", 1))
            .await
            .map(|_| ())
    }

    /// Writes the folded rows of windows that have closed (all of them with
    /// `force`, at shutdown).
    pub async fn flush_folds(&self, force: bool) -> Result<usize, AuditError> {
        let now = self.clock.now_ms();
        let closed: Vec<Fold> = {
            let mut folds = self.folds.lock().unwrap_or_else(|e| e.into_inner());
            let ids: Vec<FoldKey> = folds
                .iter()
                .filter(|(_, f)| force || now >= f.opened_at.saturating_add(self.coalesce_ms))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| folds.remove(&id)).collect()
        };
        let mut written = 0;
        for fold in closed {
            if fold.followers > 0 {
                self.record(folded_event(fold)).await?;
                written += 1;
            }
        }
        Ok(written)
    }

    /// Flushes every fold and stops the store's writer after it has written
    /// what it holds.
    pub async fn shutdown(&self) {
        if let Err(e) = self.flush_folds(true).await {
            tracing::error!(error = %e, "cannot flush folded audit rows");
        }
        self.store.stop().await;
    }

    /// A page of events matching `filter`, newest first.
    pub async fn list(&self, filter: query::Filter) -> Result<query::Page, AuditError> {
        Ok(self.store.audit_page(filter).await?)
    }

    /// Walks the whole chain.
    pub async fn verify(&self) -> Result<chain::Verdict, AuditError> {
        Ok(self.store.verify_audit().await?)
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
        Ok(self.store.prune_audit(cutoff, origin, actor, now).await?)
    }
}

impl NewEvent {
    fn at_time(mut self, at: Millis) -> Self {
        self.at = Some(at);
        self
    }
}

fn folded_event(fold: Fold) -> NewEvent {
    fold.template
        .at_time(fold.last_at)
        .extra("count", fold.followers)
        .extra("first_at", crate::time_fmt::rfc3339_ms(fold.first_at))
        .extra("last_at", crate::time_fmt::rfc3339_ms(fold.last_at))
}

#[cfg(test)]
mod tests;
