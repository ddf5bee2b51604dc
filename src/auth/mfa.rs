//! Two-factor login (SPEC section 5, "Two-factor"): TOTP setup, enable,
//! disable, backup codes, and the second step of a login (a code, or a
//! passkey: `passkeys.rs`).

use secrecy::SecretString;
use uuid::Uuid;
use webauthn_rs::prelude::PublicKeyCredential;

use super::crypto::{decode_opaque_token, new_opaque_token, sha256};
use super::service::{about_session, AuthError, AuthResult, AuthService, ClientInfo};
use super::sessions::{Opened, SignIn};
use super::tokens::AccessClaims;
use super::totp;
use crate::clock::Millis;
use crate::store::{Amr, Audit, MfaChallenge, Purpose, SessionKind, User};

/// How long an `mfa_token` lives.
pub const MFA_TOKEN_TTL_MS: Millis = 300_000;
/// Wrong codes that spend an `mfa_token`.
pub const MFA_MAX_FAILURES: u32 = 5;

fn secret_context(user_id: Uuid) -> String {
    format!("portcullis totp {user_id}")
}

/// A second-factor challenge, found by its token.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    pub(super) token_hash: [u8; 32],
    pub challenge: MfaChallenge,
    pub user: User,
}

impl AuthService {
    /// Whether the user has TOTP turned on.
    pub async fn mfa_enabled(&self, user_id: Uuid) -> AuthResult<bool> {
        Ok(self.store.totp(user_id).await?.is_some_and(|t| t.enabled()))
    }

    /// Creates a new secret awaiting confirmation; returns it in base32 and as
    /// an `otpauth://` URL.
    pub async fn totp_setup(&self, claims: &AccessClaims) -> AuthResult<(String, String)> {
        let user = self.current_user(claims).await?;
        if self.mfa_enabled(user.id).await? {
            return Err(AuthError::MfaState("mfa_already_enabled"));
        }
        let secret = totp::new_secret();
        let sealed = self
            .master
            .seal(&secret, secret_context(user.id).as_bytes())?;
        self.store.set_pending_totp(user.id, sealed).await?;
        Ok(totp::provisioning(&secret, self.issuer(), &user.email))
    }

    /// The secret awaiting confirmation, as [`AuthService::totp_setup`] gave
    /// it (base32 and `otpauth://` URL), if there is one.
    pub async fn totp_pending(
        &self,
        claims: &AccessClaims,
    ) -> AuthResult<Option<(String, String)>> {
        let user = self.current_user(claims).await?;
        let Some(sealed) = self
            .store
            .totp(user.id)
            .await?
            .and_then(|t| t.pending_secret)
        else {
            return Ok(None);
        };
        let secret = self
            .master
            .open(&sealed, secret_context(user.id).as_bytes())?;
        Ok(Some(totp::provisioning(
            &secret,
            self.issuer(),
            &user.email,
        )))
    }

    /// Confirms the pending secret with the current password and a code;
    /// returns ten backup codes. The password keeps a stolen access token
    /// alone from binding the account to someone else's authenticator.
    pub async fn totp_enable(
        &self,
        claims: &AccessClaims,
        password: SecretString,
        code: &str,
        audit: Audit,
    ) -> AuthResult<Vec<String>> {
        let user = self.current_user(claims).await?;
        let row = self.store.totp(user.id).await?.unwrap_or_default();
        if row.secret.is_some() {
            return Err(AuthError::MfaState("mfa_already_enabled"));
        }
        let Some(pending) = row.pending_secret else {
            return Err(AuthError::MfaState("mfa_not_set_up"));
        };
        self.check_current_password(&user, password).await?;
        let secret = self
            .master
            .open(&pending, secret_context(user.id).as_bytes())?;
        let now_secs = u64::try_from(self.now().div_euclid(1000)).unwrap_or(0);
        let step = totp::matching_step(&secret, code, now_secs).ok_or(AuthError::InvalidMfaCode)?;
        let codes = totp::new_backup_codes();
        let hashes = codes
            .iter()
            .map(|c| totp::backup_hash(self.backup_key(), user.id, c))
            .collect();
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        if !self
            .store
            .enable_totp(user.id, step, hashes, self.now(), audit)
            .await?
        {
            return Err(AuthError::MfaState("mfa_not_set_up"));
        }
        self.forget_profile(user.id);
        Ok(codes)
    }

