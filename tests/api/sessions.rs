use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{expect_error, token, TestApp};

#[tokio::test]
async fn logout_takes_effect_at_once() {
    let app = TestApp::spawn().await;
    let pair = app.signed_up("quinn@example.com").await;
    let access = token(&pair, "access_token");
    let res = app.post_auth("/auth/logout", &access, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let body = expect_error(
        app.get_auth("/auth/me", &access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("revoked"));
    let res = app
        .post(
            "/auth/refresh",
            &json!({ "refresh_token": token(&pair, "refresh_token") }),
        )
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    expect_error(
        app.post_auth("/auth/logout", &access, None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn logout_all_ends_every_session() {
    let app = TestApp::spawn().await;
    let a = app.signed_up("ray@example.com").await;
    let b = app.logged_in("ray@example.com").await;
    let other = app.signed_up("sam@example.com").await;
    let res = app
        .post_auth("/auth/logout-all", &token(&a, "access_token"), None)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for pair in [&a, &b] {
        expect_error(
            app.get_auth("/auth/me", &token(pair, "access_token")).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        )
        .await;
    }
    assert_eq!(
        app.get_auth("/auth/me", &token(&other, "access_token"))
            .await
            .status(),
        StatusCode::OK
    );
    expect_error(
        app.client
            .post(app.url("/auth/logout-all"))
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn revocations_survive_a_restart() {
    let app = TestApp::spawn().await;
    let pair = app.signed_up("tia@example.com").await;
    let access = token(&pair, "access_token");
    app.post_auth("/auth/logout", &access, None).await;
    let app = app.restart().await;
    expect_error(
        app.get_auth("/auth/me", &access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn sessions_can_be_listed_and_revoked_one_by_one() {
    let app = TestApp::spawn().await;
    let a = app.signed_up("uma@example.com").await;
    let res = app
        .client
        .post(app.url("/auth/login"))
        .header("user-agent", "phone/1.0")
        .json(&json!({ "email": "uma@example.com", "password": crate::helpers::PASSWORD }))
        .send()
        .await
        .unwrap();
    let b: Value = res.json().await.unwrap();
    let access_a = token(&a, "access_token");

    let list: Value = app
        .get_auth("/auth/sessions", &access_a)
        .await
        .json()
        .await
        .unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], a["session_id"]);
    let phone = sessions
        .iter()
        .find(|s| s["id"] == b["session_id"])
        .unwrap();
    assert_eq!(phone["user_agent"], "phone/1.0");
    assert_eq!(phone["ip_address"], "127.0.0.1");
    for key in ["created_at", "last_used_at", "expires_at"] {
        assert!(phone[key].as_str().unwrap().ends_with('Z'));
    }

    // Someone else's session and nonsense ids are both "not found".
    let stranger = app.signed_up("vic@example.com").await;
    let path = format!(
        "/auth/sessions/{}",
        stranger["session_id"].as_str().unwrap()
    );
    expect_error(
        app.delete_auth(&path, &access_a).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.delete_auth("/auth/sessions/not-a-uuid", &access_a)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        app.get_auth("/auth/me", &token(&stranger, "access_token"))
            .await
            .status(),
        StatusCode::OK
    );

    let path = format!("/auth/sessions/{}", b["session_id"].as_str().unwrap());
    assert_eq!(
        app.delete_auth(&path, &access_a).await.status(),
        StatusCode::NO_CONTENT
    );
    expect_error(
        app.get_auth("/auth/me", &token(&b, "access_token")).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    expect_error(
        app.delete_auth(&path, &access_a).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let list: Value = app
        .get_auth("/auth/sessions", &access_a)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn disabling_from_the_cli_revokes_running_sessions() {
    let app = TestApp::spawn().await;
    let pair = app.signed_up("wes@example.com").await;
    let access = token(&pair, "access_token");
    let out = app
        .cli()
        .args(["user", "disable", "WES@example.com"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Where instances share state the CLI announces the revocation on the
    // bus; everywhere the server also polls storage for revocations made by
    // other processes every second: run that poll now instead of waiting.
    // (/auth/sessions reads no account row, so only the revocation view refuses it.)
    app.state.auth.sync_revocations(0).await.unwrap();
    expect_error(
        app.get_auth("/auth/sessions", &access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    assert_eq!(
        app.login("wes@example.com", crate::helpers::PASSWORD)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn session_ip(app: &TestApp, forwarded: &str) -> String {
    let res = app
        .client
        .post(app.url("/auth/login"))
        .header("x-forwarded-for", forwarded)
        .header("x-real-ip", "192.0.2.55")
        .json(&json!({ "email": "xena@example.com", "password": crate::helpers::PASSWORD }))
        .send()
        .await
        .unwrap();
    let pair: Value = res.json().await.unwrap();
    let list: Value = app
        .get_auth("/auth/sessions", &token(&pair, "access_token"))
        .await
        .json()
        .await
        .unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    let current = sessions.iter().find(|s| s["current"] == true).unwrap();
    current["ip_address"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let app = TestApp::spawn().await;
    app.register("xena@example.com", crate::helpers::PASSWORD)
        .await;
    assert_eq!(session_ip(&app, "203.0.113.7").await, "127.0.0.1");

    let app =
        TestApp::spawn_with(|c| c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()])
            .await;
    app.register("xena@example.com", crate::helpers::PASSWORD)
        .await;
    assert_eq!(
        session_ip(&app, "6.6.6.6, 203.0.113.7").await,
        "203.0.113.7"
    );
    assert_eq!(
        session_ip(&app, "203.0.113.7, 127.0.0.9").await,
        "203.0.113.7"
    );
    assert_eq!(session_ip(&app, "2001:db8::1").await, "2001:db8::1");
}

/// `accounts.max_sessions`: correct logins are never rate limited, so the
/// number of live sessions per user is bounded instead; a login beyond it
/// revokes the least recently used session, audited.
#[tokio::test]
async fn a_login_beyond_max_sessions_revokes_the_least_recently_used() {
    let app = TestApp::spawn_with(|c| c.accounts.max_sessions = 3).await;
    let mut pairs = vec![app.signed_up("many@example.com").await];
    for _ in 0..2 {
        app.clock.advance(std::time::Duration::from_secs(1));
        pairs.push(app.logged_in("many@example.com").await);
    }
    // Use the oldest session: the second becomes the least recently used.
    app.clock.advance(std::time::Duration::from_secs(1));
    let res = app
        .post(
            "/auth/refresh",
            &json!({ "refresh_token": token(&pairs[0], "refresh_token") }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.unwrap();

    app.clock.advance(std::time::Duration::from_secs(1));
    let fourth = app.logged_in("many@example.com").await;
    let evicted = token(&pairs[1], "session_id");
    let res = app
        .get_auth("/auth/me", &token(&pairs[1], "access_token"))
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let res = app
        .post(
            "/auth/refresh",
            &json!({ "refresh_token": token(&pairs[1], "refresh_token") }),
        )
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    for live in [&rotated, &pairs[2], &fourth] {
        let res = app.get_auth("/auth/me", &token(live, "access_token")).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let listed: Value = app
        .get_auth("/auth/sessions", &token(&fourth, "access_token"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 3);
    let rows = app.query(&format!(
        "SELECT extra_data FROM audit_log WHERE action = 'session_revoked' AND resource_id = '{evicted}'"
    ));
    assert_eq!(rows.len(), 1, "one row for the evicted session");
    let extra: Value = serde_json::from_str(&rows[0][0]).unwrap();
    assert_eq!(extra["reason"], "session_limit");
}
