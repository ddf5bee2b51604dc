//! The PostgreSQL driver: a pool of connections; every audited change in one
//! transaction with its rows, the chain's order kept by an advisory lock.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use deadpool_postgres::{
    ClientWrapper, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{chain, Chain, Conn, Fut, Param, Row};
use crate::audit::event::NewEvent;
use crate::clock::Millis;
use crate::metrics::Metrics;
use crate::store::{stamped, Audit, StoreError, StoreResult};

/// The whole schema, applied at every start-up.
pub const SCHEMA: &str = include_str!("../../../schema.postgres.sql");
/// The schema version `schema.postgres.sql` sets.
pub const SCHEMA_VERSION: i32 = 4;
/// What brings a database of an older version up to the next before the
/// schema runs: only then, since an `ALTER TABLE` locks the table even when
/// it changes nothing.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'api';
     ALTER TABLE sessions ADD COLUMN IF NOT EXISTS amr TEXT NOT NULL DEFAULT 'pwd';
     ALTER TABLE sessions ADD COLUMN IF NOT EXISTS cookie_hash BYTEA;",
    ),
    (
        2,
        "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS client_id TEXT;
         ALTER TABLE sessions ADD COLUMN IF NOT EXISTS scope TEXT;",
    ),
];
/// The advisory lock that serializes schema changes at start-up.
const SCHEMA_LOCK: i64 = 0x706f_7274_6375_6c73;
const POOL_SIZE: usize = 16;
const WAIT: Duration = Duration::from_secs(5);

/// A PostgreSQL database on a pool of connections.
#[derive(Clone)]
pub(in crate::store) struct Postgres {
    pool: Pool,
    metrics: Arc<OnceLock<Arc<Metrics>>>,
}

/// A PostgreSQL connection: pooled, or in a transaction.
pub(in crate::store) enum Pg<'a> {
    Client(&'a ClientWrapper),
    Tx(&'a deadpool_postgres::Transaction<'a>),
}

/// Classifies a PostgreSQL error: a lost or refused connection, a server
/// shutting down, a full disk or a serialization failure is worth retrying
/// later ([`StoreError::Unavailable`]); a broken uniqueness is
/// [`StoreError::Duplicate`]; the rest are bugs or bad data.
pub(super) fn classify(err: tokio_postgres::Error) -> StoreError {
    let io = std::error::Error::source(&err).is_some_and(|s| s.is::<std::io::Error>());
    let transient = err.is_closed()
        || io
        || err.code().is_some_and(|code| {
            let class = code.code().get(..2).unwrap_or_default();
            matches!(class, "08" | "53" | "57" | "58" | "40")
        });
    if transient {
        StoreError::Unavailable(err.into())
    } else if err.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Duplicate(err.into())
    } else {
        StoreError::Other(err.into())
    }
}

