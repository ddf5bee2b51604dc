//! The per-request cryptography of portcullis at its configured defaults:
//! signing and verifying an access token (EdDSA, and HS256 beside it), and one
//! argon2id hash and verification at the default parameters (19 MiB, t=2, p=1).
//! The argon2 figure is the ceiling for logins per second per core.
//!
//! Beside it, a passkey sign-in's own cryptography (SPEC section 14): one
//! assertion checked by the relying party (ES256 signature, client data,
//! flags, counter), the ceremony and the stored passkey those of the fuzz
//! target's seeds (a real ceremony of the tests' software authenticator).
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

/// A relying party on localhost, a passkey registered with it, and a
/// sign-in ceremony with the assertion that answers it.
struct PasskeyFixture {
    webauthn: std::sync::Arc<webauthn_rs::Webauthn>,
    sign_in: webauthn_rs::prelude::DiscoverableAuthentication,
    passkey: webauthn_rs::prelude::Passkey,
    assertion: webauthn_rs::prelude::PublicKeyCredential,
}

fn passkey_fixture() -> PasskeyFixture {
    use portcullis::http::extract::parse_json;
    use portcullis::http::passkeys::{LoginFinishBody, RegisterFinishBody};
    let fixture = |name: &str| {
        let path = format!("{}/fuzz/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let mut config = Config::default();
    config.server.public_url = "http://localhost:18080".into();
    let webauthn = portcullis::auth::passkeys::relying_party(&config).expect("relying party");
    let registration: webauthn_rs::prelude::PasskeyRegistration =
        serde_json::from_slice(&fixture("fixtures/passkey/registration.json")).expect("state");
    let register: RegisterFinishBody =
        parse_json(&fixture("seeds/passkey_credential/register")[1..]).expect("seed");
    let passkey = webauthn
        .finish_passkey_registration(&register.credential, &registration)
        .expect("the registration seed verifies");
    let login: LoginFinishBody =
        parse_json(&fixture("seeds/passkey_credential/login")[1..]).expect("seed");
    PasskeyFixture {
        webauthn,
        sign_in: serde_json::from_slice(&fixture("fixtures/passkey/sign_in.json")).expect("state"),
        passkey,
        assertion: *login.credential,
    }
}

fn passkey(c: &mut Criterion) {
    let f = passkey_fixture();
    let verify = |f: &PasskeyFixture| {
        f.webauthn.finish_discoverable_authentication_v2(
            &f.assertion,
            f.sign_in.clone(),
            &f.passkey,
        )
    };
    assert!(verify(&f)
        .expect("the sign-in seed verifies")
        .user_verified());
    let mut group = c.benchmark_group("passkey");
    group.bench_function("verify an assertion (ES256)", |b| {
        b.iter(|| black_box(verify(black_box(&f))))
    });
    group.finish();
}

criterion_group!(benches, tokens, argon2id, passkey);
criterion_main!(benches);
