//! The one writer: a thread that owns the database's only write connection
//! and commits in batches, one transaction (and one fsync) per batch. A batch
//! holds audit events and *units*: a state change together with the audit
//! rows that describe it, each unit in its own savepoint, so that a change and
//! its rows commit together or not at all. Every sender learns the outcome
//! once its batch is committed (or failed).

use std::any::Any;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use anyhow::{anyhow, Context};
use crossbeam_channel::{Receiver, Sender};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::connection::{classify, configure_connection};
use crate::audit::event::NewEvent;
use crate::clock::{Clock, Millis, SystemClock};
use crate::metrics::Metrics;
use crate::store::db::{chain, finish, Conn};
use crate::store::{StoreError, StoreResult};

/// Most messages committed in one transaction.
pub const MAX_BATCH: usize = 4096;

/// Delivered to the sender of an event once its batch is committed (or failed).
type Ack = oneshot::Sender<Result<i64, String>>;

type Value = Box<dyn Any + Send>;
/// A state change: runs inside the batch's transaction and returns its value
/// and the audit rows that commit with it.
type UnitFn = Box<dyn FnOnce(&mut Connection) -> StoreResult<(Value, Vec<NewEvent>)> + Send>;

pub(crate) enum Msg {
    Append(Box<NewEvent>, Option<Ack>),
    Unit(UnitFn, oneshot::Sender<StoreResult<Value>>),
    Stop,
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

/// A handle on the writer thread; clones share it.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<Inner>,
}

struct Inner {
    sender: Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<OnceLock<Arc<Metrics>>>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable(anyhow!("the database writer has stopped"))
}

