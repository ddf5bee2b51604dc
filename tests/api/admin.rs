use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{expect_error, token, TestApp, PASSWORD};

#[tokio::test]
async fn admins_list_disable_and_enable_users() {
    let app = TestApp::spawn().await;
    let root = app.signed_up("root@example.com").await;
    app.execute("UPDATE users SET is_admin = TRUE WHERE email = 'root@example.com'");
    let admin = token(&root, "access_token");
    let bob = app.signed_up("bob@example.com").await;
    let bob_access = token(&bob, "access_token");

    let res = app.get_auth("/admin/users?email=BOB", &admin).await;
    let body: Value = res.json().await.unwrap();
    let users = body["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["email"], "bob@example.com");
    assert_eq!(users[0]["disabled"], false);
    assert_eq!(users[0]["is_admin"], false);
    let bob_id = users[0]["id"].as_str().unwrap().to_owned();
    let all: Value = app
        .get_auth("/admin/users", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["users"].as_array().unwrap().len(), 2);

    // Whether each has TOTP on, read with the list (one query for all).
    crate::mfa::with_totp(&app, "carol@example.com").await;
    let all: Value = app
        .get_auth("/admin/users", &admin)
        .await
        .json()
        .await
        .unwrap();
    let mut totp: Vec<(&str, bool)> = all["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["email"].as_str().unwrap(),
                u["mfa_enabled"].as_bool().unwrap(),
            )
        })
        .collect();
    totp.sort();
    assert_eq!(
        totp,
        [
            ("bob@example.com", false),
            ("carol@example.com", true),
            ("root@example.com", false)
        ]
    );

    // Non-admins get 403, everywhere.
    let res = app.get_auth("/admin/users", &bob_access).await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app
        .post_auth(&format!("/admin/users/{bob_id}/disable"), &bob_access, None)
        .await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;

    let res = app
        .post_auth(&format!("/admin/users/{bob_id}/disable"), &admin, None)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // Sessions are revoked at once and logins refused.
    expect_error(
        app.get_auth("/auth/sessions", &bob_access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    assert_eq!(
        app.login("bob@example.com", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let res = app
        .post_auth(&format!("/admin/users/{bob_id}/enable"), &admin, None)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.login("bob@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );

    for path in [
        "/admin/users/not-a-uuid/disable",
        "/admin/users/00000000-0000-0000-0000-000000000000/disable",
    ] {
        expect_error(
            app.post_auth(path, &admin, None).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    let me: Value = app.get_auth("/auth/me", &admin).await.json().await.unwrap();
    let path = format!("/admin/users/{}/disable", me["id"].as_str().unwrap());
    expect_error(
        app.post_auth(&path, &admin, None).await,
        StatusCode::BAD_REQUEST,
        "cannot_disable_self",
    )
    .await;

    let audited: Vec<(String, Option<String>, String)> = app
        .query("SELECT action, user_id, extra_data FROM audit_log WHERE action IN ('user_disabled', 'user_enabled')")
        .into_iter()
        .map(|r| (r[0].clone(), Some(r[1].clone()).filter(|u| !u.is_empty()), r[2].clone()))
        .collect();
    assert_eq!(audited.len(), 2);
    assert!(audited
        .iter()
        .all(|(_, user, extra)| user.as_deref() == Some(bob_id.as_str())
            && extra.contains("actor_id")));
}
