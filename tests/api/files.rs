//! Files only the server's user may read, whatever the umask (SPEC section 1).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{http_client, ServerProcess, PASSWORD};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// With umask 000 every file would be world-readable by default: the data
/// directory and the outbox are 0700, and the database with its -wal and
/// -shm, the key file and a reset mail (a live reset link) are 0600.
#[tokio::test]
async fn every_file_is_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = ServerProcess::command(&data, &[], &[]);
    // SAFETY: umask is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut server = ServerProcess::start_command(cmd);
    let base = format!("http://{}", server.address);
    let client = http_client();
    let res = client
        .post(format!("{base}/auth/register"))
        .json(&json!({ "email": "pat@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = client
        .post(format!("{base}/auth/password-reset/request"))
        .json(&json!({ "email": "pat@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    // The mail goes out after the answer: wait for its whole file (the
    // mailer writes `.eml.part` and renames it).
    let outbox = data.join("outbox");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mail = loop {
        let found = std::fs::read_dir(&outbox).ok().and_then(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "eml"))
        });
        if let Some(path) = found {
            break path;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no mail in the outbox"
        );
        tokio::task::yield_now().await;
        std::thread::sleep(std::time::Duration::from_millis(10));
    };

    assert_eq!(mode(&data), 0o700, "data_dir");
    assert_eq!(mode(&outbox), 0o700, "outbox");
    assert_eq!(mode(&mail), 0o600, "{}", mail.display());
    for file in [
        "portcullis.db",
        "portcullis.db-wal",
        "portcullis.db-shm",
        "encryption.key",
        "portcullis.lock",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    let socket = data.join(format!("portcullis-{}.sock", server.child.id()));
    assert_eq!(mode(&socket), 0o600, "the control socket");
    assert!(server.signal("-TERM").success());
    assert!(!socket.exists(), "the socket goes with the server");
    // The CLI on the same data makes nothing readable either.
    let out = crate::helpers::portcullis()
        .args(["user", "list", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    for file in ["portcullis.db", "encryption.key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}

/// Files an earlier version left readable are narrowed at the next start.
#[tokio::test]
async fn files_left_readable_are_narrowed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(&data, &[], &[]);
    assert!(server.signal("-TERM").success());
    let db = data.join("portcullis.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut server = ServerProcess::start(&data, &[], &[]);
    assert_eq!(mode(&db), 0o600);
    assert!(server.signal("-TERM").success());
}
