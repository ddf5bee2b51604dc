//! The command line of SPEC section 2: `serve` (the default), `check-config`,
//! and the `user`, `rate-limit` and `audit` commands, all on the same data
//! directory as the server (also while it runs).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};

use crate::audit::query::{parse_time, Filter};
use crate::audit::{Action, EventRow, NewEvent, Origin};
use crate::auth::service::AuthService;
use crate::clock::SystemClock;
use crate::config::{Config, LogFormat, Overrides, StorageBackend};
use crate::control;
use crate::email::normalize;
use crate::metrics::Metrics;
use crate::ratelimit::Limiter;
use crate::startup::{open, open_records, Application, Opened, Signals};
use crate::telemetry;
use crate::time_fmt::rfc3339_ms;

/// portcullis — an authentication server in one binary.
///
/// With no command it serves (`portcullis serve`). Every command works on the
/// same data directory as the server, also while the server runs.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (default: ./portcullis.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides storage.data_dir; default ./data).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The options of `serve`, also accepted without the word `serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Listen address, such as 127.0.0.1:9000 (overrides server.bind).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Process log format (overrides server.log_format).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Validate the configuration and print it with secrets masked.
    CheckConfig,
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// See and clear rate-limit windows (the way out of a lockout).
    RateLimit {
        #[command(subcommand)]
        command: RateLimitCommand,
    },
    /// Read, check and prune the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage OpenID Connect clients (those of the config file are listed too).
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Manage the signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Add a client; a running server knows it at once.
    Add {
        /// The client id: 1 to 64 of A-Z a-z 0-9 . _ -
        #[arg(long, value_name = "ID")]
        id: String,
        /// A redirect URI (exact match); repeat for more.
        #[arg(long = "redirect-uri", value_name = "URI", required = true)]
        redirect_uris: Vec<String>,
        /// Where the client may send a person after logout; repeat for more.
        #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
        post_logout_redirect_uris: Vec<String>,
        /// A public client (no secret; PKCE required).
        #[arg(long)]
        public: bool,
        /// Read the secret from standard input (else one is made and printed once).
        #[arg(long, conflicts_with = "public")]
        secret_stdin: bool,
        /// What the consent page calls it.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Scopes it may ask for (default: all); repeat for more.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// once (default), implicit (first-party apps) or always.
        #[arg(long, value_name = "WHEN", default_value = "once")]
        consent: String,
        /// client_secret_basic (default) or client_secret_post.
        #[arg(long, value_name = "METHOD")]
        auth_method: Option<String>,
    },
    /// List the clients (secrets are never shown).
    List,
    /// Remove a client the CLI added, and end its grants.
    Remove {
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make new signing keys current (a running server signs with them after
    /// its next start); old public keys stay published until their tokens expire.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List events, newest first.
    List {
        /// Only events of this action, such as login_failed.
        #[arg(long, value_name = "ACTION")]
        action: Option<String>,
        /// Only events of this account: an email address or a user id.
        #[arg(long, value_name = "EMAIL_OR_ID")]
        user: Option<String>,
        /// Only events from this client address.
        #[arg(long, value_name = "IP")]
        ip: Option<String>,
        /// Only events at or after T: RFC 3339, or an age such as 15m, 2h, 7d.
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Only events before T: RFC 3339, or an age such as 15m, 2h, 7d.
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// At most this many events.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u32,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Check the hash chain; exit 0 when intact, 1 otherwise.
    Verify,
    /// Apply retention now.
    Prune {
        /// Delete events older than this age, such as 90d (default: audit.retention_days).
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
    },
}

/// Output formats of `audit list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns for people.
    Table,
    /// One JSON array of event objects, as GET /admin/audit.
    Json,
    /// A header row, then one row per event.
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account, reading its password from standard input.
    Add {
        /// The account's email address.
        #[arg(long, value_name = "EMAIL")]
        email: String,
        /// A display name.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Make the account an administrator.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List accounts.
    List,
    /// Disable an account and revoke its sessions.
    Disable {
        /// The account's email address.
        email: String,
    },
    /// Enable a disabled account.
    Enable {
        /// The account's email address.
        email: String,
    },
    /// Make an account an administrator.
    Promote {
        /// The account's email address.
        email: String,
    },
    /// Make an administrator an ordinary account.
    Demote {
        /// The account's email address.
        email: String,
    },
    /// Show an account's groups, or add and remove some (admins follows promote/demote).
    Groups {
        /// The account's email address.
        email: String,
        /// A group to add (a-z, 0-9, _ and -; at most 64); repeatable.
        #[arg(long, value_name = "GROUP")]
        add: Vec<String>,
        /// A group to remove; repeatable.
        #[arg(long, value_name = "GROUP")]
        remove: Vec<String>,
    },
    /// Turn off a lost second factor (TOTP, backup codes) and revoke every session.
    ResetMfa {
        /// The account's email address.
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RateLimitCommand {
    /// Show the keys with counted events: who is limited, and for how long.
    List {
        /// Only this key: an address (127.0.0.1), an IPv6 /64 or an email.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// Clear a key's windows, on a running server within a second (audited).
    Clear {
        /// An address (127.0.0.1), an IPv6 /64 or an email.
        #[arg(long, value_name = "KEY")]
        key: String,
        /// Only this rule, such as login_ip (default: every rule).
        #[arg(long, value_name = "RULE")]
        rule: Option<String>,
    },
}

/// Parses the arguments and runs the command; errors are one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // `portcullis --bind X` is `portcullis serve --bind X`; before another
    // command the option would be ignored, so it is refused.
    let command = match cli.command {
        None => Command::Serve(cli.serve),
        Some(Command::Serve(args)) => Command::Serve(ServeArgs {
            bind: args.bind.or(cli.serve.bind),
            log_format: args.log_format.or(cli.serve.log_format),
        }),
        Some(_) if cli.serve.bind.is_some() || cli.serve.log_format.is_some() => {
            bail!("--bind and --log-format are options of `serve` (portcullis serve --bind ADDR)")
        }
        Some(other) => other,
    };
    let serve = match &command {
        Command::Serve(args) => args.clone(),
        _ => ServeArgs::default(),
    };
    let overrides = Overrides {
        bind: serve.bind,
        data_dir: cli.data_dir.clone(),
        log_format: serve.log_format,
    };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    match command {
        Command::Serve(_) => serve_with(config),
        Command::CheckConfig => {
            let mut config = config;
            // The URLs left empty, as a server on server.bind would fill them.
            if let Ok(bound) = config.server.bind.parse::<std::net::SocketAddr>() {
                if bound.port() != 0 {
                    config.resolve_urls(bound);
                }
            }
            print!("{}", config.to_masked_toml());
            Ok(())
        }
        Command::User { command } => runtime()?.block_on(user_command(config, command)),
        Command::RateLimit { command } => runtime()?.block_on(rate_limit_command(config, command)),
        Command::Audit { command } => runtime()?.block_on(audit_command(&config, command)),
        Command::Client { command } => runtime()?.block_on(client_command(config, command)),
        Command::Keys { command } => runtime()?.block_on(keys_command(config, command)),
    }
}

async fn client_command(config: Config, command: ClientCommand) -> anyhow::Result<()> {
    use crate::config::{ClientAuthMethod, Consent, OidcClientConfig};
    let Opened { auth, audit, .. } =
        open(&config, Arc::new(SystemClock), Arc::new(Metrics::new()?)).await?;
    let outcome = async {
        let store = auth.store();
        match command {
            ClientCommand::Add {
                id,
                redirect_uris,
                post_logout_redirect_uris,
                public,
                secret_stdin,
                name,
                scopes,
                consent,
                auth_method,
            } => {
                if config.oidc.clients.iter().any(|c| c.id == id) {
                    bail!("client {id:?} is in the config file already");
                }
                let consent: Consent = serde_json::from_value(serde_json::Value::String(consent.clone()))
                    .map_err(|_| anyhow::anyhow!("--consent: {consent:?} is not once, implicit or always"))?;
                let method = match auth_method.as_deref() {
                    None => None,
                    Some(m) => Some(
                        serde_json::from_value::<ClientAuthMethod>(serde_json::Value::String(m.to_owned()))
                            .map_err(|_| anyhow::anyhow!("--auth-method: {m:?} is not client_secret_basic or client_secret_post"))?,
                    ),
                };
                let (secret, shown) = if public {
                    (None, None)
                } else if secret_stdin {
                    (Some(read_password()?), None)
                } else {
                    let made = crate::auth::crypto::new_opaque_token();
                    (Some(SecretString::from(made.clone())), Some(made))
                };
                let mut client = OidcClientConfig {
                    id: id.clone(),
                    name: name.unwrap_or_default(),
                    redirect_uris,
                    post_logout_redirect_uris,
                    public,
                    scopes,
                    token_endpoint_auth_method: method,
                    consent,
                    ..OidcClientConfig::default()
                };
                if let Some(secret) = &secret {
                    if secret.expose_secret().len() < 16 {
                        bail!("the secret must be at least 16 characters");
                    }
                    client.secret_hash = auth
                        .hash_client_secret(secret.clone())
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                client
                    .validate("client")
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let text = serde_json::to_string(&client)?;
                if !store.add_oidc_client(&id, text, auth.now()).await? {
                    bail!("a client {id:?} exists already");
                }
                println!("added client {id}");
                if let Some(made) = shown {
                    println!("secret (shown once): {made}");
                }
            }
            ClientCommand::List => {
                for c in &config.oidc.clients {
                    println!("{}\tconfig\t{}\t{}", c.id, if c.public { "public" } else { "confidential" }, c.redirect_uris.join(" "));
                }
                for (id, text) in store.oidc_clients().await? {
                    match crate::oidc::clients::parse_stored(&id, &text) {
                        Some(c) => println!("{}\tcli\t{}\t{}", c.id, if c.public { "public" } else { "confidential" }, c.redirect_uris.join(" ")),
                        None => println!("{id}\tcli\tinvalid"),
                    }
                }
            }
            ClientCommand::Remove { id } => {
                match store.remove_oidc_client(&id, auth.now()).await? {
                    Some(revoked) => {
                        println!("removed client {id}; {} grant(s) ended", revoked.len());
                    }
                    None if config.oidc.clients.iter().any(|c| c.id == id) => {
                        bail!("client {id:?} comes from the config file: remove it there")
                    }
                    None => bail!("no client {id:?}"),
                }
            }
        }
        Ok(())
    }
    .await;
    audit.shutdown().await;
    outcome
}

async fn keys_command(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    require_database(&config)?;
    let Opened { auth, audit, .. } =
        open(&config, Arc::new(SystemClock), Arc::new(Metrics::new()?)).await?;
    let outcome = async {
        match command {
            KeysCommand::Rotate => {
                let now = auth.now();
                let master = auth.master().clone();
                let rows = tokio::task::spawn_blocking(move || {
                    Ok::<_, anyhow::Error>(vec![
                        crate::auth::tokens::new_ed25519_row(&master, now)?,
                        crate::oidc::keys::new_rsa_row(&master, now)?,
                    ])
                })
                .await??;
                let kids: Vec<String> = rows.iter().map(|r| r.kid.clone()).collect();
                let retired = auth.store().rotate_signing_keys(rows, now).await?;
                println!(
                    "new keys {}; {retired} old key(s) retired (published until their tokens expire); restart the server to sign with the new keys",
                    kids.join(", ")
                );
            }
        }
        Ok(())
    }
    .await;
    audit.shutdown().await;
    outcome
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start runtime")
}

fn serve_with(config: Config) -> anyhow::Result<()> {
    let _log = telemetry::init(config.server.log_format);
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config, Arc::new(SystemClock), Signals::Handle).await?;
        app.run_until_stopped().await
    })
}

async fn user_command(config: Config, command: UserCommand) -> anyhow::Result<()> {
    // `user add` may make the first account before the server ever ran.
    if !matches!(command, UserCommand::Add { .. }) {
        require_database(&config)?;
    }
    let Opened { auth, audit, .. } =
        open(&config, Arc::new(SystemClock), Arc::new(Metrics::new()?)).await?;
    let outcome = user_change(&auth, command).await;
    audit.shutdown().await;
    outcome
}

async fn user_change(auth: &AuthService, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            email,
            name,
            admin,
            password_stdin: _,
        } => {
            let password = read_password()?;
            let event = NewEvent::new(Action::RegistrationSuccess, &Origin::default())
                .extra("actor", "cli")
                .extra("is_admin", admin);
            let user = auth
                .register(&email, password, name.as_deref(), admin, vec![event])
                .await
                .map_err(describe)?;
            println!(
                "created {} {}{}",
                user.id,
                user.email,
                if admin { " (admin)" } else { "" }
            );
        }
        UserCommand::List => {
            let users = auth.list_users(None).await?;
            let yes = |b: bool| if b { "yes" } else { "no" };
            println!(
                "{:<36}  {:<32}  {:<20}  {:<5}  {:<8}  {:<4}  created_at",
                "id", "email", "name", "admin", "disabled", "totp"
            );
            for (u, totp) in users {
                println!(
                    "{:<36}  {:<32}  {:<20}  {:<5}  {:<8}  {:<4}  {}",
                    u.id,
                    u.email,
                    u.name.as_deref().unwrap_or_default(),
                    yes(u.is_admin),
                    yes(u.is_disabled()),
                    yes(totp),
                    rfc3339_ms(u.created_at)
                );
            }
        }
        UserCommand::Disable { email } => set_disabled(auth, &email, true).await?,
        UserCommand::Enable { email } => set_disabled(auth, &email, false).await?,
        UserCommand::Promote { email } => set_admin(auth, &email, true).await?,
        UserCommand::Demote { email } => set_admin(auth, &email, false).await?,
        UserCommand::Groups { email, add, remove } => {
            let user = account(auth, &email).await?;
            let mut groups: Vec<String> = auth
                .all_groups()
                .await
                .map_err(describe)?
                .remove(&user.id)
                .unwrap_or_default();
            groups.retain(|g| !remove.contains(g));
            groups.extend(add);
            let event = NewEvent::new(Action::GroupsChanged, &Origin::default())
                .user(user.id)
                .extra("actor", "cli");
            let groups = auth
                .set_groups(user.id, &groups, event)
                .await
                .map_err(describe)?;
            println!(
                "{}: {}",
                user.email,
                if groups.is_empty() {
                    "no groups".to_owned()
                } else {
                    groups.join(", ")
                }
            );
        }
        UserCommand::ResetMfa { email } => {
            let user = account(auth, &email).await?;
            let event = NewEvent::new(Action::MfaReset, &Origin::default()).extra("actor", "cli");
            auth.reset_mfa(user.id, vec![event])
                .await
                .map_err(describe)?;
            println!(
                "{}: two-step verification is off and every session is signed out; \
                 they sign in with their password and may set it up again",
                user.email
            );
        }
    }
    Ok(())
}

