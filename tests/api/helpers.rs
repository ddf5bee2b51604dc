//! `TestApp`: the real server on port 0 with a temporary data directory and a
//! clock the test moves.

use std::sync::Arc;

use actix_web::dev::ServerHandle;
use portcullis::clock::ManualClock;
use portcullis::config::{Config, LimitStoreKind};
use portcullis::http::AppState;
use portcullis::startup::{Application, Signals};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::backends::{limiter_in_redis, RedisServer};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: ManualClock,
    pub dir: Arc<TempDir>,
    pub config: Config,
    pub state: actix_web::web::Data<AppState>,
    /// The Redis of this server's limiter, under `PORTCULLIS_TEST_LIMITER=redis`.
    redis: Option<Arc<RedisServer>>,
    handle: ServerHandle,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A configuration for tests: port 0, a fresh data directory, cheap argon2.
pub fn test_config(dir: &TempDir) -> Config {
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.server.workers = 2;
    config.storage.data_dir = dir.path().to_path_buf();
    config.passwords.argon2_memory_kib = 1024;
    config.passwords.argon2_iterations = 1;
    config
}

/// Switches off every rate-limit rule, for tests about something else.
pub fn without_limits(config: &mut Config) {
    for rule in config.rate_limit.rules.values_mut() {
        rule.enabled = false;
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let mut config = test_config(&dir);
        tweak(&mut config);
        Self::start(config, dir, ManualClock::starting_now()).await
    }

    /// Starts a server on an existing data directory and clock.
    pub async fn start(config: Config, dir: Arc<TempDir>, clock: ManualClock) -> Self {
        let mut config = config;
        let redis = if limiter_in_redis() && config.rate_limit.store == LimitStoreKind::Memory {
            let redis = RedisServer::start().expect("redis-server for PORTCULLIS_TEST_LIMITER");
            config.rate_limit.store = LimitStoreKind::Redis;
            config.rate_limit.redis_url = redis.url();
            Some(Arc::new(redis))
        } else {
            None
        };
        Self::start_beside(config, dir, clock, redis).await
    }

    async fn start_beside(
        config: Config,
        dir: Arc<TempDir>,
        clock: ManualClock,
        redis: Option<Arc<RedisServer>>,
    ) -> Self {
        let app = Application::build(config.clone(), Arc::new(clock.clone()), Signals::Ignore)
            .await
            .expect("server builds");
        let address = format!("http://{}", app.address());
        let handle = app.handle();
        let state = app.state();
        let running = tokio::spawn(app.run_until_stopped());
        Self {
            address,
            client: reqwest::Client::new(),
            clock,
            dir,
            config,
            state,
            redis,
            handle,
            running,
        }
    }

    /// Stops this server gracefully (including its shutdown work: audit flush,
    /// saving rate-limit windows) and starts a new one on the same data.
    pub async fn restart(self) -> Self {
        self.handle.stop(true).await;
        self.running
            .await
            .expect("server task")
            .expect("clean shutdown");
        Self::start_beside(
            self.config.clone(),
            self.dir.clone(),
            self.clock.clone(),
            self.redis.clone(),
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_auth(&self, path: &str, token: &str, body: Option<&Value>) -> Response {
        let mut req = self.client.post(self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.expect("request")
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete_auth(&self, path: &str, token: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn register(&self, email: &str, password: &str) -> Response {
        self.post(
            "/auth/register",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post(
            "/auth/login",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Registers `email` and logs in; returns the token pair.
    pub async fn signed_up(&self, email: &str) -> Value {
        let res = self.register(email, PASSWORD).await;
        assert_eq!(res.status(), StatusCode::CREATED, "register {email}");
        self.logged_in(email).await
    }

    /// Logs in with the test password; returns the token pair.
    pub async fn logged_in(&self, email: &str) -> Value {
        let res = self.login(email, PASSWORD).await;
        assert_eq!(res.status(), StatusCode::OK, "login {email}");
        res.json().await.expect("json")
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("portcullis.db")).expect("open db")
    }
}

/// Reads an error response and checks its status and code.
pub async fn expect_error(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status, "status");
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: Value = res.json().await.expect("json error body");
    assert_eq!(body["error"], code, "body {body}");
    assert!(body["message"].is_string(), "message in {body}");
    body
}

pub fn token(pair: &Value, field: &str) -> String {
    pair[field].as_str().expect("token field").to_owned()
}

/// The built binary, with no `PORTCULLIS_*` or `RUST_LOG` from the caller.
pub fn portcullis() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("PORTCULLIS_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The binary serving on port 0 with cheap argon2; later log lines arrive on `log`.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub address: String,
    pub log: std::sync::mpsc::Receiver<String>,
}

impl ServerProcess {
    pub fn start(dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut cmd = portcullis();
        cmd.args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args)
            .env("PORTCULLIS_PASSWORDS__ARGON2_MEMORY_KIB", "1024")
            .env("PORTCULLIS_PASSWORDS__ARGON2_ITERATIONS", "1")
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the binary");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = std::sync::mpsc::channel::<String>();
        // Drain the log for the whole life of the process, so it never blocks on a pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let address = loop {
            let line = log
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("the server logs its address");
            let from_json = serde_json::from_str::<Value>(&line)
                .ok()
                .filter(|v| v["message"] == "portcullis listening")
                .and_then(|v| v["address"].as_str().map(str::to_owned));
            let from_text = line
                .split("address=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned);
            if let Some(address) = from_json.or(from_text) {
                break address;
            }
        };
        Self {
            child,
            address,
            log,
        }
    }

    /// Sends a signal (`-TERM`, `-INT`, `-KILL`) and waits for the exit.
    pub fn signal(&mut self, signal: &str) -> std::process::ExitStatus {
        let sent = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        self.child.wait().expect("wait")
    }
}
