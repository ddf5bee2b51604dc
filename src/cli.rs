//! The command line of SPEC section 2: `serve` (the default), `check-config`,
//! and the `user` commands, all on the same data directory as the server.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use rusqlite::OptionalExtension;
use secrecy::SecretString;

use crate::audit::chain::verify;
use crate::audit::query::{list, parse_time, prune, Filter};
use crate::audit::{Action, EventRow, NewEvent, Origin};
use crate::auth::service::AuthService;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, LogFormat, Overrides, StorageBackend};
use crate::email::normalize;
use crate::startup::{build_auth, Application, Signals};
use crate::store::sqlite::{configure_connection, SqliteStore};
use crate::telemetry;
use crate::time_fmt::rfc3339_ms;

/// portcullis — an authentication server in one binary.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (default: ./portcullis.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides storage.data_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen address (overrides server.bind).
    #[arg(long, global = true, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Process log format (overrides server.log_format).
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate the configuration and print it with secrets masked.
    CheckConfig,
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Read, check and prune the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List events, newest first.
    List {
        #[arg(long)]
        action: Option<String>,
        /// An email address or a user id.
        #[arg(long, value_name = "EMAIL_OR_ID")]
        user: Option<String>,
        #[arg(long)]
        ip: Option<String>,
        /// RFC 3339, or an age such as 15m, 2h, 7d.
        #[arg(long, value_name = "T")]
        since: Option<String>,
        #[arg(long, value_name = "T")]
        until: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Check the hash chain; exit 0 when intact, 1 otherwise.
    Verify,
    /// Apply retention now.
    Prune {
        /// Delete events older than this (default: audit.retention_days).
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
    },
}

/// Output formats of `audit list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account, reading its password from standard input.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
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
    Disable { email: String },
    /// Enable a disabled account.
    Enable { email: String },
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
    let overrides = Overrides {
        bind: cli.bind.clone(),
        data_dir: cli.data_dir.clone(),
        log_format: cli.log_format,
    };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::CheckConfig => {
            print!("{}", config.to_masked_toml());
            Ok(())
        }
        Command::User { command } => runtime()?.block_on(user_command(config, command)),
        Command::Audit { command } => audit_command(&config, command),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start runtime")
}

fn serve(config: Config) -> anyhow::Result<()> {
    let _log = telemetry::init(config.server.log_format);
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config, Arc::new(SystemClock), Signals::Handle).await?;
        app.run_until_stopped().await
    })
}

async fn user_command(config: Config, command: UserCommand) -> anyhow::Result<()> {
    let auth = build_auth(&config, Arc::new(SystemClock)).await?;
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
            let users = auth.store().list_users(None).await?;
            println!(
                "{:<36}  {:<32}  {:<20}  {:<5}  {:<8}  created_at",
                "id", "email", "name", "admin", "disabled"
            );
            for u in users {
                println!(
                    "{:<36}  {:<32}  {:<20}  {:<5}  {:<8}  {}",
                    u.id,
                    u.email,
                    u.name.as_deref().unwrap_or_default(),
                    if u.is_admin { "yes" } else { "no" },
                    if u.is_disabled() { "yes" } else { "no" },
                    rfc3339_ms(u.created_at)
                );
            }
        }
        UserCommand::Disable { email } => set_disabled(&auth, &email, true).await?,
        UserCommand::Enable { email } => set_disabled(&auth, &email, false).await?,
    }
    Ok(())
}

