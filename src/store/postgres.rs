//! The PostgreSQL [`Store`] (`[storage] backend = "postgres"`), for several
//! instances sharing one database. Same tables and meaning as `schema.sql`
//! (`schema.postgres.sql`); every audited change commits in one transaction
//! with its audit rows, and the transaction's commit is what the answer waits
//! for (PostgreSQL's default `synchronous_commit = on`).
//!
//! The audit chain stays one chain across instances: an appender takes a
//! transaction-scoped advisory lock, reads the chain head, and inserts its
//! rows with the ids and hashes that follow it; the lock is held until the
//! commit. It is taken after the change's own statements, as the last thing
//! before the commit, so it is held briefly and never while waiting for a row
//! lock (no deadlock between a change's row locks and the chain).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, GenericClient, NoTls, Row};
use uuid::Uuid;

use super::{
    stamped, with_evicted, with_revoked, Audit, MfaChallenge, NewUser, RateLimitRow, RecentLogin,
    Recovery, Revoked, Rotation, RotationAudit, Session, SessionLimit, SigningKeyRow, Store,
    StoreError, StoreResult, TotpRow, User, RECOVERY_ACTIONS,
};
use crate::audit::chain::{
    anchor_from, chained, StoredRow, Verdict, Walk, GENESIS, NEWEST_PRUNED, STORED_COLS,
};
use crate::audit::event::{Action, EventRow, NewEvent, Origin};
use crate::audit::query::{page_of, page_sql, Bound, Filter, Page};
use crate::auth::revocation::{decode_announcement, encode_announcement, RevocationBus};
use crate::clock::Millis;
use crate::metrics::Metrics;
use crate::time_fmt::rfc3339_ms;

/// The whole schema, applied at every start-up.
pub const SCHEMA: &str = include_str!("../../schema.postgres.sql");
/// The schema version `schema.postgres.sql` sets.
pub const SCHEMA_VERSION: i32 = 1;
/// The advisory lock that serializes appends to the audit chain.
const AUDIT_LOCK: i64 = 0x706f_7274_6375_6c6c; // "portcull"
/// The advisory lock that serializes schema changes at start-up.
const SCHEMA_LOCK: i64 = 0x706f_7274_6375_6c73;
const POOL_SIZE: usize = 16;
const WAIT: Duration = Duration::from_secs(5);

/// PostgreSQL-backed storage on a pool of connections.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    metrics: Arc<OnceLock<Arc<Metrics>>>,
}

/// Classifies a PostgreSQL error: a lost or refused connection, a server
/// shutting down, a full disk or a serialization failure is worth retrying
/// later ([`StoreError::Unavailable`]); the rest are bugs or bad data.
fn classify(err: tokio_postgres::Error) -> StoreError {
    let io = std::error::Error::source(&err).is_some_and(|s| s.is::<std::io::Error>());
    let transient = err.is_closed()
        || io
        || err.code().is_some_and(|code| {
            let class = code.code().get(..2).unwrap_or_default();
            matches!(class, "08" | "53" | "57" | "58" | "40")
        });
    if transient {
        StoreError::Unavailable(err.into())
    } else {
        StoreError::Other(err.into())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        classify(err)
    }
}

fn uuid_col(row: &Row, idx: usize) -> StoreResult<Uuid> {
    let text: String = row.try_get(idx)?;
    Uuid::parse_str(&text).map_err(|e| StoreError::Other(anyhow!("bad uuid in column {idx}: {e}")))
}

const USER_COLS: &str = "id, email, name, password_hash, is_admin, disabled_at, created_at";

fn user_row(row: &Row) -> StoreResult<User> {
    Ok(User {
        id: uuid_col(row, 0)?,
        email: row.try_get(1)?,
        name: row.try_get(2)?,
        password_hash: row.try_get(3)?,
        is_admin: row.try_get(4)?,
        disabled_at: row.try_get(5)?,
        created_at: row.try_get(6)?,
    })
}

const SESSION_COLS: &str =
    "id, user_id, remember_me, created_at, last_used_at, expires_at, revoked_at, ip_address, user_agent";

fn session_row(row: &Row) -> StoreResult<Session> {
    Ok(Session {
        id: uuid_col(row, 0)?,
        user_id: uuid_col(row, 1)?,
        remember_me: row.try_get(2)?,
        created_at: row.try_get(3)?,
        last_used_at: row.try_get(4)?,
        expires_at: row.try_get(5)?,
        revoked_at: row.try_get(6)?,
        ip_address: row.try_get(7)?,
        user_agent: row.try_get(8)?,
    })
}

