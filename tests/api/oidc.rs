//! The OpenID Connect provider (SPEC section 13) with stock clients:
//! `oidc_flows.py` drives authlib (a confidential and a public PKCE client)
//! and PyJWT against a real server whose clock this test holds; what the
//! audit log and storage then say is checked here.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use portcullis::config::{ClientAuthMethod, Consent, OidcClientConfig};
use serde_json::Value;

use crate::helpers::{TestApp, PASSWORD};

fn clients() -> Vec<OidcClientConfig> {
    vec![
        OidcClientConfig {
            id: "app".into(),
            secret: "app-secret-0123456789".into(),
            redirect_uris: vec!["http://app.example/cb".into()],
            post_logout_redirect_uris: vec!["http://app.example/bye".into()],
            ..OidcClientConfig::default()
        },
        OidcClientConfig {
            id: "spa".into(),
            public: true,
            redirect_uris: vec!["http://spa.example/cb".into()],
            consent: Consent::Implicit,
            ..OidcClientConfig::default()
        },
        OidcClientConfig {
            id: "posty".into(),
            secret: "posty-secret-0123456789".into(),
            redirect_uris: vec!["http://posty.example/cb".into()],
            token_endpoint_auth_method: Some(ClientAuthMethod::ClientSecretPost),
            consent: Consent::Implicit,
            refresh_tokens: true,
            ..OidcClientConfig::default()
        },
    ]
}

/// Runs a Python script that may ask for the server's time and move its clock.
async fn run_with_clock(app: &TestApp, script: &str, args: &[&str]) -> std::process::ExitStatus {
    let mut cmd = crate::tools::python_command();
    cmd.arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let clock = app.clock.clone();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("python runs");
        let mut to_script = child.stdin.take().expect("stdin");
        let from_script = BufReader::new(child.stdout.take().expect("stdout"));
        for line in from_script.lines() {
            let line = line.expect("a line from the script");
            let answer = match line.split_once(' ') {
                None if line == "now" => {
                    use portcullis::clock::Clock;
                    clock.now_ms().to_string()
                }
                None if line == "done" => continue,
                Some(("advance", secs)) => {
                    clock.advance(std::time::Duration::from_secs(
                        secs.parse().expect("seconds"),
                    ));
                    "ok".to_owned()
                }
                _ => panic!("the script said {line:?}"),
            };
            writeln!(to_script, "{answer}").expect("answer the script");
        }
        child.wait().expect("the script ends")
    })
    .await
    .expect("the script's thread")
}

#[tokio::test]
async fn stock_clients_sign_in_refresh_and_are_refused_where_they_should_be() {
    let app = TestApp::spawn_with(|c| c.oidc.clients = clients()).await;
    let email = "oidc@example.com";
    app.signed_up(email).await;
    let status = run_with_clock(
        &app,
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/oidc_flows.py"),
        &[&app.address, email, PASSWORD],
    )
    .await;
    assert!(status.success(), "the OIDC flows failed");

    // What the audit log says: consent, codes, tokens, reuse, revocation,
    // logout, each naming its client; no code or token in any row.
    let admin = app.signed_up_as_admin().await;
    let listing: Value = app
        .client
        .get(app.url("/admin/audit?limit=1000"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = listing["events"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = rows
        .iter()
        .map(|r| r["action"].as_str().unwrap_or(""))
        .collect();
    for action in [
        "oidc_consent_granted",
        "oidc_code_issued",
        "oidc_tokens_issued",
        "oidc_code_reused",
        "oidc_token_revoked",
        "oidc_logout",
        "refresh_token_reused",
    ] {
        assert!(actions.contains(&action), "no {action} in {actions:?}");
    }
    for row in &rows {
        let action = row["action"].as_str().unwrap_or("");
        if action.starts_with("oidc_") {
            let extra: Value = match &row["extra_data"] {
                Value::String(s) => serde_json::from_str(s).expect("extra_data is JSON"),
                other => other.clone(),
            };
            assert!(
                extra["client_id"].is_string(),
                "{action} names no client: {row}"
            );
        }
        let text = row.to_string();
        assert!(
            !text.contains("secret-0123456789"),
            "a client secret in the audit log: {text}"
        );
    }
}
