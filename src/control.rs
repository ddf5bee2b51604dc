//! The control socket: how `portcullis rate-limit list|clear` reaches a
//! running server's in-memory windows without an admin token.
//!
//! Each server listens on `data_dir/portcullis-<pid>.sock`, a Unix socket of
//! mode 0600 in the 0700 data directory, and answers only the user it runs
//! as (or root): whoever may connect may already read the database, so the
//! socket grants nothing new. The protocol is one JSON line each way.
//! Clearing here and through `DELETE /admin/rate-limits` is one function
//! ([`clear`]) with one audit event; only the actor differs.
//!
//! A server also holds a shared lock on `data_dir/portcullis.lock` from
//! before it loads its saved windows until after it saves them, so the CLI
//! works on saved windows only while no server holds them in memory.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::RwLock;
use tokio::task::JoinHandle;

use crate::audit::{Action, NewEvent, Origin};
use crate::audit_log::{AuditError, AuditLog};
use crate::ratelimit::store::LimitError;
use crate::ratelimit::{LimitView, Limiter, RuleName};

/// Sockets are `portcullis-<pid>.sock` inside the data directory.
const SOCKET_PREFIX: &str = "portcullis-";
const SOCKET_SUFFIX: &str = ".sock";
/// The lock servers hold while their windows live in memory.
const LOCK_FILE: &str = "portcullis.lock";
/// A request is one line of at most this many bytes; an answer, of this many.
const MAX_REQUEST: u64 = 4096;
const MAX_REPLY: u64 = 4 << 20;
/// How long a conversation may take, on either side.
const PATIENCE: Duration = Duration::from_secs(5);
/// A socket address holds at most 108 bytes; a longer path goes through a
/// handle on its directory.
const MAX_SOCKET_PATH: usize = 100;

