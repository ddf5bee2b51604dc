//! Wiring: builds the shared state from the configuration, binds the listener,
//! runs the server and shuts it down gracefully.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;
use tokio::task::JoinHandle;

use crate::audit::Origin;
use crate::audit_log::AuditLog;
use crate::auth::crypto::{MasterKey, Undecryptable};
use crate::auth::password::HashPool;
use crate::auth::revocation::RevocationList;
use crate::auth::service::{AuthService, DeviceMemory};
use crate::auth::tokens::TokenKeys;
use crate::clock::SharedClock;
use crate::config::{Config, StorageBackend};
use crate::control::{self, ControlSocket, DirLock};
use crate::http::client_ip::TrustedProxies;
use crate::http::{self, extract, limits, request_id, AppState};
use crate::mail::{MailQueue, Mailer};
use crate::metrics::Metrics;
use crate::ratelimit::key::KeyMaker;
use crate::ratelimit::Limiter;
use crate::store::Store;
use crate::telemetry::fold::{self, LineFolder};

/// How often revocations made by other processes are picked up.
const REVOCATION_POLL: Duration = Duration::from_secs(1);
/// How often closed coalescing windows of rate-limited attempts are written.
const FOLD_FLUSH: Duration = Duration::from_secs(1);
/// How often audit retention runs (also once at start-up).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// What every command works on: the domain service over the configured
/// database, the audit log in that database, and (when instances share
/// state) how they hear of each other's revocations. The one way the server
/// and the CLI open their data.
pub struct Opened {
    pub auth: AuthService,
    pub audit: AuditLog,
    /// The store itself, for what is not the domain's (the limiter's saved windows).
    pub store: Store,
    /// The key under which rate-limit keys are identified, derived from the
    /// storage key: stable across restarts and shared by instances.
    pub limiter_keys: KeyMaker,
    shared: Option<Shared>,
}

/// Opens the data directory, the database and the keys: see [`Opened`].
/// The audit log reports to `metrics`.
pub async fn open(
    config: &Config,
    clock: SharedClock,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Opened> {
    create_data_dir(config)?;
    let master = Arc::new(MasterKey::load_or_create(
        &config.storage.encryption_key,
        &config.storage.data_dir,
    )?);
    let (store, audit) = open_records(config, clock.clone(), metrics).await?;
    let tokens = TokenKeys::load_or_create(&config.tokens, &store, &master, clock.now_ms())
        .await
        .map_err(|e| with_key_hint(e, config))?;
    let hasher = HashPool::start(&config.passwords)?;
    let revocations = RevocationList::new(config.tokens.access_ttl.as_millis_i64());
    let limiter_keys = KeyMaker::new(&master.subkey("rate-limit keys"));
    let mut auth = AuthService::new(
        config,
        store.clone(),
        master,
        hasher,
        tokens,
        revocations,
        clock,
    );
    let shared = shared_state(config, &store, &mut auth).await?;
    Ok(Opened {
        auth,
        audit,
        store,
        limiter_keys,
        shared,
    })
}

/// Creates the data directory (0700) if it is missing.
pub fn create_data_dir(config: &Config) -> anyhow::Result<()> {
    let dir = &config.storage.data_dir;
    crate::private_files::create_data_dir(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))
}

