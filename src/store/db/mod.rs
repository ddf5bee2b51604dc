//! The one seam between the storage wing and its databases. Every statement
//! of `store/` is written once, in PostgreSQL's dialect (`$n` placeholders,
//! `FOR UPDATE` where a row must be held), and runs through a [`Conn`]:
//! [`sqlite`] rewrites `$n` to `?n` and drops `FOR UPDATE` (its one writer
//! already serializes every change), [`postgres`] runs it as written.
//!
//! [`Db`] is how a method of the store reaches a connection:
//! - [`Db::read`] / [`Db::run`]: one pooled connection, no transaction;
//! - [`Db::transaction`]: a change that is not audited, all or nothing;
//! - [`Db::unit`]: a change and the audit rows that describe it, committed
//!   together (SQLite: in the writer's next batch; PostgreSQL: in one
//!   transaction, the chain's lock taken last);
//! - [`Db::snapshot`]: reads that must see one state (the chain's walk).
//!
//! Nothing outside `store/` sees this module.

pub(super) mod chain;
#[cfg(feature = "postgres")]
pub(super) mod postgres;
pub(super) mod sqlite;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use anyhow::anyhow;
use uuid::Uuid;

use super::{Audit, StoreError, StoreResult};
use crate::audit::event::NewEvent;
use crate::clock::Millis;
use crate::metrics::Metrics;

/// What a change given to [`Db`] returns: a future that borrows the connection.
pub(super) type Fut<'c, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'c>>;

/// A value bound to a placeholder: anything both drivers can bind.
#[cfg(feature = "postgres")]
pub(super) trait Param: rusqlite::ToSql + tokio_postgres::types::ToSql + Sync {
    fn lite(&self) -> &dyn rusqlite::ToSql;
    fn pg(&self) -> &(dyn tokio_postgres::types::ToSql + Sync);
}
#[cfg(feature = "postgres")]
impl<T: rusqlite::ToSql + tokio_postgres::types::ToSql + Sync> Param for T {
    fn lite(&self) -> &dyn rusqlite::ToSql {
        self
    }
    fn pg(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        self
    }
}
/// A value bound to a placeholder: anything both drivers can bind.
#[cfg(not(feature = "postgres"))]
pub(super) trait Param: rusqlite::ToSql + Sync {
    fn lite(&self) -> &dyn rusqlite::ToSql;
}
#[cfg(not(feature = "postgres"))]
impl<T: rusqlite::ToSql + Sync> Param for T {
    fn lite(&self) -> &dyn rusqlite::ToSql {
        self
    }
}

/// A column type both drivers can read.
#[cfg(feature = "postgres")]
pub(super) trait Col:
    rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a>
{
}
#[cfg(feature = "postgres")]
impl<T: rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a>> Col for T {}
/// A column type both drivers can read.
#[cfg(not(feature = "postgres"))]
pub(super) trait Col: rusqlite::types::FromSql {}
#[cfg(not(feature = "postgres"))]
impl<T: rusqlite::types::FromSql> Col for T {}

/// One row of a result.
pub(super) enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    #[cfg(feature = "postgres")]
    Pg(&'r tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `idx` (from 0).
    pub(super) fn get<T: Col>(&self, idx: usize) -> StoreResult<T> {
        match self {
            Row::Sqlite(row) => row.get(idx).map_err(sqlite::connection::classify),
            #[cfg(feature = "postgres")]
            Row::Pg(row) => row.try_get(idx).map_err(postgres::classify),
        }
    }

    /// Column `idx`, a UUID stored as text.
    pub(super) fn uuid(&self, idx: usize) -> StoreResult<Uuid> {
        let text: String = self.get(idx)?;
        Uuid::parse_str(&text)
            .map_err(|e| StoreError::Other(anyhow!("bad uuid in column {idx}: {e}")))
    }
}

/// A connection, in a transaction or not.
pub(super) enum Conn<'a> {
    Sqlite(&'a mut rusqlite::Connection),
    #[cfg(feature = "postgres")]
    Pg(postgres::Pg<'a>),
}

impl Conn<'_> {
    /// Runs a statement; the number of rows it changed.
    pub(super) async fn execute(&mut self, sql: &str, params: &[&dyn Param]) -> StoreResult<u64> {
        match self {
            Conn::Sqlite(conn) => sqlite::connection::execute(conn, sql, params),
            #[cfg(feature = "postgres")]
            Conn::Pg(pg) => pg.execute(sql, params).await,
        }
    }

    /// Every row of a query, each read by `map`.
    pub(super) async fn query<T, F>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        map: F,
    ) -> StoreResult<Vec<T>>
    where
        F: Fn(&Row<'_>) -> StoreResult<T> + Send + Sync,
    {
        match self {
            Conn::Sqlite(conn) => sqlite::connection::query(conn, sql, params, usize::MAX, &map),
            #[cfg(feature = "postgres")]
            Conn::Pg(pg) => pg.query(sql, params, &map).await,
        }
    }

    /// The first row of a query, if there is one.
    pub(super) async fn query_opt<T, F>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        map: F,
    ) -> StoreResult<Option<T>>
    where
        F: Fn(&Row<'_>) -> StoreResult<T> + Send + Sync,
    {
        match self {
            Conn::Sqlite(conn) => sqlite::connection::query(conn, sql, params, 1, &map)
                .map(|rows| rows.into_iter().next()),
            #[cfg(feature = "postgres")]
            Conn::Pg(pg) => pg.query_opt(sql, params, &map).await,
        }
    }

    /// The first row of a query that always has one.
    pub(super) async fn query_one<T, F>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        map: F,
    ) -> StoreResult<T>
    where
        F: Fn(&Row<'_>) -> StoreResult<T> + Send + Sync,
    {
        self.query_opt(sql, params, map)
            .await?
            .ok_or_else(|| StoreError::Other(anyhow!("no row from: {sql}")))
    }
}

