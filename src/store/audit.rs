//! The audit chain's rows: appended by the one writer (SQLite) or under
//! the chain's lock (PostgreSQL), read back in pages, walked to verify,
//! pruned from the oldest end; and the recoveries other instances read.

use super::db::{finish, Chain, Conn, Param, Row};
use super::{Store, StoreResult};
use crate::audit::chain::{anchor_from, StoredRow, Verdict, Walk};
use crate::audit::event::{Action, EventRow, NewEvent, Origin};
use crate::audit::query::{page_of, Filter, Page};
use crate::clock::Millis;
use crate::time_fmt::rfc3339_ms;
use uuid::Uuid;

/// The columns of [`StoredRow`], in its order.
const STORED_COLS: &str = "id, created_at, action, user_id, resource_type, resource_id, \
    ip_address, user_agent, extra_data, request_id, prev_hash, hash";

/// Rows read per page when the chain is walked.
const WALK_PAGE: i64 = 10_000;

fn stored_row(r: &Row<'_>) -> StoreResult<StoredRow> {
    Ok(StoredRow {
        id: r.get(0)?,
        created_at: r.get(1)?,
        action: r.get(2)?,
        user_id: r.get(3)?,
        resource_type: r.get(4)?,
        resource_id: r.get(5)?,
        ip_address: r.get(6)?,
        user_agent: r.get(7)?,
        extra_data: r.get(8)?,
        request_id: r.get(9)?,
        prev_hash: r.get(10)?,
        hash: r.get(11)?,
    })
}

/// A value bound to a placeholder of [`page_sql`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bound {
    Text(String),
    Int(i64),
}

/// The query of a page of events matching `filter`, newest first; the
/// values to bind, in order; and the page size (one more row is fetched, to
/// know whether another page follows).
fn page_sql(filter: &Filter) -> (String, Vec<Bound>, u32) {
    let limit = filter
        .limit
        .unwrap_or(crate::audit::query::DEFAULT_LIMIT)
        .clamp(1, crate::audit::query::MAX_LIMIT);
    let mut sql = format!("SELECT {STORED_COLS} FROM audit_log WHERE 1 = 1");
    let mut bound = Vec::new();
    let mut add = |clause: &str, value: Bound| {
        bound.push(value);
        sql.push_str(&format!(" AND {clause} ${}", bound.len()));
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
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", bound.len()));
    (sql, bound, limit)
}

/// The audit actions of an account's recovery: its known devices are
/// forgotten then (SPEC section 6).
pub const RECOVERY_ACTIONS: [&str; 4] = [
    "logout_all",
    "password_changed",
    "password_reset_success",
    "user_disabled",
];

/// A recovery of `email` at `at`, read from audit row `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub id: i64,
    pub email: String,
    pub at: Millis,
}

/// The recoveries of audit rows: `(id, email, created_at)` read back.
fn recoveries(rows: Vec<(i64, String, String)>) -> Vec<Recovery> {
    rows.into_iter()
        .filter_map(|(id, email, created_at)| {
            Some(Recovery {
                id,
                email,
                at: crate::time_fmt::parse_rfc3339(&created_at)?,
            })
        })
        .collect()
}

impl Store {
    /// Appends an event (its `at` set); its id once its row is committed.
    pub async fn append_audit(&self, event: NewEvent, now: Millis) -> StoreResult<i64> {
        self.db.append(event, now).await
    }