/// The account of `email`, or an error that says there is none.
async fn account(auth: &AuthService, email: &str) -> anyhow::Result<crate::store::User> {
    auth.user_by_email(email)
        .await
        .map_err(describe)?
        .ok_or_else(|| {
            let email = normalize(email);
            anyhow!("no account with email {email} (see `portcullis user list`)")
        })
}

/// `user promote` / `user demote`: audited as a change of the implicit
/// `admins` group (SPEC section 10). Takes effect on the next request: the
/// admin check reads the account, not the token.
async fn set_admin(auth: &AuthService, email: &str, admin: bool) -> anyhow::Result<()> {
    let user = account(auth, email).await?;
    let change = if admin { "added" } else { "removed" };
    let event = NewEvent::new(Action::GroupsChanged, &Origin::default())
        .user(user.id)
        .resource("user", user.id)
        .extra(change, serde_json::json!(["admins"]))
        .extra("actor", "cli");
    let changed = auth
        .set_admin(user.id, admin, vec![event])
        .await
        .map_err(describe)?;
    match (changed, admin) {
        (true, true) => println!("{} is now an administrator", user.email),
        (true, false) => println!("{} is no longer an administrator", user.email),
        (false, true) => println!("{} already is an administrator", user.email),
        (false, false) => println!("{} already is not an administrator", user.email),
    }
    Ok(())
}