/// The records alone: the store and the audit log in it, without the keys
/// (what the `audit` commands need, also where the storage key is not at hand).
pub async fn open_records(
    config: &Config,
    clock: SharedClock,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(Store, AuditLog)> {
    if config.storage.backend == StorageBackend::Sqlite {
        create_data_dir(config)?;
    }
    let store = Store::open(config).await?;
    let coalesce_ms = config.audit.coalesce_window.as_millis_i64();
    let audit = AuditLog::new(store.clone(), clock, coalesce_ms, metrics);
    Ok((store, audit))
}

/// A database sealed under another key: where the right one may be.
fn with_key_hint(err: anyhow::Error, config: &Config) -> anyhow::Error {
    if !err.chain().any(|c| c.is::<Undecryptable>()) {
        return err;
    }
    let file = config.storage.data_dir.join(crate::auth::crypto::KEY_FILE);
    let hint = if config.storage.encryption_key.is_empty() {
        format!(
            "{} is not the key this database was sealed with: if storage.encryption_key \
             (PORTCULLIS_STORAGE__ENCRYPTION_KEY) was set when the data was created, set it again; \
             if the file was replaced, restore it from a backup",
            file.display()
        )
    } else if file.exists() {
        format!(
            "storage.encryption_key is not the key this database was sealed with; {} holds \
             the key the server made on its first start: unset storage.encryption_key to use it",
            file.display()
        )
    } else {
        "storage.encryption_key is not the key this database was sealed with: set the one \
         it was created with"
            .to_owned()
    };
    err.context(hint)
}

/// How this instance hears of the others' revocations: the Redis that holds
/// the limiter's windows, else the PostgreSQL database (LISTEN/NOTIFY).
enum Shared {
    #[cfg(feature = "redis")]
    Redis { url: String },
    #[cfg(feature = "postgres")]
    Postgres { url: String },
}

/// Connects this instance to the others, when the configuration shares state.
#[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
async fn shared_state(
    config: &Config,
    store: &Store,
    auth: &mut AuthService,
) -> anyhow::Result<Option<Shared>> {
    match config.rate_limit.store {
        crate::config::LimitStoreKind::Memory => match config.storage.backend {
            StorageBackend::Sqlite => Ok(None),
            #[cfg(feature = "postgres")]
            StorageBackend::Postgres => {
                let bus = crate::auth::pg_bus::PgBus(store.clone());
                auth.set_revocation_bus(Arc::new(bus));
                Ok(Some(Shared::Postgres {
                    url: config.storage.postgres_url.clone(),
                }))
            }
            #[cfg(not(feature = "postgres"))]
            StorageBackend::Postgres => Ok(None),
        },
        #[cfg(feature = "redis")]
        crate::config::LimitStoreKind::Redis => {
            let url = config.rate_limit.redis_url.clone();
            // Without the bus, revocations still reach the other instances
            // through their poll of storage, within a second: a command is
            // not refused for it (the server's subscription, below, is).
            match crate::auth::redis_bus::RedisBus::connect(&url).await {
                Ok(bus) => auth.set_revocation_bus(Arc::new(bus)),
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "revocations are not announced on Redis; other instances see them within a second"
                ),
            }
            Ok(Some(Shared::Redis { url }))
        }
        #[cfg(not(feature = "redis"))]
        crate::config::LimitStoreKind::Redis => {
            anyhow::bail!(
                "rate_limit.store = \"redis\" needs portcullis built with the `redis` feature"
            )
        }
    }
}

impl Shared {
    /// Subscribes to other instances' revocations (before serving, so none
    /// made after start-up is missed) and returns the task that applies them.
    #[cfg_attr(
        not(any(feature = "redis", feature = "postgres")),
        allow(unused_variables)
    )]
    async fn listen(self, state: web::Data<AppState>) -> anyhow::Result<JoinHandle<()>> {
        let heard = move |revoked: Vec<crate::store::Revoked>| {
            for r in revoked {
                state.auth.revocations().revoke(r.session_id, r.revoked_at);
            }
        };
        match self {
            #[cfg(feature = "redis")]
            Self::Redis { url } => {
                let listening = crate::auth::redis_bus::listen(&url, heard)
                    .await
                    .context("revocation announcements")?;
                Ok(tokio::spawn(listening))
            }
            #[cfg(feature = "postgres")]
            Self::Postgres { url } => {
                let listening = crate::auth::pg_bus::listen(&url, heard)
                    .await
                    .context("revocation announcements")?;
                Ok(tokio::spawn(listening))
            }
        }
    }
}

/// The limiter's known devices, told of every recovery by the domain.
struct KnownDevices(Arc<Limiter>);

#[async_trait::async_trait]
impl DeviceMemory for KnownDevices {
    async fn forget(&self, account: &str, at: crate::clock::Millis) -> bool {
        self.0.forget_devices(account, at).await
    }
}

impl control::Answerer for AppState {
    fn limiter(&self) -> &Limiter {
        &self.limiter
    }
    fn audit(&self) -> &AuditLog {
        &self.audit
    }
}

