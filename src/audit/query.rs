//! Reading the audit log: filtered pages, newest first, and retention pruning.

use rusqlite::{params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use serde_json::json;

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

/// One page of events and the cursor for the next.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Page {
    pub events: Vec<EventRow>,
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

/// A page of events matching `filter`, newest first.
pub fn list(conn: &Connection, filter: &Filter) -> rusqlite::Result<Page> {
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut sql = String::from(
        "SELECT id, created_at, action, user_id, resource_type, resource_id, ip_address,
                user_agent, extra_data, request_id, prev_hash, hash FROM audit_log WHERE 1 = 1",
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut add = |clause: &str, value: rusqlite::types::Value| {
        sql.push_str(clause);
        args.push(value);
    };
    if let Some(a) = &filter.action {
        add(" AND action = ?", a.clone().into());
    }
    if let Some(u) = &filter.user_id {
        add(" AND user_id = ?", u.clone().into());
    }
    if let Some(ip) = &filter.ip {
        add(" AND ip_address = ?", ip.clone().into());
    }
    if let Some(t) = filter.since {
        add(" AND created_at >= ?", rfc3339_ms(t).into());
    }
    if let Some(t) = filter.until {
        add(" AND created_at <= ?", rfc3339_ms(t).into());
    }
    if let Some(b) = filter.before_id {
        add(" AND id < ?", b.into());
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(i64::from(limit + 1).into());

    let mut stmt = conn.prepare(&sql)?;
    let mut events = stmt
        .query_map(params_from_iter(args), |r| {
            let extra: String = r.get(8)?;
            Ok(EventRow {
                id: r.get(0)?,
                created_at: r.get(1)?,
                action: r.get(2)?,
                user_id: r.get(3)?,
                resource_type: r.get(4)?,
                resource_id: r.get(5)?,
                ip_address: r.get(6)?,
                user_agent: r.get(7)?,
                extra_data: serde_json::from_str(&extra)
                    .unwrap_or(serde_json::Value::String(extra)),
                request_id: r.get(9)?,
                prev_hash: r.get(10)?,
                hash: r.get(11)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next_before_id = if events.len() > limit as usize {
        events.truncate(limit as usize);
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Page {
        events,
        next_before_id,
    })
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

/// The JSON of a page, as `GET /admin/audit` answers.
pub fn page_json(page: &Page) -> serde_json::Value {
    json!({ "events": page.events, "next_before_id": page.next_before_id })
}
