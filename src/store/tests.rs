//! The storage wing's own tests, on SQLite (the API suite runs on both).

use rusqlite::Connection;
use uuid::Uuid;

use super::db::sqlite::connection::SCHEMA_VERSION;
use super::*;
use crate::clock::Millis;

fn no_audit() -> crate::store::RotationAudit {
    use crate::audit::{Action, NewEvent, Origin};
    crate::store::RotationAudit {
        refreshed: NewEvent::new(Action::TokenRefreshed, &Origin::default()),
        reused: NewEvent::new(Action::RefreshTokenReused, &Origin::default()),
    }
}

fn no_limit() -> SessionLimit {
    use crate::audit::{Action, NewEvent, Origin};
    SessionLimit {
        max: 100,
        evicted: NewEvent::new(Action::SessionRevoked, &Origin::default()),
    }
}

fn user(email: &str) -> NewUser {
    NewUser {
        id: Uuid::new_v4(),
        email: email.into(),
        name: None,
        password_hash: "x".into(),
        is_admin: false,
        created_at: 1,
    }
}

fn session(user_id: Uuid, now: Millis) -> Session {
    Session {
        id: Uuid::new_v4(),
        user_id,
        kind: SessionKind::Api,
        amr: Amr::PWD,
        remember_me: false,
        created_at: now,
        last_used_at: now,
        expires_at: now + 1_000,
        revoked_at: None,
        ip_address: None,
        user_agent: None,
        grant: None,
    }
}

#[tokio::test]
async fn schema_is_idempotent_and_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(Store::sqlite(&path).unwrap());
    drop(Store::sqlite(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let err = Store::sqlite(&path).err().unwrap().to_string();
    assert!(err.contains("newer"), "{err}");
}

/// A database made by the first schema gains the columns and tables of the
/// current one, and keeps its rows: an old session reads as an API session
/// opened with a password.
#[tokio::test]
async fn a_version_1_database_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(include_str!("testdata/schema-v1.sql"))
        .unwrap();
    conn.execute_batch(
        "INSERT INTO users (id, email, password_hash, created_at, updated_at)
         VALUES ('00000000-0000-4000-8000-000000000001', 'old@example.com', 'x', 1, 1);
         INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at)
         VALUES ('00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-000000000001', 1, 1, 9999999999999);",
    )
    .unwrap();
    drop(conn);
    let store = Store::sqlite(&path).unwrap();
    let session = store
        .session(Uuid::parse_str("00000000-0000-4000-8000-000000000002").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.kind, SessionKind::Api);
    assert_eq!(session.amr, Amr::PWD);
    let user_id = Uuid::parse_str("00000000-0000-4000-8000-000000000001").unwrap();
    assert!(store.groups_of(user_id).await.unwrap().is_empty());
    drop(store);
    // Opening it again changes nothing.
    drop(Store::sqlite(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

#[tokio::test]
async fn duplicate_email_is_email_taken() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::sqlite(&dir.path().join("db")).unwrap();
    store
        .create_user(user("a@example.com"), Vec::new())
        .await
        .unwrap();
    let err = store
        .create_user(user("a@example.com"), Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::EmailTaken));
}

#[tokio::test]
async fn rotation_retires_and_detects_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::sqlite(&dir.path().join("db")).unwrap();
    let u = store
        .create_user(user("a@example.com"), Vec::new())
        .await
        .unwrap();
    let s = session(u.id, 10);
    store
        .create_session(s.clone(), [1; 32], no_limit(), Vec::new())
        .await
        .unwrap();

    let r = store
        .rotate_refresh([1; 32], [2; 32], None, 20, no_audit())
        .await
        .unwrap();
    assert!(matches!(r, Rotation::Rotated(ref got) if got.id == s.id && got.last_used_at == 20));
    assert_eq!(
        store
            .rotate_refresh([9; 32], [3; 32], None, 21, no_audit())
            .await
            .unwrap(),
        Rotation::Invalid
    );
    let r = store
        .rotate_refresh([1; 32], [3; 32], None, 22, no_audit())
        .await
        .unwrap();
    assert_eq!(
        r,
        Rotation::Reused {
            session_id: s.id,
            user_id: u.id
        }
    );
    // The whole session is revoked: the current token no longer works either.
    assert_eq!(
        store
            .rotate_refresh([2; 32], [4; 32], None, 23, no_audit())
            .await
            .unwrap(),
        Rotation::Invalid
    );
    let revoked = store.revoked_since(0).await.unwrap();
    assert_eq!(
        revoked,
        vec![Revoked {
            session_id: s.id,
            revoked_at: 22
        }]
    );
}

#[tokio::test]
async fn expired_session_does_not_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::sqlite(&dir.path().join("db")).unwrap();
    let u = store
        .create_user(user("a@example.com"), Vec::new())
        .await
        .unwrap();
    let s = session(u.id, 10);
    store
        .create_session(s.clone(), [1; 32], no_limit(), Vec::new())
        .await
        .unwrap();
    let r = store
        .rotate_refresh([1; 32], [2; 32], None, s.expires_at, no_audit())
        .await
        .unwrap();
    assert_eq!(r, Rotation::Invalid);
}

