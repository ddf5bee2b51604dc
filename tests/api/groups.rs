//! SPEC section 10: groups, administrators adding users, the reset of a lost
//! second factor (API and CLI).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{expect_error, token, TestApp, PASSWORD};
use crate::reset::{link_in, mails, token_in};

/// `extra_data` of each audit row of `action`, oldest first (read as JSON
/// here, so that the query runs on either database).
pub(crate) fn extras(app: &TestApp, action: &str) -> Vec<Value> {
    app.query(&format!(
        "SELECT extra_data FROM audit_log WHERE action = '{action}' ORDER BY id"
    ))
    .into_iter()
    .map(|row| serde_json::from_str(&row[0]).expect("extra_data is JSON"))
    .collect()
}

/// An administrator's access token and a user's id.
async fn admin_and_user(app: &TestApp, email: &str) -> (String, String) {
    let root = app.signed_up("root@example.com").await;
    app.execute("UPDATE users SET is_admin = TRUE WHERE email = 'root@example.com'");
    let user: Value = app.register(email, PASSWORD).await.json().await.unwrap();
    (
        token(&root, "access_token"),
        user["id"].as_str().unwrap().to_owned(),
    )
}

async fn put_groups(app: &TestApp, admin: &str, id: &str, groups: Value) -> reqwest::Response {
    app.client
        .put(app.url(&format!("/admin/users/{id}/groups")))
        .bearer_auth(admin)
        .json(&json!({ "groups": groups }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn administrators_set_groups_that_me_and_the_user_list_show() {
    let app = TestApp::spawn().await;
    let (admin, ada) = admin_and_user(&app, "ada@example.com").await;
    let res = put_groups(&app, &admin, &ada, json!(["ops", "dev", "ops"])).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"groups": ["dev", "ops"]})
    );
    let res = put_groups(&app, &admin, &ada, json!(["ops", "wiki"])).await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["groups"],
        json!(["ops", "wiki"])
    );
    let extra = extras(&app, "groups_changed");
    assert_eq!(extra.len(), 2, "{extra:?}");
    assert_eq!(extra[1]["added"], json!(["wiki"]));
    assert_eq!(extra[1]["removed"], json!(["dev"]));
    let resources = app.query("SELECT resource_id FROM audit_log WHERE action = 'groups_changed'");
    assert_eq!(resources[1][0], ada);
    // The same list again changes nothing and records nothing.
    put_groups(&app, &admin, &ada, json!(["wiki", "ops"])).await;
    assert_eq!(
        app.count("SELECT count(*) FROM audit_log WHERE action = 'groups_changed'"),
        2
    );

    let pair = app.logged_in("ada@example.com").await;
    let me: Value = app
        .get_auth("/auth/me", &token(&pair, "access_token"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["groups"], json!(["ops", "wiki"]));
    let root_me: Value = app.get_auth("/auth/me", &admin).await.json().await.unwrap();
    assert_eq!(
        root_me["groups"],
        json!(["admins"]),
        "administrators are in admins"
    );
    let users: Value = app
        .get_auth("/admin/users", &admin)
        .await
        .json()
        .await
        .unwrap();
    let listed = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "ada@example.com")
        .unwrap();
    assert_eq!(listed["groups"], json!(["ops", "wiki"]));

    for bad in [
        json!(["Ops"]),
        json!(["a b"]),
        json!([""]),
        json!(["admins"]),
        json!(["x".repeat(65)]),
    ] {
        let res = put_groups(&app, &admin, &ada, bad.clone()).await;
        expect_error(res, StatusCode::BAD_REQUEST, "validation_error").await;
    }
    let res = put_groups(
        &app,
        &admin,
        "00000000-0000-4000-8000-000000000000",
        json!([]),
    )
    .await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = put_groups(&app, &token(&pair, "access_token"), &ada, json!(["ops"])).await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;

    // The CLI adds and removes.
    let out = app
        .cli()
        .args([
            "user",
            "groups",
            "ada@example.com",
            "--add",
            "billing",
            "--remove",
            "wiki",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ada@example.com: billing, ops"
    );
    let bad = app
        .cli()
        .args(["user", "groups", "ada@example.com", "--add", "Bad Name"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[tokio::test]
async fn administrators_add_users_with_or_without_a_password() {
    let app = TestApp::spawn_with(|c| c.accounts.open_registration = false).await;
    let root = app.signed_up_as_admin().await;
    let res = app
        .client
        .post(app.url("/admin/users"))
        .bearer_auth(&root)
        .json(&json!({"email": "Bea@Example.com", "password": PASSWORD, "name": "Bea", "groups": ["ops"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let bea: Value = res.json().await.unwrap();
    assert_eq!(bea["email"], "bea@example.com");
    assert_eq!(bea["groups"], json!(["ops"]));
    assert_eq!(
        app.login("bea@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );

    // Without a password: a mail with a link to choose one.
    let res = app
        .client
        .post(app.url("/admin/users"))
        .bearer_auth(&root)
        .json(&json!({"email": "cy@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let mail = std::fs::read_to_string(&mails(&app, 1).await[0]).unwrap();
    assert!(mail.contains("An account was made for you"), "{mail}");
    assert!(link_in(&mail).contains("/ui/reset-password?token="));
    let res = app
        .post(
            "/auth/password-reset/confirm",
            &json!({"token": token_in(&mail), "new_password": "a new and long passphrase"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        app.login("cy@example.com", "a new and long passphrase")
            .await
            .status(),
        StatusCode::OK
    );
    let created: Vec<Value> = extras(&app, "user_created")
        .into_iter()
        .map(|e| e["password_set"].clone())
        .collect();
    assert_eq!(created, [json!(true), json!(false)]);
    let res = app
        .client
        .post(app.url("/admin/users"))
        .bearer_auth(&root)
        .json(&json!({"email": "cy@example.com"}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::CONFLICT, "email_taken").await;
}

#[tokio::test]
async fn administrators_reset_a_lost_second_factor() {
    let app = TestApp::spawn().await;
    let root = app.signed_up_as_admin().await;
    let (access, _, _) = crate::mfa::with_totp(&app, "dan@example.com").await;
    let dan_id = app.scalar("SELECT id FROM users WHERE email = 'dan@example.com'");
    let first: Value = app
        .login("dan@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["mfa_required"], true);

    let res = app
        .post_auth(&format!("/admin/users/{dan_id}/mfa/reset"), &root, None)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // Every session ended at once; the password alone signs in now.
    assert_eq!(
        app.get_auth("/auth/me", &access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let after: Value = app
        .login("dan@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    assert!(after["access_token"].is_string(), "{after}");
    assert_eq!(app.count("SELECT count(*) FROM backup_codes"), 0);
    let mail = std::fs::read_to_string(&mails(&app, 1).await[0]).unwrap();
    assert!(mail.contains("turned off two-step verification"), "{mail}");
    let row = app.query("SELECT user_id FROM audit_log WHERE action = 'mfa_reset'");
    assert_eq!(row.len(), 1);
    assert_eq!(row[0][0], dan_id);
    assert!(extras(&app, "mfa_reset")[0]["actor_id"].is_string());
    let res = app
        .post_auth(
            "/admin/users/00000000-0000-4000-8000-000000000000/mfa/reset",
            &root,
            None,
        )
        .await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;

    // The CLI does the same.
    crate::mfa::with_totp(&app, "eve@example.com").await;
    let out = app
        .cli()
        .args(["user", "reset-mfa", "eve@example.com"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eve: Value = app
        .login("eve@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    assert!(eve["access_token"].is_string(), "{eve}");
}
