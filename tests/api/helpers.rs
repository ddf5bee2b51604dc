//! `TestApp`: the real server on port 0 with a temporary data directory and a
//! clock the test moves.

use std::sync::Arc;

use actix_web::dev::ServerHandle;
use portcullis::clock::ManualClock;
use portcullis::config::Config;
use portcullis::http::AppState;
use portcullis::startup::{Application, Signals};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: ManualClock,
    pub dir: Arc<TempDir>,
    pub config: Config,
    pub state: actix_web::web::Data<AppState>,
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
        Self::start(self.config.clone(), self.dir.clone(), self.clock.clone()).await
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
