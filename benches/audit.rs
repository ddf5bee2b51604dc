//! Durable audit throughput: events committed per second by the group-commit
//! writer (synchronous=FULL, one fsync per batch), beside two baselines run in
//! the same process on the same disk:
//! - one transaction per event (what a writer without batching can do durably);
//! - the same rows in one bulk transaction, without hashing (the ceiling).
//!
//! `cargo bench --bench audit`

use std::sync::Arc;
use std::time::Instant;

use portcullis::audit::writer::{append, open_writer};
use portcullis::audit::{Action, AuditLog, NewEvent, Origin};
use portcullis::clock::{Clock, SystemClock};
use portcullis::metrics::Metrics;
use portcullis::store::sqlite::SqliteStore;

fn event(i: usize) -> NewEvent {
    let origin = Origin {
        ip_address: Some(format!("10.0.{}.{}", (i >> 8) & 255, i & 255)),
        user_agent: Some("bench/1.0".into()),
        request_id: Some(format!("req-{i}")),
    };
    NewEvent::new(Action::LoginFailed, &origin)
        .extra("reason", "wrong_password")
        .extra("email", format!("user{i}@example.com"))
}

fn fresh_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portcullis.db");
    drop(SqliteStore::open(&path).expect("schema"));
    (dir, path)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let producer_counts: Vec<usize> = if quick { vec![16] } else { vec![64, 256, 1024] };
    let (events, naive_events) = if quick { (2_000, 50) } else { (200_000, 2_000) };

    // Group commit through the real AuditLog: producers await their acks, as
    // requests do, so the batch size follows the number of requests in flight.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut grouped = Vec::new();
    for &producers in &producer_counts {
        let (_dir, path) = fresh_db();
        let log = Arc::new(
            AuditLog::start(
                &path,
                Arc::new(SystemClock),
                60_000,
                Arc::new(Metrics::new().expect("metrics")),
            )
            .expect("audit log"),
        );
        let per = events / producers;
        let started = Instant::now();
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for p in 0..producers {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..per {
                        log.record(event(p * per + i)).await.expect("recorded");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("producer");
            }
        });
        grouped.push((
            producers,
            (per * producers) as f64 / started.elapsed().as_secs_f64(),
        ));
        runtime.block_on(log.shutdown());
    }
    let group = grouped.iter().map(|g| g.1).fold(0.0, f64::max);

    // Baseline: one durable transaction per event.
    let (_d2, path) = fresh_db();
    let mut conn = open_writer(&path).expect("writer");
    let started = Instant::now();
    for i in 0..naive_events {
        append(&mut conn, &[event(i)], SystemClock.now_ms()).expect("append");
    }
    let naive = naive_events as f64 / started.elapsed().as_secs_f64();

    // The writer's own work: the same appends in batches of 1000, no producers.
    let (_d4, path) = fresh_db();
    let mut conn = open_writer(&path).expect("writer");
    let batch: Vec<NewEvent> = (0..1000).map(event).collect();
    let started = Instant::now();
    for _ in 0..events / 1000 {
        append(&mut conn, &batch, SystemClock.now_ms()).expect("append");
    }
    let batched = (events / 1000 * 1000) as f64 / started.elapsed().as_secs_f64();

    // Ceiling: plain inserts of the same rows in one transaction, no hash chain.
    let (_d3, path) = fresh_db();
    let mut conn = open_writer(&path).expect("writer");
    let started = Instant::now();
    let tx = conn.transaction().expect("tx");
    {
        let mut stmt = tx
            .prepare("INSERT INTO audit_log (created_at, action, ip_address, user_agent, extra_data, request_id, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, '', '')")
            .expect("prepare");
        for i in 0..events {
            let e = event(i);
            stmt.execute(rusqlite::params![
                "2026-01-01T00:00:00.000Z",
                e.action.as_str(),
                e.origin.ip_address,
                e.origin.user_agent,
                serde_json::Value::Object(e.extra).to_string(),
                e.origin.request_id
            ])
            .expect("insert");
        }
    }
    tx.commit().expect("commit");
    let ceiling = events as f64 / started.elapsed().as_secs_f64();

    println!("| audit writer ({events} events, durable) | events/s | vs best group commit |");
    println!("|---|---|---|");
    for (producers, rate) in &grouped {
        println!(
            "| group commit, {producers} requests in flight | {rate:.0} | {:.2} |",
            rate / group
        );
    }
    println!(
        "| one transaction per event (baseline) | {naive:.0} | {:.3} |",
        naive / group
    );
    println!(
        "| writer alone, batches of 1000, hash chain + fsync | {batched:.0} | {:.2} |",
        batched / group
    );
    println!(
        "| one bulk transaction, no hashing (ceiling) | {ceiling:.0} | {:.2} |",
        ceiling / group
    );
}
