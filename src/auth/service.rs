//! The domain service and its accounts: what every account route of SPEC
//! section 5 does, without HTTP (sessions are in `sessions.rs`, second
//! factors in `mfa.rs`). Handlers call these and map [`AuthError`] to responses.

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use uuid::Uuid;

use super::crypto::{new_opaque_token, opaque_token_hash, MasterKey, SecretIds};
use super::groups::{parse_groups, with_admins};
use super::password::{HashError, HashPool, PasswordPolicy};
use super::revocation::{RevocationBus, RevocationList};
use super::tokens::{AccessClaims, TokenError, TokenKeys};
use crate::audit::NewEvent;
use crate::clock::{Millis, SharedClock};
use crate::config::Config;
use crate::email::{normalize, Email};
use crate::store::{
    Audit, GroupChange, LiveSession, NewUser, Revoked, Session, Store, StoreError, User,
};

/// Longest accepted display name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// User agents are stored cut to this many characters.
pub const MAX_USER_AGENT_CHARS: usize = 512;

/// Why a login was refused. The client sees only `invalid_credentials`; the
/// reason is kept for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    UnknownEmail,
    WrongPassword,
    AccountDisabled,
}

impl LoginFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownEmail => "unknown_email",
            Self::WrongPassword => "wrong_password",
            Self::AccountDisabled => "account_disabled",
        }
    }
}

/// Reasons a field failed validation, by field name.
pub type FieldErrors = std::collections::BTreeMap<&'static str, String>;

/// Every way an account operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("validation failed")]
    Validation(FieldErrors),
    #[error("invalid credentials ({})", .reason.as_str())]
    InvalidCredentials {
        reason: LoginFailure,
        /// The account, when the email matched one (for the audit log only).
        user_id: Option<Uuid>,
    },
    #[error("email taken")]
    EmailTaken,
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("refresh token reused")]
    RefreshTokenReused { session_id: Uuid, user_id: Uuid },
    #[error("{0}")]
    InvalidToken(TokenError),
    #[error("invalid current password")]
    InvalidCurrentPassword,
    #[error("invalid or expired reset token")]
    InvalidResetToken,
    #[error("invalid two-factor code")]
    InvalidMfaCode,
    /// TOTP is not in the state the operation needs (the code names it).
    #[error("two-factor state: {0}")]
    MfaState(&'static str),
    #[error("not found")]
    NotFound,
    /// An OpenID Connect code or refresh token that is no good (RFC 6749
    /// `invalid_grant`), and why.
    #[error("{0}")]
    InvalidGrant(&'static str),
    /// Passkeys cannot be used here, and why (see `passkeys::relying_party`).
    #[error("passkeys are off: {0}")]
    PasskeysOff(String),
    /// A change that needs a recent sign-in or the current password.
    #[error("sign in again")]
    ReauthenticationRequired,
    /// A passkey that cannot be added, and why.
    #[error("{0}")]
    PasskeyRejected(&'static str),
    #[error("hashing overloaded")]
    Overloaded,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<HashError> for AuthError {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Overloaded => Self::Overloaded,
            HashError::Internal(e) => Self::Internal(e),
        }
    }
}

pub type AuthResult<T> = Result<T, AuthError>;

/// Who is asking, as recorded on a session.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub fn new(ip: Option<String>, user_agent: Option<&str>) -> Self {
        Self {
            ip,
            user_agent: user_agent.map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect()),
        }
    }
}

/// An access token and refresh token for one session (SPEC "Token pair");
/// lifetimes in seconds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_expires_in: i64,
    pub session_id: Uuid,
}

/// How long a password-reset token is valid.
pub const RESET_TOKEN_TTL_MS: Millis = 3_600_000;

/// The outcome of a password-reset request. The client sees the same answer
/// for both.
#[derive(Debug)]
pub enum ResetRequest {
    /// No enabled account has this email; nothing is sent.
    NoAccount,
    /// A token was issued; send it to the user.
    Issued { user: User, token: String },
}

