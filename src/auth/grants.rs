//! OpenID Connect grants (SPEC section 13) as the domain sees them: a code
//! issued to a signed-in browser, spent once for a session of kind `oidc`
//! whose refresh tokens rotate like an API session's. The endpoints in
//! `oidc/` parse and render; what is decided is decided here and in
//! `store::oidc`.

use secrecy::SecretString;
use uuid::Uuid;

use super::crypto::{new_opaque_token, opaque_token_hash, sha256};
use super::service::{AuthError, AuthResult, AuthService, ClientInfo, TokenPair};
use crate::audit::event::NewEvent;
use crate::clock::Millis;
use crate::store::{Audit, Exchange, OidcCode, Redemption, Session, User};

/// How long a code lives.
pub const CODE_TTL_MS: Millis = 60_000;

/// What a token request brings with a code.
pub struct CodeRequest<'a> {
    pub code: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub code_verifier: Option<&'a str>,
    /// The client gets a refresh token with every code grant.
    pub refresh_always: bool,
}

/// A code spent: the user, the grant's session and its first tokens.
pub struct Granted {
    pub user: User,
    pub session: Session,
    pub tokens: TokenPair,
    pub code: OidcCode,
}

/// The PKCE `S256` challenge of `verifier` (RFC 7636 section 4.2).
pub fn s256(verifier: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()))
}

/// A PKCE verifier as RFC 7636 section 4.1 allows: 43 to 128 unreserved characters.
pub fn is_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

impl AuthService {
    /// Stores a new code for `code` (its times are set here) with `audit`;
    /// returns the code, shown once.
    pub async fn issue_code(&self, mut code: OidcCode, audit: Audit) -> AuthResult<String> {
        let now = self.now();
        code.created_at = now;
        code.expires_at = now + CODE_TTL_MS;
        let secret = new_opaque_token();
        let hash = opaque_token_hash(&secret)?;
        let audit = audit
            .into_iter()
            .map(|e| {
                e.user(code.user_id)
                    .extra("client_id", code.client_id.clone())
            })
            .collect();
        self.store.insert_code(hash, code, audit).await?;
        Ok(secret)
    }

    /// Spends a code: on success opens the grant's session (audited with
    /// `issued`) and issues its tokens. A code used before revokes what it
    /// issued (audited with `reused`) and is refused like any bad code.
    pub async fn redeem_code(
        &self,
        request: CodeRequest<'_>,
        client: &ClientInfo,
        issued: NewEvent,
        reused: NewEvent,
    ) -> AuthResult<Granted> {
        let hash =
            opaque_token_hash(request.code).map_err(|_| AuthError::InvalidGrant("unknown code"))?;
        let now = self.now();
        let refresh = new_opaque_token();
        let redemption = Redemption {
            client_id: request.client_id.to_owned(),
            redirect_uri: request.redirect_uri.to_owned(),
            verifier_challenge: request.code_verifier.map(s256),
            session_id: Uuid::new_v4(),
            refresh_hash: opaque_token_hash(&refresh)?,
            ttl_ms: self.refresh_ttl_ms,
            short_ttl_ms: self.tokens.access_ttl_secs().saturating_mul(1000),
            refresh_always: request.refresh_always,
            ip_address: client.ip.clone(),
            user_agent: client.user_agent.clone(),
            limit: self.session_limit(&vec![issued.clone()]),
            issued,
            reused,
        };
        match self.store.redeem_code(hash, redemption, now).await? {
            Exchange::Invalid(why) => Err(AuthError::InvalidGrant(why)),
            Exchange::Reused { revoked, .. } => {
                self.revoked_now(&revoked, now).await;
                Err(AuthError::InvalidGrant("the code was used before"))
            }
            Exchange::Issued(issued) => {
                let crate::store::oidc::Issued {
                    code,
                    session,
                    evicted,
                } = *issued;
                self.revoked_now(&evicted, now).await;
                let user = self
                    .store
                    .user_by_id(code.user_id)
                    .await?
                    .filter(|u| !u.is_disabled())
                    .ok_or(AuthError::InvalidGrant("the account is disabled"))?;
                let tokens = self.pair(&user, &session, refresh, now)?;
                Ok(Granted {
                    user,
                    session,
                    tokens,
                    code,
                })
            }
        }
    }

