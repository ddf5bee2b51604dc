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
