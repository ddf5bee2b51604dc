//! Sessions and their refresh tokens: creation under the per-user bound,
//! rotation with reuse detection, revocation, and what the in-memory views
//! (revocations, known devices) read back.

use uuid::Uuid;

use super::db::{Chain, Conn, Row};
use super::{with_revoked, Audit, NewEvent, Store, StoreResult};
use crate::clock::Millis;

/// The rows for a refresh: which one is written depends on what the token was.
/// The store fills in the user and the session.
#[derive(Debug, Clone)]
pub struct RotationAudit {
    pub refreshed: NewEvent,
    pub reused: NewEvent,
}

/// The bound on a user's live sessions (`accounts.max_sessions`): a new
/// session beyond it revokes the least recently used ones, each recorded with
/// a copy of `evicted` (the store names the user and the session).
#[derive(Debug, Clone)]
pub struct SessionLimit {
    pub max: u32,
    pub evicted: NewEvent,
}

impl SessionLimit {
    /// How many live sessions must go so that `live` plus none is within the bound.
    pub fn excess(&self, live: u64) -> u64 {
        live.saturating_sub(u64::from(self.max))
    }

    /// The audit row of one evicted session.
    pub fn row(&self, user_id: Uuid, session_id: Uuid) -> NewEvent {
        self.evicted
            .clone()
            .user(user_id)
            .resource("session", session_id)
            .extra("reason", "session_limit")
    }
}

/// What a session's credential is and where it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A token pair: a refresh token (stored hashed) that rotates.
    Api,
    /// The `portcullis_session` cookie of the web pages (stored hashed).
    Browser,
    /// An OpenID Connect grant to a client: tokens like an API session's,
    /// refresh tokens rotating the same way.
    Oidc,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Browser => "browser",
            Self::Oidc => "oidc",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "browser" => Self::Browser,
            "oidc" => Self::Oidc,
            _ => Self::Api,
        }
    }
}

/// The factors a session was opened with, as RFC 8176 `amr` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Amr(u8);

impl Amr {
    /// A password.
    pub const PWD: Self = Self(1);
    /// A one-time code: TOTP or a backup code.
    pub const OTP: Self = Self(2);
    /// A hardware-bound key (a passkey).
    pub const HWK: Self = Self(4);
    /// The user was verified on the authenticator.
    pub const USER: Self = Self(8);
    const NAMES: [(Self, &'static str); 4] = [
        (Self::PWD, "pwd"),
        (Self::OTP, "otp"),
        (Self::HWK, "hwk"),
        (Self::USER, "user"),
    ];

    /// Both sets of factors.
    #[must_use]
    pub const fn and(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Two factors: a password and a code, or a passkey that verified its user.
    pub fn is_multi_factor(self) -> bool {
        self.contains(Self::PWD.and(Self::OTP))
            || self.contains(Self::PWD.and(Self::HWK))
            || self.contains(Self::HWK.and(Self::USER))
    }

    /// The factors of a claim's values (unknown ones ignored).
    pub fn from_values<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        values.into_iter().fold(Self(0), |amr, name| {
            Self::NAMES
                .iter()
                .find(|(_, n)| *n == name)
                .map_or(amr, |(f, _)| amr.and(*f))
        })
    }

    /// The claim's values, in a fixed order.
    pub fn values(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, name)| name)
    }

    pub(super) fn to_text(self) -> String {
        self.values().collect::<Vec<_>>().join(",")
    }

    /// Unknown names are ignored; nothing known reads as a password.
    pub(super) fn parse(s: &str) -> Self {
        let amr = Self::from_values(s.split(','));
        if amr.0 == 0 {
            Self::PWD
        } else {
            amr
        }
    }
}

/// A sign-in session: the unit that refresh tokens rotate within (or that a
/// browser's cookie names) and that logout revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: SessionKind,
    /// The factors it was opened with.
    pub amr: Amr,
    pub remember_me: bool,
    pub created_at: Millis,
    pub last_used_at: Millis,
    pub expires_at: Millis,
    pub revoked_at: Option<Millis>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    /// What an OIDC session was granted.
    pub grant: Option<Grant>,
}

/// An OIDC session's client and scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub client_id: String,
    /// Space-separated, as granted.
    pub scope: String,
}

