//! Passkeys (SPEC section 14) end to end: `passkey_flows.py` drives the API
//! with the software authenticator of `soft_passkey.py`, then the audit log
//! is read back for what those flows must have left there, and what not;
//! `passkey_across.py` begins ceremonies on one instance and ends them on
//! another.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{without_limits, ServerProcess, TestApp, PASSWORD};

#[tokio::test]
async fn a_software_authenticator_signs_in_and_is_refused_where_it_should_be() {
    let app = TestApp::spawn_with(|c| {
        // The flows make many refused attempts on purpose.
        without_limits(c);
        c.webauthn.rp_id = "localhost".into();
        c.webauthn.origins = vec!["http://localhost".into()];
    })
    .await;
    let sent = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = crate::tools::python_command();
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/passkey_flows.py"
    ))
    .arg(&app.address)
    .arg(sent.path());
    let status = crate::tools::run_with_clock(app.clock.clone(), cmd).await;
    assert!(status.success(), "the passkey flows failed");

    let admin = app.signed_up_as_admin().await;
    let listing: Value = app
        .get_auth("/admin/audit?limit=1000", &admin)
        .await
        .json()
        .await
        .unwrap();
    let rows = listing["events"].as_array().cloned().unwrap_or_default();
    let extra = |row: &Value| -> Value {
        match &row["extra_data"] {
            Value::String(s) => serde_json::from_str(s).expect("extra_data is JSON"),
            other => other.clone(),
        }
    };
    // Rows of `action`, those whose extra_data has `key` = `value` when given.
    let count = |action: &str, with: Option<(&str, &str)>| {
        rows.iter()
            .filter(|r| r["action"] == action)
            .filter(|r| with.is_none_or(|(key, value)| extra(r)[key] == value))
            .count()
    };

    // Alice's laptop and spare key, and Bob's; both of Alice's removed.
    // Three in the first checks, twenty for the bound, two after a stale sign-in.
    assert_eq!(count("passkey_added", None), 25, "passkey_added rows");
    assert_eq!(count("passkey_removed", None), 2, "passkey_removed rows");
    assert_eq!(
        count("passkey_removed", Some(("reason", "counter_went_back"))),
        1,
        "the cloned passkey is removed"
    );
    assert!(
        count("login_success", Some(("method", "passkey"))) > 0,
        "no login_success with method passkey"
    );
    assert!(
        count("login_failed", Some(("reason", "passkey_invalid"))) > 0,
        "no login_failed with reason passkey_invalid"
    );
    // The one sign-in whose counter went backwards.
    assert_eq!(
        count("login_failed", Some(("reason", "passkey_counter"))),
        1,
        "login_failed rows with reason passkey_counter"
    );

    // No signature, client data, authenticator data or attestation in any row.
    let sent = std::fs::read_to_string(sent.path()).expect("the values the flows sent");
    let sent: Vec<&str> = sent.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        sent.len() > 20,
        "the flows noted only {} values",
        sent.len()
    );
    for row in &rows {
        let text = row.to_string();
        for value in &sent {
            assert!(
                !text.contains(value),
                "a credential's {value} in the audit log: {text}"
            );
        }
    }
}

/// A passkey ceremony begun on one instance finishes on another (its
/// challenge is stored, not held in memory), once; and a passkey alone is
/// two factors to forward authentication, a password alone one (SPEC
/// sections 12 and 14).
#[tokio::test]
async fn a_passkey_ceremony_begun_on_one_instance_finishes_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let envs = [
        ("PORTCULLIS_WEBAUTHN__RP_ID", "localhost"),
        ("PORTCULLIS_WEBAUTHN__ORIGINS", r#"["http://localhost"]"#),
        ("PORTCULLIS_SERVER__TRUSTED_PROXIES", r#"["127.0.0.1/32"]"#),
        (
            "PORTCULLIS_FORWARD_AUTH__RULES",
            r#"[{domain = "admin.example.com", policy = "two_factor"}]"#,
        ),
    ];
    let a = ServerProcess::start(dir.path(), &[], &envs);
    let b = ServerProcess::start(dir.path(), &[], &envs);
    let (a_url, b_url) = (
        format!("http://{}", a.address),
        format!("http://{}", b.address),
    );
    let client = reqwest::Client::new();
    let email = "across@example.com";
    let res = client
        .post(format!("{a_url}/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let mut cmd = crate::tools::python_command();
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/passkey_across.py"
    ))
    .args([&a_url, &b_url, email, PASSWORD]);
    let out = crate::tools::output(cmd).await;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the passkey ceremonies across instances failed:\n{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = |kind: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{kind} ")))
            .unwrap_or_else(|| panic!("no {kind} token in {printed}"))
            .to_owned()
    };
    for (kind, expected) in [
        ("passkey", StatusCode::OK),
        ("password", StatusCode::UNAUTHORIZED),
    ] {
        let res = client
            .get(format!("{b_url}/authz/forward-auth"))
            .bearer_auth(token(kind))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "admin.example.com")
            .header("x-forwarded-uri", "/")
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            expected,
            "a {kind} session at a two_factor rule"
        );
        if expected == StatusCode::OK {
            assert_eq!(res.headers()["remote-user"], email);
        }
    }
}

/// Each `login/start` stores a challenge: `passkey_start_ip` bounds them
/// per address (30 a minute by default), and a 429 stores nothing.
#[tokio::test]
async fn starting_sign_ins_is_rate_limited_per_address() {
    let app = TestApp::spawn_with(|c| {
        c.webauthn.rp_id = "localhost".into();
        c.webauthn.origins = vec!["http://localhost".into()];
    })
    .await;
    let limit = app.config.rate_limit.rules[&portcullis::config::RuleName::PasskeyStartIp].limit;
    for i in 0..limit {
        let res = app.post("/auth/passkeys/login/start", &json!({})).await;
        assert_eq!(res.status(), StatusCode::OK, "start {i}");
    }
    let stored = app.count("SELECT count(*) FROM webauthn_challenges");
    let res = app.post("/auth/passkeys/login/start", &json!({})).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(
        app.count("SELECT count(*) FROM webauthn_challenges"),
        stored
    );
    assert_eq!(stored, i64::from(limit));
}
