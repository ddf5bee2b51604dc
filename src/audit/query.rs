//! Reading the audit log: the filters of a page, newest first (the query
//! itself is the storage wing's, `store::audit`).

use super::event::EventRow;
use crate::clock::Millis;
use crate::time_fmt::parse_rfc3339;

/// Default and largest page sizes.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// Filters of `GET /admin/audit` and `audit list`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub action: Option<String>,
    pub user_id: Option<String>,
    pub ip: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    pub limit: Option<u32>,
    pub before_id: Option<i64>,
}

/// One page of events, newest first, and the cursor for the next (`GET
/// /admin/audit`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Page {
    pub events: Vec<EventRow>,
    /// `before_id` of the next page; null on the last.
    pub next_before_id: Option<i64>,
}

/// Parses a time bound: RFC 3339, or an age such as `15m`, `2h`, `7d` before `now`.
pub fn parse_time(text: &str, now: Millis) -> Option<Millis> {
    let text = text.trim();
    if let Some(ms) = parse_rfc3339(text) {
        return Some(ms);
    }
    let age: crate::config::Duration = text.parse().ok()?;
    Some(now.saturating_sub(age.as_millis_i64()))
}

/// The page of `limit` events out of the `limit + 1` fetched.
pub fn page_of(mut events: Vec<EventRow>, limit: u32) -> Page {
    let next_before_id = if events.len() > limit as usize {
        events.truncate(limit as usize);
        events.last().map(|e| e.id)
    } else {
        None
    };
    Page {
        events,
        next_before_id,
    }
}
