//! The binary itself: configuration checks, user commands, signals.

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
    crate::helpers::output_with_stdin(&mut cmd, &format!("{password}\n"))
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
    let client = crate::helpers::http_client();
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
fn the_start_line_names_the_public_url_and_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[], &[]);
    let line = &server.start_line;
    assert!(
        line.contains(&format!("public_url=http://{} ", server.address)),
        "{line}"
    );
    assert!(line.contains("config=none"), "{line}");
    assert!(server.signal("-TERM").success());

    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        "[server]\npublic_url = \"https://auth.example.com\"\n",
    )
    .unwrap();
    let mut server = ServerProcess::start(dir.path(), &["--config", file.to_str().unwrap()], &[]);
    let line = &server.start_line;
    assert!(
        line.contains("public_url=https://auth.example.com "),
        "{line}"
    );
    assert!(
        line.contains(&format!("config={}", file.display())),
        "{line}"
    );
    assert!(server.signal("-TERM").success());
}

#[test]
fn a_busy_port_says_how_to_choose_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = portcullis()
        .args(["--bind", &address, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("error: cannot listen on {address}")),
        "{err}"
    );
    assert!(
        last.contains("--bind") && last.contains("PORTCULLIS_SERVER__BIND"),
        "{err}"
    );
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
    let client = crate::helpers::http_client();
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
    assert!(
        login[0]["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{}",
        login[0]
    );
    let all = lines.join("\n");
    for secret in [
        PASSWORD,
        pair["access_token"].as_str().unwrap(),
        pair["refresh_token"].as_str().unwrap(),
    ] {
        assert!(!all.contains(secret), "a secret reached the log");
    }
}