/// What must hear of an account's recovery (its password changed or reset,
/// logout-all, disabled): the rate limiter's known devices, which are
/// forgotten then (SPEC section 6), so that an address that once signed in
/// does not keep its exemption from `login_account` past the recovery.
#[async_trait::async_trait]
pub trait DeviceMemory: Send + Sync + 'static {
    /// Forgets every known device of `account` as of `at`; false when that
    /// could not be done now (it is worth trying again).
    async fn forget(&self, account: &str, at: Millis) -> bool;
}

/// The account and session logic, shared by every handler.
pub struct AuthService {
    pub(super) store: Store,
    pub(super) master: Arc<MasterKey>,
    /// The key of backup-code hashes (derived from the storage key).
    pub(super) backup_key: [u8; 32],
    pub(super) issuer: String,
    pub(super) hasher: HashPool,
    pub(super) policy: PasswordPolicy,
    pub(super) tokens: TokenKeys,
    pub(super) revocations: RevocationList,
    /// Tells other instances of this process's revocations at once.
    pub(super) bus: Option<Arc<dyn RevocationBus>>,
    /// Forgets an account's known devices at a recovery.
    pub(super) devices: Option<Arc<dyn DeviceMemory>>,
    /// The last audit row whose recovery `devices` has heard.
    pub(super) recoveries_heard: std::sync::atomic::AtomicI64,
    pub(super) clock: SharedClock,
    pub(super) session_ttl_ms: Millis,
    pub(super) refresh_ttl_ms: Millis,
    /// `accounts.max_sessions`.
    pub(super) max_sessions: u32,
    /// Recently read accounts for `GET /auth/me` and forward auth (see
    /// [`AuthService::current_profile`]).
    pub(super) profiles: moka::sync::Cache<Uuid, Arc<Profile>>,
    /// Counts every forgetting of profiles: a read of storage that a
    /// forgetting overtook is not remembered (it may be the old account).
    pub(super) profiles_forgotten: std::sync::atomic::AtomicU64,
    /// The last audit row whose change to an account this process has heard
    /// (see [`AuthService::sync_revocations`]); negative before the first poll.
    pub(super) account_changes_heard: std::sync::atomic::AtomicI64,
    /// Browser sessions seen lately, by their cookie's in-memory identity
    /// (see [`AuthService::browser_identity`]).
    pub(super) browser_sessions: moka::sync::Cache<[u8; 16], LiveSession>,
    /// Cookies that named no live session when last asked (a new cookie is
    /// never asked about before it is issued, so none of these can become
    /// valid).
    pub(super) unknown_cookies: moka::sync::Cache<[u8; 16], ()>,
    pub(super) cookie_ids: SecretIds,
    /// The key of the pages' form (CSRF) tokens.
    pub(super) form_key: [u8; 32],
    /// The setup link of a first run, as its hash and expiry (see `first_run.rs`).
    pub(super) first_run: std::sync::Mutex<Option<([u8; 32], Millis)>>,
    /// The relying party of passkeys, or why they are off.
    pub(super) webauthn: super::relying_party::RelyingParty,
    /// The key of the credential ids named for accounts without a passkey.
    pub(super) passkey_decoys: [u8; 32],
}

/// An account as `GET /auth/me` shows it: the row without its password hash,
/// and whether its second factor is on.
#[derive(Debug, Clone)]
pub struct Profile {
    pub user: User,
    pub mfa_enabled: bool,
    /// Its groups, `admins` included for an administrator, sorted.
    pub groups: Vec<String>,
}

