//! Appending to the audit chain, for both drivers: the head a new row
//! follows, and the insert of rows chained after it (see `audit::chain` for
//! how a row and its hash are made). SQLite's writer keeps the head between
//! units of a batch; PostgreSQL reads it under the chain's lock.

use super::{Conn, Param};
use crate::audit::chain::{chained, GENESIS};
use crate::audit::event::NewEvent;
use crate::clock::Millis;
use crate::store::StoreResult;

/// The advisory lock that serializes appends to the chain on PostgreSQL.
#[cfg(feature = "postgres")]
const CHAIN_LOCK: i64 = 0x706f_7274_6375_6c6c; // "portcull"

/// The newest row's `(id, hash)`: what the next row chains to.
pub(in crate::store) async fn head(conn: &mut Conn<'_>) -> StoreResult<(i64, String)> {
    let head = conn
        .query_opt(
            "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
            &[],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .await?;
    Ok(head.unwrap_or_else(|| (0, GENESIS.to_owned())))
}

/// Holds the chain until the transaction ends, so that rows appended by
/// several instances get one order (PostgreSQL; on SQLite the one writer
/// gives it).
#[cfg(feature = "postgres")]
pub(in crate::store) async fn lock(conn: &mut Conn<'_>) -> StoreResult<()> {
    conn.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])
        .await?;
    Ok(())
}

/// Inserts `events` chained after `head`; their ids and the new head.
pub(in crate::store) async fn insert_after(
    conn: &mut Conn<'_>,
    head: (i64, String),
    events: &[NewEvent],
    now: Millis,
) -> StoreResult<(Vec<i64>, (i64, String))> {
    let mut ids = Vec::with_capacity(events.len());
    let mut head = head;
    for row in chained(head.clone(), events, now) {
        let params: [&dyn Param; 12] = [
            &row.id,
            &row.created_at,
            &row.action,
            &row.user_id,
            &row.resource_type,
            &row.resource_id,
            &row.ip_address,
            &row.user_agent,
            &row.extra_data,
            &row.request_id,
            &row.prev_hash,
            &row.hash,
        ];
        conn.execute(
            "INSERT INTO audit_log (id, created_at, action, user_id, resource_type, resource_id,
                                    ip_address, user_agent, extra_data, request_id, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &params,
        )
        .await?;
        ids.push(row.id);
        head = (row.id, row.hash);
    }
    Ok((ids, head))
}
