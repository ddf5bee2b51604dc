//! The hash chain: `hash = SHA-256(prev_hash || canonical row)`, and its check.
//!
//! The canonical row is the JSON array `[id, created_at, action, user_id,
//! resource_type, resource_id, ip_address, user_agent, extra_data,
//! request_id]` (extra_data as its stored text), serialized by serde_json.
//! Hashes are lower-case hex. The first row ever written chains to
//! [`GENESIS`]; after retention pruning, the newest `audit_pruned` row names
//! the first kept row and the hash it must chain to.

use rusqlite::{Connection, Row};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Feeds serialized bytes straight into the hash.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields that the hash covers, as stored.
#[derive(Debug, Clone)]
pub struct RowFields<'a> {
    pub id: i64,
    pub created_at: &'a str,
    pub action: &'a str,
    pub user_id: Option<&'a str>,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    pub ip_address: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub extra_data: &'a str,
    pub request_id: Option<&'a str>,
}

/// The hash of a row given the hash before it.
pub fn row_hash(prev_hash: &str, row: &RowFields<'_>) -> String {
    // A tuple serializes as a JSON array, without building a `Value` tree.
    let fields = (
        row.id,
        row.created_at,
        row.action,
        row.user_id,
        row.resource_type,
        row.resource_id,
        row.ip_address,
        row.user_agent,
        row.extra_data,
        row.request_id,
    );
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    // Writing JSON into a hasher cannot fail.
    let _ = serde_json::to_writer(HashWriter(&mut hasher), &fields);
    hex::encode(hasher.finalize())
}

/// The result of a verification (`GET /admin/audit/verify`, `audit verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub ok: bool,
    pub checked: u64,
    pub first_bad_id: Option<i64>,
}

struct Stored {
    id: i64,
    created_at: String,
    action: String,
    user_id: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    ip_address: Option<String>,
    user_agent: Option<String>,
    extra_data: String,
    request_id: Option<String>,
    prev_hash: String,
    hash: String,
}

impl Stored {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
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

    fn computed_hash(&self) -> String {
        row_hash(
            &self.prev_hash,
            &RowFields {
                id: self.id,
                created_at: &self.created_at,
                action: &self.action,
                user_id: self.user_id.as_deref(),
                resource_type: self.resource_type.as_deref(),
                resource_id: self.resource_id.as_deref(),
                ip_address: self.ip_address.as_deref(),
                user_agent: self.user_agent.as_deref(),
                extra_data: &self.extra_data,
                request_id: self.request_id.as_deref(),
            },
        )
    }
}

/// Where the chain must start: `(first id, hash it chains to)`.
fn anchor(conn: &Connection) -> rusqlite::Result<(i64, String)> {
    let pruned: Option<String> = conn
        .query_row(
            "SELECT extra_data FROM audit_log WHERE action = 'audit_pruned' ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let from_pruned = pruned
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| {
            let id = v.get("first_kept_id")?.as_i64()?;
            let hash = v.get("anchor_hash")?.as_str()?.to_owned();
            Some((id, hash))
        });
    Ok(from_pruned.unwrap_or((1, GENESIS.to_owned())))
}

/// Walks the whole chain and reports the first edited, inserted or deleted row:
/// the edited or inserted row itself, or the row after a gap.
pub fn verify(conn: &Connection) -> rusqlite::Result<Verdict> {
    let (first_id, anchor_hash) = anchor(conn)?;
    let mut stmt = conn.prepare(
        "SELECT id, created_at, action, user_id, resource_type, resource_id, ip_address,
                user_agent, extra_data, request_id, prev_hash, hash
         FROM audit_log ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    let mut checked = 0u64;
    let mut expected: Option<(i64, String)> = None;
    while let Some(row) = rows.next()? {
        let row = Stored::from_row(row)?;
        checked += 1;
        let (want_id, want_prev) = match &expected {
            Some((id, hash)) => (id + 1, hash.as_str()),
            None => (first_id, anchor_hash.as_str()),
        };
        let bad =
            row.id != want_id || row.prev_hash != want_prev || row.computed_hash() != row.hash;
        if bad {
            return Ok(Verdict {
                ok: false,
                checked,
                first_bad_id: Some(row.id),
            });
        }
        expected = Some((row.id, row.hash));
    }
    Ok(Verdict {
        ok: true,
        checked,
        first_bad_id: None,
    })
}
