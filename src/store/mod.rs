//! Persistence behind one narrow trait. Handlers and the domain see only
//! [`Store`]; [`sqlite::SqliteStore`] is the implementation that ships, and a
//! PostgreSQL one can be added beside it without touching them.

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use uuid::Uuid;

use crate::audit::NewEvent;
use crate::clock::Millis;

/// Audit rows that describe a change: they commit in the same transaction as
/// the change, or neither does.
pub type Audit = Vec<NewEvent>;

/// The rows for a refresh: which one is written depends on what the token was.
/// The store fills in the user and the session.
#[derive(Debug, Clone)]
pub struct RotationAudit {
    pub refreshed: NewEvent,
    pub reused: NewEvent,
}

/// Gives every row without a time the time of its change.
pub(crate) fn stamped(mut audit: Audit, now: Millis) -> Audit {
    for event in &mut audit {
        event.at.get_or_insert(now);
    }
    audit
}

/// The rows of a change that revoked sessions say how many.
pub(crate) fn with_revoked(audit: Audit, revoked: usize, now: Millis) -> Audit {
    let audit = audit
        .into_iter()
        .map(|e| e.extra("sessions_revoked", revoked))
        .collect();
    stamped(audit, now)
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

/// `audit` and a row for each session the bound revoked.
pub(crate) fn with_evicted(
    mut audit: Audit,
    limit: &SessionLimit,
    user_id: Uuid,
    evicted: &[Uuid],
    now: Millis,
) -> Audit {
    audit.extend(evicted.iter().map(|&id| limit.row(user_id, id)));
    stamped(audit, now)
}

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub password_hash: String,
    pub is_admin: bool,
    pub disabled_at: Option<Millis>,
    pub created_at: Millis,
}

impl User {
    pub fn is_disabled(&self) -> bool {
        self.disabled_at.is_some()
    }
}

/// What is needed to create an account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub password_hash: String,
    pub is_admin: bool,
    pub created_at: Millis,
}

/// A login session: the unit that refresh tokens rotate within and that logout revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub remember_me: bool,
    pub created_at: Millis,
    pub last_used_at: Millis,
    pub expires_at: Millis,
    pub revoked_at: Option<Millis>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

impl Session {
    /// Neither revoked nor expired at `now`.
    pub fn is_live(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
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

/// A signing key row; `private_key` is sealed (see `auth::crypto`).
#[derive(Debug, Clone)]
pub struct SigningKeyRow {
    pub kid: String,
    pub algorithm: String,
    pub private_key: Vec<u8>,
    pub public_key: Vec<u8>,
    pub created_at: Millis,
}

/// A revocation seen in storage, for the in-memory revocation view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    pub session_id: Uuid,
    pub revoked_at: Millis,
}

/// A saved rate-limit window; `events` is JSON `[[at_ms, tag], ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitRow {
    pub rule: String,
    /// The key's identity; `None` for a window an earlier version saved under
    /// its whole text (then `key` is that text).
    pub key_id: Option<Vec<u8>>,
    /// What is shown of the key.
    pub key: String,
    pub events: String,
}
/// A successful login: who, from where, when (for the known-device exemption).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentLogin {
    pub email: String,
    pub ip_address: String,
    pub at: Millis,
}

/// The audit actions of an account's recovery: its known devices are
/// forgotten then (SPEC section 6).
pub const RECOVERY_ACTIONS: [&str; 4] = [
    "logout_all",
    "password_changed",
    "password_reset_success",
    "user_disabled",
];

/// A recovery of `email` at `at`, read from audit row `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub id: i64,
    pub email: String,
    pub at: Millis,
}

/// The recoveries of audit rows: `(id, email, created_at)` read back.
pub(crate) fn recoveries(rows: Vec<(i64, String, String)>) -> Vec<Recovery> {
    rows.into_iter()
        .filter_map(|(id, email, created_at)| {
            Some(Recovery {
                id,
                email,
                at: crate::time_fmt::parse_rfc3339(&created_at)?,
            })
        })
        .collect()
}