/// A bound, ready-to-run server.
pub struct Application {
    server: Server,
    handle: ServerHandle,
    address: SocketAddr,
    state: web::Data<AppState>,
    background: Vec<JoinHandle<()>>,
    control: Option<ControlSocket>,
    /// Held from before the saved windows are loaded until after they are
    /// saved again (see [`DirLock`]).
    windows_lock: DirLock,
    /// Where the windows are saved at the stop.
    store: Store,
}

/// Whether the server reacts to SIGTERM / SIGINT itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signals {
    Handle,
    Ignore,
}

impl Application {
    /// Builds everything and binds `server.bind` (port 0 picks a free port).
    pub async fn build(
        mut config: Config,
        clock: SharedClock,
        signals: Signals,
    ) -> anyhow::Result<Self> {
        // First the port: a busy one is the commonest start-up error, and the
        // URLs left empty follow the address actually bound.
        let listener = listen(&config.server.bind)?;
        let address = listener.local_addr()?;
        if config.server.public_url.is_empty() && !address.ip().is_loopback() {
            tracing::warn!(
                address = %address,
                "server.public_url is not set: mailed links will name this machine's \
                 loopback address; set it to the URL people reach"
            );
        }
        config.resolve_urls(address);
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new()?);
        let Opened {
            mut auth,
            audit,
            store,
            limiter_keys,
            shared,
        } = open(&config, clock.clone(), metrics.clone()).await?;
        let cursor = auth.revocations().initial_cursor(auth.now());
        let cursor = auth
            .sync_revocations(cursor)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        let windows_lock = DirLock::shared(&config.storage.data_dir)
            .await
            .context("cannot lock the data directory")?;
        let limiter = Arc::new(Limiter::from_config(&config, clock.clone(), limiter_keys).await?);
        limiter
            .load(&store)
            .await
            .context("cannot load saved rate-limit windows")?;
        auth.set_device_memory(Arc::new(KnownDevices(limiter.clone())))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        let mailer = Mailer::from_config(&config.mail, &config.storage.data_dir)?;
        let oidc = crate::oidc::Oidc::new(&config, &auth);