async fn set_disabled(auth: &AuthService, email: &str, disabled: bool) -> anyhow::Result<()> {
    let user = auth
        .store()
        .user_by_email(&normalize(email))
        .await?
        .ok_or_else(|| anyhow!("no account with email {}", normalize(email)))?;
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
        .store()
        .set_disabled(user.id, disabled, auth.now(), vec![event])
        .await?
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

/// The database of the `audit` commands.
enum AuditDb {
    Sqlite(rusqlite::Connection),
    #[cfg(feature = "postgres")]
    Postgres(crate::store::postgres::PgStore, tokio::runtime::Runtime),
}

impl AuditDb {
    /// Opens the configured database (applying the schema).
    fn open(config: &Config) -> anyhow::Result<Self> {
        match config.storage.backend {
            StorageBackend::Sqlite => {
                let path = config.database_path();
                if !path.exists() {
                    bail!("no database at {}", path.display());
                }
                drop(SqliteStore::open(&path)?);
                let conn = rusqlite::Connection::open(&path)?;
                configure_connection(&conn)?;
                Ok(Self::Sqlite(conn))
            }
            #[cfg(feature = "postgres")]
            StorageBackend::Postgres => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let store = rt.block_on(crate::store::postgres::PgStore::connect(
                    &config.storage.postgres_url,
                ))?;
                Ok(Self::Postgres(store, rt))
            }
            #[cfg(not(feature = "postgres"))]
            StorageBackend::Postgres => {
                bail!("storage.backend = \"postgres\" needs portcullis built with the `postgres` feature")
            }
        }
    }

    fn user_id_by_email(&self, email: &str) -> anyhow::Result<Option<String>> {
        match self {
            Self::Sqlite(conn) => Ok(conn
                .query_row("SELECT id FROM users WHERE email = ?1", [email], |r| {
                    r.get::<_, String>(0)
                })
                .optional()?),
            #[cfg(feature = "postgres")]
            Self::Postgres(store, rt) => {
                let user = rt.block_on(crate::store::Store::user_by_email(store, email))?;
                Ok(user.map(|u| u.id.to_string()))
            }
        }
    }

    fn list(&self, filter: &Filter) -> anyhow::Result<crate::audit::query::Page> {
        match self {
            Self::Sqlite(conn) => Ok(list(conn, filter)?),
            #[cfg(feature = "postgres")]
            Self::Postgres(store, rt) => Ok(rt.block_on(store.list(filter))?),
        }
    }

    fn verify(&self) -> anyhow::Result<crate::audit::chain::Verdict> {
        match self {
            Self::Sqlite(conn) => Ok(verify(conn)?),
            #[cfg(feature = "postgres")]
            Self::Postgres(store, rt) => Ok(rt.block_on(store.verify())?),
        }
    }

    fn prune(&mut self, cutoff: i64, now: i64) -> anyhow::Result<u64> {
        let origin = Origin::default();
        match self {
            Self::Sqlite(conn) => Ok(prune(conn, cutoff, &origin, Some("cli"), now)?),
            #[cfg(feature = "postgres")]
            Self::Postgres(store, rt) => {
                Ok(rt.block_on(store.prune(cutoff, &origin, Some("cli"), now))?)
            }
        }
    }
}

fn audit_command(config: &Config, command: AuditCommand) -> anyhow::Result<()> {
    let now = SystemClock.now_ms();
    match command {
        AuditCommand::List {
            action,
            user,
            ip,
            since,
            until,
            limit,
            format,
        } => {
            let db = AuditDb::open(config)?;
            if let Some(a) = &action {
                if Action::parse(a).is_none() {
                    bail!("--action: `{a}` is not an audit action");
                }
            }
            let user_id = match user {
                Some(u) if u.contains('@') => {
                    Some(db.user_id_by_email(&normalize(&u))?.ok_or_else(|| {
                        anyhow!("--user: no account with email {}", normalize(&u))
                    })?)
                }
                other => other,
            };
            let time = |flag: &str, value: Option<String>| -> anyhow::Result<Option<i64>> {
                value
                    .map(|t| {
                        parse_time(&t, now).ok_or_else(|| {
                            anyhow!("{flag}: `{t}` is neither RFC 3339 nor an age like 15m, 2h, 7d")
                        })
                    })
                    .transpose()
            };
            let filter = Filter {
                action,
                user_id,
                ip,
                since: time("--since", since)?,
                until: time("--until", until)?,
                limit: Some(limit),
                before_id: None,
            };
            let page = db.list(&filter)?;
            print_events(&page.events, format)
        }
        AuditCommand::Verify => {
            let verdict = AuditDb::open(config)?.verify()?;
            println!("{}", serde_json::to_string(&verdict)?);
            if verdict.ok {
                Ok(())
            } else {
                eprintln!(
                    "audit chain broken at id {}",
                    verdict
                        .first_bad_id
                        .map_or_else(|| "?".into(), |id| id.to_string())
                );
                std::process::exit(1);
            }
        }
        AuditCommand::Prune { older_than } => {
            let keep_ms = match older_than {
                Some(age) => age
                    .parse::<crate::config::Duration>()
                    .map_err(|e| anyhow!("--older-than: {e}"))?
                    .as_millis_i64(),
                None => i64::from(config.audit.retention_days).saturating_mul(86_400_000),
            };
            let deleted = AuditDb::open(config)?.prune(now.saturating_sub(keep_ms), now)?;
            println!("pruned {deleted} audit events");
            Ok(())
        }
    }
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