/// The CLI writing to the database while the server is busy with it: every
/// command succeeds, the server answers no 5xx, and the database, its audit
/// chain and the CLI's changes are all intact afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_beside_a_busy_server_never_corrupts_the_database() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        dir.path(),
        &[],
        &[
            ("PORTCULLIS_RATE_LIMIT__RULES__LOGIN_IP__ENABLED", "false"),
            (
                "PORTCULLIS_RATE_LIMIT__RULES__LOGIN_ACCOUNT__ENABLED",
                "false",
            ),
            (
                "PORTCULLIS_RATE_LIMIT__RULES__REGISTER_IP__ENABLED",
                "false",
            ),
            (
                "PORTCULLIS_RATE_LIMIT__RULES__REGISTER_IP_HOURLY__ENABLED",
                "false",
            ),
            ("PORTCULLIS_RATE_LIMIT__RULES__REFRESH_IP__ENABLED", "false"),
        ],
    );
    let base = format!("http://{}", server.address);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut traffic = Vec::new();
    for w in 0..4 {
        let (stop, served, base) = (stop.clone(), served.clone(), base.clone());
        traffic.push(tokio::spawn(async move {
            let client = crate::helpers::http_client();
            let email = format!("busy{w}@example.com");
            let res = client
                .post(format!("{base}/auth/register"))
                .json(&json!({ "email": email, "password": PASSWORD }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
            while !stop.load(Ordering::SeqCst) {
                let res = client
                    .post(format!("{base}/auth/login"))
                    .json(&json!({ "email": email, "password": PASSWORD }))
                    .send()
                    .await
                    .unwrap();
                assert!(!res.status().is_server_error(), "login: {}", res.status());
                let pair: Value = res.json().await.unwrap();
                let res = client
                    .post(format!("{base}/auth/refresh"))
                    .json(&json!({ "refresh_token": pair["refresh_token"] }))
                    .send()
                    .await
                    .unwrap();
                assert!(!res.status().is_server_error(), "refresh: {}", res.status());
                let res = client
                    .post(format!("{base}/auth/login"))
                    .json(&json!({ "email": email, "password": "wrong wrong wrong" }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
                served.fetch_add(3, Ordering::SeqCst);
            }
        }));
    }

    let data_dir = dir.path().to_path_buf();
    let cli = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let out = portcullis()
                .args(args)
                .arg("--data-dir")
                .arg(&data_dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out
        };
        for i in 0..6 {
            let email = format!("cli{i}@example.com");
            let out = user_add(&data_dir, &email, false, PASSWORD);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            run(&["user", "disable", &email]);
            run(&["user", "enable", &email]);
            run(&["user", "disable", &email]);
            run(&["audit", "list", "--limit", "50", "--format", "json"]);
            run(&["audit", "verify"]);
            run(&["audit", "prune", "--older-than", "30d"]);
        }
    });
    cli.await.unwrap();
    stop.store(true, Ordering::SeqCst);
    for t in traffic {
        t.await.unwrap();
    }
    assert!(served.load(Ordering::SeqCst) > 0);

    // The CLI's last word holds: the server refuses the disabled accounts.
    let client = crate::helpers::http_client();
    let res = client
        .post(format!("{base}/auth/login"))
        .json(&json!({ "email": "cli5@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(server.signal("-TERM").success());

    let conn = rusqlite::Connection::open(dir.path().join("portcullis.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let users: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM users WHERE email LIKE 'cli%' AND disabled_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(users, 6);
    let out = portcullis()
        .args(["audit", "verify", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A flood of one refused request writes a few lines and one summary per
/// route and status, not a line per request; at `debug` every line is there.
#[tokio::test]
async fn repeated_request_lines_fold_under_a_flood() {
    for debug in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let envs: &[(&str, &str)] = if debug { &[("RUST_LOG", "debug")] } else { &[] };
        let mut server = ServerProcess::start(dir.path(), &["--log-format", "json"], envs);
        let address = server.address.clone();
        let client = crate::helpers::http_client();
        for _ in 0..60 {
            client
                .post(format!("http://{address}/auth/login"))
                .json(&json!({ "email": "flood@example.com", "password": "guess guess" }))
                .send()
                .await
                .unwrap();
        }
        assert!(server.signal("-TERM").success());
        let lines: Vec<Value> = server
            .log
            .try_iter()
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect();
        let requests = |status: u64, level: &str| {
            lines
                .iter()
                .filter(|v| {
                    v["message"] == "request" && v["status"] == status && v["level"] == level
                })
                .count()
        };
        let summary = |status: u64| {
            lines
                .iter()
                .find(|v| v["status"] == status && v["folded"].is_u64())
                .map(|v| v["folded"].as_u64().unwrap())
        };
        // Five wrong passwords, then 55 refusals, all from one address.
        assert_eq!(requests(401, "INFO"), 3, "debug {debug}");
        assert_eq!(requests(429, "INFO"), 3, "debug {debug}");
        assert_eq!(summary(401), Some(2), "debug {debug}");
        assert_eq!(summary(429), Some(52), "debug {debug}");
        let at_debug = if debug { (2, 52) } else { (0, 0) };
        assert_eq!((requests(401, "DEBUG"), requests(429, "DEBUG")), at_debug);
    }
}

/// Every option and argument of every command has a one-line description,
/// and a command lists only the options it uses.
#[test]
fn help_describes_every_option_and_only_the_command_s_own() {
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["check-config"],
        &["user", "add"],
        &["user", "list"],
        &["user", "disable"],
        &["user", "enable"],
        &["user", "promote"],
        &["user", "demote"],
        &["rate-limit", "list"],
        &["rate-limit", "clear"],
        &["audit", "list"],
        &["audit", "verify"],
        &["audit", "prune"],
    ];
    for command in commands {
        let out = portcullis().args(*command).arg("-h").output().unwrap();
        assert!(out.status.success(), "{command:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        let mut section = "";
        for line in help.lines() {
            if !line.starts_with(' ') {
                section = line;
                continue;
            }
            if section == "Options:" || section == "Arguments:" {
                let (term, description) = line
                    .trim_start()
                    .split_once("  ")
                    .unwrap_or_else(|| panic!("{command:?}: no description: {line:?}"));
                assert!(!description.trim().is_empty(), "{command:?}: {term}");
            }
        }
        let serving = command.is_empty() || command == &["serve"];
        assert_eq!(help.contains("--bind"), serving, "{command:?}:\n{help}");
        assert_eq!(
            help.contains("--log-format"),
            serving,
            "{command:?}:\n{help}"
        );
        assert!(help.contains("--data-dir"), "{command:?}:\n{help}");
    }
    let out = portcullis()
        .args(["--bind", "127.0.0.1:9", "user", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("options of `serve`"), "{err}");
}

/// Errors that say what to do: a variable that names no key, a data
/// directory that is not there, a key that does not open the database.
#[tokio::test]
async fn errors_say_what_to_do() {
    let out = portcullis()
        .args(["check-config"])
        .env("PORTCULLIS_SERVER_BIND", "0.0.0.0:9000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        "error: environment variable PORTCULLIS_SERVER_BIND: names no configuration key \
         (did you mean PORTCULLIS_SERVER__BIND?)\n"
    );

    let out = portcullis()
        .args(["check-config", "--config", "/does/not/exist.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");

    let elsewhere = tempfile::tempdir().unwrap();
    for args in [
        &["user", "list"][..],
        &["audit", "list"],
        &["rate-limit", "list"],
    ] {
        let out = portcullis()
            .args(args)
            .current_dir(elsewhere.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.starts_with("error: no database at ./data/portcullis.db")
                && err.contains("--data-dir"),
            "{args:?}: {err}"
        );
        assert!(
            !elsewhere.path().join("data").exists(),
            "{args:?} made a data directory"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    assert!(user_add(dir.path(), "ada@example.com", false, PASSWORD)
        .status
        .success());
    let out = portcullis()
        .args(["user", "list", "--data-dir"])
        .arg(dir.path())
        .env("PORTCULLIS_STORAGE__ENCRYPTION_KEY", "ab".repeat(32))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("is not the key this database was sealed with"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}", dir.path().join("encryption.key").display())),
        "{err}"
    );
    assert!(err.contains("unset storage.encryption_key"), "{err}");
    // Reading and checking the audit log needs no key at all.
    let out = portcullis()
        .args(["audit", "verify", "--data-dir"])
        .arg(dir.path())
        .env("PORTCULLIS_STORAGE__ENCRYPTION_KEY", "ab".repeat(32))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
