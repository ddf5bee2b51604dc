//! `TestApp`: the real server on port 0 with a temporary data directory and a
//! clock the test moves.

use std::sync::Arc;

use actix_web::dev::ServerHandle;
use portcullis::clock::ManualClock;
use portcullis::config::{Config, LimitStoreKind, StorageBackend};
use portcullis::http::AppState;
use portcullis::startup::{Application, Signals};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::backends::{limiter_in_redis, psql, storage_in_postgres, PostgresServer, RedisServer};

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

    /// [`TestApp::spawn_with`] that keeps its data in SQLite whatever the suite
    /// runs on: for drills of SQLite itself.
    pub async fn spawn_on_sqlite(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let mut config = test_config(&dir);
        tweak(&mut config);
        Self::start_on_sqlite(config, dir, ManualClock::starting_now()).await
    }

    /// [`TestApp::start`] that keeps its data in SQLite.
    pub async fn start_on_sqlite(config: Config, dir: Arc<TempDir>, clock: ManualClock) -> Self {
        Self::start_with(config, dir, clock, false).await
    }

    /// Starts a server on an existing data directory and clock (its data in
    /// PostgreSQL under `PORTCULLIS_TEST_STORAGE=postgres`).
    pub async fn start(config: Config, dir: Arc<TempDir>, clock: ManualClock) -> Self {
        Self::start_with(config, dir, clock, storage_in_postgres()).await
    }

    async fn start_with(
        config: Config,
        dir: Arc<TempDir>,
        clock: ManualClock,
        postgres: bool,
    ) -> Self {
        let mut config = config;
        if postgres && config.storage.backend == StorageBackend::Sqlite {
            let server = PostgresServer::shared().expect("PostgreSQL for PORTCULLIS_TEST_STORAGE");
            config.storage.backend = StorageBackend::Postgres;
            config.storage.postgres_url = server.database();
            config.storage.encryption_key = hex::encode(rand::random::<[u8; 32]>());
        }
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
            client: http_client(),
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
        self.restart_after(|_| {}).await
    }

    /// [`TestApp::restart`], running `between` while no server runs; it gets
    /// a maker of [`TestApp::cli`] commands.
    pub async fn restart_after(
        mut self,
        between: impl FnOnce(&dyn Fn() -> std::process::Command),
    ) -> Self {
        self.handle.stop(true).await;
        (&mut self.running)
            .await
            .expect("server task")
            .expect("clean shutdown");
        between(&|| self.cli());
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

    /// A connection to the SQLite file; only for drills of SQLite itself.
    /// An administrator (`root@example.com`) and its access token.
    /// (Made as `portcullis user add --admin` would: registration may be closed.)
    pub async fn signed_up_as_admin(&self) -> String {
        self.state
            .auth
            .register(
                "root@example.com",
                PASSWORD.to_owned().into(),
                None,
                true,
                Vec::new(),
            )
            .await
            .expect("the administrator");
        token(&self.logged_in("root@example.com").await, "access_token")
    }

    pub fn db(&self) -> rusqlite::Connection {
        assert_eq!(self.config.storage.backend, StorageBackend::Sqlite);
        rusqlite::Connection::open(self.dir.path().join("portcullis.db")).expect("open db")
    }

    /// Rows of `sql` on this server's database, SQLite or PostgreSQL, every
    /// column as text (NULL as "", a boolean as 1 or 0).
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        match self.config.storage.backend {
            StorageBackend::Sqlite => {
                let conn = self.db();
                let mut stmt = conn.prepare(sql).expect(sql);
                let columns = stmt.column_count();
                let rows = stmt
                    .query_map([], |r| {
                        (0..columns)
                            .map(|i| {
                                use rusqlite::types::ValueRef;
                                Ok(match r.get_ref(i)? {
                                    ValueRef::Null => String::new(),
                                    ValueRef::Integer(n) => n.to_string(),
                                    ValueRef::Real(x) => x.to_string(),
                                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                                    ValueRef::Blob(b) => hex::encode(b),
                                })
                            })
                            .collect::<rusqlite::Result<Vec<String>>>()
                    })
                    .expect(sql);
                rows.map(|r| r.expect(sql)).collect()
            }
            StorageBackend::Postgres => {
                let text = psql(&self.config.storage.postgres_url, sql);
                text.trim_end_matches('\n')
                    .split('\u{1e}')
                    .filter(|r| !r.is_empty())
                    .map(|r| {
                        r.split('\u{1f}')
                            .map(|c| match c {
                                "t" => "1".to_owned(),
                                "f" => "0".to_owned(),
                                c => c.to_owned(),
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// The first column of the first row of `sql`.
    pub fn scalar(&self, sql: &str) -> String {
        self.query(sql)
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or_else(|| panic!("no row from {sql}"))
    }

    /// A `count(*)`.
    pub fn count(&self, sql: &str) -> i64 {
        self.scalar(sql).parse().expect("a count")
    }

    /// Runs a statement on this server's database.
    pub fn execute(&self, sql: &str) {
        match self.config.storage.backend {
            StorageBackend::Sqlite => {
                self.db().execute_batch(sql).expect(sql);
            }
            StorageBackend::Postgres => {
                self.query(sql);
            }
        }
    }

    /// Every byte the database keeps on disk for this server (the SQLite file
    /// and its WAL), or a full dump of its PostgreSQL database.
    pub fn stored_bytes(&self) -> Vec<u8> {
        match self.config.storage.backend {
            StorageBackend::Sqlite => ["portcullis.db", "portcullis.db-wal"]
                .iter()
                .flat_map(|f| std::fs::read(self.dir.path().join(f)).unwrap_or_default())
                .collect(),
            StorageBackend::Postgres => {
                let out = std::process::Command::new("pg_dump")
                    .arg(&self.config.storage.postgres_url)
                    .output()
                    .expect("pg_dump");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                out.stdout
            }
        }
    }

    /// The binary, on this server's data (`--data-dir`, and the database URL
    /// and key when the data is in PostgreSQL).
    pub fn cli(&self) -> std::process::Command {
        let mut cmd = portcullis();
        cmd.arg("--data-dir").arg(self.dir.path());
        if self.config.storage.backend == StorageBackend::Postgres {
            cmd.env("PORTCULLIS_STORAGE__BACKEND", "postgres")
                .env(
                    "PORTCULLIS_STORAGE__POSTGRES_URL",
                    &self.config.storage.postgres_url,
                )
                .env(
                    "PORTCULLIS_STORAGE__ENCRYPTION_KEY",
                    &self.config.storage.encryption_key,
                );
        }
        if self.config.rate_limit.store == LimitStoreKind::Redis {
            cmd.env("PORTCULLIS_RATE_LIMIT__STORE", "redis").env(
                "PORTCULLIS_RATE_LIMIT__REDIS_URL",
                &self.config.rate_limit.redis_url,
            );
        }
        cmd
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

/// An HTTP client that drops an idle connection before the server's 5 s
/// keep-alive can close it under a request sent at the same moment (a test
/// that pauses, say for a CLI run on a busy machine, would see a spurious
/// transport error).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(2))
        .build()
        .expect("an HTTP client")
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

/// Runs `cmd` to its end with `input` on its standard input.
pub fn output_with_stdin(cmd: &mut std::process::Command, input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("the command ends")
}

/// The binary serving on port 0 with cheap argon2; later log lines arrive on `log`.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub address: String,
    /// The line that announced the address.
    pub start_line: String,
    pub log: std::sync::mpsc::Receiver<String>,
}

impl ServerProcess {
    pub fn start(dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_command(Self::command(dir, args, envs))
    }

    /// The command [`ServerProcess::start`] runs, to adjust before starting.
    pub fn command(
        dir: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> std::process::Command {
        let mut cmd = portcullis();
        cmd.args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args)
            .env("PORTCULLIS_PASSWORDS__ARGON2_MEMORY_KIB", "1024")
            .env("PORTCULLIS_PASSWORDS__ARGON2_ITERATIONS", "1");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `cmd` (a [`ServerProcess::command`]) and waits for its address.
    pub fn start_command(mut cmd: std::process::Command) -> Self {
        use std::io::BufRead;
        cmd.stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
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
        let (address, start_line) = loop {
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
                break (address, line);
            }
        };
        Self {
            child,
            address,
            start_line,
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
