//! Rate-limit windows saved at a graceful stop and loaded at the next start
//! (the in-memory limiter's; Redis keeps its own).

use super::{Store, StoreResult};
use crate::clock::Millis;

/// A saved rate-limit window; `events` is JSON `[[at_ms, tag], ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitRow {
    pub rule: String,
    /// The key's identity; `None` for a window an earlier version saved under
    /// its whole text (then `key` is that text).
    pub key_id: Option<Vec<u8>>,
    /// What is shown of the key.
    pub key: String,
    pub events: String,
}
impl Store {
    /// Replaces every saved rate-limit window with `rows`.
    pub async fn save_rate_limits(&self, rows: Vec<RateLimitRow>, now: Millis) -> StoreResult<()> {
        self.db
            .transaction(move |c| {
                Box::pin(async move {
                    c.execute("DELETE FROM rate_limit_state", &[]).await?;
                    c.execute("DELETE FROM rate_limit_windows", &[]).await?;
                    for row in rows {
                        let Some(id) = row.key_id else { continue };
                        c.execute(
                            "INSERT INTO rate_limit_state (rule, key_id, shown, events, saved_at)
                             VALUES ($1, $2, $3, $4, $5)
                             ON CONFLICT (rule, key_id) DO UPDATE SET shown = excluded.shown,
                                 events = excluded.events, saved_at = excluded.saved_at",
                            &[&row.rule, &id, &row.key, &row.events, &now],
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Every saved window (those an earlier version saved under the key's
    /// whole text included).
    pub async fn load_rate_limits(&self) -> StoreResult<Vec<RateLimitRow>> {
        self.db
            .run(|c| {
                Box::pin(async move {
                    c.query(
                        "SELECT rule, key_id, shown, events FROM rate_limit_state
                         UNION ALL SELECT rule, NULL, key, events FROM rate_limit_windows",
                        &[],
                        |r| {
                            Ok(RateLimitRow {
                                rule: r.get(0)?,
                                key_id: r.get(1)?,
                                key: r.get(2)?,
                                events: r.get(3)?,
                            })
                        },
                    )
                    .await
                })
            })
            .await
    }
}
