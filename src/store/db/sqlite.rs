//! The SQLite driver: one database file in WAL mode, reads on a small pool
//! of connections, audited changes on the one writer ([`Writer`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use super::writer::Writer;
use super::{finish, lite, Conn, Fut, Param, Row};
use crate::audit::event::NewEvent;
use crate::clock::Millis;
use crate::metrics::Metrics;
use crate::store::{stamped, Audit, StoreError, StoreResult};

/// The whole schema, applied at every start-up.
pub const SCHEMA: &str = include_str!("../../../schema.sql");
/// The schema version `schema.sql` sets.
pub const SCHEMA_VERSION: i64 = 1;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_SIZE: u32 = 8;

/// A SQLite database: the read pool and the writer.
#[derive(Clone)]
pub(in crate::store) struct Sqlite {
    pool: Pool<SqliteConnectionManager>,
    writer: Writer,
}

/// Sets the per-connection pragmas every connection needs.
pub fn configure_connection(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;",
    )
}

/// Applies `schema.sql` in one transaction and checks the version.
pub fn apply_schema(conn: &mut Connection) -> anyhow::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(anyhow!(
            "database schema version {version} is newer than this portcullis understands ({SCHEMA_VERSION})"
        ));
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)
        .context("cannot apply schema.sql")?;
    tx.commit()?;
    Ok(())
}

/// Classifies a SQLite error: transient faults are [`StoreError::Unavailable`],
/// a broken uniqueness [`StoreError::Duplicate`].
pub fn classify(err: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(e, _) = &err {
        match e.code {
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::ReadOnly
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::OutOfMemory => return StoreError::Unavailable(err.into()),
            ErrorCode::ConstraintViolation
                if matches!(
                    e.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
            {
                return StoreError::Duplicate(err.into())
            }
            _ => {}
        }
    }
    StoreError::Other(err.into())
}

/// Runs a statement on `conn`.
pub(super) fn execute(conn: &Connection, sql: &str, params: &[&dyn Param]) -> StoreResult<u64> {
    let mut stmt = conn.prepare_cached(&lite(sql)).map_err(classify)?;
    let params: Vec<&dyn rusqlite::ToSql> = params.iter().map(|p| p.lite()).collect();
    let changed = stmt.execute(params.as_slice()).map_err(classify)?;
    Ok(changed as u64)
}

/// Up to `limit` rows of a query on `conn`, each read by `map`.
pub(super) fn query<T>(
    conn: &Connection,
    sql: &str,
    params: &[&dyn Param],
    limit: usize,
    map: &dyn Fn(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(&lite(sql)).map_err(classify)?;
    let params: Vec<&dyn rusqlite::ToSql> = params.iter().map(|p| p.lite()).collect();
    let mut rows = stmt.query(params.as_slice()).map_err(classify)?;
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(row) = rows.next().map_err(classify)? else {
            break;
        };
        out.push(map(&Row::Sqlite(row))?);
    }
    Ok(out)
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
    let result = finish(f(&mut Conn::Sqlite(conn)));
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    if !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch(end) {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            return Err(classify(e));
        }
    }
    result
}