    /// The live grant of `client_id` that `refresh_token` belongs to.
    pub async fn grant_of_refresh_token(
        &self,
        refresh_token: &str,
        client_id: &str,
    ) -> AuthResult<Option<Session>> {
        let Ok(hash) = opaque_token_hash(refresh_token) else {
            return Ok(None);
        };
        let now = self.now();
        Ok(self
            .store
            .session_of_refresh_token(hash)
            .await?
            .filter(|s| s.is_live(now) && !self.revocations.is_revoked(s.id))
            .filter(|s| s.grant.as_ref().is_some_and(|g| g.client_id == client_id)))
    }

    /// Ends a grant (RFC 7009 revocation), with `audit`.
    pub async fn revoke_grant(&self, session: &Session, audit: Audit) -> AuthResult<()> {
        let now = self.now();
        let audit = audit
            .into_iter()
            .map(|e| e.user(session.user_id).resource("session", session.id))
            .collect();
        if self
            .store
            .revoke_session(
                session.user_id,
                session.id,
                "oidc_token_revoked",
                now,
                audit,
            )
            .await?
        {
            self.revoked_now(&[session.id], now).await;
        }
        Ok(())
    }

    /// The live session `id`, if any.
    pub async fn live_session(&self, id: Uuid) -> AuthResult<Option<Session>> {
        let now = self.now();
        Ok(self
            .store
            .session(id)
            .await?
            .filter(|s| s.is_live(now) && !self.revocations.is_revoked(s.id)))
    }

    /// The profile of the enabled account `user_id` (cached like `/auth/me`'s).
    pub async fn profile_of(
        &self,
        user_id: Uuid,
    ) -> AuthResult<std::sync::Arc<super::service::Profile>> {
        self.profile(user_id).await
    }

    /// The scopes `user_id` allowed `client_id` before, if any.
    pub async fn consented(&self, user_id: Uuid, client_id: &str) -> AuthResult<Option<String>> {
        Ok(self.store.consent(user_id, client_id).await?)
    }

    /// Remembers that `user_id` allowed `client_id` to read `scope`.
    pub async fn grant_consent(
        &self,
        user_id: Uuid,
        client_id: &str,
        scope: &str,
        audit: Audit,
    ) -> AuthResult<()> {
        let audit = audit
            .into_iter()
            .map(|e| {
                e.user(user_id)
                    .extra("client_id", client_id)
                    .extra("scope", scope)
            })
            .collect();
        self.store
            .grant_consent(user_id, client_id, scope, self.now(), audit)
            .await?;
        Ok(())
    }

    /// Checks a client's secret against its argon2id hash on the hashing
    /// pool (bounded like passwords).
    pub async fn verify_client_secret(
        &self,
        secret: SecretString,
        phc: String,
    ) -> AuthResult<bool> {
        Ok(self.hasher.verify(secret, Some(phc)).await?.valid)
    }

    /// An argon2id hash of a new client secret.
    pub async fn hash_client_secret(&self, secret: SecretString) -> AuthResult<String> {
        Ok(self.hasher.hash(secret).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_an_independent_implementation() {
        // Python: base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b"=")
        assert_eq!(
            s256("dBjftJeZ4CVP-mB0unLh5Ae8RWgNZWR7YV2c7GDy5Oc"),
            "r89lv11xRz9ArI9ZdLFFr5GS_DthwAmJeoxGZ3tzGvk"
        );
        assert!(is_verifier("dBjftJeZ4CVP-mB0unLh5Ae8RWgNZWR7YV2c7GDy5Oc"));
        assert!(!is_verifier("short"));
        assert!(!is_verifier(&"a".repeat(129)));
        assert!(!is_verifier(&format!("{}+", "a".repeat(50))));
    }
}
