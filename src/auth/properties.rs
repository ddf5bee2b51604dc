//! Property: whatever clients do — log in, refresh (with current or retired
//! tokens), log out, log out everywhere, wait — no access token of a revoked
//! session is ever accepted, by this process or by a second one that learns
//! revocations from the database. And nothing more is refused than should be:
//! a token of a live session is accepted until it expires.

use std::sync::Arc;

use proptest::prelude::*;
use uuid::Uuid;

use super::service::{AuthError, AuthService, ClientInfo};
use super::sessions::SignIn;
use crate::audit::{Action, NewEvent, Origin};
use crate::clock::{Clock, ManualClock, Millis};
use crate::config::Config;
use crate::startup::open;
use crate::store::{Amr, NewUser, RotationAudit, SessionKind, User};

fn event(action: Action) -> NewEvent {
    NewEvent::new(action, &Origin::default())
}

#[derive(Debug, Clone)]
enum Op {
    Login {
        user: usize,
    },
    /// Refresh with the session's current token, or with a retired one.
    Refresh {
        session: usize,
        retired: bool,
    },
    Logout {
        token: usize,
    },
    LogoutAll {
        token: usize,
    },
    Wait {
        secs: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize).prop_map(|user| Op::Login { user }),
        4 => (any::<prop::sample::Index>(), prop::bool::weighted(0.2)).prop_map(|(i, retired)| Op::Refresh { session: i.index(1 << 16), retired }),
        2 => any::<prop::sample::Index>().prop_map(|i| Op::Logout { token: i.index(1 << 16) }),
        1 => any::<prop::sample::Index>().prop_map(|i| Op::LogoutAll { token: i.index(1 << 16) }),
        2 => (1..900u64).prop_map(|secs| Op::Wait { secs }),
    ]
}

/// What the model knows of a session.
struct ModelSession {
    user: usize,
    id: Uuid,
    revoked: bool,
    current: String,
    retired: Vec<String>,
}

/// An access token and when it stops being valid.
struct ModelToken {
    session: usize,
    token: String,
    expires_ms: Millis,
}

