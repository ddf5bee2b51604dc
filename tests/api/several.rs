//! Several instances behind one load balancer (SPEC section 9): portcullis
//! processes sharing one Redis (against a real `redis-server`) and one
//! database (one SQLite data directory, or a real PostgreSQL).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[cfg(feature = "redis")]
use portcullis::{
    clock::Millis,
    config::Config,
    ratelimit::key::{KeyId, KeyMaker},
    ratelimit::memory::MemoryStore,
    ratelimit::redis_store::RedisStore,
    ratelimit::store::{Acquired, LimitStore, Slot},
    ratelimit::window::Event,
    ratelimit::{Rule, RuleName, Rules},
};
#[cfg(feature = "redis")]
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[cfg(feature = "redis")]
use crate::backends::RedisServer;
use crate::helpers::{ServerProcess, PASSWORD};

/// One instance: the binary on `dir` with `envs`, trusting the loopback proxy
/// so that tests can speak for many client addresses.
fn instance_with(dir: &std::path::Path, envs: &[(&str, &str)]) -> ServerProcess {
    let mut envs = envs.to_vec();
    envs.push(("PORTCULLIS_SERVER__TRUSTED_PROXIES", r#"["127.0.0.1/32"]"#));
    let mut server = ServerProcess::start(dir, &[], &envs);
    server.address = format!("http://{}", server.address);
    server
}

/// An instance on the shared data directory and Redis.
#[cfg(feature = "redis")]
fn instance(dir: &std::path::Path, redis: &RedisServer) -> ServerProcess {
    let url = redis.url();
    instance_with(
        dir,
        &[
            ("PORTCULLIS_RATE_LIMIT__STORE", "redis"),
            ("PORTCULLIS_RATE_LIMIT__REDIS_URL", &url),
        ],
    )
}

async fn login(
    client: &reqwest::Client,
    base: &str,
    from: &str,
    email: &str,
    password: &str,
) -> (StatusCode, Value) {
    let res = client
        .post(format!("{base}/auth/login"))
        .header("X-Forwarded-For", from)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("request");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A session opened on one instance works on the other; a logout on one is
/// refused on the other at once, in six rounds alternating direction (the last
/// two by logout-all). Logs in from 198.51.100.10-15. Returns the slowest.
async fn logouts_are_refused_across(
    client: &reqwest::Client,
    a: &ServerProcess,
    b: &ServerProcess,
    email: &str,
) -> Duration {
    // A session opened on one instance works on the other; a logout on one is
    // refused on the other at once. "At once" cannot mean "before the answer"
    // across processes without a query per request; it means within
    // `ANNOUNCED_WITHIN`, well under the 1 s poll of storage that would
    // otherwise be the only way to learn it (an announcement takes a few
    // milliseconds; the margin is for a loaded machine): six rounds all inside
    // it would happen by polling alone about once in 4,000 runs.
    const ANNOUNCED_WITHIN: Duration = Duration::from_millis(250);
    let mut slowest = Duration::ZERO;
    for round in 0..6 {
        let (from, to) = if round % 2 == 0 { (b, a) } else { (a, b) };
        let ip = format!("198.51.100.{}", 10 + round);
        let (status, pair) = login(client, &from.address, &ip, email, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{pair}");
        let access = pair["access_token"].as_str().expect("access token");
        let refresh = pair["refresh_token"].as_str().expect("refresh token");
        assert_eq!(me(client, &to.address, access).await, StatusCode::OK);
        let path = if round < 4 { "logout" } else { "logout-all" };
        let res = client
            .post(format!("{}/auth/{path}", from.address))
            .bearer_auth(access)
            .send()
            .await
            .expect("logout");
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let logged_out = Instant::now();
        while me(client, &to.address, access).await != StatusCode::UNAUTHORIZED {
            assert!(
                logged_out.elapsed() < ANNOUNCED_WITHIN,
                "round {round}: a {path} on one instance still accepted on the other"
            );
        }
        slowest = slowest.max(logged_out.elapsed());
        let res = client
            .post(format!("{}/auth/refresh", to.address))
            .header("X-Forwarded-For", ip.as_str())
            .json(&json!({"refresh_token": refresh}))
            .send()
            .await
            .expect("refresh");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    slowest
}

async fn me(client: &reqwest::Client, base: &str, token: &str) -> StatusCode {
    client
        .get(format!("{base}/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn two_instances_share_one_budget_one_lockout_and_one_view_of_revocations() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // One after the other: the first creates the keys both use.
    let mut a = instance(dir.path(), &redis);
    let mut b = instance(dir.path(), &redis);
    let client = crate::helpers::http_client();
    let email = "shared@example.com";
    let res = client
        .post(format!("{}/auth/register", a.address))
        .header("X-Forwarded-For", "198.51.100.1")
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), StatusCode::CREATED);

    // 50 concurrent wrong passwords from one address, split across the two.
    let started = Instant::now();
    let attempts = (0..50).map(|i| {
        let base = if i % 2 == 0 { &a.address } else { &b.address };
        login(
            &client,
            base,
            "203.0.113.9",
            email,
            "wrong password, many times",
        )
    });
    let answers = futures_util::future::join_all(attempts).await;
    let elapsed = started.elapsed();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for (status, _) in &answers {
        *by_status.entry(status.as_u16()).or_default() += 1;
    }
    eprintln!("50 concurrent wrong passwords over two instances: {by_status:?} in {elapsed:?}");
    assert_eq!(by_status, BTreeMap::from([(401, 5), (429, 45)]));

    // The lockout holds on both, for the right password too.
    for base in [&a.address, &b.address] {
        let (status, body) = login(&client, base, "203.0.113.9", email, PASSWORD).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    }

    let slowest = logouts_are_refused_across(&client, &a, &b, email).await;
    eprintln!("a logout on one instance was refused on the other within {slowest:?} (every round)");

    // The logout-all of round 4 forgot every known device of the account, on
    // both instances; B signs in from 198.51.100.10 again, and A knows that
    // device too. Twenty failures from twenty strangers lock the account for
    // strangers on both...
    let (status, body) = login(&client, &b.address, "198.51.100.10", email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for i in 0..20 {
        let base = if i % 2 == 0 { &a.address } else { &b.address };
        let (status, _) = login(&client, base, &format!("192.0.2.{i}"), email, "not it").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    for base in [&a.address, &b.address] {
        let (status, body) = login(&client, base, "192.0.2.99", email, PASSWORD).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    }
    // ...but not for the owner's device, on the instance that never saw it log in.
    let (status, body) = login(&client, &a.address, "198.51.100.10", email, PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a known device on B is known on A: {body}"
    );

    a.signal("-TERM");
    b.signal("-TERM");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_outage_refuses_guarded_routes_with_503_and_recovers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = instance(dir.path(), &redis);
    let client = crate::helpers::http_client();
    let email = "outage@example.com";
    let res = client
        .post(format!("{}/auth/register", server.address))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), StatusCode::CREATED);
    let (status, pair) = login(&client, &server.address, "198.51.100.7", email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let access = pair["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();

    redis.stop();
    for attempt in 0..3 {
        let (status, body) = login(&client, &server.address, "198.51.100.7", email, PASSWORD).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "attempt {attempt}: {body}"
        );
        assert_eq!(body["error"], "rate_limiter_unavailable", "{body}");
    }
    let res = client
        .post(format!("{}/auth/register", server.address))
        .json(&json!({"email": "new@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    // Nothing was let through: the account was not created.
    // Routes without a rate limit keep working.
    assert_eq!(me(&client, &server.address, &access).await, StatusCode::OK);
    let health = client
        .get(format!("{}/health", server.address))
        .send()
        .await
        .expect("health");
    assert!(health.status().is_success());

    redis.restart();
    // The connection is made again on the next requests; wait for it, bounded.
    let mut recovered = None;
    for _ in 0..100 {
        let (status, _) = login(
            &client,
            &server.address,
            "198.51.100.8",
            email,
            "a wrong password",
        )
        .await;
        if status != StatusCode::SERVICE_UNAVAILABLE {
            recovered = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recovered, Some(StatusCode::UNAUTHORIZED));
    // Counting again: four more failures from that address, then 429.
    for _ in 0..4 {
        let (status, _) = login(
            &client,
            &server.address,
            "198.51.100.8",
            email,
            "a wrong password",
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = login(&client, &server.address, "198.51.100.8", email, PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = login(
        &client,
        &server.address,
        "198.51.100.9",
        "new@example.com",
        PASSWORD,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the refused registration left no account"
    );

    server.signal("-TERM");
    let logged: Vec<String> = server.log.try_iter().collect();
    assert!(
        logged
            .iter()
            .any(|l| l.contains("rate limiter unavailable")),
        "the outage is logged: {logged:#?}"
    );
}

/// The same random operations on the in-memory store and on Redis give the
/// same answers: the Redis scripts keep the exact sliding window.
#[cfg(feature = "redis")]
#[tokio::test]
async fn the_redis_store_answers_exactly_as_the_memory_store() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut config = Config::default();
    config
        .rate_limit
        .rules
        .get_mut(&portcullis::config::RuleName::LoginIp)
        .expect("rule")
        .limit = 3;
    let rules = Rules::from_config(&config.rate_limit);
    let ip_rule: Rule = *rules.get(RuleName::LoginIp).expect("login_ip");
    let account_rule: Rule = *rules.get(RuleName::LoginAccount).expect("login_account");
    let memory = MemoryStore::new(&rules, 10_000);
    let shared = RedisStore::connect(&redis.url()).await.expect("connect");
    let seed: u64 = std::env::var("PORTCULLIS_EQUIVALENCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (PORTCULLIS_EQUIVALENCE_SEED)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut now: Millis = 1_800_000_000_000;
    let mut granted: Vec<(Rule, KeyId, Event)> = Vec::new();
    let maker = KeyMaker::random();
    for step in 0..3_000 {
        let ip_text = format!("198.51.100.{}", rng.gen_range(0..3));
        let account_text = format!("user{}@example.com", rng.gen_range(0..3));
        let (ip, account) = (maker.ip(&ip_text), maker.account(&account_text));
        match rng.gen_range(0..10) {
            0..=4 => {
                let tag = rng.gen_range(0..3u64);
                let mut slots = vec![Slot {
                    rule: ip_rule,
                    id: ip.id,
                    text: &ip_text,
                    tag,
                }];
                if rng.gen_bool(0.5) {
                    slots.push(Slot {
                        rule: account_rule,
                        id: account.id,
                        text: &account_text,
                        tag,
                    });
                }
                let want = memory.acquire(&slots, now).await.expect("memory");
                let got = shared.acquire(&slots, now).await.expect("redis");
                assert_eq!(got, want, "step {step} (seed {seed})");
                if got == Acquired::Granted {
                    for s in &slots {
                        granted.push((
                            s.rule,
                            s.id,
                            Event {
                                at: now,
                                tag: s.tag,
                            },
                        ));
                    }
                }
            }
            5 if !granted.is_empty() => {
                let (rule, key, event) = granted.swap_remove(rng.gen_range(0..granted.len()));
                memory.release(&rule, key, event).await.expect("memory");
                shared.release(&rule, key, event).await.expect("redis");
            }
            6 => {
                let tag = rng.gen_bool(0.5).then(|| rng.gen_range(0..3u64));
                memory.clear(&ip_rule, ip.id, tag).await.expect("memory");
                shared.clear(&ip_rule, ip.id, tag).await.expect("redis");
                granted.retain(|(r, k, e)| {
                    !(r.name == ip_rule.name && *k == ip.id && tag.is_none_or(|t| e.tag == t))
                });
            }
            _ => now += rng.gen_range(0..400_000),
        }
        for rule in [&ip_rule, &account_rule] {
            for key in [&ip, &account] {
                let want = memory.usage(rule, key.id, now).await.expect("memory");
                let got = shared.usage(rule, key.id, now).await.expect("redis");
                assert_eq!(
                    got, want,
                    "step {step} (seed {seed}): usage of {:?}",
                    key.shown
                );
            }
        }
    }
    let every = |mut windows: Vec<portcullis::ratelimit::store::WindowState>| {
        for w in &mut windows {
            w.events.sort_by_key(|e| (e.at, e.tag));
        }
        windows
    };
    let want = every(
        memory
            .windows(&rules, None, now, 1000)
            .await
            .expect("memory"),
    );
    let got = every(
        shared
            .windows(&rules, None, now, 1000)
            .await
            .expect("redis"),
    );
    assert_eq!(got, want, "seed {seed}: every window");
}

/// An instance on a data directory of its own (as on a host of its own) and
/// the shared PostgreSQL database, its limiter in memory.
#[cfg(feature = "postgres")]
fn pg_instance(dir: &std::path::Path, url: &str, key: &str) -> ServerProcess {
    instance_with(
        dir,
        &[
            ("PORTCULLIS_STORAGE__BACKEND", "postgres"),
            ("PORTCULLIS_STORAGE__POSTGRES_URL", url),
            ("PORTCULLIS_STORAGE__ENCRYPTION_KEY", key),
        ],
    )
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn two_instances_on_postgres_keep_one_chain_and_one_view_of_revocations() {
    use crate::backends::PostgresServer;
    use crate::helpers::portcullis;

    let Some(pg) = PostgresServer::shared() else {
        return;
    };
    let url = pg.database();
    let key = hex::encode(rand::random::<[u8; 32]>());
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut a = pg_instance(dir_a.path(), &url, &key);
    let mut b = pg_instance(dir_b.path(), &url, &key);
    let client = crate::helpers::http_client();

    // Audited traffic on both at once: each client registers accounts on one
    // instance and logs into them on the other, every request from an address
    // of its own so that no limit interferes.
    let started = Instant::now();
    let tasks = (0..8).map(|t| {
        let client = client.clone();
        let (first, second) = if t % 2 == 0 {
            (a.address.clone(), b.address.clone())
        } else {
            (b.address.clone(), a.address.clone())
        };
        tokio::spawn(async move {
            let mut acked = 0;
            for i in 0..12 {
                let email = format!("c{t}-{i}@example.com");
                let ip = format!("10.{t}.{i}.1");
                let res = client
                    .post(format!("{first}/auth/register"))
                    .header("X-Forwarded-For", ip.as_str())
                    .json(&json!({"email": email, "password": PASSWORD}))
                    .send()
                    .await
                    .expect("register");
                assert_eq!(res.status(), StatusCode::CREATED);
                let (status, body) = login(&client, &second, &ip, &email, PASSWORD).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                acked += 2;
            }
            acked
        })
    });
    let mut acked = 0;
    for task in futures_util::future::join_all(tasks).await {
        acked += task.expect("client");
    }
    eprintln!(
        "{acked} audited requests over two instances on one PostgreSQL in {:?}",
        started.elapsed()
    );

    // One chain, every row in it.
    let out = portcullis()
        .args(["audit", "verify", "--data-dir"])
        .arg(dir_a.path())
        .env("PORTCULLIS_STORAGE__BACKEND", "postgres")
        .env("PORTCULLIS_STORAGE__POSTGRES_URL", &url)
        .env("PORTCULLIS_STORAGE__ENCRYPTION_KEY", &key)
        .output()
        .expect("audit verify");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict: Value = serde_json::from_slice(&out.stdout).expect("verdict");
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(verdict["checked"], acked, "one row per audited request");

    // A token signed on one is accepted on the other (one signing key), and
    // a logout on one is refused on the other at once (LISTEN/NOTIFY).
    let email = "c0-0@example.com";
    let slowest = logouts_are_refused_across(&client, &a, &b, email).await;
    eprintln!("PostgreSQL: a logout on one instance was refused on the other within {slowest:?}");

    a.signal("-TERM");
    b.signal("-TERM");
}

/// PostgreSQL refusing connections (the database closed to new connections and
/// every open one terminated, as in a failover): requests that need it get a
/// 503 JSON answer with `Retry-After` and change nothing, nothing answers 500,
/// and the next requests after it reopens succeed without a restart.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_postgres_outage_answers_503_and_recovers() {
    use crate::backends::PostgresServer;
    use crate::helpers::{expect_error, without_limits, TestApp};
    use portcullis::config::StorageBackend;

    let Some(pg) = PostgresServer::shared() else {
        return;
    };
    let url = pg.database();
    let database = url.rsplit('/').next().expect("a database name").to_owned();
    let app = TestApp::spawn_with(|c| {
        without_limits(c);
        c.storage.backend = StorageBackend::Postgres;
        c.storage.postgres_url = url.clone();
        c.storage.encryption_key = hex::encode(rand::random::<[u8; 32]>());
    })
    .await;
    let pair = app.signed_up("steady@example.com").await;
    let access = pair["access_token"].as_str().expect("access token");
    let admin_url = url.replace(&format!("/{database}"), "/postgres");
    let admin_sql = |sql: &str| {
        crate::backends::psql(&admin_url, sql);
    };

    admin_sql(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
    ));
    admin_sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
    ));
    for _ in 0..3 {
        let res = app.register("new@example.com", PASSWORD).await;
        assert!(res.headers().contains_key("retry-after"));
        expect_error(res, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
        let res = app.login("steady@example.com", PASSWORD).await;
        expect_error(res, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    }
    // What needs the database says so in JSON; nothing answers 500.
    for path in ["/auth/me", "/auth/sessions", "/health"] {
        let res = app.get_auth(path, access).await;
        let status = res.status();
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {status}"
        );
        let body: Value = res.json().await.expect("a JSON answer");
        assert!(body.is_object(), "{path}: {body}");
    }

    admin_sql(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"));
    let res = app.login("steady@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK, "recovered without a restart");
    let res = app.login("new@example.com", PASSWORD).await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "the refused registration created nothing"
    );
    let out = app.cli().args(["audit", "verify"]).output().expect("cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The PostgreSQL schema is applied once and again harmlessly, and a database
/// from a newer portcullis is refused at start-up with a clear error.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn the_postgres_schema_is_idempotent_and_a_newer_one_is_refused() {
    use crate::backends::PostgresServer;
    use portcullis::store::Store;

    let Some(pg) = PostgresServer::shared() else {
        return;
    };
    let url = pg.database();
    let (first, second) = tokio::join!(Store::postgres(&url), Store::postgres(&url));
    first.expect("first start");
    second.expect("a start beside it");
    Store::postgres(&url).await.expect("a restart");
    crate::backends::psql(&url, "UPDATE schema_version SET version = 99");
    let err = Store::postgres(&url).await.err().expect("refused");
    assert!(err.to_string().contains("newer"), "{err}");
}
