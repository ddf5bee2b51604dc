//! Durable audit throughput: events committed per second by the group-commit
//! writer (synchronous=FULL, one fsync per batch), with 64, 256 and 1,024
//! requests in flight, beside baselines run in the same process on the same
//! disk:
//! - one transaction per event (what a writer without batching can do durably);
//! - the writer's own work, batches of 1,000 with the chain and an fsync each;
//! - the same rows in one bulk transaction, without hashing (the ceiling).
//!
//! `cargo bench --bench audit` (criterion reports events per second as `thrpt`).
//! With `--features postgres` and `PORTCULLIS_BENCH_POSTGRES_URL` set to an
//! empty database, the same producers through the PostgreSQL store beside that
//! database's own ceiling (group `audit_durable_postgres`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use portcullis::audit::{Action, NewEvent, Origin};
use portcullis::audit_log::AuditLog;
use portcullis::clock::{Clock, SystemClock};
use portcullis::metrics::Metrics;
use portcullis::store::bench::{append, open_writer};
use portcullis::store::Store;

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
    drop(Store::sqlite(&path).expect("schema"));
    (dir, path)
}

/// Runs `iters` rounds of `producers` tasks, each recording `per` events
/// one after the other (`one(event number)`, awaited as a request awaits its
/// row); the time they took.
fn rounds<F, Fut>(
    runtime: &tokio::runtime::Runtime,
    iters: u64,
    producers: usize,
    per: usize,
    one: F,
) -> Duration
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    for _ in 0..iters {
        runtime.block_on(async {
            let tasks: Vec<_> = (0..producers)
                .map(|p| {
                    let one = one.clone();
                    tokio::spawn(async move {
                        for i in 0..per {
                            one(p * per + i).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("producer");
            }
        });
    }
    started.elapsed()
}

/// Records event number `n` through `log`.
fn recorder(
    log: &Arc<AuditLog>,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
       + Clone
       + Send
       + 'static {
    let log = log.clone();
    move |n| {
        let log = log.clone();
        Box::pin(async move {
            log.record(event(n)).await.expect("recorded");
        })
    }
}

/// Events each group-commit iteration records, spread over the producers.
const EVENTS_PER_ITER: usize = 8_192;

fn group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("audit_durable");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));

    // Through the real AuditLog: producers await their acks, as requests do,
    // so the batch size follows the number of requests in flight.
    group.throughput(Throughput::Elements(EVENTS_PER_ITER as u64));
    for producers in [64usize, 256, 1024] {
        let (_dir, path) = fresh_db();
        let log = Arc::new(AuditLog::new(
            Store::sqlite(&path).expect("store"),
            Arc::new(SystemClock),
            60_000,
            Arc::new(Metrics::new().expect("metrics")),
        ));
        let per = EVENTS_PER_ITER / producers;
        group.bench_function(
            BenchmarkId::new("group commit, in flight", producers),
            |b| b.iter_custom(|iters| rounds(&runtime, iters, producers, per, recorder(&log))),
        );
        runtime.block_on(log.shutdown());
    }

    // Baseline: one durable transaction per event.
    let (_d1, path) = fresh_db();
    let mut conn = open_writer(&path).expect("writer");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("one transaction per event", |b| {
        b.iter(|| {
            i += 1;
            append(&mut conn, &[event(i)], SystemClock.now_ms()).expect("append")
        })
    });

    // The writer's own work: batches of 1,000, no producers.
    let (_d2, path) = fresh_db();
    let mut conn = open_writer(&path).expect("writer");
    let batch: Vec<NewEvent> = (0..1000).map(event).collect();
    group.throughput(Throughput::Elements(1000));
    group.bench_function("writer alone, batches of 1000", |b| {
        b.iter(|| append(&mut conn, &batch, SystemClock.now_ms()).expect("append"))
    });

    // Ceiling: plain inserts of the same rows in one transaction, no hash chain.
    let (_d3, path) = fresh_db();
    let mut conn = open_writer(&path).expect("writer");
    let rows: Vec<NewEvent> = (0..1000).map(event).collect();
    group.bench_function("bulk insert without chain (ceiling)", |b| {
        b.iter(|| {
            let tx = conn.transaction().expect("tx");
            {
                let mut stmt = tx
                    .prepare_cached("INSERT INTO audit_log (created_at, action, ip_address, user_agent, extra_data, request_id, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, '', '')")
                    .expect("prepare");
                for e in &rows {
                    stmt.execute(rusqlite::params![
                        "2026-01-01T00:00:00.000Z",
                        e.action.as_str(),
                        e.origin.ip_address,
                        e.origin.user_agent,
                        serde_json::Value::Object(e.extra.clone()).to_string(),
                        e.origin.request_id
                    ])
                    .expect("insert");
                }
            }
            tx.commit().expect("commit");
        })
    });
    group.finish();
}