/// `rate-limit list|clear`: through the control socket of every server
/// running on this data directory, else on the windows where they rest: in
/// the shared Redis, or saved in the database by the last graceful stop
/// (then under the directory's lock, so that no server loads or saves them
/// meanwhile).
async fn rate_limit_command(config: Config, command: RateLimitCommand) -> anyhow::Result<()> {
    let request = match command {
        RateLimitCommand::List { key } => control::Request::List { key },
        RateLimitCommand::Clear { key, rule } => {
            if key.trim().is_empty() {
                bail!("--key is empty");
            }
            if let Some(rule) = &rule {
                control::parse_rule(rule).map_err(|e| anyhow!("--rule: {e}"))?;
            }
            control::Request::Clear { key, rule }
        }
    };
    let dir = &config.storage.data_dir;
    require_database(&config)?;
    let replies = control::ask_all(dir, &request).await?;
    let place = match replies.len() {
        0 => None,
        1 => Some("on the running server".to_owned()),
        n => Some(format!("on the {n} running servers")),
    };
    let (replies, place) = match place {
        Some(place) => (replies, place),
        None => (
            vec![at_rest(&config, request.clone()).await?],
            at_rest_place(&config),
        ),
    };
    let mut windows = Vec::new();
    let mut cleared = None;
    for reply in replies {
        match reply {
            control::Reply::Error { message } => bail!("{message}"),
            control::Reply::Cleared { windows: n } => *cleared.get_or_insert(0) += n,
            control::Reply::Windows { windows: w } => windows.extend(w),
        }
    }
    if let (Some(n), control::Request::Clear { key, rule }) = (cleared, &request) {
        let under = rule
            .as_deref()
            .map_or("every rule".to_owned(), |r| format!("rule {r}"));
        match n {
            0 => println!(
                "nothing to clear: {} has no counted events under {under} ({place})",
                key.trim()
            ),
            1 => println!("cleared 1 window of {} under {under} ({place})", key.trim()),
            n => println!(
                "cleared {n} windows of {} under {under} ({place})",
                key.trim()
            ),
        }
        return Ok(());
    }
    if windows.is_empty() {
        println!("no key has counted events ({place})");
        return Ok(());
    }
    println!(
        "{:<24}  {:<46}  {:>5}  {:>5}  retry_after",
        "rule", "key", "count", "limit"
    );
    for w in &windows {
        let wait = if w.retry_after > 0 {
            format!("{}s", w.retry_after)
        } else {
            "-".to_owned()
        };
        println!(
            "{:<24}  {:<46}  {:>5}  {:>5}  {wait}",
            w.rule, w.key, w.count, w.limit
        );
    }
    eprintln!("({} windows, {place})", windows.len());
    Ok(())
}

