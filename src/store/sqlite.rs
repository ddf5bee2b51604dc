//! The SQLite [`Store`]: one database file, WAL mode, a small connection pool,
//! every call run on a blocking thread.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use async_trait::async_trait;
use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};
use uuid::Uuid;

use super::{
    stamped, with_evicted, with_revoked, Audit, MfaChallenge, NewUser, RateLimitRow, RecentLogin,
    Recovery, Revoked, Rotation, RotationAudit, Session, SessionLimit, SigningKeyRow, Store,
    StoreError, StoreResult, TotpRow, User, RECOVERY_ACTIONS,
};
use crate::audit::writer::Writer;
use crate::clock::Millis;

/// The whole schema, applied at every start-up.
pub const SCHEMA: &str = include_str!("../../schema.sql");
/// The schema version `schema.sql` sets.
pub const SCHEMA_VERSION: i64 = 1;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_SIZE: u32 = 8;

/// SQLite-backed storage: reads on a small pool of connections; audited
/// changes on the one writer (see [`Writer`]), in the same transaction as
/// their audit rows.
#[derive(Clone)]
pub struct SqliteStore {
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

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies the schema.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
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

    /// [`SqliteStore::audited`] for a change that may find nothing to do:
    /// the rows are written only when it reports that it did something.
    async fn audited_when<F>(&self, audit: Audit, now: Millis, change: F) -> StoreResult<bool>
    where
        F: FnOnce(&mut Connection) -> StoreResult<bool> + Send + 'static,
    {
        let audit = stamped(audit, now);
        self.writer
            .unit(move |conn| {
                let done = change(conn)?;
                Ok((done, if done { audit } else { Vec::new() }))
            })
            .await
    }

    /// The writer that commits audited changes; the audit log shares it.
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Runs `change` on the writer and commits it with `audit` (each row's
    /// time defaulting to `now`): both, or neither.
    async fn audited<T, F>(&self, audit: Audit, now: Millis, change: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let audit = stamped(audit, now);
        self.writer
            .unit(move |conn| change(conn).map(|value| (value, audit)))
            .await
    }

    /// Runs `f` with a pooled connection on a blocking thread.
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn: PooledConnection<SqliteConnectionManager> = pool
                .get()
                .map_err(|e| StoreError::Unavailable(anyhow!("no database connection: {e}")))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Other(anyhow!("storage task failed: {e}")))?
    }

    /// Runs a point read on the calling thread when a connection is free at
    /// once, else like [`SqliteStore::run`]. A primary-key lookup in WAL mode
    /// takes microseconds and never waits for the writer, so it is cheaper than
    /// the two thread switches of a hand-off to the blocking pool, which
    /// dominate a request such as `GET /auth/me`. Only for single-row reads.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        match self.pool.try_get() {
            Some(mut conn) => f(&mut conn),
            None => self.run(f).await,
        }
    }
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

/// Classifies a SQLite error: transient faults are [`StoreError::Unavailable`].
pub fn classify(err: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(e, _) = &err {
        if matches!(
            e.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::ReadOnly
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::OutOfMemory
        ) {
            return StoreError::Unavailable(err.into());
        }
    }
    StoreError::Other(err.into())
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        classify(err)
    }
}

fn uuid_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(idx)?;
    Uuid::parse_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

const USER_COLS: &str = "id, email, name, password_hash, is_admin, disabled_at, created_at";

fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: uuid_col(row, 0)?,
        email: row.get(1)?,
        name: row.get(2)?,
        password_hash: row.get(3)?,
        is_admin: row.get(4)?,
        disabled_at: row.get(5)?,
        created_at: row.get(6)?,
    })
}

const SESSION_COLS: &str =
    "id, user_id, remember_me, created_at, last_used_at, expires_at, revoked_at, ip_address, user_agent";

fn session_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: uuid_col(row, 0)?,
        user_id: uuid_col(row, 1)?,
        remember_me: row.get(2)?,
        created_at: row.get(3)?,
        last_used_at: row.get(4)?,
        expires_at: row.get(5)?,
        revoked_at: row.get(6)?,
        ip_address: row.get(7)?,
        user_agent: row.get(8)?,
    })
}

