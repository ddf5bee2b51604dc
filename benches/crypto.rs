//! The per-request cryptography of portcullis at its configured defaults:
//! signing and verifying an access token (EdDSA, and HS256 beside it), and one
//! argon2id hash and verification at the default parameters (19 MiB, t=2, p=1).
//! The argon2 figure is the ceiling for logins per second per core.
//!
//! Verification is measured twice: a token seen for the first time (signature
//! checked) and a token seen before (its claims are remembered by digest, and
//! only time is checked again).
//!
//! `cargo bench --bench crypto`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use portcullis::auth::crypto::MasterKey;
use portcullis::auth::password::Argon;
use portcullis::auth::tokens::{TokenKeys, TokenSubject};
use portcullis::config::{Algorithm, Config, TokensConfig};
use portcullis::store::{Amr, Store};
use uuid::Uuid;

const NOW: i64 = 1_800_000_000_000;

fn keys(cfg: &TokensConfig, dir: &std::path::Path) -> TokenKeys {
    let store = Store::sqlite(&dir.join("portcullis.db")).expect("store");
    let master = MasterKey::load_or_create("", dir).expect("master key");
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(TokenKeys::load_or_create(cfg, &store, &master, NOW))
        .expect("keys")
}

fn tokens(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let subject = TokenSubject {
        user_id: Uuid::new_v4(),
        email: "alice@example.com",
        session_id: Uuid::new_v4(),
        is_admin: false,
        session_expires_at: NOW + 86_400_000,
        amr: Amr::PWD,
        auth_time: NOW,
        grant: None,
    };
    let eddsa = TokensConfig::default();
    let hs256 = TokensConfig {
        algorithm: Algorithm::HS256,
        secret: "an HS256 secret of at least thirty-two bytes".into(),
        ..TokensConfig::default()
    };
    let mut group = c.benchmark_group("access_token");
    for (name, cfg) in [("EdDSA", &eddsa), ("HS256", &hs256)] {
        let keys = keys(cfg, dir.path());
        let (token, _) = keys.issue(&subject, NOW).expect("issue");
        group.bench_function(format!("sign ({name})"), |b| {
            b.iter(|| black_box(keys.issue(black_box(&subject), NOW)))
        });
        group.bench_function(format!("verify, first sight ({name})"), |b| {
            b.iter_batched(
                || keys.issue(&subject, NOW).expect("issue").0,
                |fresh| black_box(keys.verify(&fresh, NOW)),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("verify, seen before ({name})"), |b| {
            b.iter(|| black_box(keys.verify(black_box(&token), NOW)))
        });
    }
    group.finish();
}

fn argon2id(c: &mut Criterion) {
    let cfg = Config::default().passwords;
    let argon = Argon::new(&cfg).expect("argon2 parameters");
    let password = "correct horse battery staple";
    let stored = argon.hash(password).expect("hash");
    assert!(argon.verify(password, &stored).valid);
    let mut group = c.benchmark_group("argon2id_default_parameters");
    group.sample_size(20);
    group.bench_function("hash", |b| b.iter(|| black_box(argon.hash(password))));
    group.bench_function("verify", |b| {
        b.iter(|| black_box(argon.verify(password, &stored)))
    });
    group.finish();
}

criterion_group!(benches, tokens, argon2id);
criterion_main!(benches);