fn pg_params<'p>(params: &'p [&'p dyn Param]) -> Vec<&'p (dyn ToSql + Sync)> {
    params.iter().map(|p| p.pg()).collect()
}

macro_rules! on {
    ($pg:expr, |$c:ident| $body:expr) => {
        match $pg {
            Pg::Client($c) => $body,
            Pg::Tx($c) => $body,
        }
    };
}

impl Pg<'_> {
    pub(super) async fn execute(&self, sql: &str, params: &[&dyn Param]) -> StoreResult<u64> {
        let params = pg_params(params);
        on!(self, |c| {
            let stmt = c.prepare_cached(sql).await.map_err(classify)?;
            c.execute(&stmt, &params).await.map_err(classify)
        })
    }

    pub(super) async fn query<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        map: &(dyn Fn(&Row<'_>) -> StoreResult<T> + Send + Sync),
    ) -> StoreResult<Vec<T>> {
        let params = pg_params(params);
        let rows = on!(self, |c| {
            let stmt = c.prepare_cached(sql).await.map_err(classify)?;
            c.query(&stmt, &params).await.map_err(classify)?
        });
        rows.iter().map(|r| map(&Row::Pg(r))).collect()
    }

    pub(super) async fn query_opt<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        map: &(dyn Fn(&Row<'_>) -> StoreResult<T> + Send + Sync),
    ) -> StoreResult<Option<T>> {
        // query, not query_opt: a statement may return several rows, of
        // which the first is wanted.
        let params = pg_params(params);
        let rows = on!(self, |c| {
            let stmt = c.prepare_cached(sql).await.map_err(classify)?;
            c.query(&stmt, &params).await.map_err(classify)?
        });
        rows.first().map(|r| map(&Row::Pg(r))).transpose()
    }
}

impl Postgres {
    /// Connects to `url` and applies the schema (once, even when several
    /// instances start together).
    pub(in crate::store) async fn connect(url: &str) -> anyhow::Result<Self> {
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
        let db = Self {
            pool,
            metrics: Arc::default(),
        };
        let mut client = db
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
            let mut version = version.unwrap_or(i64::from(SCHEMA_VERSION));
            for (from, sql) in MIGRATIONS {
                if version == *from {
                    tx.batch_execute(sql).await.with_context(|| {
                        format!("cannot migrate the schema from version {from}")
                    })?;
                    version = from + 1;
                }
            }
        }
        tx.batch_execute(SCHEMA)
            .await
            .context("cannot apply schema.postgres.sql")?;
        tx.commit().await?;
        Ok(db)
    }

    pub(super) fn attach_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// A pooled connection.
    async fn client(&self) -> StoreResult<Object> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(anyhow!("no PostgreSQL connection: {e}")))
    }

    pub(super) async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, T>,
    {
        let client = self.client().await?;
        f(&mut Conn::Pg(Pg::Client(&client))).await
    }

    pub(super) async fn transaction<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, T>,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let value = f(&mut Conn::Pg(Pg::Tx(&tx))).await?;
        tx.commit().await.map_err(classify)?;
        Ok(value)
    }

    pub(super) async fn snapshot<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, T>,
    {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(classify)?;
        let value = f(&mut Conn::Pg(Pg::Tx(&tx))).await?;
        tx.commit().await.map_err(classify)?;
        Ok(value)
    }

    /// The change, then its rows appended under the chain's lock, then the
    /// commit; with [`Chain::Before`] the lock and the head are taken first.
    pub(super) async fn unit<T, F>(&self, chain: Chain, now: Millis, f: F) -> StoreResult<T>
    where
        F: for<'c, 'd> FnOnce(&'c mut Conn<'d>) -> Fut<'c, (T, Audit)>,
    {
        let mut client = self.client().await?;
        let tx = chain_transaction(&mut client).await?;
        let mut conn = Conn::Pg(Pg::Tx(&tx));
        let before = match chain {
            Chain::Before => {
                chain::lock(&mut conn).await?;
                Some(chain::head(&mut conn).await?)
            }
            Chain::After => None,
        };
        let (value, audit) = f(&mut conn).await?;
        let started = Instant::now();
        let audit = stamped(audit, now);
        if !audit.is_empty() {
            let head = match before {
                Some(head) => head,
                None => {
                    chain::lock(&mut conn).await?;
                    chain::head(&mut conn).await?
                }
            };
            chain::insert_after(&mut conn, head, &audit, now).await?;
        }
        tx.commit().await.map_err(classify)?;
        if let (Some(metrics), false) = (self.metrics.get(), audit.is_empty()) {
            metrics.audit_rows.inc_by(audit.len() as u64);
            metrics
                .audit_write_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(value)
    }

    pub(super) async fn append(&self, event: NewEvent, now: Millis) -> StoreResult<i64> {
        let mut client = self.client().await?;
        let tx = chain_transaction(&mut client).await?;
        let mut conn = Conn::Pg(Pg::Tx(&tx));
        let started = Instant::now();
        chain::lock(&mut conn).await?;
        let head = chain::head(&mut conn).await?;
        let (ids, _) =
            chain::insert_after(&mut conn, head, std::slice::from_ref(&event), now).await?;
        tx.commit().await.map_err(classify)?;
        if let Some(metrics) = self.metrics.get() {
            metrics.audit_rows.inc();
            metrics
                .audit_write_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        ids.first()
            .copied()
            .ok_or_else(|| StoreError::Other(anyhow!("no audit row was written")))
    }

    /// Announces `payload` on `channel` to every connection listening on it.
    pub(in crate::store) async fn notify(&self, channel: &str, payload: &str) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await
            .map_err(classify)?;
        Ok(())
    }
}

/// A transaction that may append to the chain: READ COMMITTED whatever the
/// server's default, so that the head read after the chain's lock is the
/// newest committed row (under REPEATABLE READ the snapshot would predate the
/// lock, and two instances would pick the same id).
async fn chain_transaction(client: &mut Object) -> StoreResult<deadpool_postgres::Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(classify)
}

/// A connection that has run `LISTEN channel`, and the payloads it receives.
async fn subscribe(
    config: &tokio_postgres::Config,
    channel: &str,
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
                    tracing::warn!(error = %e, "announcements: connection lost");
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    Ok((client, rx))
}

/// Listens on `channel` now (so nothing announced after start-up is missed),
/// then hands every payload to `heard` for as long as the returned future
/// runs, listening again whenever the connection drops.
pub async fn listen(
    url: &str,
    channel: &'static str,
    heard: impl Fn(String) + Send + 'static,
) -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| anyhow!("storage.postgres_url: {e}"))?;
    let first = subscribe(&config, channel).await?;
    Ok(async move {
        let mut current = Some(first);
        loop {
            let (client, mut payloads) = match current.take() {
                Some(c) => c,
                None => match subscribe(&config, channel).await {
                    Ok(c) => {
                        tracing::info!(channel, "announcements: listening again");
                        c
                    }
                    Err(e) => {
                        tracing::warn!(
                            channel,
                            error = format!("{e:#}"),
                            "cannot listen for announcements"
                        );
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            while let Some(text) = payloads.recv().await {
                heard(text);
            }
            drop(client);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}
