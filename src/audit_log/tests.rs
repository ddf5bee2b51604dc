use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use super::*;
use crate::audit::chain;
use crate::audit::query::{parse_time, Filter, Page};
use crate::audit::{Action, NewEvent, Origin};

/// The rate-limit key of `text`.
fn key(text: &str) -> crate::ratelimit::key::LimitKey {
    crate::ratelimit::key::KeyMaker::new(&[5; 32]).ip(text)
}
use crate::clock::{Clock, ManualClock};
use crate::store::Store;

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    clock: ManualClock,
    log: AuditLog,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.db");
    let store = Store::sqlite(&path).unwrap();
    let clock = ManualClock::new(1_800_000_000_000);
    let metrics = Arc::new(crate::metrics::Metrics::new().unwrap());
    let log = AuditLog::new(store, Arc::new(clock.clone()), 60_000, metrics);
    Fixture {
        _dir: dir,
        path,
        clock,
        log,
    }
}

fn origin() -> Origin {
    Origin {
        ip_address: Some("203.0.113.7".into()),
        user_agent: Some("test".into()),
        request_id: Some("req-1".into()),
    }
}

fn conn(f: &Fixture) -> rusqlite::Connection {
    rusqlite::Connection::open(&f.path).unwrap()
}

/// The chain's verdict, read through the log (after any edits made with [`conn`]).
async fn verify(f: &Fixture) -> Result<chain::Verdict, AuditError> {
    f.log.verify().await
}

/// A page of the log.
async fn list(f: &Fixture, filter: &Filter) -> Result<Page, AuditError> {
    f.log.list(filter.clone()).await
}

