//! The SQLite driver: one database file in WAL mode, reads on a small pool
//! of connections, audited changes on the one writer ([`Writer`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

pub(in crate::store) mod connection;
pub(in crate::store) mod writer;

use super::{finish, Conn, Fut};
use crate::audit::event::NewEvent;
use crate::clock::Millis;
use crate::metrics::Metrics;
use crate::store::{stamped, Audit, StoreError, StoreResult};
use connection::{apply_schema, classify, configure_connection, BUSY_TIMEOUT};
use writer::Writer;

const POOL_SIZE: u32 = 8;

/// A SQLite database: the read pool and the writer.
#[derive(Clone)]
pub(in crate::store) struct Sqlite {
    pool: Pool<SqliteConnectionManager>,
    writer: Writer,
}

impl Sqlite {
    /// Opens (creating if needed) the database at `path`, applies the schema
    /// and starts the writer.
    pub(in crate::store) fn open(path: &Path) -> anyhow::Result<Self> {
        // Only this user may read the database: it is created 0600 (SQLite
        // gives its -wal and -shm the same mode), and files an earlier
        // version left readable are narrowed.
        crate::private_files::ensure(path)
            .with_context(|| format!("cannot create database {}", path.display()))?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            crate::private_files::narrow(Path::new(&side))
                .with_context(|| format!("cannot restrict {}", Path::new(&side).display()))?;
        }
        let mut conn = Connection::open(path)
            .with_context(|| format!("cannot open database {}", path.display()))?;
        configure_connection(&conn)
            .with_context(|| format!("cannot configure database {}", path.display()))?;
        apply_schema(&mut conn)?;
        drop(conn);
        let manager = SqliteConnectionManager::file(path).with_init(|c| configure_connection(c));
        let pool = Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(BUSY_TIMEOUT)
            .build(manager)
            .with_context(|| format!("cannot open database {}", path.display()))?;
        let writer = Writer::start(path)?;
        Ok(Self { pool, writer })
    }

    fn connection(&self) -> StoreResult<r2d2::PooledConnection<SqliteConnectionManager>> {
        self.pool
            .get()
            .map_err(|e| StoreError::Unavailable(anyhow!("no database connection: {e}")))
    }

    /// `f` with a pooled connection on a blocking thread.
    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.connection()?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Other(anyhow!("storage task failed: {e}")))?
    }

    pub(super) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, T> + Send + 'static,
    {
        match self.pool.try_get() {
            Some(mut conn) => finish(f(&mut Conn::Sqlite(&mut conn))),
            None => self.run(f).await,
        }
    }

    pub(super) async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, T> + Send + 'static,
    {
        self.blocking(move |conn| finish(f(&mut Conn::Sqlite(conn))))
            .await
    }

    pub(super) async fn transaction<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, T> + Send + 'static,
    {
        self.blocking(move |conn| in_transaction(conn, "BEGIN IMMEDIATE", f))
            .await
    }

    pub(super) async fn snapshot<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, T> + Send + 'static,
    {
        // A deferred transaction in WAL mode reads one snapshot throughout.
        self.blocking(move |conn| in_transaction(conn, "BEGIN DEFERRED", f))
            .await
    }

    pub(super) async fn unit<T, F>(&self, now: Millis, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, (T, Audit)> + Send + 'static,
    {
        self.writer
            .unit(move |conn| {
                let (value, audit) = finish(f(&mut Conn::Sqlite(conn)))?;
                Ok((value, stamped(audit, now)))
            })
            .await
    }

    pub(super) async fn append(&self, event: NewEvent) -> StoreResult<i64> {
        self.writer.append(event).await
    }

    pub(super) fn attach_metrics(&self, metrics: Arc<Metrics>) {
        self.writer.attach_metrics(metrics);
    }

    pub(super) async fn stop(&self) {
        self.writer.stop().await;
    }
}

/// `f` between `begin` and a commit (a rollback when it fails).
fn in_transaction<T, F>(conn: &mut Connection, begin: &str, f: F) -> StoreResult<T>
where
    F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, T>,
{
    conn.execute_batch(begin).map_err(classify)?;
    // A panic rolls back too: the connection goes back to the pool, and one
    // left inside a transaction would hold the database's write lock.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        finish(f(&mut Conn::Sqlite(conn)))
    }))
    .unwrap_or_else(|_| Err(StoreError::Other(anyhow!("a transaction panicked"))));
    let result = match result {
        // SQLite may have given the transaction up by itself (an I/O error).
        Ok(_) if conn.is_autocommit() => Err(StoreError::Unavailable(anyhow!(
            "the transaction was rolled back"
        ))),
        Ok(value) => conn
            .execute_batch("COMMIT")
            .map(|()| value)
            .map_err(classify),
        Err(e) => Err(e),
    };
    if result.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}