/// Where windows rest when no server answers, in words.
fn at_rest_place(config: &Config) -> String {
    match config.rate_limit.store {
        crate::config::LimitStoreKind::Redis => "in the shared Redis".to_owned(),
        crate::config::LimitStoreKind::Memory => format!(
            "in the windows saved at the server's last stop; no server is running on {}",
            config.storage.data_dir.display()
        ),
    }
}

/// Answers `request` on the windows at rest: in Redis, or saved in the
/// database (loaded, changed and saved back under the directory's lock).
async fn at_rest(config: &Config, request: control::Request) -> anyhow::Result<control::Reply> {
    let dir = &config.storage.data_dir;
    let shared = config.rate_limit.store == crate::config::LimitStoreKind::Redis;
    let _lock = if shared {
        None
    } else {
        crate::startup::create_data_dir(config)?;
        Some(control::DirLock::exclusive(dir)?.ok_or_else(|| {
            anyhow!(
                "a server is starting or stopping on {} (it holds the rate-limit windows, but \
                 its control socket does not answer yet); try again in a moment",
                dir.display()
            )
        })?)
    };
    let clock: crate::clock::SharedClock = Arc::new(SystemClock);
    let Opened {
        audit,
        store,
        limiter_keys,
        ..
    } = open(config, clock.clone(), Arc::new(Metrics::new()?)).await?;
    let limiter = Limiter::from_config(config, clock, limiter_keys).await?;
    if !shared {
        limiter.load(&store).await?;
    }
    let clearing = matches!(request, control::Request::Clear { .. });
    let reply = control::answer(&limiter, &audit, request).await;
    if clearing && matches!(reply, control::Reply::Cleared { .. }) {
        limiter.save(&store).await?;
    }
    audit.shutdown().await;
    Ok(reply)
}