async fn write_n(f: &Fixture, n: usize) {
    for i in 0..n {
        f.log
            .record(
                NewEvent::new(Action::LoginFailed, &origin())
                    .extra("reason", "wrong_password")
                    .extra("i", i),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn records_chain_and_verify() {
    let f = fixture();
    write_n(&f, 5).await;
    let v = verify(&f).await.unwrap();
    assert_eq!(
        v,
        chain::Verdict {
            ok: true,
            checked: 5,
            first_bad_id: None
        }
    );
    let page = list(&f, &Filter::default()).await.unwrap();
    assert_eq!(page.events.len(), 5);
    assert_eq!(page.events[0].id, 5, "newest first");
    assert_eq!(page.events[4].prev_hash, chain::GENESIS);
    assert_eq!(page.events[0].extra_data["reason"], "wrong_password");
    assert_eq!(page.events[0].created_at, "2027-01-15T08:00:00.000Z");
}

#[tokio::test]
async fn finds_edited_inserted_and_deleted_rows() {
    let f = fixture();
    write_n(&f, 6).await;
    let c = conn(&f);
    c.execute(
        "UPDATE audit_log SET extra_data = '{\"reason\":\"unknown_email\"}' WHERE id = 3",
        [],
    )
    .unwrap();
    assert_eq!(verify(&f).await.unwrap().first_bad_id, Some(3));

    let f = fixture();
    write_n(&f, 6).await;
    let c = conn(&f);
    c.execute("DELETE FROM audit_log WHERE id = 4", []).unwrap();
    assert_eq!(
        verify(&f).await.unwrap().first_bad_id,
        Some(5),
        "the row after the gap"
    );

    let f = fixture();
    write_n(&f, 6).await;
    let c = conn(&f);
    // Move rows up to make room and insert a forged one with a plausible hash.
    c.execute("UPDATE audit_log SET id = id + 100 WHERE id > 2", [])
        .unwrap();
    let prev: String = c
        .query_row("SELECT hash FROM audit_log WHERE id = 2", [], |r| r.get(0))
        .unwrap();
    c.execute(
        "INSERT INTO audit_log (id, created_at, action, extra_data, prev_hash, hash) VALUES (3, 'x', 'login_success', '{}', ?1, 'f00')",
        [prev],
    )
    .unwrap();
    assert_eq!(verify(&f).await.unwrap().first_bad_id, Some(3));
}

#[tokio::test]
async fn pruning_keeps_the_chain_verifiable() {
    let f = fixture();
    write_n(&f, 3).await;
    f.clock.advance(Duration::from_secs(10 * 86_400));
    write_n(&f, 2).await;
    let deleted = f
        .log
        .prune(5 * 86_400_000, origin(), Some("admin-1".into()))
        .await
        .unwrap();
    assert_eq!(deleted, 3);
    let c = conn(&f);
    let v = verify(&f).await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, 3);
    let page = list(
        &f,
        &Filter {
            action: Some("audit_pruned".into()),
            ..Filter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page.events[0].extra_data["deleted"], 3);
    assert_eq!(page.events[0].extra_data["actor_id"], "admin-1");
    // Nothing older: nothing happens.
    assert_eq!(
        f.log.prune(5 * 86_400_000, origin(), None).await.unwrap(),
        0
    );
    // Deleting the first kept row is still caught.
    c.execute("DELETE FROM audit_log WHERE id = 4", []).unwrap();
    assert_eq!(verify(&f).await.unwrap().first_bad_id, Some(5));
}

#[tokio::test]
async fn rate_limited_attempts_fold_and_add_up() {
    let f = fixture();
    let ev = || NewEvent::new(Action::LoginRateLimited, &origin());
    for _ in 0..1000 {
        f.log
            .rate_limited(
                RuleName::LoginIp,
                key("203.0.113.7").id,
                || key("203.0.113.7").shown,
                ev(),
            )
            .await
            .unwrap();
        f.clock.advance(Duration::from_millis(10));
    }
    // 10 s in: one row so far.
    assert_eq!(list(&f, &Filter::default()).await.unwrap().events.len(), 1);
    f.clock.advance(Duration::from_secs(60));
    assert_eq!(f.log.flush_folds(false).await.unwrap(), 1);
    let page = list(&f, &Filter::default()).await.unwrap();
    let counts: Vec<u64> = page
        .events
        .iter()
        .map(|e| e.extra_data["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![999, 1]);
    assert_eq!(counts.iter().sum::<u64>(), 1000);
    assert!(page.events[0].extra_data["first_at"].is_string());
    assert_eq!(page.events[0].extra_data["rule"], "login_ip");
    // A new window opens with a fresh count-1 row.
    f.log
        .rate_limited(
            RuleName::LoginIp,
            key("203.0.113.7").id,
            || key("203.0.113.7").shown,
            ev(),
        )
        .await
        .unwrap();
    assert_eq!(list(&f, &Filter::default()).await.unwrap().events.len(), 3);
    assert!(verify(&f).await.unwrap().ok);
}

#[tokio::test]
async fn shutdown_flushes_open_folds() {
    let f = fixture();
    for _ in 0..3 {
        f.log
            .rate_limited(
                RuleName::LoginIp,
                key("k").id,
                || key("k").shown,
                NewEvent::new(Action::LoginRateLimited, &origin()),
            )
            .await
            .unwrap();
    }
    f.log.shutdown().await;
    let page = list(&f, &Filter::default()).await.unwrap();
    assert_eq!(page.events.len(), 2);
    assert!(f
        .log
        .record(NewEvent::new(Action::Logout, &origin()))
        .await
        .is_err());
}

#[tokio::test]
async fn filters_and_pages() {
    let f = fixture();
    let u = uuid::Uuid::new_v4();
    for i in 0..7 {
        let mut e = NewEvent::new(
            if i % 2 == 0 {
                Action::LoginSuccess
            } else {
                Action::LoginFailed
            },
            &origin(),
        );
        if i < 3 {
            e = e.user(u);
        }
        f.log.record(e).await.unwrap();
        f.clock.advance(Duration::from_secs(60));
    }
    let page = list(
        &f,
        &Filter {
            limit: Some(3),
            ..Filter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![7, 6, 5]
    );
    assert_eq!(page.next_before_id, Some(5));
    let page = list(
        &f,
        &Filter {
            limit: Some(3),
            before_id: Some(5),
            ..Filter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![4, 3, 2]
    );
    let page = list(
        &f,
        &Filter {
            limit: Some(3),
            before_id: Some(2),
            ..Filter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page.next_before_id, None);
    assert_eq!(
        list(
            &f,
            &Filter {
                action: Some("login_success".into()),
                ..Filter::default()
            }
        )
        .await
        .unwrap()
        .events
        .len(),
        4
    );
    assert_eq!(
        list(
            &f,
            &Filter {
                user_id: Some(u.to_string()),
                ..Filter::default()
            }
        )
        .await
        .unwrap()
        .events
        .len(),
        3
    );
    assert_eq!(
        list(
            &f,
            &Filter {
                ip: Some("198.51.100.1".into()),
                ..Filter::default()
            }
        )
        .await
        .unwrap()
        .events
        .len(),
        0
    );
    let now = f.clock.now_ms();
    let since = parse_time("3m", now).unwrap();
    assert_eq!(
        list(
            &f,
            &Filter {
                since: Some(since),
                ..Filter::default()
            }
        )
        .await
        .unwrap()
        .events
        .len(),
        3
    );
    let until = parse_time(&crate::time_fmt::rfc3339_ms(now - 6 * 60_000), now).unwrap();
    assert_eq!(
        list(
            &f,
            &Filter {
                until: Some(until),
                ..Filter::default()
            }
        )
        .await
        .unwrap()
        .events
        .len(),
        2
    );
    assert!(parse_time("yesterday", now).is_none());
    assert_eq!(
        list(
            &f,
            &Filter {
                limit: Some(100_000),
                ..Filter::default()
            }
        )
        .await
        .unwrap()
        .events
        .len(),
        7
    );
}

#[tokio::test]
async fn long_fields_are_cut() {
    let f = fixture();
    let o = Origin {
        user_agent: Some("u".repeat(600)),
        ..origin()
    };
    f.log
        .record(NewEvent::new(Action::Logout, &o))
        .await
        .unwrap();
    let page = list(&f, &Filter::default()).await.unwrap();
    assert_eq!(page.events[0].user_agent.as_ref().unwrap().len(), 512);
}

#[tokio::test]
async fn pruning_everything_continues_the_ids() {
    let f = fixture();
    write_n(&f, 3).await;
    f.clock.advance(Duration::from_secs(86_400));
    assert_eq!(f.log.prune(0, origin(), None).await.unwrap(), 3);
    write_n(&f, 1).await;
    let ids: Vec<i64> = list(&f, &Filter::default())
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, vec![5, 4]);
    assert!(verify(&f).await.unwrap().ok);
}

#[test]
fn filters_use_the_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.db");
    drop(Store::sqlite(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    for (filter, index) in [
        ("user_id = 'x'", "audit_log_user_id"),
        ("ip_address = 'x'", "audit_log_ip_address"),
        (
            "resource_type = 'session' AND resource_id = 'x'",
            "audit_log_resource",
        ),
        ("action = 'logout'", "audit_log_action"),
        ("created_at >= 'x'", "audit_log_created_at"),
    ] {
        let plan: String = c
            .query_row(
                &format!("EXPLAIN QUERY PLAN SELECT id FROM audit_log WHERE {filter}"),
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains(index), "{filter}: {plan}");
    }
}
