use std::time::Duration;

use portcullis::clock::Clock;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{expect_error, token, without_limits, TestApp, PASSWORD};

fn secret_bytes(b32: &str) -> Vec<u8> {
    totp_rs::Secret::Encoded(b32.to_owned()).to_bytes().unwrap()
}

fn code(app: &TestApp, secret: &[u8]) -> String {
    let now = u64::try_from(app.clock.now_secs()).unwrap();
    portcullis::auth::totp::code_at(secret, now)
}

/// Signs up, turns TOTP on; returns (access token, secret, backup codes).
/// `mfa_enabled` as `GET /auth/me` reports it.
async fn mfa_enabled(app: &TestApp, access: &str) -> bool {
    let me: Value = app.get_auth("/auth/me", access).await.json().await.unwrap();
    me["mfa_enabled"]
        .as_bool()
        .expect("mfa_enabled is a boolean")
}

pub(crate) async fn with_totp(app: &TestApp, email: &str) -> (String, Vec<u8>, Vec<String>) {
    let pair = app.signed_up(email).await;
    let access = token(&pair, "access_token");
    // Read the profile first: what the server remembers of it must not
    // outlive the change below.
    assert!(!mfa_enabled(app, &access).await);
    let res = app.post_auth("/auth/mfa/totp/setup", &access, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let setup: Value = res.json().await.unwrap();
    let b32 = setup["secret"].as_str().unwrap().to_owned();
    assert!(setup["otpauth_url"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/"));
    let secret = secret_bytes(&b32);

    let wrong = if code(app, &secret) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let res = app
        .post_auth(
            "/auth/mfa/totp/enable",
            &access,
            Some(&json!({ "password": PASSWORD, "code": wrong })),
        )
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_mfa_code").await;
    let res = app
        .post_auth(
            "/auth/mfa/totp/enable",
            &access,
            Some(&json!({ "password": PASSWORD, "code": code(app, &secret) })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let backup: Vec<String> = body["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(backup.len(), 10);
    // The code that enabled TOTP is spent.
    app.clock.advance(Duration::from_secs(30));
    (access, secret, backup)
}

async fn start_login(app: &TestApp, email: &str, remember_me: bool) -> String {
    let res = app
        .post(
            "/auth/login",
            &json!({ "email": email, "password": PASSWORD, "remember_me": remember_me }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_required"], true);
    assert_eq!(body["expires_in"], 300);
    assert!(body.get("access_token").is_none());
    body["mfa_token"].as_str().unwrap().to_owned()
}

async fn second_step(app: &TestApp, mfa_token: &str, code: &str) -> reqwest::Response {
    app.post(
        "/auth/login/mfa",
        &json!({ "mfa_token": mfa_token, "code": code }),
    )
    .await
}

#[tokio::test]
async fn totp_login_end_to_end_with_replay_protection() {
    let app = TestApp::spawn_with(without_limits).await;
    let (access, secret, _) = with_totp(&app, "zoe@example.com").await;
    assert!(mfa_enabled(&app, &access).await);

    let mfa_token = start_login(&app, "zoe@example.com", true).await;
    // The mfa_token is no access token.
    expect_error(
        app.get_auth("/auth/me", &mfa_token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let now_code = code(&app, &secret);
    let res = second_step(&app, &mfa_token, &now_code).await;
    assert_eq!(res.status(), StatusCode::OK);
    let pair: Value = res.json().await.unwrap();
    assert_eq!(
        pair["refresh_expires_in"],
        30 * 86_400,
        "remember_me travels with the challenge"
    );
    assert_eq!(
        app.get_auth("/auth/me", &token(&pair, "access_token"))
            .await
            .status(),
        StatusCode::OK
    );
    // The token is spent by its success.
    expect_error(
        second_step(&app, &mfa_token, &now_code).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;

    // The same code in the same time step is refused on a new login.
    let again = start_login(&app, "zoe@example.com", false).await;
    expect_error(
        second_step(&app, &again, &now_code).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;
    app.clock.advance(Duration::from_secs(30));
    assert_eq!(
        second_step(&app, &again, &code(&app, &secret))
            .await
            .status(),
        StatusCode::OK
    );

    let audited = audit_actions(&app);
    for a in ["mfa_enabled", "mfa_success", "mfa_failed", "login_success"] {
        assert!(audited.iter().any(|x| x == a), "{a} missing");
    }
    // No TOTP code reached the audit log.
    let extra: Vec<String> = app
        .query("SELECT extra_data FROM audit_log")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert!(extra.iter().all(|e| !e.contains(&now_code)));
}

fn audit_actions(app: &TestApp) -> Vec<String> {
    app.query("SELECT action FROM audit_log ORDER BY id")
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
}

#[tokio::test]
async fn backup_codes_work_once_and_regeneration_voids_them() {
    let app = TestApp::spawn_with(without_limits).await;
    let (access, secret, backup) = with_totp(&app, "yan@example.com").await;
    let t = start_login(&app, "yan@example.com", false).await;
    assert_eq!(
        second_step(&app, &t, &backup[0].to_uppercase())
            .await
            .status(),
        StatusCode::OK
    );
    let t = start_login(&app, "yan@example.com", false).await;
    expect_error(
        second_step(&app, &t, &backup[0]).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;

    let res = app
        .post_auth(
            "/auth/mfa/backup-codes",
            &access,
            Some(&json!({ "code": code(&app, &secret) })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let fresh: Value = res.json().await.unwrap();
    let fresh = fresh["backup_codes"][0].as_str().unwrap().to_owned();
    let t = start_login(&app, "yan@example.com", false).await;
    expect_error(
        second_step(&app, &t, &backup[1]).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;
    assert_eq!(second_step(&app, &t, &fresh).await.status(), StatusCode::OK);
    assert!(audit_actions(&app)
        .iter()
        .any(|a| a == "backup_codes_regenerated"));
}

#[tokio::test]
async fn five_wrong_codes_spend_the_token_and_it_expires() {
    let app = TestApp::spawn_with(without_limits).await;
    let (_, secret, _) = with_totp(&app, "xia@example.com").await;
    let t = start_login(&app, "xia@example.com", false).await;
    let right = code(&app, &secret);
    let wrong = if right == "123456" {
        "654321"
    } else {
        "123456"
    };
    for _ in 0..5 {
        expect_error(
            second_step(&app, &t, wrong).await,
            StatusCode::UNAUTHORIZED,
            "invalid_mfa_code",
        )
        .await;
    }
    expect_error(
        second_step(&app, &t, &right).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;

    let t = start_login(&app, "xia@example.com", false).await;
    app.clock.advance(Duration::from_secs(300));
    expect_error(
        second_step(&app, &t, &code(&app, &secret)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;
    for junk in ["", "not-a-token", &"A".repeat(43)] {
        expect_error(
            second_step(&app, junk, "123456").await,
            StatusCode::UNAUTHORIZED,
            "invalid_mfa_code",
        )
        .await;
    }
}

#[tokio::test]
async fn the_mfa_rule_holds_the_second_step_off() {
    let app = TestApp::spawn().await;
    let (_, secret, _) = with_totp(&app, "wu@example.com").await;
    let t = start_login(&app, "wu@example.com", false).await;
    let right = code(&app, &secret);
    let wrong = if right == "123456" {
        "654321"
    } else {
        "123456"
    };
    for _ in 0..4 {
        second_step(&app, &t, wrong).await;
    }
    let t2 = start_login(&app, "wu@example.com", false).await;
    second_step(&app, &t2, wrong).await;
    let res = second_step(&app, &t2, &right).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["ratelimit-policy"], "5;w=900");
}

#[tokio::test]
async fn a_pending_second_factor_is_not_a_successful_login() {
    let app = TestApp::spawn().await;
    let (_, secret, _) = with_totp(&app, "vic@example.com").await;
    for _ in 0..3 {
        app.login("vic@example.com", "wrong wrong wrong").await;
    }
    // Right password, second step pending: releases its own slot, clears nothing.
    let t = start_login(&app, "vic@example.com", false).await;
    app.login("vic@example.com", "wrong wrong wrong").await;
    app.login("vic@example.com", "wrong wrong wrong").await;
    let res = app.login("vic@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // The second step completes the login and clears the failures.
    assert_eq!(
        second_step(&app, &t, &code(&app, &secret)).await.status(),
        StatusCode::OK
    );
    let res = app.login("vic@example.com", "wrong wrong wrong").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn disable_needs_password_and_code_and_secrets_stay_sealed() {
    let app = TestApp::spawn_with(without_limits).await;
    let (access, secret, _) = with_totp(&app, "una@example.com").await;
    let res = app
        .post_auth(
            "/auth/mfa/totp/disable",
            &access,
            Some(&json!({ "password": "nope nope nope", "code": code(&app, &secret) })),
        )
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_current_password").await;
    let res = app
        .post_auth(
            "/auth/mfa/totp/disable",
            &access,
            Some(&json!({ "password": PASSWORD, "code": "12345" })),
        )
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_mfa_code").await;
    assert!(mfa_enabled(&app, &access).await);

    // The secret is sealed: neither its bytes nor its base32 form are stored.
    let (b32, _) = portcullis::auth::totp::provisioning(&secret, "x", "y");
    {
        let bytes = app.stored_bytes();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_slice()));
        assert!(!bytes.windows(b32.len()).any(|w| w == b32.as_bytes()));
    }

    let res = app
        .post_auth(
            "/auth/mfa/totp/disable",
            &access,
            Some(&json!({ "password": PASSWORD, "code": code(&app, &secret) })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(!mfa_enabled(&app, &access).await);
    assert_eq!(
        app.login("una@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );

    let actions = audit_actions(&app);
    for a in ["mfa_enabled", "mfa_disabled"] {
        assert!(actions.iter().any(|x| x == a), "{a} missing");
    }
    let res = app
        .post_auth(
            "/auth/mfa/backup-codes",
            &access,
            Some(&json!({ "code": "123456" })),
        )
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "mfa_not_enabled").await;
}

#[tokio::test]
async fn the_password_grant_refuses_accounts_with_two_factor() {
    let app = TestApp::spawn().await;
    with_totp(&app, "tess@example.com").await;
    let body = format!(
        "grant_type=password&username=tess%40example.com&password={}",
        PASSWORD.replace(' ', "+")
    );
    // Six times: the right password releases its slot, so no lockout follows.
    for _ in 0..6 {
        let res = app
            .client
            .post(app.url("/auth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let json: Value = res.json().await.unwrap();
        assert_eq!(json["error"], "invalid_grant");
        assert_eq!(
            json["error_description"],
            "two-factor authentication required; use /auth/login"
        );
    }
}

/// A stolen access token alone cannot bind the account to an attacker's
/// authenticator: turning TOTP on takes the current password, and wrong
/// passwords count under the login rules (wrong codes under `mfa`).
#[tokio::test]
async fn enabling_needs_the_password_under_the_login_rules() {
    let app = TestApp::spawn().await;
    let pair = app.signed_up("thief@example.com").await;
    let access = token(&pair, "access_token");
    let setup: Value = app
        .post_auth("/auth/mfa/totp/setup", &access, None)
        .await
        .json()
        .await
        .unwrap();
    let secret = secret_bytes(setup["secret"].as_str().unwrap());
    let enable = |body: Value| {
        let (app, access) = (&app, access.clone());
        async move {
            app.post_auth("/auth/mfa/totp/enable", &access, Some(&body))
                .await
        }
    };

    // The code alone, as before, is a malformed request now.
    let res = enable(json!({ "code": code(&app, &secret) })).await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_request").await;
    // A wrong password is refused before the code is looked at.
    let res = enable(json!({ "password": "not my password", "code": code(&app, &secret) })).await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_current_password").await;
    assert!(!mfa_enabled(&app, &access).await);
    let actions = audit_actions(&app);
    assert!(!actions.iter().any(|a| a == "mfa_enabled"), "{actions:?}");

    // A wrong code with the right password counts under mfa, not login_ip:
    // four of them leave the login rules alone.
    let wrong = if code(&app, &secret) == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..3 {
        let res = enable(json!({ "password": PASSWORD, "code": wrong })).await;
        expect_error(res, StatusCode::BAD_REQUEST, "invalid_mfa_code").await;
    }
    // Four wrong passwords in all under login_ip (one above, three here):
    // none of them counts under mfa, which has three of five used.
    for _ in 0..3 {
        let res = enable(json!({ "password": "not my password", "code": wrong })).await;
        expect_error(res, StatusCode::BAD_REQUEST, "invalid_current_password").await;
    }
    let res = enable(json!({ "password": "not my password", "code": wrong })).await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_current_password").await;
    // Five wrong passwords: login_ip is full, for logins too.
    let res = enable(json!({ "password": PASSWORD, "code": code(&app, &secret) })).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        app.login("thief@example.com", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Clearing the address lets the owner finish, with the mfa rule's last slot.
    app.state.limiter.clear("127.0.0.1", None).await.unwrap();
    let res = enable(json!({ "password": PASSWORD, "code": code(&app, &secret) })).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(mfa_enabled(&app, &access).await);
}

/// Backup codes are stored as HMAC-SHA-256 under a key derived from the
/// storage key, not as plain SHA-256 that a copy of the database would let
/// anyone try offline; codes stored the old way keep working until replaced.
#[tokio::test]
async fn backup_codes_are_keyed_hashes_and_old_ones_still_work() {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let app = TestApp::spawn_with(without_limits).await;
    let (access, secret, backup) = with_totp(&app, "kim@example.com").await;
    let me: Value = app
        .get_auth("/auth/me", &access)
        .await
        .json()
        .await
        .unwrap();
    let user_id = uuid::Uuid::parse_str(me["id"].as_str().unwrap()).unwrap();
    let normal = |code: &str| code.replace('-', "").to_lowercase();
    let legacy = |code: &str| {
        let mut h = Sha256::new();
        h.update(user_id.as_bytes());
        h.update(normal(code).as_bytes());
        hex::encode(h.finalize())
    };
    let hmac = |key: &[u8], parts: &[&[u8]]| {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().to_vec()
    };
    let storage_key = if app.config.storage.encryption_key.is_empty() {
        std::fs::read_to_string(app.dir.path().join("encryption.key")).unwrap()
    } else {
        app.config.storage.encryption_key.clone()
    };
    let storage_key = hex::decode(storage_key.trim()).unwrap();
    let root = hmac(&storage_key, &[b"portcullis key derivation"]);
    let key = hmac(&root, &[b"backup codes"]);
    let stored: Vec<String> = app
        .query(&format!(
            "SELECT code_hash FROM backup_codes WHERE user_id = '{user_id}' ORDER BY code_hash"
        ))
        .into_iter()
        .map(|r| r[0].trim_start_matches("\\x").to_owned())
        .collect();
    assert_eq!(stored.len(), 10);
    let mut keyed: Vec<String> = backup
        .iter()
        .map(|c| hex::encode(hmac(&key, &[user_id.as_bytes(), normal(c).as_bytes()])))
        .collect();
    keyed.sort();
    assert_eq!(stored, keyed, "each code is stored as its keyed hash");
    for code in &backup {
        assert!(!stored.contains(&legacy(code)), "no unkeyed hash is stored");
    }

    // A code stored the old way (before keyed hashes) still works, once.
    let old = "abcde-fghjk";
    let literal = if app.config.storage.backend == portcullis::config::StorageBackend::Postgres {
        format!("decode('{}', 'hex')", legacy(old))
    } else {
        format!("X'{}'", legacy(old))
    };
    app.execute(&format!(
        "INSERT INTO backup_codes (user_id, code_hash, created_at) VALUES ('{user_id}', {literal}, 0)"
    ));
    let t = start_login(&app, "kim@example.com", false).await;
    assert_eq!(second_step(&app, &t, old).await.status(), StatusCode::OK);
    let t = start_login(&app, "kim@example.com", false).await;
    expect_error(
        second_step(&app, &t, old).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;
    // New codes replace it with keyed ones.
    let res = app
        .post_auth(
            "/auth/mfa/backup-codes",
            &access,
            Some(&json!({ "code": code(&app, &secret) })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM backup_codes WHERE user_id = '{user_id}' AND used_at IS NULL"
        )),
        10
    );
}
