//! The binary itself: configuration checks, user commands, signals.

use std::io::Write;
use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{portcullis, ServerProcess, PASSWORD};

#[test]
fn check_config_prints_effective_config_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        "[tokens]\nalgorithm = \"HS256\"\nsecret = \"a-very-long-hs256-secret-of-40-bytes!!\"\n",
    )
    .unwrap();
    let out = portcullis()
        .args(["check-config", "--config"])
        .arg(&file)
        .env("PORTCULLIS_SERVER__BIND", "0.0.0.0:9000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("bind = \"0.0.0.0:9000\""), "{text}");
    assert!(text.contains("secret = \"***\""), "{text}");
    assert!(!text.contains("a-very-long"), "{text}");
    let parsed: toml::Table = text.parse().unwrap();
    assert_eq!(
        parsed["rate_limit"]["rules"]["login_ip"]["window"].as_str(),
        Some("15m")
    );
}

#[test]
fn config_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "[server]\nbnid = \"x\"\n").unwrap();
    for args in [
        vec!["check-config", "--config", file.to_str().unwrap()],
        vec!["check-config", "--config", "/does/not/exist.toml"],
    ] {
        let out = portcullis().args(&args).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("error: "), "{err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
    let out = portcullis()
        .args(["check-config"])
        .env("PORTCULLIS_RATE_LIMIT__RULES__LOGIN_IP__WINDOW", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("rate_limit.rules.login_ip.window"), "{err}");
    let out = portcullis().args(["--no-such-flag"]).output().unwrap();
    assert!(!out.status.success());
}

fn user_add(
    dir: &std::path::Path,
    email: &str,
    admin: bool,
    password: &str,
) -> std::process::Output {
    let mut cmd = portcullis();
    cmd.args([
        "user",
        "add",
        "--email",
        email,
        "--password-stdin",
        "--data-dir",
    ])
    .arg(dir);
    if admin {
        cmd.arg("--admin");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn first_admin_from_the_cli_then_serve_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let out = user_add(dir.path(), "Root@Example.com", true, PASSWORD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("root@example.com"));

    let out = user_add(dir.path(), "weak@example.com", false, "password");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("password"), "{err}");
    assert!(!err.contains("panicked"));

    let out = portcullis()
        .args(["user", "list", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("root@example.com") && !listing.contains("weak@"),
        "{listing}"
    );

    let mut server = ServerProcess::start(dir.path(), &[], &[]);
    let address = server.address.clone();
    let client = reqwest::Client::new();
    let res = client
        .post(format!("http://{address}/auth/login"))
        .json(&json!({ "email": "root@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let pair: Value = res.json().await.unwrap();
    let me: Value = client
        .get(format!("http://{address}/auth/me"))
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["is_admin"], true);

    let exit = server.signal("-TERM");
    assert!(exit.success(), "exit {exit:?}");
    assert!(dir.path().join("portcullis.db").exists());
}

#[test]
fn sigint_is_graceful_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[], &[]);
    assert!(server.signal("-INT").success());
}

#[tokio::test]
async fn json_logs_one_line_per_request_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &["--log-format", "json"], &[]);
    let address = server.address.clone();
    let client = reqwest::Client::new();
    client
        .post(format!("http://{address}/auth/register"))
        .json(&json!({ "email": "log@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let res = client
        .post(format!("http://{address}/auth/login"))
        .header("x-request-id", "log-test-1")
        .json(&json!({ "email": "log@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let pair: Value = res.json().await.unwrap();
    assert!(server.signal("-TERM").success());
    let lines: Vec<String> = server.log.try_iter().collect();
    let requests: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["message"] == "request")
        .collect();
    let login: Vec<&Value> = requests
        .iter()
        .filter(|v| v["request_id"] == "log-test-1")
        .collect();
    assert_eq!(login.len(), 1, "one line per request");
    assert_eq!(login[0]["route"], "/auth/login");
    assert_eq!(login[0]["method"], "POST");
    assert_eq!(login[0]["status"], 200);
    assert!(login[0]["latency_ms"].is_string());
    let all = lines.join("\n");
    for secret in [
        PASSWORD,
        pair["access_token"].as_str().unwrap(),
        pair["refresh_token"].as_str().unwrap(),
    ] {
        assert!(!all.contains(secret), "a secret reached the log");
    }
}
