//! The first run (SPEC section 11, `/ui/setup`): while no administrator
//! exists, each start makes a one-time link (256-bit token, single use, one
//! hour) where a person creates the first administrator in the browser. The
//! token lives in this process only, as a hash: the link is the one this
//! process logged.

use secrecy::SecretString;

use super::crypto::{constant_time_eq, hmac_sha256, new_opaque_token, opaque_token_hash};
use super::service::{AuthError, AuthResult, AuthService};
use crate::clock::Millis;
use crate::store::{Audit, User};

/// How long a setup link lives.
pub const SETUP_TTL_MS: Millis = 3_600_000;

impl AuthService {
    /// A new setup token when no administrator exists (replacing any older
    /// one); `None` once one does.
    pub async fn start_first_run(&self) -> AuthResult<Option<String>> {
        if self.store.any_admin().await? {
            return Ok(None);
        }
        let token = new_opaque_token();
        let hash = opaque_token_hash(&token)?;
        let expires = self.now().saturating_add(SETUP_TTL_MS);
        *self.first_run.lock().unwrap_or_else(|p| p.into_inner()) = Some((hash, expires));
        Ok(Some(token))
    }

    /// Whether `token` opens the setup page now: it is this process's live
    /// token and no administrator exists yet.
    pub async fn setup_open(&self, token: &str) -> AuthResult<bool> {
        Ok(self.setup_token_matches(token) && !self.store.any_admin().await?)
    }

    fn setup_token_matches(&self, token: &str) -> bool {
        let guard = self.first_run.lock().unwrap_or_else(|p| p.into_inner());
        self.setup_token_matches_locked(guard.as_ref(), token)
    }

    fn setup_token_matches_locked(
        &self,
        pending: Option<&([u8; 32], Millis)>,
        token: &str,
    ) -> bool {
        let Ok(presented) = opaque_token_hash(token) else {
            return false;
        };
        let now = self.now();
        pending.is_some_and(|(hash, expires)| now < *expires && constant_time_eq(hash, &presented))
    }

    /// Creates the first administrator through a live setup token, which it
    /// spends. [`AuthError::NotFound`] when the token is not (or no longer)
    /// good or an administrator exists.
    pub async fn create_first_admin(
        &self,
        token: &str,
        email: &str,
        password: SecretString,
        name: Option<&str>,
        audit: Audit,
    ) -> AuthResult<User> {
        if !self.setup_open(token).await? {
            return Err(AuthError::NotFound);
        }
        // Taken before the account is made, so that two forms sent at once
        // make one administrator; given back when the form was refused.
        let taken = {
            let mut guard = self.first_run.lock().unwrap_or_else(|p| p.into_inner());
            if !self.setup_token_matches_locked(guard.as_ref(), token) {
                return Err(AuthError::NotFound);
            }
            guard.take()
        };
        match self.register(email, password, name, true, audit).await {
            Ok(user) => Ok(user),
            Err(e) => {
                *self.first_run.lock().unwrap_or_else(|p| p.into_inner()) = taken;
                Err(e)
            }
        }
    }

    /// The token a form carries, bound to `binding` (the browser's session
    /// cookie, or its pre-login cookie) under a key of this deployment.
    pub fn form_token(&self, binding: &str) -> String {
        use base64::Engine;
        let mac = hmac_sha256(&self.form_key, &[b"portcullis form\0", binding.as_bytes()]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)
    }

    /// Whether `presented` is the form token of `binding` (constant time).
    pub fn form_token_matches(&self, binding: &str, presented: &str) -> bool {
        constant_time_eq(self.form_token(binding).as_bytes(), presented.as_bytes())
    }
}