/// A user's TOTP state; secrets are sealed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TotpRow {
    pub secret: Option<Vec<u8>>,
    pub pending_secret: Option<Vec<u8>>,
    pub last_step: Option<i64>,
}

impl TotpRow {
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }
}

/// A pending second-factor challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaChallenge {
    pub user_id: Uuid,
    pub remember_me: bool,
    pub expires_at: Millis,
    pub failures: u32,
}

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already registered")]
    EmailTaken,
    /// The database is busy, locked, read-only or full: worth retrying later.
    #[error("storage unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    #[error("storage error: {0:#}")]
    Other(anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Accounts, sessions, refresh tokens and keys. A change that is audited
/// takes its audit rows and commits them with itself: a request that fails
/// leaves neither the change nor a row describing it.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an account; [`StoreError::EmailTaken`] when the email exists.
    async fn create_user(&self, user: NewUser, audit: Audit) -> StoreResult<User>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>>;
    /// The account and whether its second factor is on, in one read.
    async fn user_with_mfa(&self, id: Uuid) -> StoreResult<Option<(User, bool)>>;
    /// Accounts whose email contains `email_filter` (all when `None`), oldest
    /// first, each with whether TOTP is on (one query, not one per account).
    async fn list_users(&self, email_filter: Option<String>) -> StoreResult<Vec<(User, bool)>>;
    async fn set_password_hash(&self, user_id: Uuid, hash: String, now: Millis) -> StoreResult<()>;
    /// Disables or enables an account; disabling revokes all its sessions.
    /// Returns `false` when the account does not exist.
    async fn set_disabled(
        &self,
        user_id: Uuid,
        disabled: bool,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool>;
    /// Makes an account an administrator or not; unmaking one revokes all
    /// its sessions, so that no token still claims the role. Returns `false`
    /// (and records nothing) when the account does not exist or already is so.
    async fn set_admin(
        &self,
        user_id: Uuid,
        is_admin: bool,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool>;
    /// Sets a new password hash and revokes every live session but `keep`;
    /// returns the sessions revoked.
    async fn change_password(
        &self,
        user_id: Uuid,
        hash: String,
        keep: Option<Uuid>,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Vec<Uuid>>;

    /// Stores a new session and its first refresh token hash; when the user
    /// then has more live sessions than `limit.max`, revokes the least
    /// recently used others in the same transaction. Returns those.
    async fn create_session(
        &self,
        session: Session,
        refresh_hash: [u8; 32],
        limit: SessionLimit,
        audit: Audit,
    ) -> StoreResult<Vec<Uuid>>;
    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>>;
    /// Live sessions of a user, newest first.
    async fn live_sessions(&self, user_id: Uuid, now: Millis) -> StoreResult<Vec<Session>>;
    /// Retires `presented` and makes `replacement` current, atomically.
    async fn rotate_refresh(
        &self,
        presented: [u8; 32],
        replacement: [u8; 32],
        now: Millis,
        audit: RotationAudit,
    ) -> StoreResult<Rotation>;
    /// Revokes one live session of `user_id`. Returns `false` when there is none.
    async fn revoke_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        reason: &'static str,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool>;
    /// Revokes every live session of a user except `keep`; returns the ones revoked.
    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &'static str,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Vec<Uuid>>;
    /// Sessions revoked at or after `since`, for the in-memory revocation view.
    async fn revoked_since(&self, since: Millis) -> StoreResult<Vec<Revoked>>;

    /// The newest unretired signing key for `algorithm`.
    async fn active_signing_key(&self, algorithm: &str) -> StoreResult<Option<SigningKeyRow>>;
    async fn insert_signing_key(&self, key: SigningKeyRow) -> StoreResult<()>;

    /// Stores a reset token for `user_id`, voiding the user's older unused
    /// ones, with `audit`. Without a user (no enabled account has the email)
    /// it does the same work, finding nothing to void, and stores only
    /// `audit`: both answers take the same time.
    async fn create_reset_token(
        &self,
        user_id: Option<Uuid>,
        token_hash: [u8; 32],
        now: Millis,
        expires_at: Millis,
        audit: Audit,
    ) -> StoreResult<()>;
    /// The user of an unused, unexpired reset token, without using it.
    async fn reset_token_user(
        &self,
        token_hash: [u8; 32],
        now: Millis,
    ) -> StoreResult<Option<Uuid>>;
    /// In one transaction: uses the token (if still unused and unexpired), sets
    /// the password hash and revokes every session of the user. Returns the
    /// user and the revoked sessions, or `None` when the token was not valid.
    async fn reset_password(
        &self,
        token_hash: [u8; 32],
        password_hash: String,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Option<(Uuid, Vec<Uuid>)>>;

    async fn totp(&self, user_id: Uuid) -> StoreResult<Option<TotpRow>>;
    /// Stores a new sealed secret awaiting confirmation.
    async fn set_pending_totp(&self, user_id: Uuid, sealed: Vec<u8>) -> StoreResult<()>;
    /// Makes the pending secret active (its code at `step` confirmed it) and
    /// replaces the backup codes, in one transaction. False when nothing is pending.
    async fn enable_totp(
        &self,
        user_id: Uuid,
        step: i64,
        backup_hashes: Vec<[u8; 32]>,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool>;
    /// Removes TOTP and backup codes.
    async fn disable_totp(&self, user_id: Uuid, now: Millis, audit: Audit) -> StoreResult<()>;
    /// Records `step` as used if it is newer than the last one; false for a replay.
    async fn use_totp_step(&self, user_id: Uuid, step: i64) -> StoreResult<bool>;
    /// Uses a backup code stored under either hash (keyed, or the older
    /// unkeyed form); false when unknown or already used.
    async fn use_backup_code(
        &self,
        user_id: Uuid,
        code_hashes: [[u8; 32]; 2],
        now: Millis,
    ) -> StoreResult<bool>;
    /// Replaces every backup code of the user.
    async fn replace_backup_codes(
        &self,
        user_id: Uuid,
        hashes: Vec<[u8; 32]>,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<()>;
    async fn create_mfa_challenge(
        &self,
        token_hash: [u8; 32],
        challenge: MfaChallenge,
        now: Millis,
    ) -> StoreResult<()>;
    /// An unexpired, unspent challenge.
    async fn mfa_challenge(
        &self,
        token_hash: [u8; 32],
        now: Millis,
    ) -> StoreResult<Option<MfaChallenge>>;
    /// Counts a wrong code; the challenge is spent at `max_failures`.
    async fn fail_mfa_challenge(
        &self,
        token_hash: [u8; 32],
        max_failures: u32,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<()>;
    /// Spends a challenge and stores the session it opens (bounded by
    /// `limit` as in [`Store::create_session`]), with `success`; when the
    /// challenge was already spent, stores nothing but `failed`. Returns the
    /// sessions revoked for the bound, or `None` when nothing was stored.
    async fn complete_mfa_challenge(
        &self,
        token_hash: [u8; 32],
        session: Session,
        refresh_hash: [u8; 32],
        limit: SessionLimit,
        success: Audit,
        failed: Audit,
    ) -> StoreResult<Option<Vec<Uuid>>>;

    /// Replaces every saved rate-limit window with `rows`.
    async fn save_rate_limits(&self, rows: Vec<RateLimitRow>, now: Millis) -> StoreResult<()>;
    async fn load_rate_limits(&self) -> StoreResult<Vec<RateLimitRow>>;
    /// The latest login per (account, address) of sessions created since
    /// `since` and still live at `now` (a revoked session makes no device known).
    async fn recent_logins(&self, since: Millis, now: Millis) -> StoreResult<Vec<RecentLogin>>;
    /// The id of the newest audit row (0 when there is none).
    async fn audit_head(&self) -> StoreResult<i64>;
    /// The recoveries (password changed or reset, logout-all, disabled)
    /// recorded in audit rows after `after`, oldest first, at most 1,000: how
    /// a process learns of the recoveries other processes made.
    async fn recoveries_after(&self, after: i64) -> StoreResult<Vec<Recovery>>;

    /// Whether the database answers a trivial query.
    async fn ping(&self) -> StoreResult<()>;
}
