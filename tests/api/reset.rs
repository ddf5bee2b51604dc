use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{expect_error, token, without_limits, TestApp, PASSWORD};

const NEW_PASSWORD: &str = "an entirely new passphrase";

/// The reset link of a message: the outbox holds plain text, the link whole
/// on a line of its own (SPEC section 8), as a person would copy it.
pub(crate) fn link_in(message: &str) -> String {
    assert!(!message.contains('\r'), "Unix line ends in {message:?}");
    assert!(!message.contains("quoted-printable"), "{message}");
    message
        .lines()
        .find(|l| l.starts_with("http") && l.contains("token="))
        .unwrap_or_else(|| panic!("a reset link on a line of its own in {message}"))
        .to_owned()
}

/// The token of the reset link in a message.
pub(crate) fn token_in(message: &str) -> String {
    let link = link_in(message);
    let token = &link[link.find("token=").expect("token=") + "token=".len()..];
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{link}"
    );
    token.to_owned()
}

/// The messages in the outbox, oldest first.
pub(crate) fn outbox(app: &TestApp) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(app.dir.path().join("outbox"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The outbox once it holds `count` messages: mail goes out after the
/// answer, so a test waits for it (at most ten seconds).
pub(crate) async fn mails(app: &TestApp, count: usize) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let files = outbox(app);
        if files.len() >= count {
            return files;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} mails",
            files.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn request(app: &TestApp, email: &str) -> reqwest::Response {
    app.post("/auth/password-reset/request", &json!({ "email": email }))
        .await
}

async fn confirm(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    app.post(
        "/auth/password-reset/confirm",
        &json!({ "token": token, "new_password": password }),
    )
    .await
}

#[tokio::test]
async fn reset_by_outbox_link_revokes_every_session() {
    let app = TestApp::spawn_with(without_limits).await;
    let pair = app.signed_up("rita@example.com").await;

    let res = request(&app, "Rita@Example.com").await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let known: Value = res.json().await.unwrap();
    let res = request(&app, "nobody@example.com").await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let unknown: Value = res.json().await.unwrap();
    assert_eq!(known, unknown, "the answer does not reveal the account");

    let files = mails(&app, 1).await;
    assert_eq!(files.len(), 1, "mail only for the real account");
    let message = std::fs::read_to_string(&files[0]).unwrap();
    assert!(message.contains("To: rita@example.com"));
    // public_url was left empty: it follows the address the server bound.
    let link = link_in(&message);
    assert!(
        link.starts_with(&format!("{}/ui/reset-password?token=", app.address)),
        "{link}"
    );
    let reset = token_in(&message);
    assert_eq!(reset.len(), 43);

    // A weak password is refused and does not use up the token.
    let res = confirm(&app, &reset, "password1234").await;
    let body = expect_error(res, StatusCode::BAD_REQUEST, "validation_error").await;
    assert!(body["fields"]["new_password"].is_string());

    let res = confirm(&app, &reset, NEW_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.json::<Value>().await.unwrap()["message"].is_string());
    expect_error(
        app.get_auth("/auth/me", &token(&pair, "access_token"))
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let res = app
        .post(
            "/auth/refresh",
            &json!({ "refresh_token": token(&pair, "refresh_token") }),
        )
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    assert_eq!(
        app.login("rita@example.com", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("rita@example.com", NEW_PASSWORD).await.status(),
        StatusCode::OK
    );

    // Single use.
    let res = confirm(&app, &reset, "yet another fine passphrase").await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_or_expired_token").await;

    // The token is in the mail only: not in the database, not in the audit log.
    let audit: Vec<(String, String)> = app
        .query("SELECT action, extra_data FROM audit_log ORDER BY id")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    let requested: Vec<&(String, String)> = audit
        .iter()
        .filter(|(a, _)| a == "password_reset_requested")
        .collect();
    assert_eq!(requested.len(), 2);
    assert!(requested
        .iter()
        .any(|(_, e)| e.contains("\"account_exists\":true")));
    assert!(requested
        .iter()
        .any(|(_, e)| e.contains("\"account_exists\":false")));
    assert!(audit.iter().any(|(a, _)| a == "password_reset_success"));
    assert!(audit
        .iter()
        .any(|(a, e)| a == "password_reset_failed" && e.contains("invalid_or_expired_token")));
    let bytes = app.stored_bytes();
    assert!(
        !bytes.windows(reset.len()).any(|w| w == reset.as_bytes()),
        "the database holds the reset token"
    );
}

#[tokio::test]
async fn tokens_expire_and_newer_requests_void_older_ones() {
    let app = TestApp::spawn_with(without_limits).await;
    app.register("sven@example.com", PASSWORD).await;
    request(&app, "sven@example.com").await;
    mails(&app, 1).await;
    request(&app, "sven@example.com").await;
    let files = mails(&app, 2).await;
    let first = token_in(&std::fs::read_to_string(&files[0]).unwrap());
    let second = token_in(&std::fs::read_to_string(&files[1]).unwrap());
    expect_error(
        confirm(&app, &first, NEW_PASSWORD).await,
        StatusCode::BAD_REQUEST,
        "invalid_or_expired_token",
    )
    .await;

    app.clock.advance(Duration::from_secs(3600));
    expect_error(
        confirm(&app, &second, NEW_PASSWORD).await,
        StatusCode::BAD_REQUEST,
        "invalid_or_expired_token",
    )
    .await;

    for junk in ["", "short", &"A".repeat(43), &"x".repeat(5000)] {
        expect_error(
            confirm(&app, junk, NEW_PASSWORD).await,
            StatusCode::BAD_REQUEST,
            "invalid_or_expired_token",
        )
        .await;
    }
    let res = request(&app, "not an email").await;
    expect_error(res, StatusCode::BAD_REQUEST, "validation_error").await;
}

#[tokio::test]
async fn reset_routes_are_rate_limited() {
    let app = TestApp::spawn().await;
    app.register("tom@example.com", PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(
            request(&app, "tom@example.com").await.status(),
            StatusCode::ACCEPTED
        );
    }
    let res = request(&app, "tom@example.com").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["ratelimit-policy"], "3;w=3600");
    let body: Value = res.json().await.unwrap();
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("Too many requests."));
    // Two more addresses use up the per-IP budget of five.
    request(&app, "a@example.com").await;
    request(&app, "b@example.com").await;
    assert_eq!(
        request(&app, "c@example.com").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    for _ in 0..5 {
        confirm(&app, &"A".repeat(43), NEW_PASSWORD).await;
    }
    assert_eq!(
        confirm(&app, &"A".repeat(43), NEW_PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

struct SmtpSink {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real SMTP server (Python's aiosmtpd) storing messages in a maildir.
fn smtp_sink() -> SmtpSink {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let maildir = tempfile::tempdir().unwrap();
    let child = crate::tools::python_command()
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(maildir.path().join("mail"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the tests' python3");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "aiosmtpd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    SmtpSink {
        child,
        port,
        maildir,
    }
}

fn wait_for_message(dir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(entry) = std::fs::read_dir(dir.join("mail/new"))
            .ok()
            .and_then(|mut d| d.next())
        {
            return std::fs::read_to_string(entry.unwrap().path()).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no message reached the SMTP server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn reset_mail_goes_through_a_real_smtp_server() {
    let sink = smtp_sink();
    let url = format!("smtp://127.0.0.1:{}?tls=none", sink.port);
    let app = TestApp::spawn_with(|c| {
        without_limits(c);
        c.mail.transport = portcullis::config::MailTransport::Smtp;
        c.mail.smtp_url = url;
    })
    .await;
    app.register("uma@example.com", PASSWORD).await;
    assert_eq!(
        request(&app, "uma@example.com").await.status(),
        StatusCode::ACCEPTED
    );
    let dir = sink.maildir.path().to_path_buf();
    let message = tokio::task::spawn_blocking(move || wait_for_message(&dir))
        .await
        .unwrap();
    assert!(message.contains("uma@example.com"));
    let reset = token_in(&message);
    assert_eq!(
        confirm(&app, &reset, NEW_PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login("uma@example.com", NEW_PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_failed_send_is_audited_and_the_answer_is_unchanged() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = TestApp::spawn_with(|c| {
        without_limits(c);
        c.mail.transport = portcullis::config::MailTransport::Smtp;
        c.mail.smtp_url = format!("smtp://127.0.0.1:{closed}?tls=none");
    })
    .await;
    app.register("vera@example.com", PASSWORD).await;
    let res = request(&app, "vera@example.com").await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    // The send happens after the answer; wait for its audit row.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = app.count(
            "SELECT count(*) FROM audit_log WHERE action = 'password_reset_requested' AND extra_data LIKE '%mail_error%'",
        );
        if found == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no audit row for the failed send"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
