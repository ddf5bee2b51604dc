//! Passkeys on the pages (SPEC sections 11 and 14) in headless Chromium with
//! WebDriver's virtual authenticator (`passkey_browser.py`): added on the
//! account's passkeys page, used to sign in alone and as the second step
//! after a password, removed, then refused. What the run leaves in the audit
//! log and the sessions is read back here.

use serde_json::Value;

use crate::helpers::{TestApp, PASSWORD};
use crate::pages::screenshots;

const EMAIL: &str = "grace@example.com";

#[tokio::test]
async fn passkeys_work_in_a_real_browser() {
    crate::tools::program("chromium", "chromium");
    crate::tools::program("chromedriver", "chromium-driver");
    let axe = crate::tools::axe_core();
    let app = TestApp::spawn_with(|c| {
        c.webauthn.rp_id = "localhost".into();
        c.webauthn.origins = vec!["http://localhost".into()];
    })
    .await;
    // Browsers refuse WebAuthn on an IP address.
    let base = app.address.replace("127.0.0.1", "localhost");
    let mut cmd = crate::tools::python_command();
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/passkey_browser.py"
    ))
    .arg(&base)
    .arg(screenshots())
    .arg(&axe)
    .arg(EMAIL)
    .arg(PASSWORD);
    let status = crate::tools::run_with_clock(app.clock.clone(), cmd).await;
    assert!(
        status.success(),
        "the passkey browser run failed (screenshots so far in {})",
        screenshots().display()
    );

    // The audit log (the only account is this one), extra_data as JSON.
    let rows: Vec<(String, Value)> = app
        .query("SELECT action, extra_data FROM audit_log ORDER BY id")
        .into_iter()
        .map(|row| {
            let extra = serde_json::from_str(&row[1]).expect("extra_data is JSON");
            (row[0].clone(), extra)
        })
        .collect();
    // Rows of `action` whose extra_data has each of `with`.
    let count = |action: &str, with: &[(&str, Value)]| {
        rows.iter()
            .filter(|(a, extra)| a == action && with.iter().all(|(k, v)| extra[k] == *v))
            .count()
    };
    let actions: Vec<&str> = rows.iter().map(|(a, _)| a.as_str()).collect();
    // Added by the script through the JSON API (with the session cookie: a
    // call of the pages), removed with the page's form.
    assert_eq!(
        count("passkey_added", &[("via", "web".into())]),
        1,
        "{actions:?}"
    );
    assert_eq!(
        count("passkey_removed", &[("via", "web".into())]),
        1,
        "{actions:?}"
    );
    // Alone on the login page, and as the second step after the password.
    let with_passkey = [("method", "passkey".into()), ("via", "web".into())];
    assert_eq!(count("login_success", &with_passkey), 2, "{rows:?}");
    let second = [
        ("method", "passkey".into()),
        ("mfa", true.into()),
        ("via", "web".into()),
    ];
    assert_eq!(count("login_success", &second), 1, "{rows:?}");
    assert_eq!(count("mfa_success", &[]), 1, "{actions:?}");
    // Refused once the server no longer knows the authenticator's credential.
    let invalid = [
        ("method", "passkey".into()),
        ("reason", "passkey_invalid".into()),
    ];
    assert_eq!(count("login_failed", &invalid), 1, "{rows:?}");
    assert_eq!(count("login_failed", &[]), 1, "{rows:?}");
    let removed = actions.iter().position(|a| *a == "passkey_removed");
    let refused = actions.iter().position(|a| *a == "login_failed");
    assert!(removed < refused, "{actions:?}");

    // Browser sessions only: the password alone at registration and at
    // each password sign-in without a second step; the passkey alone,
    // which counts as two factors; the password and then the passkey.
    let mut sessions: Vec<(String, Vec<String>)> = app
        .query("SELECT kind, amr FROM sessions")
        .into_iter()
        .map(|row| {
            let mut amr: Vec<String> = row[1].split(',').map(str::to_owned).collect();
            amr.sort();
            (row[0].clone(), amr)
        })
        .collect();
    sessions.sort();
    let browser = |amr: &[&str]| {
        (
            "browser".to_owned(),
            amr.iter().map(|f| f.to_string()).collect(),
        )
    };
    assert_eq!(
        sessions,
        vec![
            browser(&["hwk", "pwd"]),
            browser(&["hwk", "user"]),
            browser(&["pwd"]),
            browser(&["pwd"]),
            browser(&["pwd"]),
        ],
    );
}
