use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{expect_error, token, without_limits, TestApp};

fn decode_part(jwt: &str, index: usize) -> Value {
    let part = jwt.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn access_token_has_the_spec_header_and_claims() {
    let app = TestApp::spawn().await;
    let pair = app.signed_up("jo@example.com").await;
    let jwt = token(&pair, "access_token");
    let header = decode_part(&jwt, 0);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    let claims = decode_part(&jwt, 1);
    for key in [
        "iss", "aud", "sub", "email", "sid", "jti", "iat", "nbf", "exp", "roles",
    ] {
        assert!(!claims[key].is_null(), "missing {key} in {claims}");
    }
    assert_eq!(claims["iss"], "portcullis");
    assert_eq!(claims["aud"], "portcullis");
    assert_eq!(claims["email"], "jo@example.com");
    assert_eq!(claims["sid"], pair["session_id"]);
    assert_eq!(claims["roles"], json!([]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );

    let jwks: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kid"], header["kid"]);
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(key["x"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
}

#[tokio::test]
async fn the_signing_key_survives_restarts_and_is_sealed() {
    let app = TestApp::spawn().await;
    let pair = app.signed_up("kim@example.com").await;
    let jwt = token(&pair, "access_token");
    let app = app.restart().await;
    assert_eq!(
        app.get_auth("/auth/me", &jwt).await.status(),
        StatusCode::OK
    );

    // Without the key file, the database alone cannot be used to sign.
    let sealed = app.count("SELECT length(private_key) FROM signing_keys");
    assert_eq!(sealed, 24 + 32 + 16);
    if !app.config.storage.encryption_key.is_empty() {
        // The key is configured (as PostgreSQL requires): there is no key file.
        return;
    }
    let key_file = app.dir.path().join("encryption.key");
    let meta = std::fs::metadata(&key_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    assert!(meta.len() >= 64);
}

#[tokio::test]
async fn forged_tampered_and_expired_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let pair = app.signed_up("lee@example.com").await;
    let jwt = token(&pair, "access_token");
    let parts: Vec<&str> = jwt.split('.').collect();

    let mut claims = decode_part(&jwt, 1);
    claims["roles"] = json!(["admin"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#),
        parts[1]
    );
    let hs = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"at+jwt"}"#),
        parts[1],
        parts[2]
    );
    for bad in [
        tampered.as_str(),
        none.as_str(),
        hs.as_str(),
        "garbage",
        "a.b.c",
        &"x".repeat(10_000),
    ] {
        let res = app.get_auth("/auth/me", bad).await;
        let res_status = res.status();
        assert_eq!(res_status, StatusCode::UNAUTHORIZED, "{bad:.40}");
        assert_eq!(
            res.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
        expect_error(res, res_status, "invalid_token").await;
    }
    let res = app.client.get(app.url("/auth/me")).send().await.unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let res = app
        .client
        .get(app.url("/auth/me"))
        .header("authorization", format!("Basic {jwt}"))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;

    assert_eq!(
        app.get_auth("/auth/me", &jwt).await.status(),
        StatusCode::OK
    );
    app.clock.advance(Duration::from_secs(3599));
    assert_eq!(
        app.get_auth("/auth/me", &jwt).await.status(),
        StatusCode::OK
    );
    app.clock.advance(Duration::from_secs(1));
    let body = expect_error(
        app.get_auth("/auth/me", &jwt).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn hs256_is_the_configured_alternative() {
    let app = TestApp::spawn_with(|c| {
        c.tokens.algorithm = portcullis::config::Algorithm::HS256;
        c.tokens.secret = "an hs256 secret of at least 32 bytes!".into();
    })
    .await;
    let pair = app.signed_up("max@example.com").await;
    let jwt = token(&pair, "access_token");
    assert_eq!(decode_part(&jwt, 0)["alg"], "HS256");
    assert_eq!(
        app.get_auth("/auth/me", &jwt).await.status(),
        StatusCode::OK
    );
    let jwks: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // A symmetric secret is never published: only the RSA key of
    // OpenID Connect id_tokens is.
    let keys = jwks["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        assert_eq!(key["kty"], "RSA", "{key}");
        assert!(key.get("k").is_none(), "a secret in the JWKS: {key}");
    }
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_session() {
    let app = TestApp::spawn_with(without_limits).await;
    let first = app.signed_up("nia@example.com").await;
    let r1 = token(&first, "refresh_token");

    let res = app
        .post("/auth/refresh", &json!({ "refresh_token": r1 }))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let second: Value = res.json().await.unwrap();
    let r2 = token(&second, "refresh_token");
    assert_ne!(r1, r2);
    assert_eq!(second["session_id"], first["session_id"]);
    let a2 = token(&second, "access_token");
    assert_eq!(app.get_auth("/auth/me", &a2).await.status(), StatusCode::OK);

    // The retired token again: theft. The whole session dies at once.
    let res = app
        .post("/auth/refresh", &json!({ "refresh_token": r1 }))
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "refresh_token_reused").await;
    let res = app
        .post("/auth/refresh", &json!({ "refresh_token": r2 }))
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    expect_error(
        app.get_auth("/auth/me", &a2).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;

    for junk in ["", "not-a-token", &"A".repeat(43), &"x".repeat(5000)] {
        let res = app
            .post("/auth/refresh", &json!({ "refresh_token": junk }))
            .await;
        expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    }
}

#[tokio::test]
async fn refresh_tokens_are_stored_only_as_hashes() {
    let app = TestApp::spawn().await;
    let pair = app.signed_up("oli@example.com").await;
    let refresh = token(&pair, "refresh_token");
    let bytes = app.stored_bytes();
    assert!(!bytes
        .windows(refresh.len())
        .any(|w| w == refresh.as_bytes()));
    let hashes = app.count("SELECT count(*) FROM refresh_tokens WHERE length(token_hash) = 32");
    assert_eq!(hashes, 1);
}

#[tokio::test]
async fn sessions_expire_with_their_lifetime() {
    let app = TestApp::spawn().await;
    let pair = app.signed_up("pat@example.com").await;
    app.clock.advance(Duration::from_secs(86_400));
    let res = app
        .post(
            "/auth/refresh",
            &json!({ "refresh_token": token(&pair, "refresh_token") }),
        )
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;

    // With remember_me the session lasts refresh_ttl, and access tokens never outlive it.
    let res = app
        .post("/auth/login", &json!({ "email": "pat@example.com", "password": crate::helpers::PASSWORD, "remember_me": true }))
        .await;
    let pair: Value = res.json().await.unwrap();
    app.clock.advance(Duration::from_secs(29 * 86_400));
    let res = app
        .post(
            "/auth/refresh",
            &json!({ "refresh_token": token(&pair, "refresh_token") }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let pair: Value = res.json().await.unwrap();
    assert_eq!(pair["refresh_expires_in"], 86_400);
}
