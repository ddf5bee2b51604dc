//! The binary itself: configuration checks, user commands, signals.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::PASSWORD;

fn portcullis() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("PORTCULLIS_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

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

/// Starts the binary on port 0 and reads the bound address from its log.
fn spawn_server(dir: &std::path::Path) -> (std::process::Child, String) {
    let mut child = portcullis()
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("PORTCULLIS_PASSWORDS__ARGON2_MEMORY_KIB", "1024")
        .env("PORTCULLIS_PASSWORDS__ARGON2_ITERATIONS", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let address = loop {
        assert!(Instant::now() < deadline, "server did not start");
        let line = lines.next().expect("server exited").unwrap();
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, address)
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

    let (mut child, address) = spawn_server(dir.path());
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

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit {exit:?}");
    assert!(dir.path().join("portcullis.db").exists());
}

#[test]
fn sigint_is_graceful_too() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _address) = spawn_server(dir.path());
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn json_logs_one_line_per_request_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = portcullis()
        .args([
            "--bind",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("PORTCULLIS_PASSWORDS__ARGON2_MEMORY_KIB", "1024")
        .env("PORTCULLIS_PASSWORDS__ARGON2_ITERATIONS", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let address = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a log line");
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "portcullis listening" {
            break v["address"].as_str().unwrap().to_owned();
        }
    };
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
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let lines: Vec<String> = rx.try_iter().collect();
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