/// Commands that read an existing SQLite database refuse to create an empty
/// one somewhere unexpected, and say how to point at the right one.
fn require_database(config: &Config) -> anyhow::Result<()> {
    if config.storage.backend != StorageBackend::Sqlite {
        return Ok(());
    }
    let path = config.database_path();
    if path.exists() {
        return Ok(());
    }
    bail!(
        "no database at {} (run this where the server runs, or pass --data-dir DIR or --config FILE)",
        path.display()
    )
}

async fn set_disabled(auth: &AuthService, email: &str, disabled: bool) -> anyhow::Result<()> {
    let user = account(auth, email).await?;
    let action = if disabled {
        Action::UserDisabled
    } else {
        Action::UserEnabled
    };
    let event = NewEvent::new(action, &Origin::default())
        .user(user.id)
        .resource("user", user.id)
        .extra("actor", "cli");
    if !auth
        .set_disabled(user.id, disabled, vec![event])
        .await
        .map_err(describe)?
    {
        bail!("no account with email {}", user.email);
    }
    println!(
        "{} {}",
        if disabled { "disabled" } else { "enabled" },
        user.email
    );
    Ok(())
}

fn read_password() -> anyhow::Result<SecretString> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password: ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(SecretString::from(password.to_owned()))
}

/// One line for a failed registration.
fn describe(err: crate::auth::service::AuthError) -> anyhow::Error {
    use crate::auth::service::AuthError as E;
    match err {
        E::Validation(fields) => {
            let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k} {v}")).collect();
            anyhow!("{}", parts.join("; "))
        }
        E::EmailTaken => anyhow!("an account with this email already exists"),
        other => anyhow!("{other}"),
    }
}

