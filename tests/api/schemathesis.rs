//! schemathesis fuzzes the running binary from its own `/openapi.json`: no
//! 5xx, and no answer that contradicts the document. Bounded: a fixed seed
//! and a fixed number of examples per operation (`SCHEMATHESIS_EXAMPLES`,
//! 25 by default).
//!
//! `positive_data_acceptance` is left out: the SPEC answers some schema-valid
//! bodies with a documented 400 on purpose (a weak password, an unknown reset
//! token, an empty grant_type), which that check counts as a failure.

use std::io::Write;
use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{http_client, portcullis, ServerProcess};

#[tokio::test]
async fn schemathesis_finds_no_5xx_and_no_answer_off_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let password = "a long fuzzing admin passphrase";
    let mut add = portcullis()
        .args(["user", "add", "--email", "fuzz@example.com", "--admin"])
        .args(["--password-stdin", "--data-dir"])
        .arg(dir.path())
        .env("PORTCULLIS_PASSWORDS__ARGON2_MEMORY_KIB", "1024")
        .env("PORTCULLIS_PASSWORDS__ARGON2_ITERATIONS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "{password}").unwrap();
    assert!(add.wait().unwrap().success());

    let mut server = ServerProcess::start(dir.path(), &[], &[]);
    let address = server.address.clone();
    let res = http_client()
        .post(format!("http://{address}/auth/login"))
        .json(&json!({ "email": "fuzz@example.com", "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let pair: Value = res.json().await.unwrap();
    let token = pair["access_token"].as_str().unwrap();

    let examples = std::env::var("SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".into());
    let out = crate::tools::python_command()
        .args(["-m", "schemathesis.cli", "run"])
        .arg(format!("http://{address}/openapi.json"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .args([
            "--max-examples",
            &examples,
            "--seed",
            "1",
            "--checks",
            "all",
        ])
        .args(["--exclude-checks", "positive_data_acceptance", "--no-color"])
        .output()
        .expect("schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis failed:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    assert!(server.signal("-TERM").success());
}
