//! The one audit writer: a thread that owns a SQLite connection and appends
//! queued events in batches, one transaction (and one fsync) per batch. Every
//! event's sender learns when its row is committed.

use std::path::Path;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context};
use crossbeam_channel::{Receiver, Sender};
use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::chain::{row_hash, RowFields, GENESIS};
use super::event::NewEvent;
use std::sync::Arc;

use crate::clock::{Millis, SharedClock};
use crate::metrics::Metrics;
use crate::store::sqlite::configure_connection;
use crate::time_fmt::rfc3339_ms;

/// Most events committed in one transaction.
pub const MAX_BATCH: usize = 4096;
const MAX_IP_CHARS: usize = 45;
const MAX_UA_CHARS: usize = 512;

/// Delivered to the sender once its batch is committed (or failed).
pub type Ack = oneshot::Sender<Result<i64, String>>;

pub(super) enum Msg {
    Append(Box<NewEvent>, Option<Ack>),
}

/// Opens the writer's connection: the pool's pragmas, plus `synchronous=FULL`
/// so that a commit is on disk before anyone is told, and a page cache of
/// 16 MiB: enough for the indexes' hot pages (see the audit benchmark).
pub fn open_writer(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    configure_connection(&conn)?;
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA cache_size = -16384;
         PRAGMA wal_autocheckpoint = 4000;",
    )?;
    Ok(conn)
}

/// Starts the writer thread.
pub(super) fn spawn(
    mut conn: Connection,
    clock: SharedClock,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(Sender<Msg>, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    let handle = std::thread::Builder::new()
        .name("portcullis-audit".into())
        .spawn(move || run(&mut conn, &rx, clock.as_ref(), &metrics))
        .map_err(|e| anyhow!("cannot start the audit writer: {e}"))?;
    Ok((tx, handle))
}

fn run(
    conn: &mut Connection,
    rx: &Receiver<Msg>,
    clock: &dyn crate::clock::Clock,
    metrics: &Metrics,
) {
    let mut events: Vec<NewEvent> = Vec::with_capacity(MAX_BATCH);
    let mut acks: Vec<Option<Ack>> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        let Msg::Append(event, ack) = first;
        events.push(*event);
        acks.push(ack);
        while events.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Append(event, ack)) => {
                    events.push(*event);
                    acks.push(ack);
                }
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let result = append(conn, &events, clock.now_ms());
        metrics
            .audit_write_seconds
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(ids) => {
                metrics.audit_rows.inc_by(ids.len() as u64);
                for (ack, id) in acks.drain(..).zip(ids) {
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(id));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "audit batch not written");
                let message = e.to_string();
                for ack in acks.drain(..).flatten() {
                    let _ = ack.send(Err(message.clone()));
                }
            }
        }
        events.clear();
        acks.clear();
    }
}

fn cut(text: Option<&str>, max: usize) -> Option<String> {
    text.map(|t| t.chars().take(max).collect())
}

/// Appends `events` in one transaction, chaining each to the row before.
/// Returns their ids. Used by the writer thread and by the CLI.
pub fn append(
    conn: &mut Connection,
    events: &[NewEvent],
    now: Millis,
) -> rusqlite::Result<Vec<i64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ids = append_in(&tx, events, now)?;
    tx.commit()?;
    Ok(ids)
}

/// The newest row's id and hash: what the next row chains to.
pub fn chain_head(tx: &Transaction<'_>) -> rusqlite::Result<(i64, String)> {
    tx.query_row(
        "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .or_else(|e| match e {
        rusqlite::Error::QueryReturnedNoRows => Ok((0, GENESIS.to_owned())),
        e => Err(e),
    })
}

/// [`append`] inside a transaction the caller commits.
pub fn append_in(
    tx: &Transaction<'_>,
    events: &[NewEvent],
    now: Millis,
) -> rusqlite::Result<Vec<i64>> {
    let head = chain_head(tx)?;
    append_after(tx, head, events, now)
}

/// Appends `events` after `head`, the `(id, hash)` of the row they follow.
pub fn append_after(
    tx: &Transaction<'_>,
    head: (i64, String),
    events: &[NewEvent],
    now: Millis,
) -> rusqlite::Result<Vec<i64>> {
    let (mut last_id, mut last_hash) = head;
    let mut ids = Vec::with_capacity(events.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit_log (id, created_at, action, user_id, resource_type, resource_id,
                                    ip_address, user_agent, extra_data, request_id, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for event in events {
            let id = last_id + 1;
            let created_at = rfc3339_ms(event.at.unwrap_or(now));
            let user_id = event.user_id.map(|u| u.to_string());
            let ip = cut(event.origin.ip_address.as_deref(), MAX_IP_CHARS);
            let ua = cut(event.origin.user_agent.as_deref(), MAX_UA_CHARS);
            let extra = serde_json::to_string(&event.extra).unwrap_or_else(|_| "{}".into());
            let fields = RowFields {
                id,
                created_at: &created_at,
                action: event.action.as_str(),
                user_id: user_id.as_deref(),
                resource_type: event.resource_type,
                resource_id: event.resource_id.as_deref(),
                ip_address: ip.as_deref(),
                user_agent: ua.as_deref(),
                extra_data: &extra,
                request_id: event.origin.request_id.as_deref(),
            };
            let hash = row_hash(&last_hash, &fields);
            insert.execute(params![
                id,
                created_at,
                fields.action,
                fields.user_id,
                fields.resource_type,
                fields.resource_id,
                fields.ip_address,
                fields.user_agent,
                fields.extra_data,
                fields.request_id,
                last_hash,
                hash,
            ])?;
            ids.push(id);
            last_id = id;
            last_hash = hash;
        }
    }
    Ok(ids)
}