        let state = web::Data::new(AppState {
            auth,
            limiter,
            audit,
            mailer,
            metrics,
            trusted_proxies: TrustedProxies::new(config.server.trusted_proxies.clone()),
            config: config.clone(),
            request_lines: LineFolder::new(clock.now_ms()),
            mail_queue: MailQueue::start()?,
            forward_auth: crate::authz::Rules::new(&config.forward_auth),
            oidc,
        });
        // The RSA key of id_tokens, made (the first time) after the server
        // answers rather than before, when there are clients to need it.
        let warm = state.clone();
        tokio::spawn(async move {
            if warm.oidc.clients.any().await.unwrap_or(false) {
                if let Err(e) = warm.oidc.rsa.get().await {
                    tracing::error!(error = %e, "cannot load or make the RSA key");
                }
            }
        });
        let workers = match config.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let max_body = config.server.max_body_bytes;
        let limits = config.server.clone();
        let app_state = state.clone();
        let pages_on = config.web.enabled;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(extract::form_config(max_body))
                .app_data(extract::query_config())
                .app_data(extract::path_config())
                .app_data(web::PayloadConfig::new(max_body))
                .wrap(middleware::from_fn(limits::middleware))
                .wrap(middleware::from_fn(request_id::middleware))
                .configure(http::routes)
                .configure(|cfg| {
                    if pages_on {
                        crate::pages::routes(cfg);
                    }
                    crate::oidc::routes::routes(cfg, pages_on);
                })
                .default_service(web::to(http::not_found))
        })
        .listen(listener)?
        .workers(workers)
        // The head must arrive within header_timeout (else 408 and close); an
        // idle connection lives keep_alive; max_connections is per worker here.
        .client_request_timeout(limits.header_timeout.std())
        .client_disconnect_timeout(Duration::from_secs(1))
        .keep_alive(limits.keep_alive.std())
        .max_connections(limits.max_connections.div_ceil(workers).max(1))
        .shutdown_timeout(30);
        server = match signals {
            Signals::Handle => server.shutdown_signal(shutdown_signal()?),
            Signals::Ignore => server.disable_signals(),
        };
        let server = server.run();
        let handle = server.handle();

        let mut background = Vec::new();
        if let Some(shared) = shared {
            background.push(shared.listen(state.clone()).await?);
        }

        let poller = state.clone();
        background.push(tokio::spawn(async move {
            let mut cursor = cursor;
            let mut tick = tokio::time::interval(REVOCATION_POLL);
            loop {
                tick.tick().await;
                match poller.auth.sync_revocations(cursor).await {
                    Ok(next) => cursor = next,
                    Err(e) => tracing::warn!(error = %e, "cannot read revocations"),
                }
            }
        }));
        let folds = state.clone();
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(FOLD_FLUSH);
            loop {
                tick.tick().await;
                if let Err(e) = folds.audit.flush_folds(false).await {
                    tracing::error!(error = %e, "cannot write folded audit rows");
                }
                fold::log_summaries(folds.request_lines.flush(folds.auth.now(), false));
            }
        }));
        let retention = state.clone();
        let keep_ms = i64::from(config.audit.retention_days).saturating_mul(86_400_000);
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(RETENTION_EVERY);
            loop {
                tick.tick().await;
                match retention
                    .audit
                    .prune(keep_ms, Origin::default(), None)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "pruned audit rows past retention"),
                    Err(e) => tracing::error!(error = %e, "audit retention failed"),
                }
            }
        }));
        let control = control::listen(&config.storage.data_dir, state.clone().into_inner());
        tracing::info!(
            address = %address,
            public_url = %config.server.public_url,
            data_dir = %config.storage.data_dir.display(),
            config = %config.file.as_deref().map_or_else(|| "none (defaults and environment)".into(), |f| f.display().to_string()),
            "portcullis listening"
        );
        if config.web.enabled {
            // SPEC section 11: the one link this server logs with a secret in
            // it: single use, one hour, and only while no administrator exists.
            match state.auth.start_first_run().await {
                Ok(Some(token)) => tracing::warn!(
                    setup_url = %format!(
                        "{}/ui/setup?token={token}",
                        config.server.public_url.trim_end_matches('/')
                    ),
                    "no administrator yet: open this link within an hour to create one \
                     (or run `portcullis user add --email EMAIL --admin --password-stdin`)"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot tell whether an administrator exists"),
            }
        }
        Ok(Self {
            server,
            handle,
            address,
            state,
            background,
            control,
            windows_lock,
            store,
        })
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// A handle that stops the server (gracefully with `stop(true)`).
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The shared state, for tests and tools that run in-process.
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until stopped, then finishes in-flight requests and cleans up.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        for task in &self.background {
            task.abort();
        }
        // No clear may arrive after the windows are saved.
        if let Some(control) = self.control {
            control.stop().await;
        }
        let state = &self.state;
        fold::log_summaries(state.request_lines.flush(state.auth.now(), true));
        // Queued mail may still write audit rows (a failed send): first.
        state.mail_queue.stop().await;
        state.audit.shutdown().await;
        match state.limiter.save(&self.store).await {
            Ok(n) => tracing::info!(windows = n, "saved rate-limit windows"),
            Err(e) => tracing::error!(error = %e, "cannot save rate-limit windows"),
        }
        drop(self.windows_lock);
        tracing::info!("portcullis stopped");
        result.context("server error")
    }
}

/// Binds `bind`, with an error that says what to do about the usual causes.
fn listen(bind: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(bind).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another program (perhaps another portcullis) listens there; \
                 choose a free port with --bind 127.0.0.1:8081 or PORTCULLIS_SERVER__BIND"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges; use a higher port with --bind \
                 or PORTCULLIS_SERVER__BIND and put a reverse proxy in front"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "this machine has no such address; use 127.0.0.1 or 0.0.0.0 with --bind"
            }
            _ => "check server.bind",
        };
        anyhow::anyhow!("cannot listen on {bind}: {e} ({hint})")
    })
}

/// Installs SIGTERM and SIGINT handlers now (so a signal that arrives during
/// start-up is not lost) and returns a future that resolves on either: both mean
/// a graceful stop.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