struct World {
    server: AuthService,
    /// Another process on the same database (a second server, the CLI).
    peer: AuthService,
    clock: ManualClock,
    users: Vec<User>,
    sessions: Vec<ModelSession>,
    tokens: Vec<ModelToken>,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_path_buf();
        config.passwords.argon2_memory_kib = 1024;
        config.passwords.argon2_iterations = 1;
        let clock = ManualClock::new(1_800_000_000_000);
        let server = open(
            &config,
            Arc::new(clock.clone()),
            Arc::new(crate::metrics::Metrics::new().expect("metrics")),
        )
        .await
        .expect("server")
        .auth;
        let peer = open(
            &config,
            Arc::new(clock.clone()),
            Arc::new(crate::metrics::Metrics::new().expect("metrics")),
        )
        .await
        .expect("peer")
        .auth;
        let mut users = Vec::new();
        for i in 0..2 {
            let user = server
                .store
                .create_user(
                    NewUser {
                        id: Uuid::new_v4(),
                        email: format!("user{i}@example.com"),
                        name: None,
                        password_hash: "unused".into(),
                        is_admin: false,
                        created_at: clock.now_ms(),
                    },
                    Vec::new(),
                )
                .await
                .expect("user");
            users.push(user);
        }
        Self {
            server,
            peer,
            clock,
            users,
            sessions: Vec::new(),
            tokens: Vec::new(),
            _dir: dir,
        }
    }

    fn issued(&mut self, session: usize, access: String, expires_in: i64) {
        let expires_ms = (self.clock.now_ms().div_euclid(1000) + expires_in) * 1000;
        self.tokens.push(ModelToken {
            session,
            token: access,
            expires_ms,
        });
    }

    async fn apply(&mut self, op: &Op) {
        let client = ClientInfo::new(Some("192.0.2.1".into()), None);
        match *op {
            Op::Login { user } => {
                let pair = self
                    .server
                    .open_session(
                        &self.users[user],
                        SignIn {
                            kind: SessionKind::Api,
                            remember_me: false,
                            amr: Amr::PWD,
                        },
                        &client,
                        vec![event(Action::LoginSuccess)],
                    )
                    .await
                    .expect("login")
                    .into_tokens()
                    .expect("a token pair");
                self.sessions.push(ModelSession {
                    user,
                    id: pair.session_id,
                    revoked: false,
                    current: pair.refresh_token.clone(),
                    retired: Vec::new(),
                });
                self.issued(self.sessions.len() - 1, pair.access_token, pair.expires_in);
            }
            Op::Refresh { session, retired } => {
                if self.sessions.is_empty() {
                    return;
                }
                let i = session % self.sessions.len();
                let s = &self.sessions[i];
                let presented = match (retired, s.retired.last()) {
                    (true, Some(old)) => old.clone(),
                    _ => s.current.clone(),
                };
                let reuse = presented != s.current;
                let audit = RotationAudit {
                    refreshed: event(Action::TokenRefreshed),
                    reused: event(Action::RefreshTokenReused),
                };
                match self.server.refresh(&presented, None, audit).await {
                    Ok((_, _, pair)) => {
                        assert!(!s.revoked, "a revoked session was refreshed");
                        assert!(!reuse, "a retired refresh token was accepted");
                        let s = &mut self.sessions[i];
                        let old = std::mem::replace(&mut s.current, pair.refresh_token.clone());
                        s.retired.push(old);
                        self.issued(i, pair.access_token, pair.expires_in);
                    }
                    Err(AuthError::RefreshTokenReused { session_id, .. }) => {
                        assert!(reuse, "the current refresh token was called reused");
                        assert_eq!(session_id, s.id);
                        self.sessions[i].revoked = true;
                    }
                    Err(AuthError::InvalidRefreshToken) => {
                        assert!(
                            s.revoked,
                            "a live session's current refresh token was refused"
                        );
                    }
                    Err(e) => panic!("refresh: {e}"),
                }
            }
            Op::Logout { token } | Op::LogoutAll { token } => {
                if self.tokens.is_empty() {
                    return;
                }
                let t = &self.tokens[token % self.tokens.len()];
                // As the handler does: only a valid token may log out.
                let Ok(claims) = self.server.authorize(&t.token) else {
                    return;
                };
                let session = t.session;
                if matches!(op, Op::Logout { .. }) {
                    self.server
                        .logout(&claims, vec![event(Action::Logout)])
                        .await
                        .expect("logout");
                    self.sessions[session].revoked = true;
                } else {
                    self.server
                        .logout_all(&claims, vec![event(Action::LogoutAll)])
                        .await
                        .expect("logout-all");
                    let user = self.sessions[session].user;
                    for s in self.sessions.iter_mut().filter(|s| s.user == user) {
                        s.revoked = true;
                    }
                }
            }
            Op::Wait { secs } => self.clock.advance(std::time::Duration::from_secs(secs)),
        }
    }

    /// Every token against both processes.
    async fn check(&mut self, step: usize) {
        let cursor = self.peer.revocations().initial_cursor(self.clock.now_ms());
        self.peer.sync_revocations(cursor).await.expect("sync");
        let now = self.clock.now_ms();
        for (n, t) in self.tokens.iter().enumerate() {
            let revoked = self.sessions[t.session].revoked;
            let live = !revoked && now < t.expires_ms;
            for (who, service) in [("server", &self.server), ("peer", &self.peer)] {
                let accepted = service.authorize(&t.token).is_ok();
                assert!(
                    !(accepted && revoked),
                    "step {step}: {who} accepted token {n} of a revoked session"
                );
                assert_eq!(
                    accepted, live,
                    "step {step}: {who}, token {n}, now {now}, expires {}",
                    t.expires_ms
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_revoked_session_token_is_accepted(ops in prop::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let mut world = World::new().await;
            for (step, op) in ops.iter().enumerate() {
                world.apply(op).await;
                world.check(step).await;
            }
        });
    }
}
