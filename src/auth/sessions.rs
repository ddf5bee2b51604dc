//! Sessions: opening one after a sign-in, refreshing it (rotation with reuse
//! detection), verifying access tokens, listing and revoking sessions, and
//! hearing of the revocations other processes made. Methods of
//! [`AuthService`], beside its accounts (`service.rs`) and second factors
//! (`mfa.rs`).

use std::sync::Arc;

use uuid::Uuid;

use super::crypto::{decode_opaque_token, new_opaque_token, opaque_token_hash, sha256};
use super::service::{
    about_session, AuthError, AuthResult, AuthService, ClientInfo, Profile, TokenPair,
};
use super::tokens::{AccessClaims, TokenError, TokenSubject};
use crate::audit::{Action, NewEvent};
use crate::clock::Millis;
use crate::store::{
    Amr, Audit, LiveSession, Rotation, RotationAudit, Session, SessionKind, SessionLimit, User,
};

/// The cookie that carries a browser session (SPEC section 11).
pub const BROWSER_COOKIE: &str = "portcullis_session";

/// How a sign-in opens its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignIn {
    pub kind: SessionKind,
    /// The longer lifetime (`refresh_ttl`) instead of `session_ttl`.
    pub remember_me: bool,
    /// The factors the user gave.
    pub amr: Amr,
}

/// A session just opened: what its client is given.
#[derive(Debug)]
pub enum Opened {
    /// An API session's first token pair.
    Tokens(TokenPair),
    /// A browser session: the cookie's value (shown once, stored hashed).
    Browser { cookie: String, session: Session },
}

impl Opened {
    /// The token pair of an API session.
    pub fn into_tokens(self) -> AuthResult<TokenPair> {
        match self {
            Self::Tokens(pair) => Ok(pair),
            Self::Browser { .. } => Err(AuthError::Internal(anyhow::anyhow!(
                "a browser session where a token pair was asked for"
            ))),
        }
    }
}

impl AuthService {
    /// Starts a session for an authenticated user and issues its credential;
    /// `audit` (given the user and the session) commits with it.
    pub async fn open_session(
        &self,
        user: &User,
        sign_in: SignIn,
        client: &ClientInfo,
        audit: Audit,
    ) -> AuthResult<Opened> {
        let (session, secret, hash) = self.new_session(user, sign_in, client)?;
        let limit = self.session_limit(&audit);
        let audit = about_session(audit, &session);
        let evicted = self
            .store
            .create_session(session.clone(), hash, limit, audit)
            .await?;
        self.revoked_now(&evicted, session.created_at).await;
        self.opened(user, session, secret)
    }

    /// What the client of a session just stored is given.
    pub(crate) fn opened(
        &self,
        user: &User,
        session: Session,
        secret: String,
    ) -> AuthResult<Opened> {
        Ok(match session.kind {
            SessionKind::Api | SessionKind::Oidc => {
                Opened::Tokens(self.pair(user, &session, secret, session.created_at)?)
            }
            SessionKind::Browser => Opened::Browser {
                cookie: secret,
                session,
            },
        })
    }

    /// The live browser session of a `portcullis_session` cookie and the
    /// profile of its user: what a forward-auth check asks, so it is served
    /// from memory once warm (no query, no SHA-256: the cache is keyed by the
    /// cookie's in-memory identity, and only a miss hashes it to ask storage).
    /// Revocation is checked on every use, so a revoked session is refused
    /// at once.
    pub async fn browser_identity(&self, cookie: &str) -> AuthResult<(LiveSession, Arc<Profile>)> {
        let refused = || AuthError::InvalidToken(TokenError::Invalid);
        let raw = decode_opaque_token(cookie).ok_or_else(refused)?;
        let id = self.cookie_ids.id(&raw);
        let now = self.now();
        let session = match self.browser_sessions.get(&id) {
            Some(session) => session,
            None => {
                // A cookie that named no session lately is refused without
                // asking storage again: random cookies cost no query each.
                if self.unknown_cookies.contains_key(&id) {
                    return Err(refused());
                }
                let Some(stored) = self.store.browser_session(sha256(&raw), now).await? else {
                    self.unknown_cookies.insert(id, ());
                    return Err(refused());
                };
                // A browser is "used" when its session is read again (at most
                // once per cache lifetime), so that the bound on sessions
                // does not take an active browser for an idle one.
                if now - stored.last_used_at >= 60_000 {
                    self.store.touch_session(stored.id, now).await?;
                }
                let session = LiveSession::from(&stored);
                self.browser_sessions.insert(id, session);
                session
            }
        };
        if now >= session.expires_at || self.revocations.is_revoked(session.id) {
            self.browser_sessions.invalidate(&id);
            return Err(AuthError::InvalidToken(TokenError::Revoked));
        }
        Ok((session, self.profile(session.user_id).await?))
    }

