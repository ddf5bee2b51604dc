//! The way out of a lockout without an admin token: `portcullis rate-limit
//! list|clear` on a running server and on a stopped one, and `user
//! promote|demote` (SPEC section 2).

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{expect_error, TestApp, PASSWORD};
use crate::tools::output;

/// Runs a CLI command; returns stdout, failing the test on a non-zero exit.
async fn run(app: &TestApp, args: &[&str]) -> String {
    let mut cmd = app.cli();
    cmd.args(args);
    let out = output(cmd).await;
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Logins with a wrong password until the address is refused.
async fn lock_out(app: &TestApp, email: &str) {
    for _ in 0..5 {
        let res = app.login(email, "not the password at all").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = app.login(email, PASSWORD).await;
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
}

/// The events of one action, newest first, as `audit list` prints them.
async fn audit_events(app: &TestApp, action: &str) -> Vec<Value> {
    let listing = run(
        app,
        &["audit", "list", "--action", action, "--format", "json"],
    )
    .await;
    serde_json::from_str::<Vec<Value>>(&listing).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_clear_lifts_a_lockout_on_the_running_server_at_once() {
    let app = TestApp::spawn().await;
    app.signed_up("ada@example.com").await;
    lock_out(&app, "ada@example.com").await;

    let listing = run(&app, &["rate-limit", "list"]).await;
    let line = listing
        .lines()
        .find(|l| l.starts_with("login_ip "))
        .unwrap_or_else(|| panic!("login_ip in {listing}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[1..4], ["127.0.0.1", "5", "5"], "{line}");
    assert!(cells[4].ends_with('s') && cells[4] != "0s", "{line}");
    let only = run(&app, &["rate-limit", "list", "--key", "127.0.0.1"]).await;
    assert!(only.contains("login_ip"), "{only}");
    // ada logged in from here before: a known device, so her account's
    // budget was not spent by these failures.
    let other = run(&app, &["rate-limit", "list", "--key", "ADA@example.com"]).await;
    assert!(other.starts_with("no key has counted events"), "{other}");

    // An unknown rule changes nothing.
    let mut cmd = app.cli();
    cmd.args([
        "rate-limit",
        "clear",
        "--key",
        "127.0.0.1",
        "--rule",
        "login",
    ]);
    let out = output(cmd).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: --rule: `login` is not a rate-limit rule (rules: login_ip"),
        "{err}"
    );
    expect_error(
        app.login("ada@example.com", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
    )
    .await;

    let said = run(&app, &["rate-limit", "clear", "--key", "127.0.0.1"]).await;
    assert!(
        // login_ip's failures and register_ip_hourly's registration.
        said.starts_with("cleared 2 windows of 127.0.0.1 under every rule (on the running server)"),
        "{said}"
    );
    // No waiting: the command returns once the server has cleared.
    let res = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let listing = run(&app, &["rate-limit", "list", "--key", "127.0.0.1"]).await;
    assert!(!listing.contains("login_ip"), "{listing}");

    let events = audit_events(&app, "rate_limit_cleared").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["extra_data"]["actor"], "cli");
    assert_eq!(events[0]["extra_data"]["key"], "127.0.0.1");
    assert_eq!(events[0]["extra_data"]["rule"], "*");
    assert_eq!(events[0]["extra_data"]["windows"], 2);

    // A key with nothing counted (a typo) says so; the attempt is recorded.
    let said = run(&app, &["rate-limit", "clear", "--key", "10.0.0.1"]).await;
    assert!(
        said.starts_with("nothing to clear: 10.0.0.1 has no counted events"),
        "{said}"
    );
    let events = audit_events(&app, "rate_limit_cleared").await;
    assert_eq!(events[0]["extra_data"]["windows"], 0);
}

/// With no control socket answering, the CLI works on saved windows only
/// when no server holds them: one starting or stopping does. (Windows in
/// Redis are nobody's to hold: the CLI works on them directly.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_never_works_on_saved_windows_that_a_server_holds() {
    let app = TestApp::spawn().await;
    app.signed_up("ada@example.com").await;
    let dir = app.dir.path().to_path_buf();
    let in_redis = app.config.rate_limit.store == portcullis::config::LimitStoreKind::Redis;
    let app = app
        .restart_after(|cli| {
            let held = tokio::runtime::Handle::current();
            let lock = tokio::task::block_in_place(|| {
                held.block_on(portcullis::control::DirLock::shared(&dir))
            })
            .unwrap();
            let out = cli().args(["rate-limit", "list"]).output().unwrap();
            let said = String::from_utf8_lossy(&out.stdout);
            let err = String::from_utf8_lossy(&out.stderr);
            if in_redis {
                assert!(out.status.success(), "{err}");
                assert!(err.contains("in the shared Redis"), "{said}{err}");
            } else {
                assert!(!out.status.success(), "{said}");
                assert!(err.contains("a server is starting or stopping"), "{err}");
            }
            drop(lock);
            let out = cli().args(["rate-limit", "list"]).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
        .await;
    assert_eq!(
        app.login("ada@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_clear_on_a_stopped_server_survives_its_restart() {
    let app = TestApp::spawn().await;
    app.signed_up("ada@example.com").await;
    lock_out(&app, "ada@example.com").await;

    let app = app
        .restart_after(|cli| {
            let out = cli().args(["rate-limit", "list"]).output().unwrap();
            let listing = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                listing.contains("login_ip") && listing.contains("127.0.0.1"),
                "{listing}"
            );
            let out = cli()
                .args([
                    "rate-limit",
                    "clear",
                    "--key",
                    "127.0.0.1",
                    "--rule",
                    "login_ip",
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(!said.contains("running server"), "{said}");
        })
        .await;

    let res = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let events = audit_events(&app, "rate_limit_cleared").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["extra_data"]["rule"], "login_ip");
    assert_eq!(events[0]["extra_data"]["actor"], "cli");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_demote_take_effect_on_the_next_request() {
    let app = TestApp::spawn().await;
    let pair = app.signed_up("grace@example.com").await;
    let token = pair["access_token"].as_str().unwrap().to_owned();
    let res = app.get_auth("/admin/users", &token).await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;

    let said = run(&app, &["user", "promote", "Grace@Example.com"]).await;
    assert_eq!(said.trim(), "grace@example.com is now an administrator");
    assert_eq!(
        app.get_auth("/admin/users", &token).await.status(),
        StatusCode::OK
    );
    let again = run(&app, &["user", "promote", "grace@example.com"]).await;
    assert!(again.contains("already"), "{again}");

    // Demoting ends the account's sessions too, so that no token still
    // claims the role; whether the revocation or the account is read first,
    // the old token is refused.
    run(&app, &["user", "demote", "grace@example.com"]).await;
    let res = app.get_auth("/admin/users", &token).await;
    assert!(
        matches!(
            res.status(),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED
        ),
        "{}",
        res.status()
    );
    let revoked = app.count(
        "SELECT count(*) FROM sessions WHERE revoke_reason = 'admin_removed' AND revoked_at IS NOT NULL",
    );
    assert_eq!(revoked, 1);

    let events = audit_events(&app, "groups_changed").await;
    assert_eq!(
        events.len(),
        2,
        "one row per change, none for the no-op: {events:?}"
    );
    assert_eq!(
        events[0]["extra_data"]["removed"],
        serde_json::json!(["admins"])
    );
    assert_eq!(
        events[1]["extra_data"]["added"],
        serde_json::json!(["admins"])
    );
    assert_eq!(events[1]["extra_data"]["actor"], "cli");

    let mut cmd = app.cli();
    cmd.args(["user", "promote", "nobody@example.com"]);
    let out = output(cmd).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: no account with email nobody@example.com"),
        "{err}"
    );
}

/// With the data in PostgreSQL, a host may have no data directory at all:
/// the rate-limit commands still work (on the saved windows, or Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_rate_limit_commands_need_no_data_directory() {
    let app = TestApp::spawn().await;
    if app.config.storage.backend != portcullis::config::StorageBackend::Postgres {
        return;
    }
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = crate::helpers::portcullis();
    cmd.args(["rate-limit", "list", "--data-dir"])
        .arg(elsewhere.path().join("none"))
        .envs(
            app.cli()
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        );
    let out = output(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