impl Session {
    /// Neither revoked nor expired at `now`.
    pub fn is_live(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// What a check of a browser session needs, remembered per cookie (neither
/// its address nor its user agent: 100,000 of these are a few megabytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSession {
    pub id: Uuid,
    pub user_id: Uuid,
    pub amr: Amr,
    pub created_at: Millis,
    pub expires_at: Millis,
}

impl From<&Session> for LiveSession {
    fn from(session: &Session) -> Self {
        Self {
            id: session.id,
            user_id: session.user_id,
            amr: session.amr,
            created_at: session.created_at,
            expires_at: session.expires_at,
        }
    }
}

/// The outcome of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current: it is now retired and `new_hash` is current.
    Rotated(Session),
    /// The token had already been retired: the whole session is now revoked.
    Reused { session_id: Uuid, user_id: Uuid },
    /// Unknown token, or the session is revoked or expired.
    Invalid,
}

/// A revocation seen in storage, for the in-memory revocation view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    pub session_id: Uuid,
    pub revoked_at: Millis,
}

/// A successful login: who, from where, when (for the known-device exemption).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentLogin {
    pub email: String,
    pub ip_address: String,
    pub at: Millis,
}

pub(super) const SESSION_COLS: &str =
    "id, user_id, remember_me, created_at, last_used_at, expires_at, revoked_at, ip_address, user_agent, kind, amr, client_id, scope";

pub(super) fn session_row(r: &Row<'_>) -> StoreResult<Session> {
    Ok(Session {
        id: r.uuid(0)?,
        user_id: r.uuid(1)?,
        kind: SessionKind::parse(&r.get::<String>(9)?),
        amr: Amr::parse(&r.get::<String>(10)?),
        remember_me: r.get(2)?,
        created_at: r.get(3)?,
        last_used_at: r.get(4)?,
        expires_at: r.get(5)?,
        revoked_at: r.get(6)?,
        ip_address: r.get(7)?,
        user_agent: r.get(8)?,
        grant: match (r.get::<Option<String>>(11)?, r.get::<Option<String>>(12)?) {
            (Some(client_id), scope) => Some(Grant {
                client_id,
                scope: scope.unwrap_or_default(),
            }),
            (None, _) => None,
        },
    })
}

/// `audit` and a row for each session the bound revoked.
fn with_evicted(mut audit: Audit, limit: &SessionLimit, user_id: Uuid, evicted: &[Uuid]) -> Audit {
    audit.extend(evicted.iter().map(|&id| limit.row(user_id, id)));
    audit
}

/// Revokes every live session of `user_id` but `keep`; the ones revoked.
pub(super) async fn revoke_all(
    c: &mut Conn<'_>,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: &str,
    now: Millis,
) -> StoreResult<Vec<Uuid>> {
    let keep = keep.map(|k| k.to_string()).unwrap_or_default();
    c.query(
        "UPDATE sessions SET revoked_at = $1, revoke_reason = $2
         WHERE user_id = $3 AND revoked_at IS NULL AND expires_at > $1 AND id <> $4
         RETURNING id",
        &[&now, &reason, &user_id.to_string(), &keep],
        |r| r.uuid(0),
    )
    .await
}

/// Stores a new session and its credential (an API session's first refresh
/// token, a browser session's cookie: `credential` is its hash), then revokes the user's
/// least recently used other live sessions beyond `limit`; returns those and
/// the audit rows with one for each. The user's row is held first (on
/// PostgreSQL), so that concurrent logins of one user count one by one.
pub(super) async fn insert_session(
    c: &mut Conn<'_>,
    session: &Session,
    credential: &[u8; 32],
    limit: &SessionLimit,
    audit: Audit,
) -> StoreResult<(Vec<Uuid>, Audit)> {
    let id = session.id.to_string();
    let user = session.user_id.to_string();
    // Opened now: an OpenID Connect grant's `created_at` is the browser's
    // sign-in, which may be days old.
    let now = session.last_used_at;
    c.query_opt(
        "SELECT id FROM users WHERE id = $1 FOR UPDATE",
        &[&user],
        |_| Ok(()),
    )
    .await?;
    let cookie_hash = (session.kind == SessionKind::Browser).then_some(&credential[..]);
    c.execute(
        "INSERT INTO sessions (id, user_id, remember_me, created_at, last_used_at, expires_at,
                               ip_address, user_agent, kind, amr, cookie_hash, client_id, scope)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &[
            &id,
            &user,
            &session.remember_me,
            &session.created_at,
            &session.last_used_at,
            &session.expires_at,
            &session.ip_address,
            &session.user_agent,
            &session.kind.as_str(),
            &session.amr.to_text(),
            &cookie_hash,
            &session.grant.as_ref().map(|g| g.client_id.as_str()),
            &session.grant.as_ref().map(|g| g.scope.as_str()),
        ],
    )
    .await?;
    if session.kind != SessionKind::Browser {
        insert_refresh_token(c, credential, &id, now).await?;
    }
    let live: i64 = c
        .query_one(
            "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2",
            &[&user, &now],
            |r| r.get(0),
        )
        .await?;
    let excess = live.saturating_sub(i64::from(limit.max));
    let evicted = if excess > 0 {
        c.query(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = 'session_limit'
             WHERE id IN (SELECT id FROM sessions
                          WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1 AND id <> $3
                          ORDER BY last_used_at, created_at LIMIT $4)
             RETURNING id",
            &[&now, &user, &id, &excess],
            |r| r.uuid(0),
        )
        .await?
    } else {
        Vec::new()
    };
    let audit = with_evicted(audit, limit, session.user_id, &evicted);
    Ok((evicted, audit))
}