impl Writer {
    /// Opens the write connection on `path` and starts the thread.
    pub fn start(path: &Path) -> anyhow::Result<Self> {
        let mut conn = open_writer(path)?;
        let (sender, rx) = crossbeam_channel::unbounded::<Msg>();
        let metrics: Arc<OnceLock<Arc<Metrics>>> = Arc::default();
        let seen = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("portcullis-writer".into())
            .spawn(move || run(&mut conn, &rx, &seen))
            .map_err(|e| anyhow!("cannot start the database writer: {e}"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                sender,
                thread: Mutex::new(Some(thread)),
                metrics,
            }),
        })
    }

    /// Reports batch latency and rows written to `metrics` from now on.
    pub fn attach_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.inner.metrics.set(metrics);
    }

    /// Appends an event (its `at` set); resolves once its row is committed.
    pub async fn append(&self, event: NewEvent) -> StoreResult<i64> {
        let (ack, done) = oneshot::channel();
        self.inner
            .sender
            .send(Msg::Append(Box::new(event), Some(ack)))
            .map_err(|_| stopped())?;
        done.await
            .map_err(|_| stopped())?
            .map_err(|e| StoreError::Unavailable(anyhow!("{e}")))
    }

    /// Runs `change` in the writer's transaction and commits it with the audit
    /// rows it returns: both or neither. Resolves once committed.
    pub async fn unit<T, F>(&self, change: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<(T, Vec<NewEvent>)> + Send + 'static,
    {
        let (ack, done) = oneshot::channel();
        let unit: UnitFn = Box::new(move |conn| {
            change(conn).map(|(value, events)| (Box::new(value) as Value, events))
        });
        self.inner
            .sender
            .send(Msg::Unit(unit, ack))
            .map_err(|_| stopped())?;
        let value = done.await.map_err(|_| stopped())??;
        value
            .downcast::<T>()
            .map(|v| *v)
            .map_err(|_| StoreError::Other(anyhow!("a unit returned a value of another type")))
    }

    /// Writes what is queued, then stops the thread and waits for it.
    pub async fn stop(&self) {
        let _ = self.inner.sender.send(Msg::Stop);
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// What a message of a batch was, and what its sender will be told.
enum Outcome {
    Event(Option<Ack>, Option<i64>),
    Unit(oneshot::Sender<StoreResult<Value>>, StoreResult<Value>),
}

fn run(conn: &mut Connection, rx: &Receiver<Msg>, metrics: &OnceLock<Arc<Metrics>>) {
    let mut batch: Vec<Msg> = Vec::with_capacity(MAX_BATCH);
    let mut stop = false;
    while !stop {
        let Ok(mut next) = rx.recv() else { break };
        loop {
            if matches!(next, Msg::Stop) {
                stop = true;
                break;
            }
            batch.push(next);
            if batch.len() >= MAX_BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(msg) => next = msg,
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let (outcomes, rows, failure) = commit(conn, batch.drain(..));
        if let Some(m) = metrics.get() {
            m.audit_write_seconds
                .observe(started.elapsed().as_secs_f64());
            if failure.is_none() {
                m.audit_rows.inc_by(rows);
            }
        }
        if let Some(e) = &failure {
            tracing::error!(error = %e, messages = outcomes.len(), "batch not written");
        }
        for outcome in outcomes {
            match (outcome, &failure) {
                (Outcome::Event(ack, id), None) => {
                    if let (Some(ack), Some(id)) = (ack, id) {
                        let _ = ack.send(Ok(id));
                    }
                }
                (Outcome::Event(ack, _), Some(e)) => {
                    if let Some(ack) = ack {
                        let _ = ack.send(Err(e.clone()));
                    }
                }
                (Outcome::Unit(ack, result), None) => {
                    let _ = ack.send(result);
                }
                (Outcome::Unit(ack, _), Some(e)) => {
                    let _ = ack.send(Err(StoreError::Unavailable(anyhow!("{e}"))));
                }
            }
        }
    }
}

/// Writes one batch in one transaction. Returns each message's outcome, the
/// rows appended, and the error that failed the whole batch, if one did.
fn commit(
    conn: &mut Connection,
    batch: impl Iterator<Item = Msg>,
) -> (Vec<Outcome>, u64, Option<String>) {
    let mut outcomes = Vec::with_capacity(MAX_BATCH);
    let mut rows = 0u64;
    let now = SystemClock.now_ms();
    let mut failure: Option<String> = None;
    let mut pending: Vec<Msg> = batch.collect();
    let begun = conn
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| e.to_string());
    let mut head = match begun
        .and_then(|()| finish(chain::head(&mut Conn::Sqlite(conn))).map_err(|e| e.to_string()))
    {
        Ok(head) => Some(head),
        Err(e) => {
            failure = Some(e);
            None
        }
    };
    for msg in pending.drain(..) {
        match msg {
            Msg::Append(event, ack) => {
                let id = head.take().and_then(|h| {
                    let event = std::slice::from_ref(&*event);
                    match finish(chain::insert_after(&mut Conn::Sqlite(conn), h, event, now)) {
                        Ok((ids, next)) => {
                            head = Some(next);
                            rows += 1;
                            ids.first().copied()
                        }
                        Err(e) => {
                            failure.get_or_insert(e.to_string());
                            None
                        }
                    }
                });
                outcomes.push(Outcome::Event(ack, id));
            }
            Msg::Unit(change, ack) => {
                let Some(h) = head.take() else {
                    outcomes.push(Outcome::Unit(ack, Err(stopped())));
                    continue;
                };
                let (result, next) = unit(conn, change, h.clone(), now, &mut rows);
                if conn.is_autocommit() {
                    // SQLite gave up the whole transaction (an I/O error, a
                    // full disk): nothing of this batch is written.
                    failure.get_or_insert_with(|| match &result {
                        Err(e) => e.to_string(),
                        Ok(_) => "the transaction was rolled back".into(),
                    });
                } else {
                    head = Some(next.unwrap_or(h));
                }
                outcomes.push(Outcome::Unit(ack, result));
            }
            Msg::Stop => {}
        }
    }
    if failure.is_none() {
        if let Err(e) = conn.execute_batch("COMMIT") {
            failure = Some(e.to_string());
        }
    }
    if failure.is_some() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    (outcomes, rows, failure)
}

/// One unit in its own savepoint: the change, then its audit rows. On any
/// error the savepoint is rolled back and the batch goes on without it.
fn unit(
    conn: &mut Connection,
    change: UnitFn,
    head: (i64, String),
    now: Millis,
    rows: &mut u64,
) -> (StoreResult<Value>, Option<(i64, String)>) {
    if let Err(e) = conn.execute_batch("SAVEPOINT unit") {
        return (Err(classify(e)), None);
    }
    // A change that panics is rolled back like one that fails: the writer
    // thread, which every audited change needs, lives on.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        change(conn).and_then(|(value, events)| {
            let (_, next) = finish(chain::insert_after(
                &mut Conn::Sqlite(conn),
                head,
                &events,
                now,
            ))?;
            Ok((value, next, events.len()))
        })
    }))
    .unwrap_or_else(|_| Err(StoreError::Other(anyhow!("a change panicked"))));
    let released = result.and_then(|done| {
        conn.execute_batch("RELEASE unit")
            .map(|()| done)
            .map_err(classify)
    });
    match released {
        Ok((value, next, n)) => {
            *rows += n as u64;
            (Ok(value), Some(next))
        }
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK TO unit; RELEASE unit");
            }
            (Err(e), None)
        }
    }
}

/// Appends `events` in one transaction of their own on `conn` (a connection
/// from [`open_writer`]), chained after the newest row: what the writer does
/// for one batch, without the thread (for the benchmarks' baselines).
pub fn append_alone(
    conn: &mut Connection,
    events: &[NewEvent],
    now: Millis,
) -> StoreResult<Vec<i64>> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(classify)?;
    let appended = finish(async {
        let mut c = Conn::Sqlite(conn);
        let head = chain::head(&mut c).await?;
        chain::insert_after(&mut c, head, events, now).await
    });
    let committed =
        appended.and_then(|(ids, _)| conn.execute_batch("COMMIT").map(|()| ids).map_err(classify));
    if committed.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    committed
}
