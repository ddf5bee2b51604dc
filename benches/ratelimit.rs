//! The rate-limit check on a cache that tracks 1,000,000 keys, beside two
//! baselines measured in the same run on the same keys: a bare moka `get` (the
//! floor of any check that keeps its windows in moka, as the SPEC asks) and a
//! `HashMap` lookup behind a `Mutex` (the least any shared keyed counter costs).
//!
//! `cargo bench --bench ratelimit`

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::config::Config;
use portcullis::ratelimit::key::{self, KeyId, KeyMaker};
use portcullis::ratelimit::memory::MemoryStore;
use portcullis::ratelimit::store::{Acquired, Slot};
use portcullis::ratelimit::{KeyKind, RuleName, Rules};

const KEYS: usize = 1_000_000;

fn key(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

fn checks(c: &mut Criterion) {
    let config = Config::default();
    let rules = Rules::from_config(&config.rate_limit);
    let rule = *rules.get(RuleName::LoginIp).expect("login_ip enabled");
    let store = MemoryStore::new(&rules, config.rate_limit.max_keys);
    let maker = KeyMaker::random();
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    for k in &keys {
        store.acquire_now(
            &[Slot {
                rule,
                id: maker.id(k),
                text: k,
                tag: 0,
            }],
            0,
        );
    }
    let baseline: Mutex<HashMap<String, u32>> =
        Mutex::new(keys.iter().map(|k| (k.clone(), 1)).collect());
    let bare: moka::sync::Cache<Box<str>, Arc<Mutex<u32>>> = moka::sync::Cache::builder()
        .max_capacity(KEYS as u64)
        .build();
    for k in &keys {
        bare.insert(k.as_str().into(), Arc::new(Mutex::new(1)));
    }

    let mut group = c.benchmark_group("ratelimit_check_1M_keys");
    let mut i = 0usize;
    // A key with room: its key made from the text, then check and reserve
    // (the event is recorded), as for a first failure.
    group.bench_function("acquire (login_ip, tracked key)", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            // Far-apart times keep every window under its limit.
            let now = (i as i64) * 1_000_000_000;
            black_box(store.acquire_now(
                &[Slot {
                    rule,
                    id: maker.id(&keys[i]),
                    text: &keys[i],
                    tag: 0,
                }],
                now,
            ))
        })
    });
    // A key's identity, made at every check: an address, and the longest
    // valid email (254 characters).
    group.bench_function("identity of an address", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(maker.id(&keys[i]))
        })
    });
    let long_email = format!("{}@{}.example.com", "a".repeat(64), "b".repeat(177));
    assert_eq!(long_email.len(), 254);
    group.bench_function("identity of a 254-character email", |b| {
        b.iter(|| black_box(maker.id(black_box(&long_email))))
    });
    // What is shown of an account key: asked only when a window is new or a
    // refusal starts a fold in the audit log, never on the flood path.
    let id: KeyId = maker.id(&long_email);
    group.bench_function(
        "shown text of a 254-character email (new windows only)",
        |b| b.iter(|| black_box(key::shown(KeyKind::Account, id, black_box(&long_email)))),
    );
    // A blocked key: the flood path.
    let blocked_text = "192.0.2.1";
    let blocked = maker.id(blocked_text);
    for _ in 0..rule.limit {
        store.acquire_now(
            &[Slot {
                rule,
                id: blocked,
                text: blocked_text,
                tag: 0,
            }],
            0,
        );
    }
    group.bench_function("acquire (blocked key)", |b| {
        b.iter(|| {
            let got = store.acquire_now(
                &[Slot {
                    rule,
                    id: maker.id(blocked_text),
                    text: blocked_text,
                    tag: 0,
                }],
                1,
            );
            assert!(matches!(got, Acquired::Denied(_)));
            black_box(got)
        })
    });
    group.bench_function("baseline: bare moka get", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(bare.get(keys[i].as_str()))
        })
    });
    group.bench_function("baseline: Mutex<HashMap> lookup", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            let map = baseline.lock().expect("lock");
            black_box(map.get(keys[i].as_str()).copied())
        })
    });
    group.finish();
}

criterion_group!(benches, checks);
criterion_main!(benches);