/// `audit list|verify|prune`, through the audit log on the configured
/// database (the storage key is not needed to read or check the log).
async fn audit_command(config: &Config, command: AuditCommand) -> anyhow::Result<()> {
    require_database(config)?;
    let clock: crate::clock::SharedClock = Arc::new(SystemClock);
    let now = clock.now_ms();
    let (store, audit) = open_records(config, clock, Arc::new(Metrics::new()?)).await?;
    let outcome = match command {
        AuditCommand::List {
            action,
            user,
            ip,
            since,
            until,
            limit,
            format,
        } => {
            if let Some(a) = &action {
                if Action::parse(a).is_none() {
                    bail!("--action: `{a}` is not an audit action");
                }
            }
            let time = |flag: &str, value: Option<String>| -> anyhow::Result<Option<i64>> {
                value
                    .map(|t| {
                        parse_time(&t, now).ok_or_else(|| {
                            anyhow!("{flag}: `{t}` is neither RFC 3339 nor an age like 15m, 2h, 7d")
                        })
                    })
                    .transpose()
            };
            let (since, until) = (time("--since", since)?, time("--until", until)?);
            let user_id = match user {
                Some(u) if u.contains('@') => {
                    let email = normalize(&u);
                    let user = store.user_by_email(&email).await?;
                    Some(
                        user.ok_or_else(|| anyhow!("--user: no account with email {email}"))?
                            .id
                            .to_string(),
                    )
                }
                other => other,
            };
            let filter = Filter {
                action,
                user_id,
                ip,
                since,
                until,
                limit: Some(limit),
                before_id: None,
            };
            let page = audit.list(filter).await?;
            print_events(&page.events, format).map(|()| true)
        }
        AuditCommand::Verify => {
            let verdict = audit.verify().await?;
            println!("{}", serde_json::to_string(&verdict)?);
            if !verdict.ok {
                eprintln!(
                    "audit chain broken at id {}",
                    verdict
                        .first_bad_id
                        .map_or_else(|| "?".into(), |id| id.to_string())
                );
            }
            Ok(verdict.ok)
        }
        AuditCommand::Prune { older_than } => {
            let keep_ms = match older_than {
                Some(age) => age
                    .parse::<crate::config::Duration>()
                    .map_err(|e| anyhow!("--older-than: {e}"))?
                    .as_millis_i64(),
                None => i64::from(config.audit.retention_days).saturating_mul(86_400_000),
            };
            let deleted = audit
                .prune(keep_ms, Origin::default(), Some("cli".to_owned()))
                .await?;
            println!("pruned {deleted} audit events");
            Ok(true)
        }
    };
    audit.shutdown().await;
    if !outcome? {
        // `audit verify` of a broken chain: exit 1, as SPEC section 2 says.
        std::process::exit(1);
    }
    Ok(())
}