/// What the CLI asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    Windows {
        windows: Vec<Window>,
    },
    /// How many windows had counted events and were cleared.
    Cleared {
        windows: usize,
    },
    Error {
        message: String,
    },
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
/// records `event` (a `rate_limit_cleared` event naming its actor) with the
/// key, the rule and how many windows had counted events. The admin API and
/// the CLI both clear through here. The row is written first: a clear is
/// never left unrecorded (should the clear then fail, the row records an
/// attempt that the caller is told failed).
pub async fn clear(
    limiter: &Limiter,
    audit: &AuditLog,
    key: &str,
    rule: Option<RuleName>,
    event: NewEvent,
) -> Result<usize, ClearError> {
    let windows = limiter
        .inspect(Some(key))
        .await?
        .iter()
        .filter(|w| rule.is_none_or(|only| only == w.rule))
        .count();
    let event = event
        .resource("rate_limit", key)
        .extra("key", key)
        .extra("rule", rule.map_or("*", RuleName::as_str))
        .extra("windows", windows);
    audit.record(event).await?;
    limiter.clear(key, rule).await?;
    Ok(windows)
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
                Ok(windows) => Reply::Cleared { windows },
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

/// The lock on `data_dir/portcullis.lock`: shared by every server on the
/// directory while its windows live in memory; exclusive for the CLI while
/// it works on the saved ones. Released when dropped (or when the process
/// ends, however it ends).
pub struct DirLock(#[allow(dead_code)] File);

impl DirLock {
    fn open(data_dir: &Path) -> std::io::Result<File> {
        let path = data_dir.join(LOCK_FILE);
        crate::private_files::ensure(&path)?;
        File::open(path)
    }

    /// A server's lock; waits while the CLI holds it (milliseconds).
    pub async fn shared(data_dir: &Path) -> std::io::Result<Self> {
        let file = Self::open(data_dir)?;
        tokio::task::spawn_blocking(move || file.lock_shared().map(|()| Self(file)))
            .await
            .map_err(std::io::Error::other)?
    }

    /// The CLI's lock, or `None` when a server holds the directory.
    pub fn exclusive(data_dir: &Path) -> std::io::Result<Option<Self>> {
        let file = Self::open(data_dir)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self(file))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// `name` in `dir` as a path short enough for a socket address: the path
/// itself, or the same file reached through `handle`, an open handle on
/// `dir` (kept open by the caller while the path is used).
fn addressable(dir: &Path, name: &str, handle: &mut Option<File>) -> std::io::Result<PathBuf> {
    let direct = dir.join(name);
    if direct.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok(direct);
    }
    let file = File::open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}/{name}", file.as_raw_fd()));
    *handle = Some(file);
    Ok(short)
}

/// A listening control socket. [`ControlSocket::stop`] ends it: no new
/// conversation, the ones under way finished, the file removed.
pub struct ControlSocket {
    path: PathBuf,
    /// The socket file this server made (device, inode): only it is removed.
    made: (u64, u64),
    task: JoinHandle<()>,
    /// Held shared by every conversation; taken whole to wait for them.
    busy: Arc<RwLock<()>>,
}

impl ControlSocket {
    /// Stops accepting, waits for the conversations under way (each bounded
    /// by its timeout), and removes the socket file.
    pub async fn stop(self) {
        self.task.abort();
        let _all = self.busy.write().await;
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.made);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Listens on `data_dir/portcullis-<pid>.sock`. `None` (with a warning in
/// the log) when it cannot: the server runs on without it.
pub fn listen<A: Answerer>(data_dir: &Path, state: Arc<A>) -> Option<ControlSocket> {
    let name = format!("{SOCKET_PREFIX}{}{SOCKET_SUFFIX}", std::process::id());
    let path = data_dir.join(&name);
    match bind(data_dir, &name) {
        Ok((listener, owner, made)) => {
            let busy = Arc::new(RwLock::new(()));
            let task = tokio::spawn(accept(listener, owner, state, busy.clone()));
            Some(ControlSocket {
                path,
                made,
                task,
                busy,
            })
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

/// Binds the socket; returns it, the user that owns it (this process's) and
/// the file's identity.
fn bind(data_dir: &Path, name: &str) -> std::io::Result<(UnixListener, u32, (u64, u64))> {
    let path = data_dir.join(name);
    // The name holds this process's id: a file there was left by an earlier
    // process of the same id that did not stop cleanly.
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut handle = None;
    let listener = UnixListener::bind(addressable(data_dir, name, &mut handle)?)?;
    crate::private_files::narrow(&path)?;
    let meta = std::fs::symlink_metadata(&path)?;
    Ok((listener, meta.uid(), (meta.dev(), meta.ino())))
}

/// Answers connections; only from `owner` (the user the server runs as,
/// who owns the socket) or root.
async fn accept<A: Answerer>(
    listener: UnixListener,
    owner: u32,
    state: Arc<A>,
    busy: Arc<RwLock<()>>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let state = state.clone();
                let turn = busy.clone().read_owned().await;
                tokio::spawn(async move {
                    let talk = converse(stream, owner, state.as_ref());
                    match tokio::time::timeout(PATIENCE, talk).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "control socket conversation failed")
                        }
                        Err(_) => tracing::debug!("control socket conversation timed out"),
                    }
                    drop(turn);
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
    BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
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

/// Asks every server listening on `data_dir`: one reply per server that
/// answered (none when no server is running). A socket left by a server that
/// is gone is removed. Only a server of the directory's owner (or root) is
/// believed.
pub async fn ask_all(data_dir: &Path, request: &Request) -> anyhow::Result<Vec<Reply>> {
    use anyhow::Context;
    let owner = match std::fs::metadata(data_dir) {
        Ok(meta) => meta.uid(),
        // No directory, no server on it (the data may be in PostgreSQL).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", data_dir.display())),
    };
    let mut names: Vec<String> = std::fs::read_dir(data_dir)
        .with_context(|| format!("cannot read {}", data_dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(SOCKET_PREFIX) && n.ends_with(SOCKET_SUFFIX))
        .collect();
    names.sort();
    let mut replies = Vec::new();
    for name in names {
        let path = data_dir.join(&name);
        let mut handle = None;
        let address = addressable(data_dir, &name, &mut handle)?;
        let stream = match UnixStream::connect(&address).await {
            Ok(stream) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                // Nobody listens: the server that made it is gone.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot connect to {}", path.display()));
            }
        };
        let peer = stream.peer_cred()?.uid();
        if peer != owner && peer != 0 {
            anyhow::bail!(
                "{} is served by user {peer}, not by the owner of {}: not asking it",
                path.display(),
                data_dir.display()
            );
        }
        let talk = async {
            let (read, mut write) = stream.into_split();
            let mut out = serde_json::to_vec(request)?;
            out.push(b'\n');
            write.write_all(&out).await?;
            let mut line = String::new();
            BufReader::new(read.take(MAX_REPLY))
                .read_line(&mut line)
                .await?;
            anyhow::Ok(serde_json::from_str::<Reply>(&line)?)
        };
        let reply = tokio::time::timeout(PATIENCE, talk)
            .await
            .map_err(|_| anyhow::anyhow!("the server on {} did not answer", path.display()))?
            .with_context(|| format!("talking to the server on {}", path.display()))?;
        replies.push(reply);
    }
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory whose path is too long for a socket address still
    /// gets a socket, reached through a handle on the directory.
    #[tokio::test]
    async fn a_long_data_dir_path_is_reached_through_a_handle() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("d".repeat(120));
        std::fs::create_dir(&dir).unwrap();
        let name = "portcullis-1.sock";
        assert!(dir.join(name).as_os_str().len() > 108);
        let (listener, _, _) = bind(&dir, name).unwrap();
        assert!(dir.join(name).exists());
        let mut handle = None;
        let address = addressable(&dir, name, &mut handle).unwrap();
        let (_client, _server) = tokio::join!(UnixStream::connect(&address), listener.accept());
    }

    #[tokio::test]
    async fn the_cli_lock_is_refused_while_a_server_holds_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let server = DirLock::shared(dir.path()).await.unwrap();
        let other = DirLock::shared(dir.path()).await.unwrap();
        assert!(DirLock::exclusive(dir.path()).unwrap().is_none());
        drop(server);
        assert!(DirLock::exclusive(dir.path()).unwrap().is_none());
        drop(other);
        assert!(DirLock::exclusive(dir.path()).unwrap().is_some());
    }
}
