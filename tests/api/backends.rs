//! Real servers the shared backends are tested against, each started on a free
//! port in its own temporary directory and stopped when dropped.
//!
//! `PORTCULLIS_TEST_LIMITER=redis` runs every test's server with its rate
//! limiter in a Redis of its own (a build with `--features redis`); CI sets
//! `PORTCULLIS_REQUIRE_BACKENDS=1` so that a missing `redis-server` fails
//! instead of skipping.

// Without the `redis` feature only the suite-wide switch is compiled in.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Whether the backend tests must run (CI) rather than skip when a server is missing.
pub fn required() -> bool {
    std::env::var_os("PORTCULLIS_REQUIRE_BACKENDS").is_some_and(|v| v == "1")
}

/// Whether every test server should keep its limiter in Redis.
pub fn limiter_in_redis() -> bool {
    std::env::var("PORTCULLIS_TEST_LIMITER").is_ok_and(|v| v == "redis")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A `redis-server` of one test.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server; `None` (the test skips) when `redis-server` is not
    /// installed and the backends are not required.
    pub fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            assert!(!required(), "redis-server is required but not installed");
            eprintln!("redis-server is not installed: skipped");
            return None;
        }
        // A port picked free can be taken before the server binds it: try a few.
        for _ in 0..5 {
            let mut server = Self {
                child: None,
                port: free_port(),
                dir: tempfile::tempdir().expect("tempdir"),
            };
            if server.run() {
                return Some(server);
            }
        }
        panic!("redis-server did not start");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs the server on its port; false when it did not come up.
    fn run(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Kills the server (its data goes with it: nothing is saved).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.run(), "redis-server did not come back");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `sql` with `psql` on the database at `url` and returns what it printed:
/// rows separated by U+001E, columns by U+001F, no headers. Fails the test
/// when the statement fails.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(["-F", "\u{1f}", "-R", "\u{1e}", "-c", sql])
        .arg(url)
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether every test server should keep its data in PostgreSQL.
pub fn storage_in_postgres() -> bool {
    std::env::var("PORTCULLIS_TEST_STORAGE").is_ok_and(|v| v == "postgres")
}

/// The PostgreSQL server binaries (`pg_config --bindir`).
fn pg_bindir() -> Option<std::path::PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = std::path::PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    dir.join("postgres").exists().then_some(dir)
}

/// One PostgreSQL server per test process, in a temporary directory, on a
/// free port; each test gets a database of its own in it. It is stopped when
/// the test process exits (a parent-death signal on the server, and an
/// `atexit` hook that also removes its directory).
pub struct PostgresServer {
    port: u16,
}

static POSTGRES: std::sync::OnceLock<Option<PostgresServer>> = std::sync::OnceLock::new();
static POSTGRES_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
static POSTGRES_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
static DATABASES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn stop_postgres() {
    let pid = POSTGRES_PID.load(std::sync::atomic::Ordering::SeqCst);
    if pid > 0 {
        // SIGQUIT: immediate shutdown; nothing in it is worth keeping.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    if let Some(dir) = POSTGRES_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Runs `cmd` as the `postgres` user when this process is root (PostgreSQL
/// refuses to run as root), with a death signal so it cannot outlive us.
fn as_server_user(cmd: &mut Command, owner: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            Ok(())
        });
    }
}

fn server_user() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

impl PostgresServer {
    /// The server of this test process, started on first use; `None` (the
    /// test skips) when PostgreSQL is not installed and not required.
    pub fn shared() -> Option<&'static PostgresServer> {
        POSTGRES
            .get_or_init(|| {
                // The server is forked from a thread that lives as long as the
                // process: its death signal fires when the forking thread ends.
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let _ = tx.send(Self::start());
                    loop {
                        std::thread::park();
                    }
                });
                rx.recv().expect("postgres did not start (see above)")
            })
            .as_ref()
    }

    fn start() -> Option<Self> {
        let Some(bin) = pg_bindir() else {
            assert!(!required(), "PostgreSQL is required but not installed");
            eprintln!("PostgreSQL is not installed: skipped");
            return None;
        };
        let owner = server_user();
        let dir = tempfile::Builder::new()
            .prefix("portcullis-pg-")
            .tempdir()
            .expect("tempdir")
            .keep();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown");
        }
        let _ = POSTGRES_DIR.set(dir.clone());
        unsafe { libc::atexit(stop_postgres) };
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "-U",
                "portcullis",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_server_user(&mut initdb, owner);
        let out = initdb.output().expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for _ in 0..5 {
            let port = free_port();
            let mut postgres = Command::new(bin.join("postgres"));
            postgres
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&dir)
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=400",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            as_server_user(&mut postgres, owner);
            let mut child = postgres.spawn().expect("spawn postgres");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let ready = Command::new(bin.join("pg_isready"))
                    .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
                if ready {
                    POSTGRES_PID.store(child.id() as i32, std::sync::atomic::Ordering::SeqCst);
                    // The child handle is dropped without waiting: the atexit hook reaps it.
                    std::mem::forget(child);
                    return Some(Self { port });
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("postgres did not start");
    }

    /// A new, empty database; its URL.
    pub fn database(&self) -> String {
        let n = DATABASES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        psql(&self.url("postgres"), &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://portcullis@127.0.0.1:{}/{database}", self.port)
    }
}