/// Makes `hash` the current refresh token of session `session_id`.
async fn insert_refresh_token(
    c: &mut Conn<'_>,
    hash: &[u8; 32],
    session_id: &str,
    now: Millis,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        &[&&hash[..], &session_id, &now],
    )
    .await?;
    Ok(())
}

/// The body of a refresh: retire `presented` and make `replacement` current,
/// or revoke the whole session when `presented` was already retired. The
/// token and session rows are held (on PostgreSQL) so that two instances
/// presenting one token at once take turns, and the second sees a reuse.
async fn rotate(
    c: &mut Conn<'_>,
    presented: [u8; 32],
    replacement: [u8; 32],
    client: Option<&str>,
    now: Millis,
) -> StoreResult<Rotation> {
    let found = c
        .query_opt(
            "SELECT session_id, retired_at FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
            &[&&presented[..]],
            |r| Ok((r.uuid(0)?, r.get::<Option<Millis>>(1)?)),
        )
        .await?;
    let Some((session_id, retired_at)) = found else {
        return Ok(Rotation::Invalid);
    };
    let id = session_id.to_string();
    let sql = format!("SELECT {SESSION_COLS} FROM sessions WHERE id = $1 FOR UPDATE");
    let Some(session) = c.query_opt(&sql, &[&id], session_row).await? else {
        return Ok(Rotation::Invalid);
    };
    if retired_at.is_some() {
        c.execute(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = 'refresh_token_reused'
             WHERE id = $2 AND revoked_at IS NULL",
            &[&now, &id],
        )
        .await?;
        return Ok(Rotation::Reused {
            session_id,
            user_id: session.user_id,
        });
    }
    // A token is good only at its own door: an API session's at
    // /auth/refresh, a grant's at /oidc/token by its own client.
    let door = match (&session.grant, client) {
        (None, None) => session.kind == SessionKind::Api,
        (Some(grant), Some(client)) => {
            session.kind == SessionKind::Oidc && grant.client_id == client
        }
        _ => false,
    };
    if !door || !session.is_live(now) {
        return Ok(Rotation::Invalid);
    }
    c.execute(
        "UPDATE refresh_tokens SET retired_at = $1 WHERE token_hash = $2",
        &[&now, &&presented[..]],
    )
    .await?;
    insert_refresh_token(c, &replacement, &id, now).await?;
    c.execute(
        "UPDATE sessions SET last_used_at = $1 WHERE id = $2",
        &[&now, &id],
    )
    .await?;
    Ok(Rotation::Rotated(Session {
        last_used_at: now,
        ..session
    }))
}