const COLUMNS: [&str; 12] = [
    "id",
    "created_at",
    "action",
    "user_id",
    "resource_type",
    "resource_id",
    "ip_address",
    "user_agent",
    "extra_data",
    "request_id",
    "prev_hash",
    "hash",
];

/// A CSV cell that a spreadsheet will show, not run: a cell starting with `=`,
/// `+`, `-`, `@`, a tab or a carriage return would be read as a formula (a
/// client's `User-Agent: =HYPERLINK(...)`), so it gets a leading `'` (OWASP's
/// advice for CSV injection).
pub fn spreadsheet_safe(cell: String) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell,
    }
}

fn print_events(events: &[EventRow], format: Format) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, events)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(COLUMNS)?;
            for e in events {
                let opt = |v: &Option<String>| v.clone().unwrap_or_default();
                let row = [
                    e.id.to_string(),
                    e.created_at.clone(),
                    e.action.clone(),
                    opt(&e.user_id),
                    opt(&e.resource_type),
                    opt(&e.resource_id),
                    opt(&e.ip_address),
                    opt(&e.user_agent),
                    e.extra_data.to_string(),
                    opt(&e.request_id),
                    e.prev_hash.clone(),
                    e.hash.clone(),
                ];
                w.write_record(row.map(spreadsheet_safe))?;
            }
            w.flush()?;
        }
        Format::Table => {
            writeln!(
                out,
                "{:>6}  {:<24}  {:<26}  {:<36}  {:<15}  extra_data",
                "id", "created_at", "action", "user_id", "ip_address"
            )?;
            for e in events {
                let extra: String = e.extra_data.to_string().chars().take(80).collect();
                writeln!(
                    out,
                    "{:>6}  {:<24}  {:<26}  {:<36}  {:<15}  {extra}",
                    e.id,
                    e.created_at,
                    e.action,
                    e.user_id.as_deref().unwrap_or("-"),
                    e.ip_address.as_deref().unwrap_or("-"),
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::spreadsheet_safe;

    #[test]
    fn formula_cells_are_neutralized() {
        for cell in [
            "=HYPERLINK(\"http://evil\",\"x\")",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert_eq!(spreadsheet_safe(cell.into()), format!("'{cell}"));
        }
        for cell in ["Mozilla/5.0", "", "1", "{\"a\":1}", "a=b"] {
            assert_eq!(spreadsheet_safe(cell.into()), cell);
        }
    }
}