/// Appends `events` to the chain inside the caller's transaction: takes the
/// chain's advisory lock (held to the commit), reads the head, inserts.
/// Returns the new rows' ids.
pub async fn append_audit(
    tx: &impl GenericClient,
    events: &[NewEvent],
    now: Millis,
) -> StoreResult<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
        .await?;
    let head = tx
        .query_opt(
            "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await?
        .map(|r| Ok::<_, StoreError>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()?
        .unwrap_or((0, GENESIS.to_owned()));
    append_after(tx, head, events, now).await
}

async fn append_after(
    tx: &impl GenericClient,
    head: (i64, String),
    events: &[NewEvent],
    now: Millis,
) -> StoreResult<Vec<i64>> {
    let insert = tx
        .prepare(
            "INSERT INTO audit_log (id, created_at, action, user_id, resource_type, resource_id,
                                    ip_address, user_agent, extra_data, request_id, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .await?;
    let mut ids = Vec::with_capacity(events.len());
    for row in chained(head, events, now) {
        tx.execute(
            &insert,
            &[
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
            ],
        )
        .await?;
        ids.push(row.id);
    }
    Ok(ids)
}

async fn revoke_all(
    tx: &impl GenericClient,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: &str,
    now: Millis,
) -> StoreResult<Vec<Uuid>> {
    let keep = keep.map(|k| k.to_string()).unwrap_or_default();
    let rows = tx
        .query(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2
             WHERE user_id = $3 AND revoked_at IS NULL AND expires_at > $1 AND id <> $4
             RETURNING id",
            &[&now, &reason, &user_id.to_string(), &keep],
        )
        .await?;
    rows.iter().map(|r| uuid_col(r, 0)).collect()
}

/// Stores a new session and its first refresh token, then revokes the user's
/// least recently used other live sessions beyond `max`; returns those. The
/// user's row is locked first, so that concurrent logins count one by one.
async fn insert_session(
    tx: &impl GenericClient,
    session: &Session,
    refresh_hash: &[u8; 32],
    max: u32,
) -> StoreResult<Vec<Uuid>> {
    let user = session.user_id.to_string();
    tx.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&user])
        .await?;
    tx.execute(
        "INSERT INTO sessions (id, user_id, remember_me, created_at, last_used_at, expires_at, ip_address, user_agent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &session.id.to_string(),
            &session.user_id.to_string(),
            &session.remember_me,
            &session.created_at,
            &session.last_used_at,
            &session.expires_at,
            &session.ip_address,
            &session.user_agent,
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        &[
            &&refresh_hash[..],
            &session.id.to_string(),
            &session.created_at,
        ],
    )
    .await?;
    let now = session.created_at;
    let live: i64 = tx
        .query_one(
            "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2",
            &[&user, &now],
        )
        .await?
        .get(0);
    let excess = live.saturating_sub(i64::from(max));
    if excess <= 0 {
        return Ok(Vec::new());
    }
    let rows = tx
        .query(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = 'session_limit'
             WHERE id IN (SELECT id FROM sessions
                          WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1 AND id <> $3
                          ORDER BY last_used_at, created_at LIMIT $4)
             RETURNING id",
            &[&now, &user, &session.id.to_string(), &excess],
        )
        .await?;
    rows.iter().map(|r| uuid_col(r, 0)).collect()
}

async fn replace_codes(
    tx: &impl GenericClient,
    user_id: Uuid,
    hashes: &[[u8; 32]],
    now: Millis,
) -> StoreResult<()> {
    let id = user_id.to_string();
    tx.execute("DELETE FROM backup_codes WHERE user_id = $1", &[&id])
        .await?;
    for hash in hashes {
        tx.execute(
            "INSERT INTO backup_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&id, &&hash[..], &now],
        )
        .await?;
    }
    Ok(())
}