    /// An administrator turns off a user's lost second factor (SPEC section
    /// 10): TOTP and backup codes removed, every session revoked at once.
    /// Returns the user; [`AuthError::NotFound`] when there is none.
    pub async fn reset_mfa(&self, user_id: Uuid, audit: Audit) -> AuthResult<User> {
        let now = self.now();
        let audit: Audit = audit
            .into_iter()
            .map(|e| e.user(user_id).resource("user", user_id))
            .collect();
        let revoked = self
            .store
            .reset_second_factor(user_id, now, stamped(audit, now))
            .await?
            .ok_or(AuthError::NotFound)?;
        self.forget_profile(user_id);
        self.revoked_now(&revoked, now).await;
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(AuthError::NotFound)?;
        self.recovered(&user.email, now).await;
        Ok(user)
    }

    /// Turns TOTP off after checking the password and a code.
    pub async fn totp_disable(
        &self,
        claims: &AccessClaims,
        password: SecretString,
        code: &str,
        audit: Audit,
    ) -> AuthResult<()> {
        let user = self.current_user(claims).await?;
        if !self.mfa_enabled(user.id).await? {
            return Err(AuthError::MfaState("mfa_not_enabled"));
        }
        self.check_current_password(&user, password).await?;
        if !self.check_second_factor(user.id, code).await? {
            return Err(AuthError::InvalidMfaCode);
        }
        let now = self.now();
        self.store
            .disable_totp(user.id, now, stamped(audit, now))
            .await?;
        self.forget_profile(user.id);
        Ok(())
    }

    /// Replaces the backup codes after checking a code.
    pub async fn regenerate_backup_codes(
        &self,
        claims: &AccessClaims,
        code: &str,
        audit: Audit,
    ) -> AuthResult<Vec<String>> {
        let user = self.current_user(claims).await?;
        if !self.mfa_enabled(user.id).await? {
            return Err(AuthError::MfaState("mfa_not_enabled"));
        }
        if !self.check_second_factor(user.id, code).await? {
            return Err(AuthError::InvalidMfaCode);
        }
        let codes = totp::new_backup_codes();
        let hashes = codes
            .iter()
            .map(|c| totp::backup_hash(self.backup_key(), user.id, c))
            .collect();
        self.store
            .replace_backup_codes(user.id, hashes, self.now(), audit)
            .await?;
        Ok(codes)
    }

    /// Checks a TOTP code (each time step accepted once) or a backup code
    /// (each used once).
    pub async fn check_second_factor(&self, user_id: Uuid, code: &str) -> AuthResult<bool> {
        if totp::is_backup_code(code) {
            let hashes = [
                totp::backup_hash(self.backup_key(), user_id, code),
                totp::legacy_backup_hash(user_id, code),
            ];
            return Ok(self
                .store
                .use_backup_code(user_id, hashes, self.now())
                .await?);
        }
        let Some(sealed) = self.store.totp(user_id).await?.and_then(|t| t.secret) else {
            return Ok(false);
        };
        let secret = self
            .master
            .open(&sealed, secret_context(user_id).as_bytes())?;
        let now_secs = u64::try_from(self.now().div_euclid(1000)).unwrap_or(0);
        let Some(step) = totp::matching_step(&secret, code, now_secs) else {
            return Ok(false);
        };
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        Ok(self.store.use_totp_step(user_id, step).await?)
    }

    /// After a correct password: a challenge for the second step. Returns the
    /// opaque `mfa_token` and its lifetime in seconds.
    pub async fn start_mfa(&self, user: &User, remember_me: bool) -> AuthResult<(String, i64)> {
        let token = new_opaque_token();
        let now = self.now();
        let challenge = MfaChallenge {
            user_id: user.id,
            remember_me,
            expires_at: now + MFA_TOKEN_TTL_MS,
            failures: 0,
        };
        self.store
            .create_mfa_challenge(token_hash(&token)?, challenge, now)
            .await?;
        Ok((token, MFA_TOKEN_TTL_MS / 1000))
    }

