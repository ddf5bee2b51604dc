//! One SQLite connection: its pragmas, the schema, running a statement
//! written in the common dialect, and what its errors mean.

use std::time::Duration;

use anyhow::{anyhow, Context};
use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use crate::store::db::{lite, Param, Row};
use crate::store::{StoreError, StoreResult};

/// The whole schema, applied at every start-up.
pub const SCHEMA: &str = include_str!("../../../../schema.sql");
/// The schema version `schema.sql` sets.
pub const SCHEMA_VERSION: i64 = 4;
/// What brings a database of an older version up to the next, before
/// `schema.sql` runs (its `CREATE … IF NOT EXISTS` cannot add columns).
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'api';
     ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT 'pwd';
     ALTER TABLE sessions ADD COLUMN cookie_hash BLOB;",
    ),
    (
        2,
        "ALTER TABLE sessions ADD COLUMN client_id TEXT;
         ALTER TABLE sessions ADD COLUMN scope TEXT;",
    ),
];

/// How long a statement waits for a lock held by another connection.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets the per-connection pragmas every connection needs.
pub fn configure_connection(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Every statement of the store stays prepared (there are about fifty;
    // the default cache holds sixteen, and the writer runs them all).
    conn.set_prepared_statement_cache_capacity(64);
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
    // Read again under the write lock: another process may have migrated.
    let mut version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (from, sql) in MIGRATIONS {
        if version == *from {
            tx.execute_batch(sql)
                .with_context(|| format!("cannot migrate the schema from version {from}"))?;
            version = from + 1;
        }
    }
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

/// A statement's values, on the stack (the audit insert has twelve).
type Params<'p> = smallvec::SmallVec<[&'p dyn rusqlite::ToSql; 12]>;

/// Runs a statement on `conn`.
pub(in crate::store) fn execute(
    conn: &Connection,
    sql: &str,
    params: &[&dyn Param],
) -> StoreResult<u64> {
    let mut stmt = conn.prepare_cached(&lite(sql)).map_err(classify)?;
    let params: Params<'_> = params.iter().map(|p| p.lite()).collect();
    let changed = stmt.execute(params.as_slice()).map_err(classify)?;
    Ok(changed as u64)
}

/// Up to `limit` rows of a query on `conn`, each read by `map`.
pub(in crate::store) fn query<T>(
    conn: &Connection,
    sql: &str,
    params: &[&dyn Param],
    limit: usize,
    map: &dyn Fn(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(&lite(sql)).map_err(classify)?;
    let params: Params<'_> = params.iter().map(|p| p.lite()).collect();
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