#[tokio::test]
async fn disabling_revokes_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::sqlite(&dir.path().join("db")).unwrap();
    let u = store
        .create_user(user("a@example.com"), Vec::new())
        .await
        .unwrap();
    store
        .create_session(session(u.id, 10), [1; 32], no_limit(), Vec::new())
        .await
        .unwrap();
    store
        .create_session(session(u.id, 10), [2; 32], no_limit(), Vec::new())
        .await
        .unwrap();
    let revoked = store
        .set_disabled(u.id, true, 50, Vec::new())
        .await
        .unwrap()
        .expect("the account exists");
    assert_eq!(revoked.len(), 2);
    assert!(store.live_sessions(u.id, 60).await.unwrap().is_empty());
    assert_eq!(store.revoked_since(50).await.unwrap().len(), 2);
    assert!(store.user_by_id(u.id).await.unwrap().unwrap().is_disabled());
    assert_eq!(
        store
            .set_disabled(u.id, false, 70, Vec::new())
            .await
            .unwrap(),
        Some(Vec::new())
    );
    assert!(!store.user_by_id(u.id).await.unwrap().unwrap().is_disabled());
    assert!(store
        .set_disabled(Uuid::new_v4(), true, 80, Vec::new())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn list_users_filters_literally() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::sqlite(&dir.path().join("db")).unwrap();
    store
        .create_user(user("a_b@example.com"), Vec::new())
        .await
        .unwrap();
    store
        .create_user(user("axb@example.com"), Vec::new())
        .await
        .unwrap();
    let found: Vec<_> = store
        .list_users(Some("A_B".into()))
        .await
        .unwrap()
        .into_iter()
        .map(|(user, _)| user)
        .collect();
    assert_eq!(found.len(), 1);
    assert_eq!(store.list_users(None).await.unwrap().len(), 2);
}

/// Units commit a change with its rows, or neither; a failing unit does not
/// take the others of its batch with it, and the chain stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_commit_a_change_with_its_rows_or_neither() {
    use crate::audit::{Action, NewEvent, Origin};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = Store::sqlite(&path).unwrap();
    let change = |email: &'static str, fail: bool| {
        let store = store.clone();
        async move {
            store
                .db
                .unit(db::Chain::After, 1, move |c| {
                    Box::pin(async move {
                        c.execute(
                            "INSERT INTO users (id, email, password_hash, is_admin, created_at, updated_at)
                             VALUES ($1, $2, 'x', FALSE, 0, 0)",
                            &[&Uuid::new_v4().to_string(), &email],
                        )
                        .await?;
                        if fail {
                            return Err(StoreError::EmailTaken);
                        }
                        let row = NewEvent::new(Action::RegistrationSuccess, &Origin::default())
                            .extra("email", email);
                        Ok((email, vec![row]))
                    })
                })
                .await
        }
    };
    // Sent together, so that they share batches.
    let (a, b, c, d) = tokio::join!(
        change("a@example.com", false),
        change("b@example.com", true),
        change("c@example.com", false),
        change("a@example.com", false), // the email is unique: the insert fails
    );
    assert_eq!(a.unwrap(), "a@example.com");
    assert!(matches!(b, Err(StoreError::EmailTaken)));
    assert_eq!(c.unwrap(), "c@example.com");
    assert!(matches!(d, Err(StoreError::Duplicate(_))));
    store.stop().await;

    let mut db = Connection::open(&path).unwrap();
    let column = |sql: &str| -> Vec<String> {
        db.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        column("SELECT email FROM users ORDER BY email"),
        ["a@example.com", "c@example.com"]
    );
    let mut rows = column("SELECT json_extract(extra_data, '$.email') FROM audit_log ORDER BY id");
    rows.sort();
    assert_eq!(rows, ["a@example.com", "c@example.com"]);
    assert!(audit::verify_sqlite(&mut db).unwrap().ok);
}

/// Statements are written once for both databases: SQLite's dialect is made
/// from them mechanically.
#[test]
fn the_sqlite_dialect_is_derived() {
    assert_eq!(
        db::lite("SELECT a FROM t WHERE id = $1 AND b = $12 FOR UPDATE"),
        "SELECT a FROM t WHERE id = ?1 AND b = ?12"
    );
    // Quoted text is the data's, not the dialect's.
    assert_eq!(
        db::lite("SELECT json_extract(x, '$.a'), 'it''s $2 FOR UPDATE' FROM t WHERE c = $1"),
        "SELECT json_extract(x, '$.a'), 'it''s $2 FOR UPDATE' FROM t WHERE c = ?1"
    );
    assert!(matches!(
        db::lite("SELECT 1"),
        std::borrow::Cow::Borrowed(_)
    ));
}