/// Profiles remembered at once, and for how long after a read. Changes made
/// by this process are seen at once (they forget the profile); changes made
/// by another process on the same database (the CLI, another instance) at
/// its next poll of storage, which reads their audit rows (the same bound as
/// for revocations). The lifetime is only a backstop.
const PROFILES: u64 = 100_000;
const PROFILE_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// Browser sessions remembered at once, and for how long after a read (at
/// most; never longer than `access_ttl`, for which the revocation list keeps
/// each revocation). A revocation is seen at once all the same: the list is
/// consulted on every use; only the session's row is remembered.
const BROWSER_SESSIONS: u64 = 250_000;
const BROWSER_SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl AuthService {
    pub fn new(
        config: &Config,
        store: Store,
        master: Arc<MasterKey>,
        hasher: HashPool,
        tokens: TokenKeys,
        revocations: RevocationList,
        clock: SharedClock,
    ) -> Self {
        Self {
            store,
            backup_key: master.subkey("backup codes"),
            unknown_cookies: moka::sync::Cache::builder()
                .max_capacity(BROWSER_SESSIONS)
                .time_to_live(std::time::Duration::from_secs(10))
                .build(),
            form_key: master.subkey("form tokens"),
            cookie_ids: SecretIds::random(),
            first_run: std::sync::Mutex::new(None),
            webauthn: super::relying_party::relying_party(config),
            passkey_decoys: master.subkey("passkey decoys"),
            master,
            issuer: config.tokens.issuer.clone(),
            hasher,
            policy: PasswordPolicy::from_config(&config.passwords),
            tokens,
            revocations,
            bus: None,
            devices: None,
            recoveries_heard: std::sync::atomic::AtomicI64::new(0),
            clock,
            session_ttl_ms: config.tokens.session_ttl.as_millis_i64(),
            refresh_ttl_ms: config.tokens.refresh_ttl.as_millis_i64(),
            max_sessions: config.accounts.max_sessions,
            profiles: moka::sync::Cache::builder()
                .max_capacity(PROFILES)
                .time_to_live(PROFILE_TTL)
                .build(),
            account_changes_heard: std::sync::atomic::AtomicI64::new(-1),
            profiles_forgotten: std::sync::atomic::AtomicU64::new(0),
            browser_sessions: moka::sync::Cache::builder()
                .max_capacity(BROWSER_SESSIONS)
                .time_to_live(
                    BROWSER_SESSION_TTL
                        .min(config.tokens.access_ttl.std())
                        .max(std::time::Duration::from_secs(1)),
                )
                .build(),
        }
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Announces this process's revocations on `bus` from now on, so that
    /// other instances refuse those sessions' tokens at once rather than at
    /// their next poll of storage.
    pub fn set_revocation_bus(&mut self, bus: Arc<dyn RevocationBus>) {
        self.bus = Some(bus);
    }

    /// Tells `devices` of every recovery from now on: this process's at once,
    /// other processes' (the CLI, other instances) at the next poll of
    /// storage, which reads their audit rows.
    pub async fn set_device_memory(&mut self, devices: Arc<dyn DeviceMemory>) -> AuthResult<()> {
        let head = self.store.audit_head().await?;
        self.recoveries_heard
            .store(head, std::sync::atomic::Ordering::Relaxed);
        self.devices = Some(devices);
        Ok(())
    }

    /// An account was recovered at `at`: its known devices are forgotten.
    /// False when that must be tried again.
    pub(super) async fn recovered(&self, email: &str, at: Millis) -> bool {
        match &self.devices {
            Some(devices) => devices.forget(email, at).await,
            None => true,
        }
    }

    /// Records committed revocations in the in-memory view and announces them.
    /// The answer waits for the announcement; if the bus is down, other
    /// instances still learn them from storage within a poll.
    async fn revoked(&self, revoked: &[Revoked]) {
        for r in revoked {
            self.revocations.revoke(r.session_id, r.revoked_at);
        }
        if let (Some(bus), false) = (&self.bus, revoked.is_empty()) {
            if let Err(e) = bus.publish(revoked).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot announce revocations; other instances will read them from storage"
                );
            }
        }
    }

    pub(crate) async fn revoked_now(&self, sessions: &[Uuid], now: Millis) {
        let revoked: Vec<Revoked> = sessions
            .iter()
            .map(|&session_id| Revoked {
                session_id,
                revoked_at: now,
            })
            .collect();
        self.revoked(&revoked).await;
    }

    /// The key backup codes are hashed under.
    pub(crate) fn backup_key(&self) -> &[u8; 32] {
        &self.backup_key
    }

    /// The issuer shown in authenticator apps.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn tokens(&self) -> &TokenKeys {
        &self.tokens
    }

    pub fn revocations(&self) -> &RevocationList {
        &self.revocations
    }

    /// The storage, for the OpenID Connect provider's own rows.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The storage key, which seals the provider's RSA key.
    pub(crate) fn master(&self) -> &Arc<MasterKey> {
        &self.master
    }

    /// Creates an account after validating every field (SPEC "Accounts").
    pub async fn register(
        &self,
        email: &str,
        password: SecretString,
        name: Option<&str>,
        is_admin: bool,
        audit: Audit,
    ) -> AuthResult<User> {
        let mut errors = FieldErrors::new();
        let parsed = Email::parse(email)
            .map_err(|r| errors.insert("email", r.to_owned()))
            .ok();
        let name = match parse_name(name) {
            Ok(n) => n,
            Err(reason) => {
                errors.insert("name", reason.to_owned());
                None
            }
        };
        if let Err(reason) = self.policy.check_length(password.expose_secret()) {
            errors.insert("password", reason);
        }
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        let Some(email) = parsed else {
            return Err(AuthError::Validation(errors));
        };
        if self.store.user_by_email(email.as_str()).await?.is_some() {
            return Err(AuthError::EmailTaken);
        }
        let hash = self
            .strong_hash(password, &email, name.as_deref(), "password")
            .await?;
        let id = Uuid::new_v4();
        let user = NewUser {
            id,
            email: email.into_string(),
            name,
            password_hash: hash,
            is_admin,
            created_at: self.now(),
        };
        let audit = audit
            .into_iter()
            .map(|e| e.user(id).resource("user", id))
            .collect();
        match self.store.create_user(user, audit).await {
            Err(StoreError::EmailTaken) => Err(AuthError::EmailTaken),
            other => Ok(other?),
        }
    }

    /// Checks the zxcvbn strength and hashes, in one job on the hashing pool.
    async fn strong_hash(
        &self,
        password: SecretString,
        email: &Email,
        name: Option<&str>,
        field: &'static str,
    ) -> AuthResult<String> {
        let policy = self.policy.clone();
        let inputs = [
            email.as_str().to_owned(),
            email.local_part().to_owned(),
            name.unwrap_or_default().to_owned(),
        ];
        let outcome = self
            .hasher
            .run(move |argon| {
                let inputs: Vec<&str> = inputs
                    .iter()
                    .map(String::as_str)
                    .filter(|s| !s.is_empty())
                    .collect();
                policy.check_strength(password.expose_secret(), &inputs)?;
                Ok(argon.hash(password.expose_secret()))
            })
            .await?;
        match outcome {
            Ok(hash) => Ok(hash?),
            Err(reason) => Err(AuthError::Validation(FieldErrors::from([(field, reason)]))),
        }
    }

    /// Verifies an email and password. Costs one argon2 verification whether or
    /// not the account exists. Re-hashes a hash made with older parameters.
    pub async fn authenticate(&self, email: &str, password: SecretString) -> AuthResult<User> {
        let email = normalize(email);
        let user = if email.len() <= crate::email::MAX_EMAIL_LEN {
            self.store.user_by_email(&email).await?
        } else {
            None
        };
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let rehash_with = password.clone();
        let verdict = self.hasher.verify(password, stored).await?;
        let Some(user) = user else {
            return Err(AuthError::InvalidCredentials {
                reason: LoginFailure::UnknownEmail,
                user_id: None,
            });
        };
        if !verdict.valid {
            return Err(AuthError::InvalidCredentials {
                reason: LoginFailure::WrongPassword,
                user_id: Some(user.id),
            });
        }
        if user.is_disabled() {
            return Err(AuthError::InvalidCredentials {
                reason: LoginFailure::AccountDisabled,
                user_id: Some(user.id),
            });
        }
        if verdict.needs_rehash {
            match self.hasher.hash(rehash_with).await {
                Ok(hash) => {
                    if let Err(e) = self
                        .store
                        .set_password_hash(user.id, hash, self.now())
                        .await
                    {
                        tracing::warn!(error = %e, "could not store re-hashed password");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "re-hash deferred"),
            }
        }
        Ok(user)
    }

    /// The current, enabled account behind a verified token.
    pub async fn current_user(&self, claims: &AccessClaims) -> AuthResult<User> {
        self.store
            .user_by_id(claims.sub)
            .await?
            .filter(|u| !u.is_disabled())
            .ok_or(AuthError::InvalidToken(TokenError::Revoked))
    }

    /// The enabled account behind a verified token and whether its second
    /// factor is on, served from memory once read (see [`PROFILE_TTL`]): a
    /// client polling `/auth/me` costs no database read per request.
    pub async fn current_profile(&self, claims: &AccessClaims) -> AuthResult<Arc<Profile>> {
        self.profile(claims.sub).await
    }

    /// The enabled account `user_id`, as [`AuthService::current_profile`] serves it.
    pub(super) async fn profile(&self, user_id: Uuid) -> AuthResult<Arc<Profile>> {
        use std::sync::atomic::Ordering;
        if let Some(profile) = self.profiles.get(&user_id) {
            return Ok(profile);
        }
        let forgotten = self.profiles_forgotten.load(Ordering::Acquire);
        let (mut user, mfa_enabled) = self
            .store
            .user_with_mfa(user_id)
            .await?
            .filter(|(u, _)| !u.is_disabled())
            .ok_or(AuthError::InvalidToken(TokenError::Revoked))?;
        user.password_hash = String::new();
        let groups = with_admins(self.store.groups_of(user_id).await?, user.is_admin);
        let profile = Arc::new(Profile {
            user,
            mfa_enabled,
            groups,
        });
        if self.profiles_forgotten.load(Ordering::Acquire) == forgotten {
            self.profiles.insert(user_id, profile.clone());
            // A forgetting between the check and the insert: undo it.
            if self.profiles_forgotten.load(Ordering::Acquire) != forgotten {
                self.profiles.invalidate(&user_id);
            }
        }
        Ok(profile)
    }

    /// Drops a remembered profile after its account or second factor changed.
    pub(crate) fn forget_profile(&self, user_id: Uuid) {
        self.profiles_forgotten
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.profiles.invalidate(&user_id);
    }

    /// Drops every remembered profile.
    pub(crate) fn forget_profiles(&self) {
        self.profiles_forgotten
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.profiles.invalidate_all();
    }

    /// Changes the password after checking the current one; revokes every other session.
    pub async fn change_password(
        &self,
        claims: &AccessClaims,
        current: SecretString,
        new: SecretString,
        audit: Audit,
    ) -> AuthResult<usize> {
        let user = self.current_user(claims).await?;
        self.check_current_password(&user, current).await?;
        if let Err(reason) = self.policy.check_length(new.expose_secret()) {
            return Err(AuthError::Validation(FieldErrors::from([(
                "new_password",
                reason,
            )])));
        }
        let email = Email::parse(&user.email).map_err(|r| anyhow::anyhow!("stored email {r}"))?;
        let hash = self
            .strong_hash(new, &email, user.name.as_deref(), "new_password")
            .await?;
        let now = self.now();
        let revoked = self
            .store
            .change_password(user.id, hash, Some(claims.sid), now, audit)
            .await?;
        self.revoked_now(&revoked, now).await;
        self.recovered(&user.email, now).await;
        Ok(revoked.len())
    }

    /// [`AuthError::InvalidCurrentPassword`] unless `password` is the account's.
    pub(crate) async fn check_current_password(
        &self,
        user: &User,
        password: SecretString,
    ) -> AuthResult<()> {
        let verdict = self
            .hasher
            .verify(password, Some(user.password_hash.clone()))
            .await?;
        if verdict.valid {
            Ok(())
        } else {
            Err(AuthError::InvalidCurrentPassword)
        }
    }

    /// Issues a reset token for an enabled account (voiding older ones),
    /// committed with `audit` (given the user).
    /// `requested` is the `password_reset_requested` row, which this fills
    /// in (`account_exists`, `account_disabled`). Whether or not a token is
    /// issued, the same work is done before the answer: a token is made and
    /// one write commits with the row; only the mail differs, and it goes out
    /// after the answer.
    pub async fn request_reset(
        &self,
        email: &str,
        requested: NewEvent,
    ) -> AuthResult<ResetRequest> {
        let email = Email::parse(email)
            .map_err(|r| AuthError::Validation(FieldErrors::from([("email", r.to_owned())])))?;
        let user = self.store.user_by_email(email.as_str()).await?;
        let token = new_opaque_token();
        let hash = opaque_token_hash(&token)?;
        let mut event = requested.extra("account_exists", user.is_some());
        if let Some(user) = &user {
            event = event.user(user.id);
            if user.is_disabled() {
                event = event.extra("account_disabled", true);
            }
        }
        let user = user.filter(|u| !u.is_disabled());
        let now = self.now();
        self.store
            .create_reset_token(
                user.as_ref().map(|u| u.id),
                hash,
                now,
                now + RESET_TOKEN_TTL_MS,
                vec![event],
            )
            .await?;
        Ok(match user {
            Some(user) => ResetRequest::Issued { user, token },
            None => ResetRequest::NoAccount,
        })
    }

    /// Sets a new password with a reset token and revokes every session of the
    /// user. Returns the user id and how many sessions were revoked.
    pub async fn confirm_reset(
        &self,
        token: &str,
        new_password: SecretString,
        audit: Audit,
    ) -> AuthResult<(Uuid, usize)> {
        let hash = opaque_token_hash(token).map_err(|_| AuthError::InvalidResetToken)?;
        let now = self.now();
        let user_id = self
            .store
            .reset_token_user(hash, now)
            .await?
            .ok_or(AuthError::InvalidResetToken)?;
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .filter(|u| !u.is_disabled())
            .ok_or(AuthError::InvalidResetToken)?;
        if let Err(reason) = self.policy.check_length(new_password.expose_secret()) {
            return Err(AuthError::Validation(FieldErrors::from([(
                "new_password",
                reason,
            )])));
        }
        let email = Email::parse(&user.email).map_err(|r| anyhow::anyhow!("stored email {r}"))?;
        let password_hash = self
            .strong_hash(new_password, &email, user.name.as_deref(), "new_password")
            .await?;
        let (user_id, revoked) = self
            .store
            .reset_password(hash, password_hash, self.now(), audit)
            .await?
            .ok_or(AuthError::InvalidResetToken)?;
        let now = self.now();
        self.revoked_now(&revoked, now).await;
        self.recovered(&user.email, now).await;
        Ok((user_id, revoked.len()))
    }

    /// Disables (revoking every session at once) or enables an account.
    /// Returns `false` when there is no such account.
    pub async fn set_disabled(
        &self,
        user_id: Uuid,
        disabled: bool,
        audit: Audit,
    ) -> AuthResult<bool> {
        let now = self.now();
        let revoked = self
            .store
            .set_disabled(user_id, disabled, now, audit)
            .await?;
        self.forget_profile(user_id);
        let Some(revoked) = revoked else {
            return Ok(false);
        };
        if disabled {
            // The store revoked them with the account; tokens stop at once.
            self.revoked_now(&revoked, now).await;
            if let Some(user) = self.store.user_by_id(user_id).await? {
                self.recovered(&user.email, now).await;
            }
        }
        Ok(true)
    }

    /// Makes an account an administrator or not (the implicit `admins`
    /// group); unmaking one revokes its sessions at once, so that no token
    /// still claims the role. Returns `false` (recording nothing) when the
    /// account does not exist or already is so.
    pub async fn set_admin(&self, user_id: Uuid, is_admin: bool, audit: Audit) -> AuthResult<bool> {
        let now = self.now();
        let revoked = self.store.set_admin(user_id, is_admin, now, audit).await?;
        self.forget_profile(user_id);
        let Some(revoked) = revoked else {
            return Ok(false);
        };
        self.revoked_now(&revoked, now).await;
        Ok(true)
    }

    /// The account of an email (normalized here), if there is one.
    pub async fn user_by_email(&self, email: &str) -> AuthResult<Option<User>> {
        Ok(self.store.user_by_email(&normalize(email)).await?)
    }

    /// The account `id`, if there is one.
    pub async fn user_by_id(&self, id: Uuid) -> AuthResult<Option<User>> {
        Ok(self.store.user_by_id(id).await?)
    }

    /// Accounts whose email contains `email_filter` (all when `None`), oldest
    /// first, each with whether its second factor is on.
    pub async fn list_users(&self, email_filter: Option<String>) -> AuthResult<Vec<(User, bool)>> {
        Ok(self.store.list_users(email_filter).await?)
    }

    /// Makes `groups` the user's groups (`admins` aside), audited with
    /// `event` given `added` and `removed` when anything changed. Returns the
    /// user's groups as `GET /auth/me` shows them; [`AuthError::NotFound`]
    /// when there is no such user.
    pub async fn set_groups(
        &self,
        user_id: Uuid,
        groups: &[String],
        event: NewEvent,
    ) -> AuthResult<Vec<String>> {
        let groups = parse_groups(groups)
            .map_err(|reason| AuthError::Validation(FieldErrors::from([("groups", reason)])))?;
        let audit = move |change: &GroupChange| {
            vec![event
                .resource("user", user_id)
                .extra("added", change.added.clone())
                .extra("removed", change.removed.clone())]
        };
        self.store
            .set_groups(user_id, groups, self.now(), audit)
            .await?
            .ok_or(AuthError::NotFound)?;
        self.forget_profile(user_id);
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(AuthError::NotFound)?;
        Ok(with_admins(
            self.store.groups_of(user_id).await?,
            user.is_admin,
        ))
    }

    /// Every user's stored groups (`admins` not among them).
    pub async fn all_groups(&self) -> AuthResult<HashMap<Uuid, Vec<String>>> {
        let mut by_user: HashMap<Uuid, Vec<String>> = HashMap::new();
        for (user, name) in self.store.all_groups().await? {
            by_user.entry(user).or_default().push(name);
        }
        Ok(by_user)
    }

    /// Whether the database answers (readiness).
    pub async fn storage_ready(&self) -> AuthResult<()> {
        Ok(self.store.ping().await?)
    }

    /// Password hashes waiting for a hashing thread.
    pub fn hash_queue_depth(&self) -> usize {
        self.hasher.queue_depth()
    }
}

/// Rows about a session name its user and the session.
pub(crate) fn about_session(audit: Audit, session: &Session) -> Audit {
    audit
        .into_iter()
        .map(|e| e.user(session.user_id).resource("session", session.id))
        .collect()
}

/// Trims a display name; empty means none.
pub fn parse_name(name: Option<&str>) -> Result<Option<String>, &'static str> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > MAX_NAME_CHARS {
        return Err("must be at most 100 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(Some(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(parse_name(None), Ok(None));
        assert_eq!(parse_name(Some("  ")), Ok(None));
        assert_eq!(parse_name(Some(" Ada ")), Ok(Some("Ada".into())));
        assert!(parse_name(Some(&"x".repeat(101))).is_err());
        assert!(parse_name(Some("a\nb")).is_err());
    }

    #[test]
    fn user_agent_is_cut() {
        let long = "u".repeat(600);
        let info = ClientInfo::new(None, Some(&long));
        assert_eq!(info.user_agent.unwrap().len(), MAX_USER_AGENT_CHARS);
    }
}