    /// A page of events matching `filter`, newest first.
    pub async fn audit_page(&self, filter: Filter) -> StoreResult<Page> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    let (sql, bound, limit) = page_sql(&filter);
                    let params: Vec<&dyn Param> = bound
                        .iter()
                        .map(|b| match b {
                            Bound::Text(t) => t as &dyn Param,
                            Bound::Int(n) => n as &dyn Param,
                        })
                        .collect();
                    let events = c
                        .query(&sql, &params, |r| stored_row(r).map(EventRow::from))
                        .await?;
                    Ok(page_of(events, limit))
                })
            })
            .await
    }

    /// Walks the whole chain, in pages of one snapshot, and reports the
    /// first edited, inserted or deleted row: the edited or inserted row
    /// itself, or the row after a gap.
    pub async fn verify_audit(&self) -> StoreResult<Verdict> {
        self.db.snapshot(|c| Box::pin(walk(c))).await
    }

    /// Deletes every row created before `cutoff` (a prefix of the chain, by
    /// id) and appends an `audit_pruned` row that anchors what remains; how
    /// many were deleted. Nothing is written when there is nothing to
    /// delete. The new row chains to the newest row before the deletion (the
    /// newest remaining one, or the last deleted when none remains), so ids
    /// never restart.
    pub async fn prune_audit(
        &self,
        cutoff: Millis,
        origin: Origin,
        actor: Option<String>,
        now: Millis,
    ) -> StoreResult<u64> {
        self.db
            .unit(Chain::Before, now, move |c| {
                Box::pin(async move {
                    let last: Option<(i64, String)> = c
                        .query_opt(
                            "SELECT id, hash FROM audit_log WHERE id = \
                             (SELECT max(id) FROM audit_log WHERE created_at < $1)",
                            &[&rfc3339_ms(cutoff)],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .await?;
                    let Some((last_id, anchor_hash)) = last else {
                        return Ok((0, Vec::new()));
                    };
                    let deleted = c
                        .execute("DELETE FROM audit_log WHERE id <= $1", &[&last_id])
                        .await?;
                    let mut event = NewEvent::new(Action::AuditPruned, &origin)
                        .extra("deleted", deleted)
                        .extra("older_than", rfc3339_ms(cutoff))
                        .extra("first_kept_id", last_id + 1)
                        .extra("anchor_hash", anchor_hash);
                    if let Some(actor) = actor {
                        event = event.extra("actor_id", actor);
                    }
                    Ok((deleted, vec![event]))
                })
            })
            .await
    }

    /// The id of the newest audit row (0 when there is none).
    pub async fn audit_head(&self) -> StoreResult<i64> {
        self.db
            .run(|c| {
                Box::pin(async move {
                    c.query_one("SELECT coalesce(max(id), 0) FROM audit_log", &[], |r| {
                        r.get(0)
                    })
                    .await
                })
            })
            .await
    }

    /// The recoveries (password changed or reset, logout-all, disabled)
    /// recorded in audit rows after `after`, oldest first, at most 1,000: how
    /// a process learns of the recoveries other processes made.
    pub async fn recoveries_after(&self, after: i64) -> StoreResult<Vec<Recovery>> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    let [a, b, d, e] = RECOVERY_ACTIONS;
                    let rows = c
                        .query(
                            "SELECT a.id, u.email, a.created_at FROM audit_log a
                             JOIN users u ON u.id = a.user_id
                             WHERE a.id > $1 AND a.action IN ($2, $3, $4, $5)
                             ORDER BY a.id LIMIT 1000",
                            &[&after, &a, &b, &d, &e],
                            |r| Ok((r.get::<i64>(0)?, r.get::<String>(1)?, r.get::<String>(2)?)),
                        )
                        .await?;
                    Ok(recoveries(rows))
                })
            })
            .await
    }
}

/// The audit actions that change what a profile (`GET /auth/me`, forward
/// auth's `Remote-*` headers) shows: an account's row, its second factor or
/// its groups. Any new action that does must be added here, or other
/// processes serve the old profile until it expires.
pub const ACCOUNT_CHANGE_ACTIONS: [&str; 6] = [
    "groups_changed",
    "mfa_enabled",
    "mfa_disabled",
    "mfa_reset",
    "user_disabled",
    "user_enabled",
];

/// The accounts an audit row changed: its user, and the user it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChange {
    pub id: i64,
    pub users: Vec<Uuid>,
}

impl Store {
    /// The changes to accounts recorded in audit rows after `after`, oldest
    /// first, at most 1,000: how a process learns that a profile another
    /// process changed is stale.
    pub async fn account_changes_after(&self, after: i64) -> StoreResult<Vec<AccountChange>> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    let [a, b, d, e, f, g] = ACCOUNT_CHANGE_ACTIONS;
                    c.query(
                        "SELECT id, user_id, resource_type, resource_id FROM audit_log
                         WHERE id > $1 AND action IN ($2, $3, $4, $5, $6, $7)
                         ORDER BY id LIMIT 1000",
                        &[&after, &a, &b, &d, &e, &f, &g],
                        |r| {
                            let user: Option<String> = r.get(1)?;
                            let kind: Option<String> = r.get(2)?;
                            let resource: Option<String> = r.get(3)?;
                            let about = resource.filter(|_| kind.as_deref() == Some("user"));
                            Ok(AccountChange {
                                id: r.get(0)?,
                                users: [user, about]
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|u| Uuid::parse_str(&u).ok())
                                    .collect(),
                            })
                        },
                    )
                    .await
                })
            })
            .await
    }
}

/// Walks the chain from its anchor (the newest `audit_pruned` row's, or the
/// genesis) in pages of [`WALK_PAGE`] rows.
async fn walk(c: &mut Conn<'_>) -> StoreResult<Verdict> {
    let pruned: Option<String> = c
        .query_opt(
            "SELECT extra_data FROM audit_log WHERE action = 'audit_pruned' ORDER BY id DESC LIMIT 1",
            &[],
            |r| r.get(0),
        )
        .await?;
    let mut walk = Walk::from(anchor_from(pruned.as_deref()));
    let page = format!("SELECT {STORED_COLS} FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2");
    let mut after = i64::MIN;
    loop {
        let rows = c.query(&page, &[&after, &WALK_PAGE], stored_row).await?;
        let full = rows.len() as i64 == WALK_PAGE;
        for row in rows {
            after = row.id;
            if let Some(bad) = walk.check(row) {
                return Ok(bad);
            }
        }
        if !full {
            return Ok(walk.finish());
        }
    }
}

/// Verifies the chain in a SQLite database through `conn`, a plain
/// connection (for tests and drills that look at a file a server may hold).
pub fn verify_sqlite(conn: &mut rusqlite::Connection) -> StoreResult<Verdict> {
    // One snapshot, as a prune may commit meanwhile.
    let begun = conn.execute_batch("BEGIN DEFERRED");
    let verdict = finish(walk(&mut Conn::Sqlite(conn)));
    if begun.is_ok() {
        let _ = conn.execute_batch("COMMIT");
    }
    verdict
}