/// The body of a refresh: retire `presented` and make `replacement` current,
/// or revoke the session when `presented` was already retired.
fn rotate(
    conn: &mut Connection,
    presented: [u8; 32],
    replacement: [u8; 32],
    now: Millis,
) -> StoreResult<Rotation> {
    let tx = conn.savepoint()?;
    let found: Option<(Uuid, Option<Millis>)> = tx
        .query_row(
            "SELECT session_id, retired_at FROM refresh_tokens WHERE token_hash = ?1",
            [&presented[..]],
            |r| Ok((uuid_col(r, 0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((session_id, retired_at)) = found else {
        return Ok(Rotation::Invalid);
    };
    let sql = format!("SELECT {SESSION_COLS} FROM sessions WHERE id = ?1");
    let Some(session) = tx
        .query_row(&sql, [session_id.to_string()], session_row)
        .optional()?
    else {
        return Ok(Rotation::Invalid);
    };
    if retired_at.is_some() {
        tx.execute(
            "UPDATE sessions SET revoked_at = ?1, revoke_reason = 'refresh_token_reused'
             WHERE id = ?2 AND revoked_at IS NULL",
            params![now, session_id.to_string()],
        )?;
        tx.commit()?;
        return Ok(Rotation::Reused {
            session_id,
            user_id: session.user_id,
        });
    }
    if !session.is_live(now) {
        return Ok(Rotation::Invalid);
    }
    tx.execute(
        "UPDATE refresh_tokens SET retired_at = ?1 WHERE token_hash = ?2",
        params![now, &presented[..]],
    )?;
    tx.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES (?1, ?2, ?3)",
        params![&replacement[..], session_id.to_string(), now],
    )?;
    tx.execute(
        "UPDATE sessions SET last_used_at = ?1 WHERE id = ?2",
        params![now, session_id.to_string()],
    )?;
    tx.commit()?;
    Ok(Rotation::Rotated(Session {
        last_used_at: now,
        ..session
    }))
}

/// Stores a new session and its first refresh token, then revokes the user's
/// least recently used other live sessions beyond `max`; returns those.
fn insert_session(
    conn: &mut Connection,
    session: &Session,
    refresh_hash: &[u8; 32],
    max: u32,
) -> rusqlite::Result<Vec<Uuid>> {
    let tx = conn.savepoint()?;
    tx.execute(
        "INSERT INTO sessions (id, user_id, remember_me, created_at, last_used_at, expires_at, ip_address, user_agent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            session.id.to_string(),
            session.user_id.to_string(),
            session.remember_me,
            session.created_at,
            session.last_used_at,
            session.expires_at,
            session.ip_address,
            session.user_agent
        ],
    )?;
    tx.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES (?1, ?2, ?3)",
        params![
            &refresh_hash[..],
            session.id.to_string(),
            session.created_at
        ],
    )?;
    let now = session.created_at;
    let user = session.user_id.to_string();
    let live: i64 = tx.query_row(
        "SELECT count(*) FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2",
        params![user, now],
        |r| r.get(0),
    )?;
    let excess = live.saturating_sub(i64::from(max));
    let mut evicted = Vec::new();
    if excess > 0 {
        let mut stmt = tx.prepare_cached(
            "UPDATE sessions SET revoked_at = ?1, revoke_reason = 'session_limit'
             WHERE id IN (SELECT id FROM sessions
                          WHERE user_id = ?2 AND revoked_at IS NULL AND expires_at > ?1 AND id <> ?3
                          ORDER BY last_used_at, created_at LIMIT ?4)
             RETURNING id",
        )?;
        evicted = stmt
            .query_map(params![now, user, session.id.to_string(), excess], |r| {
                uuid_col(r, 0)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
    }
    tx.commit()?;
    Ok(evicted)
}

fn replace_codes(
    conn: &Connection,
    user_id: Uuid,
    hashes: &[[u8; 32]],
    now: Millis,
) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM backup_codes WHERE user_id = ?1",
        [user_id.to_string()],
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO backup_codes (user_id, code_hash, created_at) VALUES (?1, ?2, ?3)",
    )?;
    for hash in hashes {
        insert.execute(params![user_id.to_string(), &hash[..], now])?;
    }
    Ok(())
}

fn revoke_all(
    conn: &Connection,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: &str,
    now: Millis,
) -> rusqlite::Result<Vec<Uuid>> {
    let keep = keep.map(|k| k.to_string()).unwrap_or_default();
    let mut stmt = conn.prepare_cached(
        "UPDATE sessions SET revoked_at = ?1, revoke_reason = ?2
         WHERE user_id = ?3 AND revoked_at IS NULL AND expires_at > ?1 AND id <> ?4
         RETURNING id",
    )?;
    let ids = stmt
        .query_map(params![now, reason, user_id.to_string(), keep], |r| {
            uuid_col(r, 0)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ids)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: NewUser, audit: Audit) -> StoreResult<User> {
        let now = user.created_at;
        self.audited(audit, now, move |conn| {
            let inserted = conn.execute(
                "INSERT INTO users (id, email, name, password_hash, is_admin, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![
                    user.id.to_string(),
                    user.email,
                    user.name,
                    user.password_hash,
                    user.is_admin,
                    user.created_at
                ],
            );
            match inserted {
                Ok(_) => Ok(User {
                    id: user.id,
                    email: user.email,
                    name: user.name,
                    password_hash: user.password_hash,
                    is_admin: user.is_admin,
                    disabled_at: None,
                    created_at: user.created_at,
                }),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::EmailTaken)
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let email = email.to_owned();
        self.run(move |conn| {
            let sql = format!("SELECT {USER_COLS} FROM users WHERE email = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([email], user_row)
                .optional()?)
        })
        .await
    }

    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
        self.read(move |conn| {
            let sql = format!("SELECT {USER_COLS} FROM users WHERE id = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id.to_string()], user_row)
                .optional()?)
        })
        .await
    }

    async fn user_with_mfa(&self, id: Uuid) -> StoreResult<Option<(User, bool)>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {USER_COLS}, EXISTS (SELECT 1 FROM totp \
                 WHERE totp.user_id = users.id AND totp.secret IS NOT NULL) \
                 FROM users WHERE id = ?1"
            );
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id.to_string()], |r| Ok((user_row(r)?, r.get(7)?)))
                .optional()?)
        })
        .await
    }

    async fn list_users(&self, email_filter: Option<String>) -> StoreResult<Vec<(User, bool)>> {
        self.run(move |conn| {
            let pattern = match email_filter {
                Some(f) => format!(
                    "%{}%",
                    f.to_lowercase()
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_")
                ),
                None => "%".to_owned(),
            };
            let sql = format!(
                "SELECT {USER_COLS}, EXISTS (SELECT 1 FROM totp \
                 WHERE totp.user_id = users.id AND totp.secret IS NOT NULL) \
                 FROM users WHERE email LIKE ?1 ESCAPE '\\' ORDER BY created_at, email"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let users = stmt
                .query_map([pattern], |r| Ok((user_row(r)?, r.get(7)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(users)
        })
        .await
    }

    async fn set_password_hash(&self, user_id: Uuid, hash: String, now: Millis) -> StoreResult<()> {
        self.run(move |conn| {
            conn.execute(
                "UPDATE users SET password_hash = ?1, updated_at = ?2 WHERE id = ?3",
                params![hash, now, user_id.to_string()],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_disabled(
        &self,
        user_id: Uuid,
        disabled: bool,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool> {
        self.audited_when(audit, now, move |conn| {
            let tx = conn.savepoint()?;
            let changed = if disabled {
                tx.execute(
                    "UPDATE users SET disabled_at = COALESCE(disabled_at, ?1), updated_at = ?1 WHERE id = ?2",
                    params![now, user_id.to_string()],
                )?
            } else {
                tx.execute(
                    "UPDATE users SET disabled_at = NULL, updated_at = ?1 WHERE id = ?2",
                    params![now, user_id.to_string()],
                )?
            };
            if changed > 0 && disabled {
                revoke_all(&tx, user_id, None, "user_disabled", now)?;
            }
            tx.commit()?;
            Ok(changed > 0)
        })
        .await
    }

    async fn set_admin(
        &self,
        user_id: Uuid,
        is_admin: bool,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool> {
        self.audited_when(audit, now, move |conn| {
            let tx = conn.savepoint()?;
            let changed = tx.execute(
                "UPDATE users SET is_admin = ?1, updated_at = ?2 WHERE id = ?3 AND is_admin <> ?1",
                params![is_admin, now, user_id.to_string()],
            )? > 0;
            if changed && !is_admin {
                revoke_all(&tx, user_id, None, "admin_removed", now)?;
            }
            tx.commit()?;
            Ok(changed)
        })
        .await
    }

    async fn change_password(
        &self,
        user_id: Uuid,
        hash: String,
        keep: Option<Uuid>,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Vec<Uuid>> {
        let revoked = self.writer.unit(move |conn| {
            let tx = conn.savepoint()?;
            tx.execute(
                "UPDATE users SET password_hash = ?1, updated_at = ?2 WHERE id = ?3",
                params![hash, now, user_id.to_string()],
            )?;
            let revoked = revoke_all(&tx, user_id, keep, "password_changed", now)?;
            tx.commit()?;
            let events = with_revoked(audit, revoked.len(), now);
            Ok((revoked, events))
        });
        revoked.await
    }

    async fn create_session(
        &self,
        session: Session,
        refresh_hash: [u8; 32],
        limit: SessionLimit,
        audit: Audit,
    ) -> StoreResult<Vec<Uuid>> {
        let now = session.created_at;
        let audit = stamped(audit, now);
        self.writer
            .unit(move |conn| {
                let evicted = insert_session(conn, &session, &refresh_hash, limit.max)?;
                let rows = with_evicted(audit, &limit, session.user_id, &evicted, now);
                Ok((evicted, rows))
            })
            .await
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        self.run(move |conn| {
            let sql = format!("SELECT {SESSION_COLS} FROM sessions WHERE id = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id.to_string()], session_row)
                .optional()?)
        })
        .await
    }

    async fn live_sessions(&self, user_id: Uuid, now: Millis) -> StoreResult<Vec<Session>> {
        self.run(move |conn| {
            let sql = format!(
                "SELECT {SESSION_COLS} FROM sessions
                 WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2
                 ORDER BY created_at DESC, id"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let sessions = stmt
                .query_map(params![user_id.to_string(), now], session_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(sessions)
        })
        .await
    }

    async fn rotate_refresh(
        &self,
        presented: [u8; 32],
        replacement: [u8; 32],
        now: Millis,
        audit: RotationAudit,
    ) -> StoreResult<Rotation> {
        let rotation = self.writer.unit(move |conn| {
            let rotation = rotate(conn, presented, replacement, now)?;
            let events = match &rotation {
                Rotation::Rotated(session) => vec![audit
                    .refreshed
                    .user(session.user_id)
                    .resource("session", session.id)],
                Rotation::Reused {
                    session_id,
                    user_id,
                } => vec![audit.reused.user(*user_id).resource("session", *session_id)],
                Rotation::Invalid => Vec::new(),
            };
            Ok((rotation, stamped(events, now)))
        });
        rotation.await
    }

    async fn revoke_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        reason: &'static str,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool> {
        self.audited_when(audit, now, move |conn| {
            let changed = conn.execute(
                "UPDATE sessions SET revoked_at = ?1, revoke_reason = ?2
                 WHERE id = ?3 AND user_id = ?4 AND revoked_at IS NULL AND expires_at > ?1",
                params![now, reason, session_id.to_string(), user_id.to_string()],
            )?;
            Ok(changed > 0)
        })
        .await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &'static str,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Vec<Uuid>> {
        let revoked = self.writer.unit(move |conn| {
            let revoked = revoke_all(conn, user_id, keep, reason, now)?;
            let events = with_revoked(audit, revoked.len(), now);
            Ok((revoked, events))
        });
        revoked.await
    }

    async fn revoked_since(&self, since: Millis) -> StoreResult<Vec<Revoked>> {
        self.run(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id, revoked_at FROM sessions WHERE revoked_at >= ?1")?;
            let rows = stmt
                .query_map([since], |r| {
                    Ok(Revoked {
                        session_id: uuid_col(r, 0)?,
                        revoked_at: r.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn active_signing_key(&self, algorithm: &str) -> StoreResult<Option<SigningKeyRow>> {
        let algorithm = algorithm.to_owned();
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT kid, algorithm, private_key, public_key, created_at FROM signing_keys
                     WHERE algorithm = ?1 AND retired_at IS NULL ORDER BY created_at DESC LIMIT 1",
                    [algorithm],
                    |r| {
                        Ok(SigningKeyRow {
                            kid: r.get(0)?,
                            algorithm: r.get(1)?,
                            private_key: r.get(2)?,
                            public_key: r.get(3)?,
                            created_at: r.get(4)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn insert_signing_key(&self, key: SigningKeyRow) -> StoreResult<()> {
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    key.kid,
                    key.algorithm,
                    key.private_key,
                    key.public_key,
                    key.created_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn create_reset_token(
        &self,
        user_id: Option<Uuid>,
        token_hash: [u8; 32],
        now: Millis,
        expires_at: Millis,
        audit: Audit,
    ) -> StoreResult<()> {
        self.audited(audit, now, move |conn| {
            let tx = conn.savepoint()?;
            let id = user_id.unwrap_or_default().to_string();
            tx.execute(
                "UPDATE password_reset_tokens SET used_at = ?1 WHERE user_id = ?2 AND used_at IS NULL",
                params![now, id],
            )?;
            if user_id.is_some() {
                tx.execute(
                    "INSERT INTO password_reset_tokens (token_hash, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                    params![&token_hash[..], id, now, expires_at],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn reset_token_user(
        &self,
        token_hash: [u8; 32],
        now: Millis,
    ) -> StoreResult<Option<Uuid>> {
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT user_id FROM password_reset_tokens
                     WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
                    params![&token_hash[..], now],
                    |r| uuid_col(r, 0),
                )
                .optional()?)
        })
        .await
    }

    async fn reset_password(
        &self,
        token_hash: [u8; 32],
        password_hash: String,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Option<(Uuid, Vec<Uuid>)>> {
        let reset = self.writer.unit(move |conn| {
            let tx = conn.savepoint()?;
            let user: Option<Uuid> = tx
                .query_row(
                    "UPDATE password_reset_tokens SET used_at = ?1
                     WHERE token_hash = ?2 AND used_at IS NULL AND expires_at > ?1
                     RETURNING user_id",
                    params![now, &token_hash[..]],
                    |r| uuid_col(r, 0),
                )
                .optional()?;
            let Some(user_id) = user else {
                return Ok((None, Vec::new()));
            };
            tx.execute(
                "UPDATE users SET password_hash = ?1, updated_at = ?2 WHERE id = ?3",
                params![password_hash, now, user_id.to_string()],
            )?;
            let revoked = revoke_all(&tx, user_id, None, "password_reset", now)?;
            tx.commit()?;
            let events = audit
                .into_iter()
                .map(|e| e.user(user_id).resource("user", user_id))
                .collect();
            let events = with_revoked(events, revoked.len(), now);
            Ok((Some((user_id, revoked)), events))
        });
        reset.await
    }

    async fn totp(&self, user_id: Uuid) -> StoreResult<Option<TotpRow>> {
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT secret, pending_secret, last_step FROM totp WHERE user_id = ?1",
                    [user_id.to_string()],
                    |r| {
                        Ok(TotpRow {
                            secret: r.get(0)?,
                            pending_secret: r.get(1)?,
                            last_step: r.get(2)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn set_pending_totp(&self, user_id: Uuid, sealed: Vec<u8>) -> StoreResult<()> {
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO totp (user_id, pending_secret) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET pending_secret = excluded.pending_secret",
                params![user_id.to_string(), sealed],
            )?;
            Ok(())
        })
        .await
    }

    async fn enable_totp(
        &self,
        user_id: Uuid,
        step: i64,
        backup_hashes: Vec<[u8; 32]>,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool> {
        self.audited_when(audit, now, move |conn| {
            let tx = conn.savepoint()?;
            let changed = tx.execute(
                "UPDATE totp SET secret = pending_secret, pending_secret = NULL, enabled_at = ?1, last_step = ?2
                 WHERE user_id = ?3 AND pending_secret IS NOT NULL",
                params![now, step, user_id.to_string()],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            replace_codes(&tx, user_id, &backup_hashes, now)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn disable_totp(&self, user_id: Uuid, now: Millis, audit: Audit) -> StoreResult<()> {
        self.audited(audit, now, move |conn| {
            let tx = conn.savepoint()?;
            tx.execute("DELETE FROM totp WHERE user_id = ?1", [user_id.to_string()])?;
            tx.execute(
                "DELETE FROM backup_codes WHERE user_id = ?1",
                [user_id.to_string()],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn use_totp_step(&self, user_id: Uuid, step: i64) -> StoreResult<bool> {
        self.run(move |conn| {
            let changed = conn.execute(
                "UPDATE totp SET last_step = ?1
                 WHERE user_id = ?2 AND secret IS NOT NULL AND (last_step IS NULL OR last_step < ?1)",
                params![step, user_id.to_string()],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn use_backup_code(
        &self,
        user_id: Uuid,
        code_hashes: [[u8; 32]; 2],
        now: Millis,
    ) -> StoreResult<bool> {
        self.run(move |conn| {
            let changed = conn.execute(
                "UPDATE backup_codes SET used_at = ?1
                 WHERE user_id = ?2 AND code_hash IN (?3, ?4) AND used_at IS NULL",
                params![
                    now,
                    user_id.to_string(),
                    &code_hashes[0][..],
                    &code_hashes[1][..]
                ],
            )?;
            // The two hashes are of one code: at most one row is there.
            Ok(changed >= 1)
        })
        .await
    }

    async fn replace_backup_codes(
        &self,
        user_id: Uuid,
        hashes: Vec<[u8; 32]>,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<()> {
        self.audited(audit, now, move |conn| {
            let tx = conn.savepoint()?;
            replace_codes(&tx, user_id, &hashes, now)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn create_mfa_challenge(
        &self,
        token_hash: [u8; 32],
        c: MfaChallenge,
        now: Millis,
    ) -> StoreResult<()> {
        self.run(move |conn| {
            conn.execute(
                "DELETE FROM mfa_challenges WHERE expires_at <= ?1",
                [now],
            )?;
            conn.execute(
                "INSERT INTO mfa_challenges (token_hash, user_id, remember_me, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![&token_hash[..], c.user_id.to_string(), c.remember_me, now, c.expires_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn mfa_challenge(
        &self,
        token_hash: [u8; 32],
        now: Millis,
    ) -> StoreResult<Option<MfaChallenge>> {
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT user_id, remember_me, expires_at, failures FROM mfa_challenges
                     WHERE token_hash = ?1 AND expires_at > ?2",
                    params![&token_hash[..], now],
                    |r| {
                        Ok(MfaChallenge {
                            user_id: uuid_col(r, 0)?,
                            remember_me: r.get(1)?,
                            expires_at: r.get(2)?,
                            failures: r.get(3)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn fail_mfa_challenge(
        &self,
        token_hash: [u8; 32],
        max_failures: u32,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<()> {
        self.audited(audit, now, move |conn| {
            let tx = conn.savepoint()?;
            tx.execute(
                "UPDATE mfa_challenges SET failures = failures + 1 WHERE token_hash = ?1",
                [&token_hash[..]],
            )?;
            tx.execute(
                "DELETE FROM mfa_challenges WHERE token_hash = ?1 AND failures >= ?2",
                params![&token_hash[..], max_failures],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn complete_mfa_challenge(
        &self,
        token_hash: [u8; 32],
        session: Session,
        refresh_hash: [u8; 32],
        limit: SessionLimit,
        success: Audit,
        failed: Audit,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        let now = session.created_at;
        let (success, failed) = (stamped(success, now), stamped(failed, now));
        self.writer
            .unit(move |conn| {
                let spent = conn.execute(
                    "DELETE FROM mfa_challenges WHERE token_hash = ?1",
                    [&token_hash[..]],
                )? == 1;
                if !spent {
                    return Ok((None, failed));
                }
                let evicted = insert_session(conn, &session, &refresh_hash, limit.max)?;
                let rows = with_evicted(success, &limit, session.user_id, &evicted, now);
                Ok((Some(evicted), rows))
            })
            .await
    }

    async fn save_rate_limits(&self, rows: Vec<RateLimitRow>, now: Millis) -> StoreResult<()> {
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM rate_limit_state", [])?;
            tx.execute("DELETE FROM rate_limit_windows", [])?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO rate_limit_state (rule, key_id, shown, events, saved_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for row in rows {
                    let Some(id) = row.key_id else { continue };
                    stmt.execute(params![row.rule, id, row.key, row.events, now])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn load_rate_limits(&self) -> StoreResult<Vec<RateLimitRow>> {
        self.run(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT rule, key_id, shown, events FROM rate_limit_state
                 UNION ALL SELECT rule, NULL, key, events FROM rate_limit_windows",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(RateLimitRow {
                        rule: r.get(0)?,
                        key_id: r.get(1)?,
                        key: r.get(2)?,
                        events: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn recent_logins(&self, since: Millis, now: Millis) -> StoreResult<Vec<RecentLogin>> {
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT u.email, s.ip_address, max(s.created_at) FROM sessions s
                 JOIN users u ON u.id = s.user_id
                 WHERE s.created_at > ?1 AND s.ip_address IS NOT NULL
                   AND s.revoked_at IS NULL AND s.expires_at > ?2
                 GROUP BY u.email, s.ip_address",
            )?;
            let rows = stmt
                .query_map([since, now], |r| {
                    Ok(RecentLogin {
                        email: r.get(0)?,
                        ip_address: r.get(1)?,
                        at: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn audit_head(&self) -> StoreResult<i64> {
        self.run(|conn| {
            Ok(
                conn.query_row("SELECT coalesce(max(id), 0) FROM audit_log", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }

    async fn recoveries_after(&self, after: i64) -> StoreResult<Vec<Recovery>> {
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT a.id, u.email, a.created_at FROM audit_log a
                 JOIN users u ON u.id = a.user_id
                 WHERE a.id > ?1 AND a.action IN (?2, ?3, ?4, ?5)
                 ORDER BY a.id LIMIT 1000",
            )?;
            let [a, b, c, d] = RECOVERY_ACTIONS;
            let rows = stmt
                .query_map(params![after, a, b, c, d], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(super::recoveries(rows))
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.run(|conn| {
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_audit() -> crate::store::RotationAudit {
        use crate::audit::{Action, NewEvent, Origin};
        crate::store::RotationAudit {
            refreshed: NewEvent::new(Action::TokenRefreshed, &Origin::default()),
            reused: NewEvent::new(Action::RefreshTokenReused, &Origin::default()),
        }
    }

    fn no_limit() -> SessionLimit {
        use crate::audit::{Action, NewEvent, Origin};
        SessionLimit {
            max: 100,
            evicted: NewEvent::new(Action::SessionRevoked, &Origin::default()),
        }
    }

    fn user(email: &str) -> NewUser {
        NewUser {
            id: Uuid::new_v4(),
            email: email.into(),
            name: None,
            password_hash: "x".into(),
            is_admin: false,
            created_at: 1,
        }
    }

    fn session(user_id: Uuid, now: Millis) -> Session {
        Session {
            id: Uuid::new_v4(),
            user_id,
            remember_me: false,
            created_at: now,
            last_used_at: now,
            expires_at: now + 1_000,
            revoked_at: None,
            ip_address: None,
            user_agent: None,
        }
    }

    #[tokio::test]
    async fn schema_is_idempotent_and_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        drop(SqliteStore::open(&path).unwrap());
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        let err = SqliteStore::open(&path).err().unwrap().to_string();
        assert!(err.contains("newer"), "{err}");
    }

    #[tokio::test]
    async fn duplicate_email_is_email_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        store
            .create_user(user("a@example.com"), Vec::new())
            .await
            .unwrap();
        let err = store
            .create_user(user("a@example.com"), Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::EmailTaken));
    }

    #[tokio::test]
    async fn rotation_retires_and_detects_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let u = store
            .create_user(user("a@example.com"), Vec::new())
            .await
            .unwrap();
        let s = session(u.id, 10);
        store
            .create_session(s.clone(), [1; 32], no_limit(), Vec::new())
            .await
            .unwrap();

        let r = store
            .rotate_refresh([1; 32], [2; 32], 20, no_audit())
            .await
            .unwrap();
        assert!(
            matches!(r, Rotation::Rotated(ref got) if got.id == s.id && got.last_used_at == 20)
        );
        assert_eq!(
            store
                .rotate_refresh([9; 32], [3; 32], 21, no_audit())
                .await
                .unwrap(),
            Rotation::Invalid
        );
        let r = store
            .rotate_refresh([1; 32], [3; 32], 22, no_audit())
            .await
            .unwrap();
        assert_eq!(
            r,
            Rotation::Reused {
                session_id: s.id,
                user_id: u.id
            }
        );
        // The whole session is revoked: the current token no longer works either.
        assert_eq!(
            store
                .rotate_refresh([2; 32], [4; 32], 23, no_audit())
                .await
                .unwrap(),
            Rotation::Invalid
        );
        let revoked = store.revoked_since(0).await.unwrap();
        assert_eq!(
            revoked,
            vec![Revoked {
                session_id: s.id,
                revoked_at: 22
            }]
        );
    }

    #[tokio::test]
    async fn expired_session_does_not_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let u = store
            .create_user(user("a@example.com"), Vec::new())
            .await
            .unwrap();
        let s = session(u.id, 10);
        store
            .create_session(s.clone(), [1; 32], no_limit(), Vec::new())
            .await
            .unwrap();
        let r = store
            .rotate_refresh([1; 32], [2; 32], s.expires_at, no_audit())
            .await
            .unwrap();
        assert_eq!(r, Rotation::Invalid);
    }

    #[tokio::test]
    async fn disabling_revokes_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let u = store
            .create_user(user("a@example.com"), Vec::new())
            .await
            .unwrap();
        store
            .create_session(session(u.id, 10), [1; 32], no_limit(), Vec::new())
            .await
            .unwrap();
        store
            .create_session(session(u.id, 10), [2; 32], no_limit(), Vec::new())
            .await
            .unwrap();
        assert!(store
            .set_disabled(u.id, true, 50, Vec::new())
            .await
            .unwrap());
        assert!(store.live_sessions(u.id, 60).await.unwrap().is_empty());
        assert_eq!(store.revoked_since(50).await.unwrap().len(), 2);
        assert!(store.user_by_id(u.id).await.unwrap().unwrap().is_disabled());
        assert!(store
            .set_disabled(u.id, false, 70, Vec::new())
            .await
            .unwrap());
        assert!(!store.user_by_id(u.id).await.unwrap().unwrap().is_disabled());
        assert!(!store
            .set_disabled(Uuid::new_v4(), true, 80, Vec::new())
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn list_users_filters_literally() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        store
            .create_user(user("a_b@example.com"), Vec::new())
            .await
            .unwrap();
        store
            .create_user(user("axb@example.com"), Vec::new())
            .await
            .unwrap();
        let found: Vec<_> = store
            .list_users(Some("A_B".into()))
            .await
            .unwrap()
            .into_iter()
            .map(|(user, _)| user)
            .collect();
        assert_eq!(found.len(), 1);
        assert_eq!(store.list_users(None).await.unwrap().len(), 2);
    }
}
