//! A third-party JWT library verifies our access tokens through the JWKS alone.

use serde_json::Value;

use crate::helpers::{token, TestApp};

async fn verify(app: &TestApp, jwt: &str) -> std::process::Output {
    let mut cmd = crate::tools::python_command();
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/verify_jwks.py"
    ))
    .args([
        app.url("/.well-known/jwks.json").as_str(),
        jwt,
        "portcullis",
        "portcullis",
    ]);
    crate::tools::output(cmd).await
}

#[tokio::test]
async fn pyjwt_verifies_access_tokens_from_the_jwks() {
    let app = TestApp::spawn().await;
    let pair = app.signed_up("jw@example.com").await;
    let jwt = token(&pair, "access_token");
    let out = verify(&app, &jwt).await;
    assert!(
        out.status.success(),
        "PyJWT refused the token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["email"], "jw@example.com");
    assert_eq!(claims["sid"], pair["session_id"]);

    // A tampered token fails there too.
    let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
    parts[2] = parts[2].chars().rev().collect();
    let out = verify(&app, &parts.join(".")).await;
    assert!(!out.status.success());
}