impl Store {
    /// Stores a new session and its credential's hash (see
    /// [`insert_session`]); when the user then has more live sessions than
    /// `limit.max`, revokes the least recently used others in the same
    /// transaction. Returns those.
    pub async fn create_session(
        &self,
        session: Session,
        credential: [u8; 32],
        limit: SessionLimit,
        audit: Audit,
    ) -> StoreResult<Vec<Uuid>> {
        let now = session.created_at;
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(
                    async move { insert_session(c, &session, &credential, &limit, audit).await },
                )
            })
            .await
    }

    pub async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    let sql = format!("SELECT {SESSION_COLS} FROM sessions WHERE id = $1");
                    c.query_opt(&sql, &[&id.to_string()], session_row).await
                })
            })
            .await
    }

    /// The live browser session whose cookie hashes to `cookie_hash`.
    pub async fn browser_session(
        &self,
        cookie_hash: [u8; 32],
        now: Millis,
    ) -> StoreResult<Option<Session>> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {SESSION_COLS} FROM sessions
                         WHERE cookie_hash = $1 AND kind = 'browser'
                           AND revoked_at IS NULL AND expires_at > $2"
                    );
                    c.query_opt(&sql, &[&&cookie_hash[..], &now], session_row)
                        .await
                })
            })
            .await
    }

    /// Marks a session used at `now` (for the least-recently-used bound).
    pub async fn touch_session(&self, id: Uuid, now: Millis) -> StoreResult<()> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    c.execute(
                        "UPDATE sessions SET last_used_at = $1 WHERE id = $2 AND last_used_at < $1",
                        &[&now, &id.to_string()],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// Live sessions of a user, newest first.
    pub async fn live_sessions(&self, user_id: Uuid, now: Millis) -> StoreResult<Vec<Session>> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {SESSION_COLS} FROM sessions
                         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
                         ORDER BY created_at DESC, id"
                    );
                    c.query(&sql, &[&user_id.to_string(), &now], session_row)
                        .await
                })
            })
            .await
    }

    /// Retires `presented` and makes `replacement` current, atomically, with
    /// the row of what happened (none for an invalid token). `client`: the
    /// OIDC client presenting it, `None` for an API session's token.
    pub async fn rotate_refresh(
        &self,
        presented: [u8; 32],
        replacement: [u8; 32],
        client: Option<String>,
        now: Millis,
        audit: RotationAudit,
    ) -> StoreResult<Rotation> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let rotation =
                        rotate(c, presented, replacement, client.as_deref(), now).await?;
                    let rows = match &rotation {
                        Rotation::Rotated(session) => vec![audit
                            .refreshed
                            .user(session.user_id)
                            .resource("session", session.id)],
                        Rotation::Reused {
                            session_id,
                            user_id,
                        } => vec![audit.reused.user(*user_id).resource("session", *session_id)],
                        Rotation::Invalid => Vec::new(),
                    };
                    Ok((rotation, rows))
                })
            })
            .await
    }

    /// Revokes one live session of `user_id`. Returns `false` (recording
    /// nothing) when there is none.
    pub async fn revoke_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        reason: &'static str,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let changed = c
                        .execute(
                            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2
                             WHERE id = $3 AND user_id = $4 AND revoked_at IS NULL AND expires_at > $1",
                            &[&now, &reason, &session_id.to_string(), &user_id.to_string()],
                        )
                        .await?
                        > 0;
                    Ok((changed, if changed { audit } else { Vec::new() }))
                })
            })
            .await
    }

    /// Revokes every live session of a user except `keep`; returns the ones revoked.
    pub async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &'static str,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Vec<Uuid>> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let revoked = revoke_all(c, user_id, keep, reason, now).await?;
                    let audit = with_revoked(audit, revoked.len());
                    Ok((revoked, audit))
                })
            })
            .await
    }

    /// Sessions revoked at or after `since`, for the in-memory revocation view.
    pub async fn revoked_since(&self, since: Millis) -> StoreResult<Vec<Revoked>> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    c.query(
                        "SELECT id, revoked_at FROM sessions WHERE revoked_at >= $1",
                        &[&since],
                        |r| {
                            Ok(Revoked {
                                session_id: r.uuid(0)?,
                                revoked_at: r.get(1)?,
                            })
                        },
                    )
                    .await
                })
            })
            .await
    }

    /// The latest login per (account, address) of sessions created since
    /// `since` and still live at `now` (a revoked session makes no device known).
    pub async fn recent_logins(&self, since: Millis, now: Millis) -> StoreResult<Vec<RecentLogin>> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    c.query(
                        "SELECT u.email, s.ip_address, max(s.created_at) FROM sessions s
                         JOIN users u ON u.id = s.user_id
                         WHERE s.created_at > $1 AND s.ip_address IS NOT NULL
                           AND s.revoked_at IS NULL AND s.expires_at > $2
                         GROUP BY u.email, s.ip_address",
                        &[&since, &now],
                        |r| {
                            Ok(RecentLogin {
                                email: r.get(0)?,
                                ip_address: r.get(1)?,
                                at: r.get(2)?,
                            })
                        },
                    )
                    .await
                })
            })
            .await
    }
}
