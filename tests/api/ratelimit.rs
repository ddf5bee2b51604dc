use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{expect_error, token, TestApp, PASSWORD};

/// A server that trusts the loopback proxy, so tests choose client addresses
/// with `X-Forwarded-For`.
async fn behind_proxy() -> TestApp {
    TestApp::spawn_with(|c| c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]).await
}

async fn login_from(app: &TestApp, ip: &str, email: &str, password: &str) -> Response {
    app.client
        .post(app.url("/auth/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

/// `n` wrong passwords for `email`, each from its own address `prefix.i`.
async fn wrong_from_many(app: &TestApp, prefix: &str, email: &str, n: u32) {
    for i in 0..n {
        let res = login_from(app, &format!("{prefix}.{i}"), email, "guess guess guess").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
}

fn header(res: &Response, name: &str) -> String {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
        .to_owned()
}

async fn make_admin(app: &TestApp, email: &str) -> String {
    let pair = app.signed_up(email).await;
    app.execute(&format!(
        "UPDATE users SET is_admin = TRUE WHERE email = '{email}'"
    ));
    token(&pair, "access_token")
}

#[tokio::test]
async fn fifty_concurrent_wrong_passwords_give_exactly_five_401s() {
    let app = TestApp::spawn().await;
    app.register("target@example.com", PASSWORD).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = app.client.clone();
        let url = app.url("/auth/login");
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({ "email": "target@example.com", "password": "wrong wrong wrong" }))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let (mut unauthorized, mut limited) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((unauthorized, limited), (5, 45));
}

#[tokio::test]
async fn five_failures_then_429_with_the_spec_headers_and_body() {
    let app = behind_proxy().await;
    app.register("amy@example.com", PASSWORD).await;
    for i in 0..5 {
        let res = login_from(&app, "203.0.113.7", "amy@example.com", "not the password").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header(&res, "ratelimit-limit"), "5");
        assert_eq!(header(&res, "ratelimit-remaining"), (4 - i).to_string());
        assert_eq!(header(&res, "ratelimit-policy"), "5;w=900");
        assert_eq!(header(&res, "ratelimit-reset"), "900");
    }
    app.clock.advance(Duration::from_secs(107));
    let res = login_from(&app, "203.0.113.7", "amy@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), "793");
    assert_eq!(header(&res, "ratelimit-remaining"), "0");
    assert_eq!(header(&res, "ratelimit-reset"), "793");
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "error": "too_many_requests",
            "message": "Too many login attempts. Try again in 793 seconds.",
            "retry_after": 793
        })
    );
    // Another address is not blocked, and the right password works from there.
    let res = login_from(&app, "198.51.100.1", "amy@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_429_does_not_reveal_whether_the_account_exists() {
    let app = behind_proxy().await;
    app.register("real@example.com", PASSWORD).await;
    let mut bodies = Vec::new();
    for (ip, email) in [
        ("192.0.2.1", "real@example.com"),
        ("192.0.2.2", "ghost@example.com"),
    ] {
        for _ in 0..5 {
            login_from(&app, ip, email, "not the password").await;
        }
        let res = login_from(&app, ip, email, "not the password").await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        bodies.push(res.json::<Value>().await.unwrap());
    }
    assert_eq!(bodies[0], bodies[1]);
}

#[tokio::test]
async fn success_resets_the_account_counter_and_the_sixth_after_is_blocked() {
    let app = behind_proxy().await;
    app.register("ben@example.com", PASSWORD).await;
    for _ in 0..4 {
        let res = login_from(&app, "203.0.113.9", "ben@example.com", "typo typo typo").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login_from(&app, "203.0.113.9", "ben@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "ratelimit-remaining"), "5");
    for _ in 0..5 {
        let res = login_from(&app, "203.0.113.9", "ben@example.com", "typo typo typo").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login_from(&app, "203.0.113.9", "ben@example.com", "typo typo typo").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn logging_into_ones_own_account_does_not_reset_guessing_budget() {
    let app = behind_proxy().await;
    app.register("mine@example.com", PASSWORD).await;
    let ip = "203.0.113.50";
    for victim in ["v1@example.com", "v2@example.com", "v3@example.com"] {
        login_from(&app, ip, victim, "guess guess guess").await;
    }
    assert_eq!(
        login_from(&app, ip, "mine@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
    for victim in ["v4@example.com", "v5@example.com"] {
        let res = login_from(&app, ip, victim, "guess guess guess").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login_from(&app, ip, "v6@example.com", "guess guess guess").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_window_slides_exactly() {
    let app = behind_proxy().await;
    let ip = "203.0.113.77";
    for _ in 0..5 {
        login_from(&app, ip, "x@example.com", "guess guess guess").await;
        app.clock.advance(Duration::from_secs(60));
    }
    // Events at t = 0, 60, 120, 180, 240; now t = 300.
    let res = login_from(&app, ip, "x@example.com", "guess guess guess").await;
    assert_eq!(header(&res, "retry-after"), "600");
    app.clock.advance(Duration::from_secs(599));
    assert_eq!(
        login_from(&app, ip, "x@example.com", "guess guess guess")
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    app.clock.advance(Duration::from_secs(1));
    // The first event has left: exactly one attempt, not a fresh burst.
    assert_eq!(
        login_from(&app, ip, "x@example.com", "guess guess guess")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let res = login_from(&app, ip, "x@example.com", "guess guess guess").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), "60");
}

#[tokio::test]
async fn a_lockout_survives_a_graceful_restart() {
    let app = behind_proxy().await;
    for _ in 0..5 {
        login_from(&app, "203.0.113.8", "y@example.com", "guess guess guess").await;
    }
    let app = app.restart().await;
    let res = login_from(&app, "203.0.113.8", "y@example.com", "guess guess guess").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), "900");
    // Expired windows are dropped at load.
    app.clock.advance(Duration::from_secs(900));
    let app = app.restart().await;
    let res = login_from(&app, "203.0.113.8", "y@example.com", "guess guess guess").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forged_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let app = TestApp::spawn().await;
    for i in 0..5 {
        let res = login_from(
            &app,
            &format!("10.9.8.{i}"),
            "z@example.com",
            "guess guess guess",
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login_from(&app, "10.9.8.200", "z@example.com", "guess guess guess").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn ipv6_clients_share_a_budget_per_prefix() {
    let app = behind_proxy().await;
    for i in 1..=5 {
        login_from(
            &app,
            &format!("2001:db8:1:2::{i}"),
            "w@example.com",
            "guess guess guess",
        )
        .await;
    }
    let res = login_from(
        &app,
        "2001:db8:1:2:ffff::9",
        "w@example.com",
        "guess guess guess",
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let res = login_from(
        &app,
        "2001:db8:1:3::1",
        "w@example.com",
        "guess guess guess",
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let admin = make_admin(&app, "root@example.com").await;
    let res = app
        .get_auth("/admin/rate-limits?key=2001:db8:1:2::/64", &admin)
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["limits"][0]["key"], "2001:db8:1:2::/64");
    assert_eq!(body["limits"][0]["rule"], "login_ip");
    assert_eq!(body["limits"][0]["count"], 5);
}

#[tokio::test]
async fn a_known_device_keeps_working_while_strangers_are_held_off() {
    let app = behind_proxy().await;
    app.register("owner@example.com", PASSWORD).await;
    assert_eq!(
        login_from(&app, "198.51.100.7", "owner@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
    wrong_from_many(&app, "203.0.113", "owner@example.com", 20).await;
    let res = login_from(&app, "203.0.113.100", "owner@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "ratelimit-policy"), "20;w=900");
    let res = login_from(&app, "198.51.100.7", "owner@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);

    // The owner's success cleared the account's failures. The exemption itself
    // is rebuilt from stored sessions after a restart.
    let app = app.restart().await;
    wrong_from_many(&app, "203.0.114", "owner@example.com", 20).await;
    let res = login_from(&app, "203.0.114.101", "owner@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let res = login_from(&app, "198.51.100.7", "owner@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_requests_count_under_no_rule() {
    let app = TestApp::spawn().await;
    for _ in 0..10 {
        let res = app
            .client
            .post(app.url("/auth/login"))
            .header("content-type", "application/json")
            .body("{\"email\": ")
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::BAD_REQUEST, "invalid_json").await;
    }
    for _ in 0..5 {
        assert_eq!(
            app.login("m@example.com", "guess guess guess")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        app.login("m@example.com", "guess guess guess")
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn register_refresh_and_password_change_are_guarded() {
    let app = TestApp::spawn().await;
    // register_ip counts failures: five weak passwords, then 429 even for a good one.
    for i in 0..5 {
        let res = app
            .register(&format!("r{i}@example.com"), "password1234")
            .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
    let res = app.register("good@example.com", PASSWORD).await;
    let body = expect_error(res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("Too many requests. Try again in"));

    let app = TestApp::spawn().await;
    // register_ip_hourly counts all: 20 registrations in an hour.
    let mut last = None;
    for i in 0..20 {
        let res = app.register(&format!("ok{i}@example.com"), PASSWORD).await;
        assert_eq!(res.status(), StatusCode::CREATED, "registration {i}");
        last = Some(i);
    }
    assert_eq!(last, Some(19));
    let res = app.register("one-more@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "ratelimit-policy"), "20;w=3600");

    // refresh_ip counts failures.
    for _ in 0..5 {
        let res = app
            .post("/auth/refresh", &json!({ "refresh_token": "bogus" }))
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = app
        .post("/auth/refresh", &json!({ "refresh_token": "bogus" }))
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);

    // password change shares the login rules.
    let pair = app.logged_in("ok0@example.com").await;
    let access = token(&pair, "access_token");
    for _ in 0..5 {
        let res = app
            .post_auth(
                "/auth/password/change",
                &access,
                Some(&json!({ "current_password": "nope nope nope", "new_password": "a brand new long phrase" })),
            )
            .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
    let res = app
        .post_auth(
            "/auth/password/change",
            &access,
            Some(&json!({ "current_password": "nope nope nope", "new_password": "a brand new long phrase" })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn admins_inspect_and_clear_limits() {
    let app = behind_proxy().await;
    let admin = make_admin(&app, "root@example.com").await;
    let user = app.signed_up("plain@example.com").await;
    for _ in 0..5 {
        login_from(
            &app,
            "203.0.113.4",
            "victim@example.com",
            "guess guess guess",
        )
        .await;
    }
    assert_eq!(
        login_from(
            &app,
            "203.0.113.4",
            "victim@example.com",
            "guess guess guess"
        )
        .await
        .status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    let res = app
        .get_auth("/admin/rate-limits", &token(&user, "access_token"))
        .await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app
        .client
        .get(app.url("/admin/rate-limits"))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;

    let body: Value = app
        .get_auth("/admin/rate-limits", &admin)
        .await
        .json()
        .await
        .unwrap();
    let limits = body["limits"].as_array().unwrap();
    let ip_row = limits.iter().find(|l| l["key"] == "203.0.113.4").unwrap();
    assert_eq!(ip_row["rule"], "login_ip");
    assert_eq!(ip_row["count"], 5);
    assert_eq!(ip_row["limit"], 5);
    assert_eq!(ip_row["retry_after"], 900);
    let account_row = limits
        .iter()
        .find(|l| l["key"] == "victim@example.com")
        .unwrap();
    assert_eq!(account_row["rule"], "login_account");
    assert_eq!(account_row["retry_after"], 0);

    let res = app.delete_auth("/admin/rate-limits", &admin).await;
    expect_error(res, StatusCode::BAD_REQUEST, "validation_error").await;
    let res = app
        .delete_auth("/admin/rate-limits?key=203.0.113.4&rule=nope", &admin)
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "validation_error").await;
    let res = app
        .delete_auth("/admin/rate-limits?key=203.0.113.4&rule=login_ip", &admin)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        login_from(
            &app,
            "203.0.113.4",
            "victim@example.com",
            "guess guess guess"
        )
        .await
        .status(),
        StatusCode::UNAUTHORIZED
    );
    let res = app
        .delete_auth("/admin/rate-limits?key=victim@example.com", &admin)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let body: Value = app
        .get_auth("/admin/rate-limits?key=victim@example.com", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["limits"], json!([]));
}

/// Whether `login_account` (full) lets the device at `ip` through: a wrong
/// password from it is a 401 for a known device, a 429 for a stranger. (A
/// probe that signed in would make the device known.)
async fn exempt(app: &TestApp, ip: &str, email: &str) -> bool {
    let res = login_from(app, ip, email, "guess guess guess").await;
    match res.status() {
        StatusCode::UNAUTHORIZED => true,
        StatusCode::TOO_MANY_REQUESTS => {
            assert_eq!(header(&res, "ratelimit-policy"), "20;w=900");
            false
        }
        other => panic!("unexpected {other}"),
    }
}

/// An account's known devices are forgotten when its password is changed or
/// reset, on logout-all and when it is disabled (here from the CLI, another
/// process): an address that once signed in keeps no exemption from
/// `login_account` past the recovery.
#[tokio::test]
async fn recoveries_forget_known_devices() {
    let new_password = "a brand new passphrase for this";
    for recovery in [
        "none",
        "logout_all",
        "password_change",
        "reset",
        "disable",
        "disable_without_sessions",
    ] {
        let app = behind_proxy().await;
        let email = "owner@example.com";
        app.register(email, PASSWORD).await;
        let res = login_from(&app, "198.51.100.7", email, PASSWORD).await;
        assert_eq!(res.status(), StatusCode::OK);
        let pair: Value = res.json().await.unwrap();
        let access = token(&pair, "access_token");
        let mut password = PASSWORD;
        match recovery {
            "none" => {}
            "logout_all" => {
                let res = app.post_auth("/auth/logout-all", &access, None).await;
                assert_eq!(res.status(), StatusCode::NO_CONTENT);
            }
            "password_change" => {
                let body = json!({ "current_password": PASSWORD, "new_password": new_password });
                let res = app
                    .post_auth("/auth/password/change", &access, Some(&body))
                    .await;
                assert_eq!(res.status(), StatusCode::NO_CONTENT);
                password = new_password;
            }
            "reset" => {
                let res = app
                    .post("/auth/password-reset/request", &json!({ "email": email }))
                    .await;
                assert_eq!(res.status(), StatusCode::ACCEPTED);
                let mail = crate::reset::mails(&app, 1)
                    .await
                    .pop()
                    .expect("a reset mail");
                let reset = crate::reset::token_in(&std::fs::read_to_string(mail).unwrap());
                let body = json!({ "token": reset, "new_password": new_password });
                let res = app.post("/auth/password-reset/confirm", &body).await;
                assert_eq!(res.status(), StatusCode::OK);
                password = new_password;
            }
            "disable" | "disable_without_sessions" => {
                if recovery == "disable_without_sessions" {
                    // Its one session ended: disabling revokes nothing, and
                    // the server learns of it from the audit log alone.
                    let res = app.post_auth("/auth/logout", &access, None).await;
                    assert_eq!(res.status(), StatusCode::NO_CONTENT);
                }
                for verb in ["disable", "enable"] {
                    let out = app.cli().args(["user", verb, email]).output().unwrap();
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                // The server reads other processes' recoveries at its next
                // poll of storage; run that poll now.
                app.state.auth.sync_revocations(0).await.unwrap();
            }
            _ => unreachable!(),
        }
        wrong_from_many(&app, "203.0.113", email, 20).await;
        assert_eq!(
            exempt(&app, "198.51.100.7", email).await,
            recovery == "none",
            "after {recovery}"
        );
        // A new sign-in from the device makes it known again. (The CLI's
        // clock runs on while the server's stands still: move it past.)
        if recovery != "none" {
            app.clock.advance(Duration::from_secs(60));
            app.state.limiter.clear(email, None).await.unwrap();
            let res = login_from(&app, "198.51.100.7", email, password).await;
            assert_eq!(res.status(), StatusCode::OK, "after {recovery}");
            wrong_from_many(&app, "203.0.114", email, 20).await;
            assert!(
                exempt(&app, "198.51.100.7", email).await,
                "known again after signing in, after {recovery}"
            );
        }
    }
}

/// At start-up only live sessions make an address known: one whose session
/// was revoked is a stranger again after a restart.
#[tokio::test]
async fn only_live_sessions_make_devices_known_after_a_restart() {
    let app = behind_proxy().await;
    let email = "owner@example.com";
    app.register(email, PASSWORD).await;
    let res = login_from(&app, "198.51.100.7", email, PASSWORD).await;
    let pair: Value = res.json().await.unwrap();
    let res = login_from(&app, "198.51.100.8", email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Logging out of one session keeps the device known in this process...
    let res = app
        .post_auth("/auth/logout", &token(&pair, "access_token"), None)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    wrong_from_many(&app, "203.0.113", email, 20).await;
    assert!(exempt(&app, "198.51.100.7", email).await);
    // ...but a restart rebuilds known devices from live sessions only (the
    // full window is saved and reloaded). Known devices kept in Redis outlive
    // the restart instead, as they outlive any one instance.
    let app = app.restart().await;
    assert_eq!(
        exempt(&app, "198.51.100.7", email).await,
        crate::backends::limiter_in_redis()
    );
    assert!(
        exempt(&app, "198.51.100.8", email).await,
        "the device with a live session"
    );
}

/// Two addresses whose FNV-1a-64 hashes collide, found in 35 s on two cores
/// with Pollard's rho over `<16 hex digits>@c.example`. Tags made with FNV
/// let an attacker who signs in to the one clear the failures their address
/// made against the other; keyed tags leave nothing a client can collide.
const FNV_COLLIDING: [&str; 2] = ["736b37d745b3b431@c.example", "6e8cf988334f5a84@c.example"];

#[tokio::test]
async fn signing_in_clears_no_failures_against_a_chosen_colliding_account() {
    let app = behind_proxy().await;
    let (victim, mine) = (FNV_COLLIDING[0], FNV_COLLIDING[1]);
    app.register(mine, PASSWORD).await;
    let attacker = "203.0.113.50";
    for _ in 0..4 {
        let res = login_from(&app, attacker, victim, "guess guess guess").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login_from(&app, attacker, mine, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    // The four failures against the victim still count: one more, then 429.
    let res = login_from(&app, attacker, victim, "guess guess guess").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = login_from(&app, attacker, victim, "guess guess guess").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A key costs the same whatever its text: a 15,000-character "email" is held
/// (and saved at a graceful stop) as its keyed identity and at most 46 bytes
/// of text, and an account key that is not an address is never shown: not in
/// the admin view, the audit log or the saved windows.
#[tokio::test]
async fn long_and_malformed_keys_are_held_bounded_and_never_shown() {
    let app = behind_proxy().await;
    let admin = make_admin(&app, "root@example.com").await;
    let long = format!("{}@example.com", "x".repeat(15_000));
    let typed_password = "my secret passphrase typed here";
    for (n, email) in [long.as_str(), typed_password].into_iter().enumerate() {
        for i in 0..20 {
            let res = login_from(&app, &format!("198.18.{n}.{i}"), email, "guess").await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        }
        // login_account is full: the next attempt is refused and audited.
        let res = login_from(&app, "198.18.9.1", email, "guess").await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let listed: Value = app
        .get_auth("/admin/rate-limits", &admin)
        .await
        .json()
        .await
        .unwrap();
    let accounts: Vec<&str> = listed["limits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["rule"] == "login_account")
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    assert_eq!(accounts.len(), 2, "{listed}");
    for key in &accounts {
        assert!(key.len() <= 46 && key.starts_with('#'), "{key}");
    }
    // An administrator's text is read as the limiter keys it: an email in
    // any case, an IPv6 address for its network.
    let by_case: Value = app
        .get_auth("/admin/rate-limits?key=ROOT@Example.COM", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert!(by_case["limits"].is_array(), "{by_case}");
    // The same key is found by its whole text.
    let by_text: Value = app
        .client
        .get(app.url("/admin/rate-limits"))
        .query(&[("key", typed_password)])
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_text["limits"][0]["count"], 20, "{by_text}");
    // ...and by what the admin view shows of it, which clears it too: here
    // the long one's.
    let long_shown: Value = app
        .client
        .get(app.url("/admin/rate-limits"))
        .query(&[("key", long.as_str())])
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let long_shown = long_shown["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rule"] == "login_account")
        .expect("the long key's window")["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .client
        .delete(app.url("/admin/rate-limits"))
        .query(&[("key", long_shown.as_str()), ("rule", "login_account")])
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let left: Value = app
        .get_auth("/admin/rate-limits", &admin)
        .await
        .json()
        .await
        .unwrap();
    let left = left["limits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["rule"] == "login_account")
        .count();
    assert_eq!(left, 1, "one hidden key cleared by its shown form");
    let audited = app.query("SELECT extra_data FROM audit_log WHERE action = 'login_rate_limited'");
    assert!(!audited.is_empty());
    for row in &audited {
        let extra: Value = serde_json::from_str(&row[0]).unwrap();
        let key = extra["key"].as_str().unwrap();
        assert!(key.len() <= 46, "{key}");
    }

    // Saved at a graceful stop as identities: still full after the restart,
    // and neither text is stored anywhere.
    let app = app.restart().await;
    let res = login_from(&app, "198.18.1.2", typed_password, "guess").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let res = login_from(&app, "198.18.1.3", &long, "guess").await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "cleared before the restart"
    );
    let stored = app.stored_bytes();
    for secret in [typed_password.as_bytes(), "x".repeat(100).as_bytes()] {
        assert!(!stored.windows(secret.len()).any(|w| w == secret));
    }
}
