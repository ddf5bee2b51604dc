//! The in-memory view of revoked sessions that makes logout immediate without a
//! database query per request.
//!
//! An access token lives at most `access_ttl` and is always issued before its
//! session is revoked, so a revocation only needs remembering for `access_ttl`.
//! At start-up the view is filled from the database with the revocations of the
//! last `access_ttl`; afterwards this process records its own revocations at once
//! and polls the database every second for those made by other processes (the
//! CLI, other instances).

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use uuid::Uuid;

use crate::clock::Millis;
use crate::store::{Revoked, Store, StoreResult};

/// How instances tell each other of revocations the moment they commit
/// (Redis pub/sub when the limiter is shared there). Each instance feeds
/// what it hears into its own [`RevocationList`]; the poll of storage stays
/// as the fallback for anything missed while the bus was down.
#[async_trait]
pub trait RevocationBus: Send + Sync + 'static {
    /// Hands `revoked` to every listening instance.
    async fn publish(&self, revoked: &[Revoked]) -> anyhow::Result<()>;
}

/// The wire form of a revocation announcement: `[["<session id>", <revoked_at ms>], ...]`.
pub fn encode_announcement(revoked: &[Revoked]) -> String {
    let pairs: Vec<(Uuid, Millis)> = revoked
        .iter()
        .map(|r| (r.session_id, r.revoked_at))
        .collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into())
}

/// Reads an announcement; `None` for anything malformed (it is ignored).
pub fn decode_announcement(text: &str) -> Option<Vec<Revoked>> {
    let pairs: Vec<(Uuid, Millis)> = serde_json::from_str(text).ok()?;
    Some(
        pairs
            .into_iter()
            .map(|(session_id, revoked_at)| Revoked {
                session_id,
                revoked_at,
            })
            .collect(),
    )
}

/// How far back each poll looks, so that a revocation committed late by another
/// process is still seen.
const POLL_OVERLAP_MS: Millis = 5_000;

/// Sessions revoked within the last access-token lifetime.
#[derive(Debug)]
pub struct RevocationList {
    revoked: RwLock<HashMap<Uuid, Millis>>,
    retain_ms: Millis,
}

impl RevocationList {
    /// An empty view that remembers each revocation for `access_ttl_ms`.
    pub fn new(access_ttl_ms: Millis) -> Self {
        Self {
            revoked: RwLock::new(HashMap::new()),
            retain_ms: access_ttl_ms.saturating_add(POLL_OVERLAP_MS),
        }
    }

    /// Records that `session_id` was revoked at `revoked_at`.
    pub fn revoke(&self, session_id: Uuid, revoked_at: Millis) {
        let mut map = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        map.entry(session_id).or_insert(revoked_at);
    }

    /// Whether tokens of `session_id` must be refused.
    pub fn is_revoked(&self, session_id: Uuid) -> bool {
        let map = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        map.contains_key(&session_id)
    }

    /// Forgets revocations older than any token that could still be presented.
    pub fn prune(&self, now: Millis) {
        let cutoff = now.saturating_sub(self.retain_ms);
        let mut map = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, at| *at >= cutoff);
    }

    pub fn len(&self) -> usize {
        self.revoked.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds every revocation stored since `since`. Returns the cursor for the next call.
    pub async fn sync(&self, store: &Store, since: Millis, now: Millis) -> StoreResult<Millis> {
        for r in store.revoked_since(since).await? {
            self.revoke(r.session_id, r.revoked_at);
        }
        Ok(now.saturating_sub(POLL_OVERLAP_MS))
    }

    /// The cursor that loads every revocation still relevant at `now`.
    pub fn initial_cursor(&self, now: Millis) -> Millis {
        now.saturating_sub(self.retain_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_and_garbage_is_ignored() {
        let revoked = vec![
            Revoked {
                session_id: Uuid::new_v4(),
                revoked_at: 1_700_000_000_123,
            },
            Revoked {
                session_id: Uuid::new_v4(),
                revoked_at: 1,
            },
        ];
        assert_eq!(
            decode_announcement(&encode_announcement(&revoked)),
            Some(revoked)
        );
        assert_eq!(decode_announcement("not json"), None);
        assert_eq!(decode_announcement("[[\"not-a-uuid\", 1]]"), None);
    }

    #[test]
    fn remembers_then_forgets_after_token_lifetime() {
        let list = RevocationList::new(60_000);
        let sid = Uuid::new_v4();
        list.revoke(sid, 1_000);
        assert!(list.is_revoked(sid));
        assert!(!list.is_revoked(Uuid::new_v4()));
        list.prune(1_000 + 60_000);
        assert!(list.is_revoked(sid));
        list.prune(1_000 + 60_000 + POLL_OVERLAP_MS + 1);
        assert!(!list.is_revoked(sid));
        assert!(list.is_empty());
    }
}
