//! Reading the audit log: filtered pages, newest first, and retention pruning.

use rusqlite::{params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use super::chain::{StoredRow, STORED_COLS};
use super::event::{Action, EventRow, NewEvent, Origin};
use super::writer::{append_after, chain_head};
use crate::clock::Millis;
use crate::time_fmt::{parse_rfc3339, rfc3339_ms};

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

/// A value bound to a placeholder of [`page_sql`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Text(String),
    Int(i64),
}

/// The query of a page of events matching `filter`, newest first, for any
/// database: `slot(n)` writes the n-th placeholder (`?n`, `$n`); the values
/// to bind, in order; and the page size (one more row is fetched, to know
/// whether another page follows).
pub fn page_sql(filter: &Filter, slot: impl Fn(usize) -> String) -> (String, Vec<Bound>, u32) {
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut sql = format!("SELECT {STORED_COLS} FROM audit_log WHERE 1 = 1");
    let mut bound = Vec::new();
    let mut add = |clause: &str, value: Bound| {
        bound.push(value);
        sql.push_str(&format!(" AND {clause} {}", slot(bound.len())));
    };
    if let Some(a) = &filter.action {
        add("action =", Bound::Text(a.clone()));
    }
    if let Some(u) = &filter.user_id {
        add("user_id =", Bound::Text(u.clone()));
    }
    if let Some(ip) = &filter.ip {
        add("ip_address =", Bound::Text(ip.clone()));
    }
    if let Some(t) = filter.since {
        add("created_at >=", Bound::Text(rfc3339_ms(t)));
    }
    if let Some(t) = filter.until {
        add("created_at <=", Bound::Text(rfc3339_ms(t)));
    }
    if let Some(b) = filter.before_id {
        add("id <", Bound::Int(b));
    }
    bound.push(Bound::Int(i64::from(limit) + 1));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", slot(bound.len())));
    (sql, bound, limit)
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

/// A page of events matching `filter`, newest first.
pub fn list(conn: &Connection, filter: &Filter) -> rusqlite::Result<Page> {
    let (sql, bound, limit) = page_sql(filter, |n| format!("?{n}"));
    let args = bound.into_iter().map(|b| match b {
        Bound::Text(t) => rusqlite::types::Value::Text(t),
        Bound::Int(n) => rusqlite::types::Value::Integer(n),
    });
    let mut stmt = conn.prepare(&sql)?;
    let events = stmt
        .query_map(params_from_iter(args), |r| {
            StoredRow::from_row(r).map(EventRow::from)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(page_of(events, limit))
}

/// Deletes every row created before `cutoff` (a prefix of the chain, by id) and
/// appends an `audit_pruned` row that anchors what remains. Returns how many
/// rows were deleted; nothing is written when there is nothing to delete.
pub fn prune(
    conn: &mut Connection,
    cutoff: Millis,
    origin: &Origin,
    actor: Option<&str>,
    now: Millis,
) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT id, hash FROM audit_log WHERE id = (SELECT max(id) FROM audit_log WHERE created_at < ?1)",
            [rfc3339_ms(cutoff)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((last_id, anchor_hash)) = last else {
        return Ok(0);
    };
    let deleted = tx.execute("DELETE FROM audit_log WHERE id <= ?1", [last_id])?;
    let mut event = NewEvent::new(Action::AuditPruned, origin)
        .extra("deleted", deleted)
        .extra("older_than", rfc3339_ms(cutoff))
        .extra("first_kept_id", last_id + 1)
        .extra("anchor_hash", anchor_hash.clone());
    let anchor = anchor_hash;
    if let Some(actor) = actor {
        event = event.extra("actor_id", actor);
    }
    // Chain to the newest remaining row, or to the last deleted one when
    // nothing remains, so ids never restart.
    let head = chain_head(&tx)?;
    let head = if head.0 > last_id {
        head
    } else {
        (last_id, anchor)
    };
    append_after(&tx, head, &[event], now)?;
    tx.commit()?;
    Ok(u64::try_from(deleted).unwrap_or(0))
}