impl PgStore {
    /// Connects to `url` and applies the schema (once, even when several
    /// instances start together).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow!("storage.postgres_url: {e}"))?;
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(WAIT))
            .create_timeout(Some(WAIT))
            .runtime(Runtime::Tokio1)
            .build()
            .context("cannot build the PostgreSQL pool")?;
        let store = Self {
            pool,
            metrics: Arc::default(),
        };
        let mut client = store
            .client()
            .await
            .map_err(|e| anyhow!("cannot connect to PostgreSQL: {e}"))?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await?;
        let exists: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'schema_version')",
                &[],
            )
            .await?
            .try_get(0)?;
        if exists {
            let version: Option<i64> = tx
                .query_opt("SELECT version::bigint FROM schema_version", &[])
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
            if let Some(version) = version.filter(|v| *v > i64::from(SCHEMA_VERSION)) {
                return Err(anyhow!(
                    "database schema version {version} is newer than this portcullis understands ({SCHEMA_VERSION})"
                ));
            }
        }
        tx.batch_execute(SCHEMA)
            .await
            .context("cannot apply schema.postgres.sql")?;
        tx.commit().await?;
        Ok(store)
    }

    /// Reports audit rows written and commit latency to `metrics` from now on.
    pub fn attach_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Appends `events` to the chain, commits the transaction with them, and
    /// counts them. Returns their ids.
    async fn commit_audited(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
        events: &[NewEvent],
        now: Millis,
    ) -> StoreResult<Vec<i64>> {
        let started = Instant::now();
        let ids = append_audit(&*tx, events, now).await?;
        tx.commit().await?;
        if let (Some(metrics), false) = (self.metrics.get(), events.is_empty()) {
            metrics.audit_rows.inc_by(events.len() as u64);
            metrics
                .audit_write_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(ids)
    }

    /// A pooled connection.
    pub async fn client(&self) -> StoreResult<Object> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(anyhow!("no PostgreSQL connection: {e}")))
    }

    /// Appends events in a transaction of their own; resolves once committed.
    pub async fn append(&self, events: &[NewEvent], now: Millis) -> StoreResult<Vec<i64>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        self.commit_audited(tx, events, now).await
    }

    /// A page of audit events matching `filter`, newest first.
    pub async fn list(&self, filter: &Filter) -> StoreResult<Page> {
        let (sql, bound, limit) = page_sql(filter, |n| format!("${n}"));
        let params: Vec<&(dyn ToSql + Sync)> = bound
            .iter()
            .map(|b| match b {
                Bound::Text(t) => t as &(dyn ToSql + Sync),
                Bound::Int(n) => n as &(dyn ToSql + Sync),
            })
            .collect();
        let client = self.client().await?;
        let events = client
            .query(&sql, &params)
            .await?
            .iter()
            .map(|r| stored_row(r).map(EventRow::from))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(page_of(events, limit))
    }

    /// Walks the whole chain (in pages, in one snapshot) and reports the first
    /// edited, inserted or deleted row.
    pub async fn verify(&self) -> StoreResult<Verdict> {
        const PAGE: i64 = 10_000;
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let pruned: Option<String> = tx
            .query_opt(NEWEST_PRUNED, &[])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        let mut walk = Walk::from(anchor_from(pruned.as_deref()));
        let page =
            format!("SELECT {STORED_COLS} FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2");
        let mut after = i64::MIN;
        loop {
            let rows = tx.query(&page, &[&after, &PAGE]).await?;
            for r in &rows {
                let row = stored_row(r)?;
                after = row.id;
                if let Some(bad) = walk.check(row) {
                    return Ok(bad);
                }
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        tx.commit().await?;
        Ok(walk.finish())
    }

    /// Deletes every audit row created before `cutoff` and appends an
    /// `audit_pruned` row that anchors what remains; how many were deleted.
    pub async fn prune(
        &self,
        cutoff: Millis,
        origin: &Origin,
        actor: Option<&str>,
        now: Millis,
    ) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
            .await?;
        let last = tx
            .query_opt(
                "SELECT id, hash FROM audit_log WHERE id = (SELECT max(id) FROM audit_log WHERE created_at < $1)",
                &[&rfc3339_ms(cutoff)],
            )
            .await?;
        let Some(last) = last else {
            return Ok(0);
        };
        let (last_id, anchor_hash): (i64, String) = (last.try_get(0)?, last.try_get(1)?);
        let deleted = tx
            .execute("DELETE FROM audit_log WHERE id <= $1", &[&last_id])
            .await?;
        let mut event = NewEvent::new(Action::AuditPruned, origin)
            .extra("deleted", deleted)
            .extra("older_than", rfc3339_ms(cutoff))
            .extra("first_kept_id", last_id + 1)
            .extra("anchor_hash", anchor_hash.clone());
        if let Some(actor) = actor {
            event = event.extra("actor_id", actor);
        }
        // Chain to the newest remaining row, or to the last deleted one when
        // nothing remains, so ids never restart.
        let head = tx
            .query_opt(
                "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await?
            .map(|r| Ok::<_, StoreError>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()?
            .filter(|(id, _): &(i64, String)| *id > last_id)
            .unwrap_or((last_id, anchor_hash));
        append_after(&*tx, head, &[event], now).await?;
        tx.commit().await?;
        Ok(deleted)
    }
}

fn stored_row(r: &Row) -> StoreResult<StoredRow> {
    Ok(StoredRow {
        id: r.try_get(0)?,
        created_at: r.try_get(1)?,
        action: r.try_get(2)?,
        user_id: r.try_get(3)?,
        resource_type: r.try_get(4)?,
        resource_id: r.try_get(5)?,
        ip_address: r.try_get(6)?,
        user_agent: r.try_get(7)?,
        extra_data: r.try_get(8)?,
        request_id: r.try_get(9)?,
        prev_hash: r.try_get(10)?,
        hash: r.try_get(11)?,
    })
}

#[async_trait]
impl Store for PgStore {
    async fn create_user(&self, user: NewUser, audit: Audit) -> StoreResult<User> {
        let now = user.created_at;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(
                "INSERT INTO users (id, email, name, password_hash, is_admin, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
                &[
                    &user.id.to_string(),
                    &user.email,
                    &user.name,
                    &user.password_hash,
                    &user.is_admin,
                    &user.created_at,
                ],
            )
            .await;
        if let Err(e) = inserted {
            return Err(if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                StoreError::EmailTaken
            } else {
                e.into()
            });
        }
        self.commit_audited(tx, &stamped(audit, now), now).await?;
        Ok(User {
            id: user.id,
            email: user.email,
            name: user.name,
            password_hash: user.password_hash,
            is_admin: user.is_admin,
            disabled_at: None,
            created_at: user.created_at,
        })
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE email = $1"))
            .await?;
        client
            .query_opt(&stmt, &[&email])
            .await?
            .map(|r| user_row(&r))
            .transpose()
    }

    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
            .await?;
        client
            .query_opt(&stmt, &[&id.to_string()])
            .await?
            .map(|r| user_row(&r))
            .transpose()
    }

    async fn user_with_mfa(&self, id: Uuid) -> StoreResult<Option<(User, bool)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {USER_COLS}, EXISTS (SELECT 1 FROM totp \
                 WHERE totp.user_id = users.id AND totp.secret IS NOT NULL) \
                 FROM users WHERE id = $1"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&id.to_string()])
            .await?
            .map(|r| Ok((user_row(&r)?, r.try_get(7)?)))
            .transpose()
    }

    async fn list_users(&self, email_filter: Option<String>) -> StoreResult<Vec<(User, bool)>> {
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
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {USER_COLS}, EXISTS (SELECT 1 FROM totp \
                     WHERE totp.user_id = users.id AND totp.secret IS NOT NULL) \
                     FROM users WHERE email LIKE $1 ESCAPE '\\' ORDER BY created_at, email"
                ),
                &[&pattern],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((user_row(r)?, r.try_get(7)?)))
            .collect()
    }

    async fn set_password_hash(&self, user_id: Uuid, hash: String, now: Millis) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3",
                &[&hash, &now, &user_id.to_string()],
            )
            .await?;
        Ok(())
    }

    async fn set_disabled(
        &self,
        user_id: Uuid,
        disabled: bool,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id = user_id.to_string();
        let changed = if disabled {
            tx.execute(
                "UPDATE users SET disabled_at = COALESCE(disabled_at, $1), updated_at = $1 WHERE id = $2",
                &[&now, &id],
            )
            .await?
        } else {
            tx.execute(
                "UPDATE users SET disabled_at = NULL, updated_at = $1 WHERE id = $2",
                &[&now, &id],
            )
            .await?
        };
        if changed == 0 {
            return Ok(false);
        }
        if disabled {
            revoke_all(&*tx, user_id, None, "user_disabled", now).await?;
        }
        self.commit_audited(tx, &stamped(audit, now), now).await?;
        Ok(true)
    }

    async fn set_admin(
        &self,
        user_id: Uuid,
        is_admin: bool,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE users SET is_admin = $1, updated_at = $2 WHERE id = $3 AND is_admin <> $1",
                &[&is_admin, &now, &user_id.to_string()],
            )
            .await?;
        if changed == 0 {
            return Ok(false);
        }
        if !is_admin {
            revoke_all(&*tx, user_id, None, "admin_removed", now).await?;
        }
        self.commit_audited(tx, &stamped(audit, now), now).await?;
        Ok(true)
    }

    async fn change_password(
        &self,
        user_id: Uuid,
        hash: String,
        keep: Option<Uuid>,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Vec<Uuid>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3",
            &[&hash, &now, &user_id.to_string()],
        )
        .await?;
        let revoked = revoke_all(&*tx, user_id, keep, "password_changed", now).await?;
        self.commit_audited(tx, &with_revoked(audit, revoked.len(), now), now)
            .await?;
        Ok(revoked)
    }

    async fn create_session(
        &self,
        session: Session,
        refresh_hash: [u8; 32],
        limit: SessionLimit,
        audit: Audit,
    ) -> StoreResult<Vec<Uuid>> {
        let now = session.created_at;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let evicted = insert_session(&*tx, &session, &refresh_hash, limit.max).await?;
        let rows = with_evicted(audit, &limit, session.user_id, &evicted, now);
        self.commit_audited(tx, &rows, now).await?;
        Ok(evicted)
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!("SELECT {SESSION_COLS} FROM sessions WHERE id = $1"),
                &[&id.to_string()],
            )
            .await?
            .map(|r| session_row(&r))
            .transpose()
    }

    async fn live_sessions(&self, user_id: Uuid, now: Millis) -> StoreResult<Vec<Session>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {SESSION_COLS} FROM sessions
                     WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
                     ORDER BY created_at DESC, id"
                ),
                &[&user_id.to_string(), &now],
            )
            .await?;
        rows.iter().map(session_row).collect()
    }

    async fn rotate_refresh(
        &self,
        presented: [u8; 32],
        replacement: [u8; 32],
        now: Millis,
        audit: RotationAudit,
    ) -> StoreResult<Rotation> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // FOR UPDATE: two instances presenting the same token at once take
        // turns, and the second sees it retired (reuse), as in one process.
        let found = tx
            .query_opt(
                "SELECT session_id, retired_at FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
                &[&&presented[..]],
            )
            .await?;
        let Some(found) = found else {
            return Ok(Rotation::Invalid);
        };
        let session_id = uuid_col(&found, 0)?;
        let retired_at: Option<Millis> = found.try_get(1)?;
        let Some(session) = tx
            .query_opt(
                &format!("SELECT {SESSION_COLS} FROM sessions WHERE id = $1 FOR UPDATE"),
                &[&session_id.to_string()],
            )
            .await?
            .map(|r| session_row(&r))
            .transpose()?
        else {
            return Ok(Rotation::Invalid);
        };
        let (rotation, events) = if retired_at.is_some() {
            tx.execute(
                "UPDATE sessions SET revoked_at = $1, revoke_reason = 'refresh_token_reused'
                 WHERE id = $2 AND revoked_at IS NULL",
                &[&now, &session_id.to_string()],
            )
            .await?;
            let event = audit
                .reused
                .user(session.user_id)
                .resource("session", session_id);
            (
                Rotation::Reused {
                    session_id,
                    user_id: session.user_id,
                },
                vec![event],
            )
        } else if !session.is_live(now) {
            return Ok(Rotation::Invalid);
        } else {
            tx.execute(
                "UPDATE refresh_tokens SET retired_at = $1 WHERE token_hash = $2",
                &[&now, &&presented[..]],
            )
            .await?;
            tx.execute(
                "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
                &[&&replacement[..], &session_id.to_string(), &now],
            )
            .await?;
            tx.execute(
                "UPDATE sessions SET last_used_at = $1 WHERE id = $2",
                &[&now, &session_id.to_string()],
            )
            .await?;
            let event = audit
                .refreshed
                .user(session.user_id)
                .resource("session", session_id);
            (
                Rotation::Rotated(Session {
                    last_used_at: now,
                    ..session
                }),
                vec![event],
            )
        };
        self.commit_audited(tx, &stamped(events, now), now).await?;
        Ok(rotation)
    }

    async fn revoke_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        reason: &'static str,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE sessions SET revoked_at = $1, revoke_reason = $2
                 WHERE id = $3 AND user_id = $4 AND revoked_at IS NULL AND expires_at > $1",
                &[&now, &reason, &session_id.to_string(), &user_id.to_string()],
            )
            .await?;
        if changed == 0 {
            return Ok(false);
        }
        self.commit_audited(tx, &stamped(audit, now), now).await?;
        Ok(true)
    }

    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &'static str,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Vec<Uuid>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let revoked = revoke_all(&*tx, user_id, keep, reason, now).await?;
        self.commit_audited(tx, &with_revoked(audit, revoked.len(), now), now)
            .await?;
        Ok(revoked)
    }

    async fn revoked_since(&self, since: Millis) -> StoreResult<Vec<Revoked>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, revoked_at FROM sessions WHERE revoked_at >= $1",
                &[&since],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Revoked {
                    session_id: uuid_col(r, 0)?,
                    revoked_at: r.try_get(1)?,
                })
            })
            .collect()
    }

    async fn active_signing_key(&self, algorithm: &str) -> StoreResult<Option<SigningKeyRow>> {
        let client = self.client().await?;
        client
            .query_opt(
                "SELECT kid, algorithm, private_key, public_key, created_at FROM signing_keys
                 WHERE algorithm = $1 AND retired_at IS NULL ORDER BY created_at DESC, kid LIMIT 1",
                &[&algorithm],
            )
            .await?
            .map(|r| {
                Ok(SigningKeyRow {
                    kid: r.try_get(0)?,
                    algorithm: r.try_get(1)?,
                    private_key: r.try_get(2)?,
                    public_key: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                })
            })
            .transpose()
    }

    async fn insert_signing_key(&self, key: SigningKeyRow) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &key.kid,
                    &key.algorithm,
                    &key.private_key,
                    &key.public_key,
                    &key.created_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn create_reset_token(
        &self,
        user_id: Option<Uuid>,
        token_hash: [u8; 32],
        now: Millis,
        expires_at: Millis,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id = user_id.unwrap_or_default().to_string();
        tx.execute(
            "UPDATE password_reset_tokens SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL",
            &[&now, &id],
        )
        .await?;
        if user_id.is_some() {
            tx.execute(
                "INSERT INTO password_reset_tokens (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                &[&&token_hash[..], &id, &now, &expires_at],
            )
            .await?;
        }
        self.commit_audited(tx, &stamped(audit, now), now).await?;
        Ok(())
    }

    async fn reset_token_user(
        &self,
        token_hash: [u8; 32],
        now: Millis,
    ) -> StoreResult<Option<Uuid>> {
        let client = self.client().await?;
        client
            .query_opt(
                "SELECT user_id FROM password_reset_tokens
                 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
                &[&&token_hash[..], &now],
            )
            .await?
            .map(|r| uuid_col(&r, 0))
            .transpose()
    }

    async fn reset_password(
        &self,
        token_hash: [u8; 32],
        password_hash: String,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Option<(Uuid, Vec<Uuid>)>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let user = tx
            .query_opt(
                "UPDATE password_reset_tokens SET used_at = $1
                 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1
                 RETURNING user_id",
                &[&now, &&token_hash[..]],
            )
            .await?;
        let Some(user) = user else {
            return Ok(None);
        };
        let user_id = uuid_col(&user, 0)?;
        tx.execute(
            "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3",
            &[&password_hash, &now, &user_id.to_string()],
        )
        .await?;
        let revoked = revoke_all(&*tx, user_id, None, "password_reset", now).await?;
        let events = audit
            .into_iter()
            .map(|e| e.user(user_id).resource("user", user_id))
            .collect();
        self.commit_audited(tx, &with_revoked(events, revoked.len(), now), now)
            .await?;
        Ok(Some((user_id, revoked)))
    }

    async fn totp(&self, user_id: Uuid) -> StoreResult<Option<TotpRow>> {
        let client = self.client().await?;
        client
            .query_opt(
                "SELECT secret, pending_secret, last_step FROM totp WHERE user_id = $1",
                &[&user_id.to_string()],
            )
            .await?
            .map(|r| {
                Ok(TotpRow {
                    secret: r.try_get(0)?,
                    pending_secret: r.try_get(1)?,
                    last_step: r.try_get(2)?,
                })
            })
            .transpose()
    }

    async fn set_pending_totp(&self, user_id: Uuid, sealed: Vec<u8>) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO totp (user_id, pending_secret) VALUES ($1, $2)
                 ON CONFLICT (user_id) DO UPDATE SET pending_secret = excluded.pending_secret",
                &[&user_id.to_string(), &sealed],
            )
            .await?;
        Ok(())
    }

    async fn enable_totp(
        &self,
        user_id: Uuid,
        step: i64,
        backup_hashes: Vec<[u8; 32]>,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE totp SET secret = pending_secret, pending_secret = NULL, enabled_at = $1, last_step = $2
                 WHERE user_id = $3 AND pending_secret IS NOT NULL",
                &[&now, &step, &user_id.to_string()],
            )
            .await?;
        if changed == 0 {
            return Ok(false);
        }
        replace_codes(&*tx, user_id, &backup_hashes, now).await?;
        self.commit_audited(tx, &stamped(audit, now), now).await?;
        Ok(true)
    }

    async fn disable_totp(&self, user_id: Uuid, now: Millis, audit: Audit) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id = user_id.to_string();
        tx.execute("DELETE FROM totp WHERE user_id = $1", &[&id])
            .await?;
        tx.execute("DELETE FROM backup_codes WHERE user_id = $1", &[&id])
            .await?;
        self.commit_audited(tx, &stamped(audit, now), now).await?;
        Ok(())
    }

    async fn use_totp_step(&self, user_id: Uuid, step: i64) -> StoreResult<bool> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE totp SET last_step = $1
                 WHERE user_id = $2 AND secret IS NOT NULL AND (last_step IS NULL OR last_step < $1)",
                &[&step, &user_id.to_string()],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn use_backup_code(
        &self,
        user_id: Uuid,
        code_hashes: [[u8; 32]; 2],
        now: Millis,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE backup_codes SET used_at = $1
                 WHERE user_id = $2 AND code_hash IN ($3, $4) AND used_at IS NULL",
                &[
                    &now,
                    &user_id.to_string(),
                    &&code_hashes[0][..],
                    &&code_hashes[1][..],
                ],
            )
            .await?;
        // The two hashes are of one code: at most one row is there.
        Ok(changed >= 1)
    }

    async fn replace_backup_codes(
        &self,
        user_id: Uuid,
        hashes: Vec<[u8; 32]>,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        replace_codes(&*tx, user_id, &hashes, now).await?;
        self.commit_audited(tx, &stamped(audit, now), now).await?;
        Ok(())
    }

    async fn create_mfa_challenge(
        &self,
        token_hash: [u8; 32],
        c: MfaChallenge,
        now: Millis,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM mfa_challenges WHERE expires_at <= $1", &[&now])
            .await?;
        client
            .execute(
                "INSERT INTO mfa_challenges (token_hash, user_id, remember_me, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &&token_hash[..],
                    &c.user_id.to_string(),
                    &c.remember_me,
                    &now,
                    &c.expires_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn mfa_challenge(
        &self,
        token_hash: [u8; 32],
        now: Millis,
    ) -> StoreResult<Option<MfaChallenge>> {
        let client = self.client().await?;
        client
            .query_opt(
                "SELECT user_id, remember_me, expires_at, failures FROM mfa_challenges
                 WHERE token_hash = $1 AND expires_at > $2",
                &[&&token_hash[..], &now],
            )
            .await?
            .map(|r| {
                let failures: i32 = r.try_get(3)?;
                Ok(MfaChallenge {
                    user_id: uuid_col(&r, 0)?,
                    remember_me: r.try_get(1)?,
                    expires_at: r.try_get(2)?,
                    failures: u32::try_from(failures).unwrap_or(0),
                })
            })
            .transpose()
    }

    async fn fail_mfa_challenge(
        &self,
        token_hash: [u8; 32],
        max_failures: u32,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<()> {
        let max = i32::try_from(max_failures).unwrap_or(i32::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "UPDATE mfa_challenges SET failures = failures + 1 WHERE token_hash = $1",
            &[&&token_hash[..]],
        )
        .await?;
        tx.execute(
            "DELETE FROM mfa_challenges WHERE token_hash = $1 AND failures >= $2",
            &[&&token_hash[..], &max],
        )
        .await?;
        self.commit_audited(tx, &stamped(audit, now), now).await?;
        Ok(())
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
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let spent = tx
            .execute(
                "DELETE FROM mfa_challenges WHERE token_hash = $1",
                &[&&token_hash[..]],
            )
            .await?
            == 1;
        if !spent {
            self.commit_audited(tx, &stamped(failed, now), now).await?;
            return Ok(None);
        }
        let evicted = insert_session(&*tx, &session, &refresh_hash, limit.max).await?;
        let rows = with_evicted(success, &limit, session.user_id, &evicted, now);
        self.commit_audited(tx, &rows, now).await?;
        Ok(Some(evicted))
    }

    async fn save_rate_limits(&self, rows: Vec<RateLimitRow>, now: Millis) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM rate_limit_state", &[]).await?;
        tx.execute("DELETE FROM rate_limit_windows", &[]).await?;
        let insert = tx
            .prepare(
                "INSERT INTO rate_limit_state (rule, key_id, shown, events, saved_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (rule, key_id) DO UPDATE SET shown = excluded.shown, events = excluded.events,
                 saved_at = excluded.saved_at",
            )
            .await?;
        for row in rows {
            let Some(id) = row.key_id else { continue };
            tx.execute(&insert, &[&row.rule, &id, &row.key, &row.events, &now])
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn load_rate_limits(&self) -> StoreResult<Vec<RateLimitRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT rule, key_id, shown, events FROM rate_limit_state
                 UNION ALL SELECT rule, NULL, key, events FROM rate_limit_windows",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RateLimitRow {
                    rule: r.try_get(0)?,
                    key_id: r.try_get(1)?,
                    key: r.try_get(2)?,
                    events: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn recent_logins(&self, since: Millis, now: Millis) -> StoreResult<Vec<RecentLogin>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT u.email, s.ip_address, max(s.created_at) FROM sessions s
                 JOIN users u ON u.id = s.user_id
                 WHERE s.created_at > $1 AND s.ip_address IS NOT NULL
                   AND s.revoked_at IS NULL AND s.expires_at > $2
                 GROUP BY u.email, s.ip_address",
                &[&since, &now],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RecentLogin {
                    email: r.try_get(0)?,
                    ip_address: r.try_get(1)?,
                    at: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn audit_head(&self) -> StoreResult<i64> {
        let client = self.client().await?;
        Ok(client
            .query_one("SELECT coalesce(max(id), 0)::bigint FROM audit_log", &[])
            .await?
            .try_get(0)?)
    }

    async fn recoveries_after(&self, after: i64) -> StoreResult<Vec<Recovery>> {
        let client = self.client().await?;
        let actions: Vec<&str> = RECOVERY_ACTIONS.to_vec();
        let rows = client
            .query(
                "SELECT a.id, u.email, a.created_at FROM audit_log a
                 JOIN users u ON u.id = a.user_id
                 WHERE a.id > $1 AND a.action = ANY($2)
                 ORDER BY a.id LIMIT 1000",
                &[&after, &actions],
            )
            .await?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(super::recoveries(rows))
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok(())
    }
}

/// The channel revocations are announced on (`NOTIFY portcullis_revocations`).
pub const CHANNEL: &str = "portcullis_revocations";

/// Announces revocations with `pg_notify`: every instance listening on
/// [`CHANNEL`] hears them once the announcing statement commits.
#[async_trait]
impl RevocationBus for PgStore {
    async fn publish(&self, revoked: &[Revoked]) -> anyhow::Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL, &encode_announcement(revoked)],
            )
            .await?;
        Ok(())
    }
}

/// A connection that has run `LISTEN`, and the payloads it receives.
async fn subscribe(
    config: &tokio_postgres::Config,
) -> anyhow::Result<(tokio_postgres::Client, UnboundedReceiver<String>)> {
    let (client, mut connection) = tokio::time::timeout(WAIT, config.connect(NoTls))
        .await
        .map_err(|_| anyhow!("no answer from PostgreSQL"))??;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    // The connection must be driven for the client to work; notifications
    // arrive on it. The task ends when the connection does.
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "revocation announcements: connection lost");
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok((client, rx))
}

/// Listens now (so nothing announced after start-up is missed), then hands
/// every announcement to `heard` for as long as the returned future runs,
/// listening again whenever the connection drops.
pub async fn listen(
    url: &str,
    heard: impl Fn(Vec<Revoked>) + Send + 'static,
) -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| anyhow!("storage.postgres_url: {e}"))?;
    let first = subscribe(&config).await?;
    Ok(async move {
        let mut current = Some(first);
        loop {
            let (client, mut payloads) = match current.take() {
                Some(c) => c,
                None => match subscribe(&config).await {
                    Ok(c) => {
                        tracing::info!("revocation announcements: listening again");
                        c
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "cannot listen for revocation announcements"
                        );
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            while let Some(text) = payloads.recv().await {
                match decode_announcement(&text) {
                    Some(revoked) => heard(revoked),
                    None => tracing::warn!("ignored a malformed revocation announcement"),
                }
            }
            drop(client);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}
