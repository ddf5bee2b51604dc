//! Sessions: opening one after a sign-in, refreshing it (rotation with reuse
//! detection), verifying access tokens, listing and revoking sessions, and
//! hearing of the revocations other processes made. Methods of
//! [`AuthService`], beside its accounts (`service.rs`) and second factors
//! (`mfa.rs`).

use uuid::Uuid;

use super::crypto::{new_opaque_token, opaque_token_hash};
use super::service::{about_session, AuthError, AuthResult, AuthService, ClientInfo, TokenPair};
use super::tokens::{AccessClaims, TokenError, TokenSubject};
use crate::audit::{Action, NewEvent};
use crate::clock::Millis;
use crate::store::{Audit, Rotation, RotationAudit, Session, SessionLimit, User};

impl AuthService {
    /// Starts a session for an authenticated user and issues its first token
    /// pair; `audit` (given the user and the session) commits with it.
    pub async fn open_session(
        &self,
        user: &User,
        remember_me: bool,
        client: &ClientInfo,
        audit: Audit,
    ) -> AuthResult<TokenPair> {
        let (session, refresh, hash) = self.new_session(user, remember_me, client)?;
        let limit = self.session_limit(&audit);
        let audit = about_session(audit, &session);
        let evicted = self
            .store
            .create_session(session.clone(), hash, limit, audit)
            .await?;
        self.revoked_now(&evicted, session.created_at).await;
        self.pair(user, &session, refresh, session.created_at)
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
        remember_me: bool,
        client: &ClientInfo,
    ) -> AuthResult<(Session, String, [u8; 32])> {
        let now = self.now();
        let ttl = if remember_me {
            self.refresh_ttl_ms
        } else {
            self.session_ttl_ms
        };
        let session = Session {
            id: Uuid::new_v4(),
            user_id: user.id,
            remember_me,
            created_at: now,
            last_used_at: now,
            expires_at: now.saturating_add(ttl),
            revoked_at: None,
            ip_address: client.ip.clone(),
            user_agent: client.user_agent.clone(),
        };
        let refresh = new_opaque_token();
        let hash = opaque_token_hash(&refresh)?;
        Ok((session, refresh, hash))
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
    /// revokes its whole session.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        audit: RotationAudit,
    ) -> AuthResult<(User, TokenPair)> {
        let presented =
            opaque_token_hash(refresh_token).map_err(|_| AuthError::InvalidRefreshToken)?;
        let replacement = new_opaque_token();
        let now = self.now();
        match self
            .store
            .rotate_refresh(presented, opaque_token_hash(&replacement)?, now, audit)
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
                Ok((user, pair))
            }
        }
    }

    /// Verifies a bearer token, including revocation, without touching storage.
    pub fn authorize(&self, bearer: &str) -> AuthResult<AccessClaims> {
        let claims = self
            .tokens
            .verify(bearer, self.now())
            .map_err(AuthError::InvalidToken)?;
        if self.revocations.is_revoked(claims.sid) {
            return Err(AuthError::InvalidToken(TokenError::Revoked));
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

    /// Picks up revocations (and recoveries) made by other processes;
    /// returns the next cursor.
    pub async fn sync_revocations(&self, since: Millis) -> AuthResult<Millis> {
        let now = self.now();
        self.revocations.prune(now);
        let next = self.revocations.sync(&self.store, since, now).await?;
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
}
