//! The crash drill: `kill -9` at random moments during mixed load, restart,
//! and check that the database is sound, that no acknowledged account or
//! audited event is missing, and that a lockout saved at the last graceful
//! stop still holds. `PORTCULLIS_CRASH_ROUNDS` sets the number of kills
//! (default 2); `PORTCULLIS_CRASH_SEED` replays a run.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ServerProcess, PASSWORD};

const LOCKED_IP: &str = "203.0.113.66";

fn start(dir: &std::path::Path) -> ServerProcess {
    ServerProcess::start(
        dir,
        &[],
        &[
            ("PORTCULLIS_SERVER__TRUSTED_PROXIES", r#"["127.0.0.1/32"]"#),
            (
                "PORTCULLIS_RATE_LIMIT__RULES__REGISTER_IP_HOURLY__LIMIT",
                "100000",
            ),
            ("PORTCULLIS_RATE_LIMIT__RULES__REGISTER_IP__LIMIT", "100000"),
        ],
    )
}

/// The values of a one-column query.
fn column(conn: &rusqlite::Connection, sql: &str) -> HashSet<String> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// xorshift64*: the run's randomness, replayable from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// What the clients were told: accounts created and audited requests answered.
#[derive(Default)]
struct Acknowledged {
    accounts: Vec<String>,
    requests: Vec<String>,
}

async fn login_from(
    client: &reqwest::Client,
    base: &str,
    ip: &str,
    email: &str,
    password: &str,
    id: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base}/auth/login"))
        .header("x-forwarded-for", ip)
        .header("x-request-id", id)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
}

/// A wrong password for the target account from the address being locked out.
async fn guess_from_locked_ip(client: &reqwest::Client, base: &str, id: &str) -> reqwest::Response {
    login_from(
        client,
        base,
        LOCKED_IP,
        "target@example.com",
        "guess guess guess",
        id,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_drill() {
    let rounds: u64 = std::env::var("PORTCULLIS_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let seed: u64 = std::env::var("PORTCULLIS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("crash drill: {rounds} rounds, PORTCULLIS_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let client = crate::helpers::http_client();

    // A lockout, saved by a graceful stop.
    let mut server = start(dir.path());
    let base = format!("http://{}", server.address);
    for n in 0..6 {
        let res = guess_from_locked_ip(&client, &base, &format!("lock-{n}")).await;
        let expected = if n < 5 {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(res.status(), expected);
    }
    assert!(server.signal("-TERM").success());

    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    for round in 0..rounds {
        let mut server = start(dir.path());
        let base = format!("http://{}", server.address);
        let res = guess_from_locked_ip(&client, &base, &format!("check-{round}")).await;
        assert_eq!(
            res.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "round {round}: the saved lockout was lifted"
        );

        let stop = Arc::new(AtomicBool::new(false));
        let kill_after = 30 + rng.below(300) as usize;
        let mut workers = Vec::new();
        for w in 0..6u64 {
            let (acked, stop, base, client) =
                (acked.clone(), stop.clone(), base.clone(), client.clone());
            let mut rng = Rng((seed ^ (round << 8) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            workers.push(tokio::spawn(async move {
                let mut n = 0u64;
                let mut mine: Vec<String> = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let id = format!("r{round}-w{w}-{n}");
                    let ip = format!("198.18.{}.{}", rng.below(200), 1 + rng.below(250));
                    let done = match rng.below(4) {
                        0 => {
                            let email = format!("{id}@example.com");
                            match client
                                .post(format!("{base}/auth/register"))
                                .header("x-forwarded-for", &ip)
                                .header("x-request-id", &id)
                                .json(&json!({ "email": email, "password": PASSWORD }))
                                .send()
                                .await
                            {
                                Ok(res) if res.status() == StatusCode::CREATED => {
                                    mine.push(email.clone());
                                    let mut a = acked.lock().unwrap();
                                    a.accounts.push(email);
                                    a.requests.push(id);
                                    true
                                }
                                Ok(res) => panic!("register: {}", res.status()),
                                Err(_) => false,
                            }
                        }
                        1 if !mine.is_empty() => {
                            let email = &mine[rng.below(mine.len() as u64) as usize];
                            match login_from(&client, &base, &ip, email, PASSWORD, &id).await {
                                Ok(res) if res.status() == StatusCode::OK => {
                                    acked.lock().unwrap().requests.push(id);
                                    true
                                }
                                Ok(res) => panic!("login: {}", res.status()),
                                Err(_) => false,
                            }
                        }
                        _ => match login_from(
                            &client,
                            &base,
                            &ip,
                            "nobody@example.com",
                            "guess guess guess",
                            &id,
                        )
                        .await
                        {
                            Ok(res) if res.status() == StatusCode::UNAUTHORIZED => {
                                acked.lock().unwrap().requests.push(id);
                                true
                            }
                            Ok(res) if res.status() == StatusCode::TOO_MANY_REQUESTS => true,
                            Ok(res) => panic!("failed login: {}", res.status()),
                            Err(_) => false,
                        },
                    };
                    if !done {
                        break;
                    }
                }
            }));
        }
        // Kill once `kill_after` more answers are in, with requests in flight.
        let target = acked.lock().unwrap().requests.len() + kill_after;
        while acked.lock().unwrap().requests.len() < target {
            tokio::task::yield_now().await;
        }
        server.signal("-KILL");
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.await.unwrap();
        }

        let mut conn = rusqlite::Connection::open(dir.path().join("portcullis.db")).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round}");
        let verdict = portcullis::store::audit::verify_sqlite(&mut conn).unwrap();
        assert!(verdict.ok, "round {round}: {verdict:?}");
        let a = acked.lock().unwrap();
        let users = column(&conn, "SELECT email FROM users");
        let lost: Vec<&String> = a.accounts.iter().filter(|e| !users.contains(*e)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged accounts missing: {lost:?}"
        );
        let ids = column(
            &conn,
            "SELECT request_id FROM audit_log WHERE request_id IS NOT NULL",
        );
        let lost: Vec<&String> = a.requests.iter().filter(|id| !ids.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged events missing: {lost:?}"
        );
        eprintln!(
            "round {round}: killed after {} acknowledged requests, {} accounts; sound",
            a.requests.len(),
            a.accounts.len()
        );
    }
}
