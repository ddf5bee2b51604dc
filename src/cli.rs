//! The command line of SPEC section 2: `serve` (the default), `check-config`,
//! and the `user` commands, all on the same data directory as the server.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use secrecy::SecretString;

use crate::auth::email::normalize;
use crate::auth::service::AuthService;
use crate::clock::SystemClock;
use crate::config::{Config, Overrides};
use crate::startup::{build_auth, Application, Signals};
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
    };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::CheckConfig => {
            print!("{}", config.to_masked_toml());
            Ok(())
        }
        Command::User { command } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start runtime")?;
            runtime.block_on(user_command(config, command))
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    telemetry::init();
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
            let user = auth
                .register(&email, password, name.as_deref(), admin)
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
    auth.store()
        .set_disabled(user.id, disabled, auth.now())
        .await?;
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
