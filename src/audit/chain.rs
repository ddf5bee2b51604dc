//! The hash chain: `hash = SHA-256(prev_hash || canonical row)`, and its check.
//!
//! The canonical row is the JSON array `[id, created_at, action, user_id,
//! resource_type, resource_id, ip_address, user_agent, extra_data,
//! request_id]` (extra_data as its stored text), serialized by serde_json.
//! Hashes are lower-case hex. The first row ever written chains to
//! [`GENESIS`]; after retention pruning, the newest `audit_pruned` row names
//! the first kept row and the hash it must chain to.

use super::event::NewEvent;
use crate::clock::Millis;
use crate::time_fmt::rfc3339_ms;
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

const MAX_IP_CHARS: usize = 45;
const MAX_UA_CHARS: usize = 512;

/// An audit row as it is stored: its fields and its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedRow {
    pub id: i64,
    pub created_at: String,
    pub action: &'static str,
    pub user_id: Option<String>,
    pub resource_type: Option<&'static str>,
    pub resource_id: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub extra_data: String,
    pub request_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

fn cut(text: Option<&str>, max: usize) -> Option<String> {
    text.map(|t| t.chars().take(max).collect())
}

/// The rows of `events` chained after `head`, the `(id, hash)` of the row
/// they follow: ids count on from it, and each hash covers the one before.
/// Whatever database stores them, a row is the same row with the same hash.
pub fn chained(head: (i64, String), events: &[NewEvent], now: Millis) -> Vec<ChainedRow> {
    let (mut last_id, mut last_hash) = head;
    events
        .iter()
        .map(|event| {
            let id = last_id + 1;
            let created_at = rfc3339_ms(event.at.unwrap_or(now));
            let user_id = event.user_id.map(|u| u.to_string());
            let ip_address = cut(event.origin.ip_address.as_deref(), MAX_IP_CHARS);
            let user_agent = cut(event.origin.user_agent.as_deref(), MAX_UA_CHARS);
            let extra_data = serde_json::to_string(&event.extra).unwrap_or_else(|_| "{}".into());
            let hash = row_hash(
                &last_hash,
                &RowFields {
                    id,
                    created_at: &created_at,
                    action: event.action.as_str(),
                    user_id: user_id.as_deref(),
                    resource_type: event.resource_type,
                    resource_id: event.resource_id.as_deref(),
                    ip_address: ip_address.as_deref(),
                    user_agent: user_agent.as_deref(),
                    extra_data: &extra_data,
                    request_id: event.origin.request_id.as_deref(),
                },
            );
            let row = ChainedRow {
                id,
                created_at,
                action: event.action.as_str(),
                user_id,
                resource_type: event.resource_type,
                resource_id: event.resource_id.clone(),
                ip_address,
                user_agent,
                extra_data,
                request_id: event.origin.request_id.clone(),
                prev_hash: std::mem::replace(&mut last_hash, hash.clone()),
                hash,
            };
            last_id = id;
            row
        })
        .collect()
}

/// The result of a verification (`GET /admin/audit/verify`, `audit verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Verdict {
    pub ok: bool,
    pub checked: u64,
    pub first_bad_id: Option<i64>,
}

/// A stored row with every field the hash covers, as read back.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub id: i64,
    pub created_at: String,
    pub action: String,
    pub user_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub extra_data: String,
    pub request_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl From<StoredRow> for super::event::EventRow {
    /// The row as the API shows it: `extra_data` parsed (kept as a string if it
    /// is not JSON, which only an edit of the table can cause).
    fn from(row: StoredRow) -> Self {
        Self {
            id: row.id,
            extra_data: serde_json::from_str(&row.extra_data)
                .unwrap_or(serde_json::Value::String(row.extra_data)),
            created_at: row.created_at,
            action: row.action,
            user_id: row.user_id,
            resource_type: row.resource_type,
            resource_id: row.resource_id,
            ip_address: row.ip_address,
            user_agent: row.user_agent,
            request_id: row.request_id,
            prev_hash: row.prev_hash,
            hash: row.hash,
        }
    }
}

impl StoredRow {
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

/// Where the chain must start, `(first id, hash it chains to)`, given the
/// `extra_data` of the newest `audit_pruned` row (if any).
pub fn anchor_from(pruned_extra: Option<&str>) -> (i64, String) {
    pruned_extra
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .and_then(|v| {
            let id = v.get("first_kept_id")?.as_i64()?;
            let hash = v.get("anchor_hash")?.as_str()?.to_owned();
            Some((id, hash))
        })
        .unwrap_or((1, GENESIS.to_owned()))
}

/// Checks rows fed in id order against the chain, whatever stores them.
#[derive(Debug)]
pub struct Walk {
    checked: u64,
    expected: (i64, String),
}

impl Walk {
    /// A walk from `anchor` (see [`anchor_from`]).
    pub fn from(anchor: (i64, String)) -> Self {
        Self {
            checked: 0,
            expected: anchor,
        }
    }

    /// Checks the next row; the verdict when it is the first bad one: the
    /// edited or inserted row itself, or the row after a gap.
    pub fn check(&mut self, row: StoredRow) -> Option<Verdict> {
        self.checked += 1;
        let (want_id, want_prev) = (&self.expected.0, self.expected.1.as_str());
        if row.id != *want_id || row.prev_hash != want_prev || row.computed_hash() != row.hash {
            return Some(Verdict {
                ok: false,
                checked: self.checked,
                first_bad_id: Some(row.id),
            });
        }
        self.expected = (row.id + 1, row.hash);
        None
    }

    /// Every row was sound.
    pub fn finish(self) -> Verdict {
        Verdict {
            ok: true,
            checked: self.checked,
            first_bad_id: None,
        }
    }
}