/// Events each PostgreSQL iteration records (every one is its own commit).
#[cfg(feature = "postgres")]
const PG_EVENTS_PER_ITER: usize = 2_048;

/// The same through the PostgreSQL store (`--features postgres`, with
/// `PORTCULLIS_BENCH_POSTGRES_URL` naming an empty database): each event is a
/// transaction of its own that takes the chain's advisory lock, reads the
/// head and inserts; beside it, the ceiling of the same database: one plain
/// `INSERT` per transaction from as many producers, no chain and no lock.
#[cfg(feature = "postgres")]
fn postgres(c: &mut Criterion) {
    let Ok(url) = std::env::var("PORTCULLIS_BENCH_POSTGRES_URL") else {
        eprintln!(
            "PORTCULLIS_BENCH_POSTGRES_URL is not set: the PostgreSQL audit figures are skipped"
        );
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = runtime
        .block_on(Store::postgres(&url))
        .expect("the PostgreSQL database");
    let log = Arc::new(AuditLog::new(
        store,
        Arc::new(SystemClock),
        60_000,
        Arc::new(Metrics::new().expect("metrics")),
    ));
    let clients: Vec<Arc<tokio_postgres::Client>> = runtime.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..16 {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(connection);
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS bench_ceiling (id BIGSERIAL PRIMARY KEY, created_at TEXT, \
                     action TEXT, ip_address TEXT, extra_data TEXT)",
                )
                .await
                .expect("ceiling table");
            clients.push(Arc::new(client));
        }
        clients
    });

    let mut group = c.benchmark_group("audit_durable_postgres");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(PG_EVENTS_PER_ITER as u64));
    for producers in [16usize, 64, 256] {
        let per = PG_EVENTS_PER_ITER / producers;
        group.bench_function(BenchmarkId::new("chained, in flight", producers), |b| {
            b.iter_custom(|iters| rounds(&runtime, iters, producers, per, recorder(&log)))
        });
        group.bench_function(
            BenchmarkId::new("plain INSERT per transaction (ceiling), in flight", producers),
            |b| {
                b.iter_custom(|iters| {
                    let clients = clients.clone();
                    rounds(&runtime, iters, producers, per, move |event_no| {
                        let client = clients[event_no % clients.len()].clone();
                        async move {
                            let e = event(event_no);
                            client
                                .execute(
                                    "INSERT INTO bench_ceiling (created_at, action, ip_address, extra_data) \
                                     VALUES ($1, $2, $3, $4)",
                                    &[
                                        &"2026-01-01T00:00:00.000Z",
                                        &e.action.as_str(),
                                        &e.origin.ip_address,
                                        &serde_json::Value::Object(e.extra.clone()).to_string(),
                                    ],
                                )
                                .await
                                .expect("insert");
                        }
                    })
                })
            },
        );
    }
    group.finish();
}

#[cfg(not(feature = "postgres"))]
fn postgres(_: &mut Criterion) {}

criterion_group!(benches, group_commit, postgres);
criterion_main!(benches);