    /// [`AuthService::browser_identity`] as the claims of an access token of
    /// that session, so that every domain call taking a token's claims
    /// serves the pages too.
    pub async fn browser_session(&self, cookie: &str) -> AuthResult<(AccessClaims, Arc<Profile>)> {
        let (session, profile) = self.browser_identity(cookie).await?;
        let user = &profile.user;
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: String::new(),
            sub: user.id,
            email: user.email.clone(),
            sid: session.id,
            jti: Uuid::nil(),
            iat: session.created_at.div_euclid(1000),
            nbf: session.created_at.div_euclid(1000),
            exp: session.expires_at.div_euclid(1000),
            roles: if user.is_admin {
                vec!["admin".to_owned()]
            } else {
                Vec::new()
            },
            amr: session.amr.values().map(str::to_owned).collect(),
            auth_time: session.created_at.div_euclid(1000),
            client_id: None,
            scope: None,
        };
        Ok((claims, profile))
    }

    /// The bound on live sessions a new session is opened under; an evicted
    /// session's row has the origin of the request that opened the new one.
    pub(crate) fn session_limit(&self, audit: &Audit) -> SessionLimit {
        let origin = audit.first().map(|e| e.origin.clone()).unwrap_or_default();
        SessionLimit {
            max: self.max_sessions,
            evicted: NewEvent::new(Action::SessionRevoked, &origin),
        }
    }

    /// A session not yet stored, with its refresh token and the token's hash.
    pub(crate) fn new_session(
        &self,
        user: &User,
        sign_in: SignIn,
        client: &ClientInfo,
    ) -> AuthResult<(Session, String, [u8; 32])> {
        let now = self.now();
        let SignIn {
            kind,
            remember_me,
            amr,
        } = sign_in;
        let ttl = if remember_me {
            self.refresh_ttl_ms
        } else {
            self.session_ttl_ms
        };
        let session = Session {
            id: Uuid::new_v4(),
            user_id: user.id,
            kind,
            amr,
            remember_me,
            created_at: now,
            last_used_at: now,
            expires_at: now.saturating_add(ttl),
            revoked_at: None,
            ip_address: client.ip.clone(),
            user_agent: client.user_agent.clone(),
            grant: None,
        };
        let secret = new_opaque_token();
        let hash = opaque_token_hash(&secret)?;
        Ok((session, secret, hash))
    }

    pub(crate) fn pair(
        &self,
        user: &User,
        session: &Session,
        refresh: String,
        now: Millis,
    ) -> AuthResult<TokenPair> {
        let subject = TokenSubject {
            user_id: user.id,
            email: &user.email,
            session_id: session.id,
            is_admin: user.is_admin,
            session_expires_at: session.expires_at,
            amr: session.amr,
            auth_time: session.created_at,
            grant: session.grant.as_ref(),
        };
        let (access_token, exp) = self.tokens.issue(&subject, now)?;
        Ok(TokenPair {
            access_token,
            refresh_token: refresh,
            token_type: "Bearer",
            expires_in: (exp - now.div_euclid(1000)).max(0),
            refresh_expires_in: (session.expires_at - now).div_euclid(1000).max(0),
            session_id: session.id,
        })
    }

    /// Exchanges a refresh token for a new pair, retiring it. A retired token
    /// revokes its whole session. `client`: the OIDC client presenting it
    /// (`None`: an API session's token); a token is good only at its own door.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client: Option<&str>,
        audit: RotationAudit,
    ) -> AuthResult<(User, Session, TokenPair)> {
        let presented =
            opaque_token_hash(refresh_token).map_err(|_| AuthError::InvalidRefreshToken)?;
        let replacement = new_opaque_token();
        let now = self.now();
        match self
            .store
            .rotate_refresh(
                presented,
                opaque_token_hash(&replacement)?,
                client.map(str::to_owned),
                now,
                audit,
            )
            .await?
        {
            Rotation::Invalid => Err(AuthError::InvalidRefreshToken),
            Rotation::Reused {
                session_id,
                user_id,
            } => {
                self.revoked_now(&[session_id], now).await;
                Err(AuthError::RefreshTokenReused {
                    session_id,
                    user_id,
                })
            }
            Rotation::Rotated(session) => {
                let user = self
                    .store
                    .user_by_id(session.user_id)
                    .await?
                    .filter(|u| !u.is_disabled())
                    .ok_or(AuthError::InvalidRefreshToken)?;
                let pair = self.pair(&user, &session, replacement, now)?;
                Ok((user, session, pair))
            }
        }
    }

    /// Verifies a bearer token, including revocation, without touching storage.
    pub fn authorize(&self, bearer: &str) -> AuthResult<AccessClaims> {
        self.authorize_shared(bearer)
            .map(|claims| AccessClaims::clone(&claims))
    }

    /// [`AuthService::authorize`] without copying the claims (forward auth
    /// needs only the subject and the factors).
    pub fn authorize_shared(&self, bearer: &str) -> AuthResult<Arc<AccessClaims>> {
        // A token issued to an OpenID Connect client serves that client at
        // /oidc/userinfo, never the API or forward auth.
        self.live_token(bearer, false)
    }

    /// A live access token issued to an OpenID Connect client (see
    /// [`AuthService::authorize_shared`] for the others).
    pub fn authorize_grant(&self, bearer: &str) -> AuthResult<Arc<AccessClaims>> {
        self.live_token(bearer, true)
    }

    /// A token that verifies, whose session is not revoked, and that was
    /// issued to a client or not as `to_client` says.
    fn live_token(&self, bearer: &str, to_client: bool) -> AuthResult<Arc<AccessClaims>> {
        let claims = self
            .tokens
            .verify_shared(bearer, self.now())
            .map_err(AuthError::InvalidToken)?;
        if self.revocations.is_revoked(claims.sid) {
            return Err(AuthError::InvalidToken(TokenError::Revoked));
        }
        if claims.client_id.is_some() != to_client {
            return Err(AuthError::InvalidToken(TokenError::Invalid));
        }
        Ok(claims)
    }

    /// Revokes the session the token belongs to.
    pub async fn logout(&self, claims: &AccessClaims, audit: Audit) -> AuthResult<()> {
        let now = self.now();
        self.store
            .revoke_session(claims.sub, claims.sid, "logout", now, audit)
            .await?;
        self.revoked_now(&[claims.sid], now).await;
        Ok(())
    }

    /// Revokes every session of the token's user and forgets the account's
    /// known devices; returns how many sessions.
    pub async fn logout_all(&self, claims: &AccessClaims, audit: Audit) -> AuthResult<usize> {
        let revoked = self
            .revoke_all(claims.sub, None, "logout_all", audit)
            .await?;
        self.recovered(&claims.email, self.now()).await;
        Ok(revoked)
    }

    /// Revokes every live session of `user_id` except `keep`.
    pub async fn revoke_all(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &'static str,
        audit: Audit,
    ) -> AuthResult<usize> {
        let now = self.now();
        let revoked = self
            .store
            .revoke_user_sessions(user_id, keep, reason, now, audit)
            .await?;
        self.revoked_now(&revoked, now).await;
        Ok(revoked.len())
    }

    /// Live sessions of the token's user, newest first.
    pub async fn sessions(&self, claims: &AccessClaims) -> AuthResult<Vec<Session>> {
        Ok(self.store.live_sessions(claims.sub, self.now()).await?)
    }

    /// Revokes one of the token user's own sessions; others' are [`AuthError::NotFound`].
    pub async fn revoke_session(
        &self,
        claims: &AccessClaims,
        session_id: Uuid,
        audit: Audit,
    ) -> AuthResult<()> {
        let now = self.now();
        if !self
            .store
            .revoke_session(claims.sub, session_id, "session_revoked", now, audit)
            .await?
        {
            return Err(AuthError::NotFound);
        }
        self.revoked_now(&[session_id], now).await;
        Ok(())
    }

    /// Picks up revocations (and recoveries, and changes to accounts) made
    /// by other processes; returns the next cursor.
    pub async fn sync_revocations(&self, since: Millis) -> AuthResult<Millis> {
        let now = self.now();
        self.revocations.prune(now);
        let next = self.revocations.sync(&self.store, since, now).await;
        // Independent of the revocations: a profile is forgotten even when
        // they could not be read, and every one when its changes could not.
        if let Err(e) = self.hear_account_changes().await {
            self.forget_profiles();
            next?;
            return Err(e);
        }
        let next = next?;
        if self.devices.is_some() {
            use std::sync::atomic::Ordering;
            let heard = self.recoveries_heard.load(Ordering::Relaxed);
            let mut upto = heard;
            for recovery in self.store.recoveries_after(heard).await? {
                if !self.recovered(&recovery.email, recovery.at).await {
                    break;
                }
                upto = recovery.id;
            }
            // Racing polls may both hear a recovery: forgetting twice is harmless.
            self.recoveries_heard.fetch_max(upto, Ordering::Relaxed);
        }
        Ok(next)
    }

    /// Forgets the profiles of accounts that other processes changed since
    /// the last poll (this process forgets its own at once). The first poll
    /// only finds the head: nothing was remembered before it.
    async fn hear_account_changes(&self) -> AuthResult<()> {
        use std::sync::atomic::Ordering;
        let heard = self.account_changes_heard.load(Ordering::Relaxed);
        if heard < 0 {
            let head = self.store.audit_head().await?;
            self.forget_profiles();
            self.account_changes_heard
                .fetch_max(head, Ordering::Relaxed);
            return Ok(());
        }
        let mut upto = heard;
        for change in self.store.account_changes_after(heard).await? {
            for user in change.users {
                self.forget_profile(user);
            }
            upto = change.id;
        }
        self.account_changes_heard
            .fetch_max(upto, Ordering::Relaxed);
        Ok(())
    }
}
