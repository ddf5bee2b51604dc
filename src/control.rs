//! The control socket: how `portcullis rate-limit list|clear` reaches a
//! running server's in-memory windows without an admin token.
//!
//! A server listens on `data_dir/portcullis.sock`, a Unix socket of mode 0600
//! in the 0700 data directory: whoever may connect may already read the
//! database, so the socket grants nothing new. The protocol is one JSON line
//! each way. Clearing here and through `DELETE /admin/rate-limits` is one
//! function ([`clear`]) with one audit event; only the actor differs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::audit::{Action, AuditError, AuditLog, NewEvent, Origin};
use crate::ratelimit::store::LimitError;
use crate::ratelimit::{LimitView, Limiter, RuleName};

/// The socket's name inside the data directory.
pub const SOCKET: &str = "portcullis.sock";
/// A request is one line of at most this many bytes.
const MAX_REQUEST: u64 = 4096;
/// How long either side waits for the other.
const PATIENCE: Duration = Duration::from_secs(5);

/// The socket of the server on `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// What the CLI asks.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Tracked keys, or those meant by `key`.
    List { key: Option<String> },
    /// Clears the keys meant by `key` under `rule`, or under every rule.
    Clear { key: String, rule: Option<String> },
}

/// One tracked key under one rule, as the CLI prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    pub rule: String,
    pub key: String,
    pub count: u32,
    pub limit: u32,
    /// Seconds until the key may try again; 0 unless it is blocked.
    pub retry_after: u64,
}

impl From<LimitView> for Window {
    fn from(v: LimitView) -> Self {
        Self {
            rule: v.rule.as_str().to_owned(),
            key: v.key,
            count: v.count,
            limit: v.limit,
            retry_after: v.retry_after,
        }
    }
}

/// The server's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    Windows { windows: Vec<Window> },
    Cleared,
    Error { message: String },
}

/// Why a clear did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ClearError {
    #[error("{0}")]
    Limiter(#[from] LimitError),
    #[error("{0}")]
    Audit(#[from] AuditError),
}

/// A rule named by a person: `Err` lists the names there are.
pub fn parse_rule(name: &str) -> Result<RuleName, String> {
    RuleName::parse(name).ok_or_else(|| {
        let names: Vec<&str> = RuleName::ALL.iter().map(|r| r.as_str()).collect();
        format!(
            "`{name:.64}` is not a rate-limit rule (rules: {})",
            names.join(", ")
        )
    })
}

/// Clears the keys meant by `key` under `rule` (every rule when `None`) and
/// records `event` (a `rate_limit_cleared` event naming its actor), with the
/// key and rule added. The admin API and the CLI both clear through here.
pub async fn clear(
    limiter: &Limiter,
    audit: &AuditLog,
    key: &str,
    rule: Option<RuleName>,
    event: NewEvent,
) -> Result<(), ClearError> {
    limiter.clear(key, rule).await?;
    let event = event
        .resource("rate_limit", key)
        .extra("key", key)
        .extra("rule", rule.map_or("*", RuleName::as_str));
    audit.record(event).await?;
    Ok(())
}

/// The `rate_limit_cleared` event of a clear asked for on the command line.
pub fn cli_event() -> NewEvent {
    NewEvent::new(Action::RateLimitCleared, &Origin::default()).extra("actor", "cli")
}

/// Answers one request against `limiter`, auditing into `audit`.
pub async fn answer(limiter: &Limiter, audit: &AuditLog, request: Request) -> Reply {
    let failed = |message: String| Reply::Error { message };
    match request {
        Request::List { key } => match limiter.inspect(key.as_deref()).await {
            Ok(views) => Reply::Windows {
                windows: views.into_iter().map(Window::from).collect(),
            },
            Err(e) => failed(format!("the rate limiter is unavailable: {e}")),
        },
        Request::Clear { key, rule } => {
            let key = key.trim();
            if key.is_empty() {
                return failed("--key is empty".into());
            }
            let rule = match rule.as_deref().map(parse_rule).transpose() {
                Ok(rule) => rule,
                Err(e) => return failed(e),
            };
            match clear(limiter, audit, key, rule, cli_event()).await {
                Ok(()) => Reply::Cleared,
                Err(e) => failed(format!("cannot clear: {e}")),
            }
        }
    }
}

/// What a server needs to answer on its socket.
pub trait Answerer: Send + Sync + 'static {
    fn limiter(&self) -> &Limiter;
    fn audit(&self) -> &AuditLog;
}

/// A listening control socket; the file is removed when this is dropped.
pub struct ControlSocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens on `data_dir/portcullis.sock`. `None` (with a warning in the log)
/// when it cannot: the server runs on without it, and the CLI then works on
/// the saved windows.
pub fn listen<A: Answerer>(data_dir: &Path, state: Arc<A>) -> Option<ControlSocket> {
    let path = socket_path(data_dir);
    match bind(&path) {
        Ok((listener, owner)) => {
            let task = tokio::spawn(accept(listener, owner, state));
            Some(ControlSocket { path, task })
        }
        Err(e) => {
            tracing::warn!(
                socket = %path.display(),
                error = %e,
                "no control socket: `portcullis rate-limit` cannot reach this server"
            );
            None
        }
    }
}

/// Binds the socket; returns it and the user that owns it (this process's).
fn bind(path: &Path) -> std::io::Result<(UnixListener, u32)> {
    if path.exists() {
        // A socket left by a server that did not stop cleanly answers no
        // one; a live one belongs to another server on the same directory.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another portcullis server is answering on it",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    crate::private_files::narrow(path)?;
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(path)?);
    Ok((listener, owner))
}

/// Answers connections; only from `owner` (the user the server runs as,
/// who owns the socket) or root.
async fn accept<A: Answerer>(listener: UnixListener, owner: u32, state: Arc<A>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = converse(stream, owner, state.as_ref()).await {
                        tracing::debug!(error = %e, "control socket conversation ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn converse<A: Answerer>(stream: UnixStream, owner: u32, state: &A) -> std::io::Result<()> {
    // The file's mode already keeps others out; the peer's user is checked
    // too, in case the data directory was left open to them.
    let peer = stream.peer_cred()?.uid();
    if peer != owner && peer != 0 {
        tracing::warn!(
            uid = peer,
            "control socket: refused a connection from another user"
        );
        return Ok(());
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    tokio::time::timeout(PATIENCE, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    let reply = match serde_json::from_str::<Request>(line.trim_end()) {
        Ok(request) => answer(state.limiter(), state.audit(), request).await,
        Err(e) => Reply::Error {
            message: format!("bad request: {e}"),
        },
    };
    let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// Asks the server on `data_dir`. `Ok(None)` when no server is listening
/// there (no socket, or one left by a server that is gone).
pub async fn ask(data_dir: &Path, request: &Request) -> anyhow::Result<Option<Reply>> {
    use anyhow::Context;
    let path = socket_path(data_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot connect to {}", path.display()));
        }
    };
    let talk = async {
        let (read, mut write) = stream.into_split();
        let mut out = serde_json::to_vec(request)?;
        out.push(b'\n');
        write.write_all(&out).await?;
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await?;
        anyhow::Ok(serde_json::from_str::<Reply>(&line)?)
    };
    let reply = tokio::time::timeout(PATIENCE, talk)
        .await
        .map_err(|_| anyhow::anyhow!("the server on {} did not answer", path.display()))?
        .with_context(|| format!("talking to the server on {}", path.display()))?;
    Ok(Some(reply))
}