/// A storage backend: SQLite or PostgreSQL. Clones share it.
#[derive(Clone)]
pub(super) enum Db {
    Sqlite(sqlite::Sqlite),
    #[cfg(feature = "postgres")]
    Postgres(postgres::Postgres),
}

/// Where a unit's audit rows chain to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Chain {
    /// The newest row when the change is done (PostgreSQL takes the chain's
    /// lock only then, so that changes wait for each other as little as can be).
    After,
    /// The newest row before the change: the chain is held for the whole
    /// unit (for a change of the chain itself, such as pruning).
    Before,
}

impl Db {
    /// A point read: on SQLite on the calling thread when a connection is
    /// free at once (a primary-key lookup costs less than the hand-off to a
    /// blocking thread), else as [`Db::run`].
    pub(super) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, T> + Send + 'static,
    {
        match self {
            Db::Sqlite(db) => db.read(f).await,
            #[cfg(feature = "postgres")]
            Db::Postgres(db) => db.run(f).await,
        }
    }

    /// `f` on a pooled connection, outside any transaction.
    pub(super) async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, T> + Send + 'static,
    {
        match self {
            Db::Sqlite(db) => db.run(f).await,
            #[cfg(feature = "postgres")]
            Db::Postgres(db) => db.run(f).await,
        }
    }

    /// `f` in a transaction of its own, committed when it succeeds.
    pub(super) async fn transaction<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, T> + Send + 'static,
    {
        match self {
            Db::Sqlite(db) => db.transaction(f).await,
            #[cfg(feature = "postgres")]
            Db::Postgres(db) => db.transaction(f).await,
        }
    }

    /// `f` in a transaction that sees one state of the database, changing nothing.
    pub(super) async fn snapshot<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, T> + Send + 'static,
    {
        match self {
            Db::Sqlite(db) => db.snapshot(f).await,
            #[cfg(feature = "postgres")]
            Db::Postgres(db) => db.snapshot(f).await,
        }
    }

    /// A change and the audit rows it returns, committed together (each row
    /// without a time gets `now`): both or neither. Resolves once committed.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub(super) async fn unit<T, F>(&self, chain: Chain, now: Millis, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, (T, Audit)> + Send + 'static,
    {
        match self {
            Db::Sqlite(db) => db.unit(now, f).await,
            #[cfg(feature = "postgres")]
            Db::Postgres(db) => db.unit(chain, now, f).await,
        }
    }

    /// Appends one audit event (its time set); its id once committed.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub(super) async fn append(&self, event: NewEvent, now: Millis) -> StoreResult<i64> {
        match self {
            Db::Sqlite(db) => db.append(event).await,
            #[cfg(feature = "postgres")]
            Db::Postgres(db) => db.append(event, now).await,
        }
    }

    /// Reports audit rows written and commit latency to `metrics` from now on.
    pub(super) fn attach_metrics(&self, metrics: Arc<Metrics>) {
        match self {
            Db::Sqlite(db) => db.attach_metrics(metrics),
            #[cfg(feature = "postgres")]
            Db::Postgres(db) => db.attach_metrics(metrics),
        }
    }

    /// Commits what is queued and lets go of the database.
    pub(super) async fn stop(&self) {
        match self {
            Db::Sqlite(db) => db.stop().await,
            #[cfg(feature = "postgres")]
            Db::Postgres(_) => {}
        }
    }
}

/// Runs a future that never waits (a SQLite change on its own thread) to its end.
pub(super) fn finish<T>(fut: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => Err(StoreError::Other(anyhow!(
            "a SQLite statement waited for something"
        ))),
    }
}

/// A statement in SQLite's dialect: `$n` → `?n`, no `FOR UPDATE`; text
/// between single quotes is left as it is. (A byte scan: it runs for every
/// statement, the audit writer's inserts included.)
pub(super) fn lite(sql: &str) -> Cow<'_, str> {
    const FOR_UPDATE: &[u8] = b" FOR UPDATE";
    let bytes = sql.as_bytes();
    if !bytes.contains(&b'$') && !sql.contains(" FOR UPDATE") {
        return Cow::Borrowed(sql);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut quoted = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\'' {
            quoted = !quoted;
        } else if !quoted {
            if b == b'$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                out.push(b'?');
                i += 1;
                continue;
            }
            if b == b' ' && bytes[i..].starts_with(FOR_UPDATE) {
                i += FOR_UPDATE.len();
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    // Only ASCII was replaced or dropped, so the text is still UTF-8.
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| sql.to_owned()))
}
