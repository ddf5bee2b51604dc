use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{expect_error, token, without_limits, TestApp, PASSWORD};

#[tokio::test]
async fn register_returns_the_account() {
    let app = TestApp::spawn().await;
    let res = app
        .post(
            "/auth/register",
            &json!({ "email": "  Ada@Example.COM ", "password": PASSWORD, "name": " Ada " }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!(body["name"], "Ada");
    assert!(uuid::Uuid::parse_str(body["id"].as_str().unwrap()).is_ok());
    let created = body["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.contains('T'), "{created}");
    assert_eq!(body.as_object().unwrap().len(), 4, "{body}");

    // Unique case-insensitively.
    expect_error(
        app.register("ADA@example.com", PASSWORD).await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
}

#[tokio::test]
async fn register_validation_names_each_field() {
    let app = TestApp::spawn().await;
    let res = app
        .post(
            "/auth/register",
            &json!({ "email": "not-an-email", "password": "short", "name": "x".repeat(101) }),
        )
        .await;
    let body = expect_error(res, StatusCode::BAD_REQUEST, "validation_error").await;
    let fields = body["fields"].as_object().unwrap();
    assert!(fields["email"].as_str().unwrap().contains("valid email"));
    assert!(fields["password"].as_str().unwrap().contains("at least 12"));
    assert!(fields.contains_key("name"));

    // Long enough but guessable.
    let res = app.register("bob@example.com", "password1234").await;
    let body = expect_error(res, StatusCode::BAD_REQUEST, "validation_error").await;
    assert!(
        body["fields"]["password"]
            .as_str()
            .unwrap()
            .contains("too easy"),
        "{body}"
    );

    // The user's own email counts as a known word.
    let res = app
        .register(
            "quixotic.zanzibar.umbrella@example.com",
            "quixotic.zanzibar.umbrella",
        )
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "validation_error").await;

    // Too long, counted in characters.
    let res = app.register("carol@example.com", &"é".repeat(129)).await;
    let body = expect_error(res, StatusCode::BAD_REQUEST, "validation_error").await;
    assert!(body["fields"]["password"]
        .as_str()
        .unwrap()
        .contains("at most 128"));

    // Nothing was created.
    let count = app.count("SELECT count(*) FROM users");
    assert_eq!(count, 0);
}

#[tokio::test]
async fn concurrent_registration_of_one_email_creates_one_account() {
    let app = TestApp::spawn_with(without_limits).await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let client = app.client.clone();
        let url = app.url("/auth/register");
        let email = if i % 2 == 0 {
            "race@example.com"
        } else {
            "RACE@example.com"
        };
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({ "email": email, "password": PASSWORD }))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 1);
    let count = app.count("SELECT count(*) FROM users");
    assert_eq!(count, 1);
}

#[tokio::test]
async fn login_returns_a_token_pair() {
    let app = TestApp::spawn().await;
    app.register("dan@example.com", PASSWORD).await;
    let res = app.login(" DAN@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let pair: Value = res.json().await.unwrap();
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 3600);
    assert_eq!(pair["refresh_expires_in"], 86_400);
    assert_eq!(token(&pair, "refresh_token").len(), 43);
    assert!(uuid::Uuid::parse_str(pair["session_id"].as_str().unwrap()).is_ok());

    let res = app
        .post(
            "/auth/login",
            &json!({ "email": "dan@example.com", "password": PASSWORD, "remember_me": true }),
        )
        .await;
    let pair: Value = res.json().await.unwrap();
    assert_eq!(pair["refresh_expires_in"], 30 * 86_400);
}

#[tokio::test]
async fn bad_logins_all_look_the_same() {
    let app = TestApp::spawn().await;
    app.register("erin@example.com", PASSWORD).await;
    app.register("frank@example.com", PASSWORD).await;
    app.execute("UPDATE users SET disabled_at = 1 WHERE email = 'frank@example.com'");

    let mut bodies = Vec::new();
    for (email, password) in [
        ("erin@example.com", "wrong password here"),
        ("nobody@example.com", PASSWORD),
        ("frank@example.com", PASSWORD),
        ("not an email at all", PASSWORD),
    ] {
        let res = app.login(email, password).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{email}");
        let body: Value = res.json().await.unwrap();
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert_eq!(bodies[0]["error"], "invalid_credentials");
}

#[tokio::test]
async fn me_describes_the_caller() {
    let app = TestApp::spawn().await;
    let pair = app.signed_up("gina@example.com").await;
    let res = app
        .get_auth("/auth/me", &token(&pair, "access_token"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["email"], "gina@example.com");
    assert_eq!(me["mfa_enabled"], false);
    assert_eq!(me["is_admin"], false);
    assert!(me["name"].is_null());
    for key in ["id", "created_at"] {
        assert!(me[key].is_string(), "{key}");
    }
}

#[tokio::test]
async fn password_change_revokes_other_sessions() {
    let app = TestApp::spawn().await;
    let first = app.signed_up("hal@example.com").await;
    let second = app.logged_in("hal@example.com").await;
    let access = token(&second, "access_token");

    let res = app
        .post_auth(
            "/auth/password/change",
            &access,
            Some(&json!({ "current_password": "not my password", "new_password": "another fine long phrase" })),
        )
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_current_password").await;

    let res = app
        .post_auth(
            "/auth/password/change",
            &access,
            Some(&json!({ "current_password": PASSWORD, "new_password": "password1234" })),
        )
        .await;
    let body = expect_error(res, StatusCode::BAD_REQUEST, "validation_error").await;
    assert!(body["fields"]["new_password"].is_string());

    let new_password = "another fine long phrase";
    let res = app
        .post_auth(
            "/auth/password/change",
            &access,
            Some(&json!({ "current_password": PASSWORD, "new_password": new_password })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    // This session goes on; the other one is gone, access and refresh alike.
    assert_eq!(
        app.get_auth("/auth/me", &access).await.status(),
        StatusCode::OK
    );
    let res = app
        .get_auth("/auth/me", &token(&first, "access_token"))
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let res = app
        .post(
            "/auth/refresh",
            &json!({ "refresh_token": token(&first, "refresh_token") }),
        )
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;

    assert_eq!(
        app.login("hal@example.com", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("hal@example.com", new_password).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn hashes_with_old_parameters_are_upgraded_on_login() {
    let app = TestApp::spawn().await;
    app.register("ivy@example.com", PASSWORD).await;
    let before = app.scalar("SELECT password_hash FROM users");
    assert!(before.contains("m=1024,t=1,p=1"), "{before}");

    let mut app = app;
    app.config.passwords.argon2_iterations = 2;
    let app = app.restart().await;
    assert_eq!(
        app.login("ivy@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
    let after = app.scalar("SELECT password_hash FROM users");
    assert!(after.contains("m=1024,t=2,p=1"), "{after}");
    assert_eq!(
        app.login("ivy@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_full_hash_queue_answers_503_with_retry_after() {
    let app = TestApp::spawn_with(|c| {
        without_limits(c);
        c.passwords.max_concurrent_hashes = 1;
        c.passwords.max_queued_hashes = 1;
        c.passwords.argon2_memory_kib = 16 * 1024;
        c.passwords.argon2_iterations = 4;
    })
    .await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = app.client.clone();
        let url = app.url("/auth/login");
        tasks.push(tokio::spawn(async move {
            let res = client
                .post(url)
                .json(&json!({ "email": format!("u{i}@example.com"), "password": PASSWORD }))
                .send()
                .await
                .unwrap();
            let status = res.status();
            let retry = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = res.json().await.unwrap();
            (status, retry, body)
        }));
    }
    let mut overloaded = 0;
    for t in tasks {
        let (status, retry, body) = t.await.unwrap();
        match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                overloaded += 1;
                assert_eq!(retry.as_deref(), Some("1"));
                assert_eq!(body["error"], "overloaded");
            }
            StatusCode::UNAUTHORIZED => assert_eq!(body["error"], "invalid_credentials"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        overloaded > 0,
        "16 concurrent logins against 1 thread + 1 slot must overflow"
    );
}