    /// The login waiting on `mfa_token`, if it is live.
    pub async fn pending_login(&self, mfa_token: &str) -> AuthResult<PendingLogin> {
        let hash = token_hash(mfa_token).map_err(|_| AuthError::InvalidMfaCode)?;
        let challenge = self
            .store
            .mfa_challenge(hash, self.now())
            .await?
            .ok_or(AuthError::InvalidMfaCode)?;
        let user = self
            .store
            .user_by_id(challenge.user_id)
            .await?
            .filter(|u| !u.is_disabled())
            .ok_or(AuthError::InvalidMfaCode)?;
        Ok(PendingLogin {
            token_hash: hash,
            challenge,
            user,
        })
    }

    /// The second factors the user can give after a password: `"totp"`
    /// (which takes backup codes too) and `"passkey"`. Empty: none.
    pub async fn second_factors(&self, user_id: Uuid) -> AuthResult<Vec<&'static str>> {
        let mut methods = Vec::new();
        if self.mfa_enabled(user_id).await? {
            methods.push("totp");
        }
        if self.has_passkey(user_id).await? {
            methods.push("passkey");
        }
        Ok(methods)
    }

    /// The second step: a right factor spends the challenge and opens the
    /// session (with `success`); a wrong one counts towards the challenge's
    /// five (with `failed`), as does a right one for a challenge spent
    /// meanwhile.
    pub async fn finish_mfa(
        &self,
        pending: &PendingLogin,
        factor: Factor<'_>,
        kind: SessionKind,
        client: &ClientInfo,
        success: Audit,
        failed: Audit,
    ) -> AuthResult<Opened> {
        let user = &pending.user;
        let mut failed: Audit = failed.into_iter().map(|e| e.user(user.id)).collect();
        let amr = match factor {
            Factor::Code(code) => self
                .check_second_factor(user.id, code)
                .await?
                .then_some(Amr::PWD.and(Amr::OTP)),
            Factor::Passkey {
                challenge_id,
                credential,
            } => match self
                .assert_passkey(
                    challenge_id,
                    credential,
                    Purpose::SecondFactor,
                    Some(&pending.token_hash),
                )
                .await
            {
                Ok(asserted) if asserted.user.id == user.id => Some(Amr::PWD.and(Amr::HWK)),
                Ok(_) => None,
                Err(Ok((failure, _))) => {
                    failed = failed
                        .into_iter()
                        .map(|e| {
                            e.extra("method", "passkey")
                                .extra("reason", failure.as_str())
                        })
                        .collect();
                    None
                }
                Err(Err(e)) => return Err(e),
            },
        };
        let Some(amr) = amr else {
            let now = self.now();
            self.store
                .fail_mfa_challenge(
                    pending.token_hash,
                    MFA_MAX_FAILURES,
                    now,
                    stamped(failed, now),
                )
                .await?;
            return Err(AuthError::InvalidMfaCode);
        };
        let sign_in = SignIn {
            kind,
            remember_me: pending.challenge.remember_me,
            amr,
        };
        let (session, secret, hash) = self.new_session(user, sign_in, client)?;
        let limit = self.session_limit(&success);
        let success = about_session(success, &session);
        let Some(evicted) = self
            .store
            .complete_mfa_challenge(
                pending.token_hash,
                session.clone(),
                hash,
                limit,
                success,
                failed,
            )
            .await?
        else {
            return Err(AuthError::InvalidMfaCode);
        };
        self.revoked_now(&evicted, session.created_at).await;
        self.opened(user, session, secret)
    }
}

/// What the second step of a login brings.
#[derive(Debug, Clone, Copy)]
pub enum Factor<'a> {
    /// A TOTP code or a backup code.
    Code(&'a str),
    /// A passkey's answer to the challenge `challenge_id`.
    Passkey {
        challenge_id: &'a str,
        credential: &'a PublicKeyCredential,
    },
}

/// Gives every row without a time the time `now`.
fn stamped(audit: Audit, now: Millis) -> Audit {
    audit
        .into_iter()
        .map(|mut e| {
            e.at.get_or_insert(now);
            e
        })
        .collect()
}

fn token_hash(token: &str) -> anyhow::Result<[u8; 32]> {
    let raw = decode_opaque_token(token).ok_or_else(|| anyhow::anyhow!("malformed mfa token"))?;
    Ok(sha256(&raw))
}
