//! Passkeys (SPEC section 14): adding one, signing in with one alone, and
//! using one as the second step after a password. The ceremonies are
//! webauthn-rs's; their state is stored (see `store::passkeys`), so each is
//! single use and may finish on another instance.

use secrecy::SecretString;
use uuid::Uuid;
use webauthn_rs::prelude::{
    CreationChallengeResponse, CredentialID, DiscoverableAuthentication, Passkey,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, WebauthnError,
};
use webauthn_rs::Webauthn;
use webauthn_rs_proto::{AllowCredentials, ResidentKeyRequirement};

use super::crypto::{decode_opaque_token, hmac_sha256, new_opaque_token, sha256};
use super::mfa::PendingLogin;
pub use super::relying_party::{relying_party, RelyingParty};
use super::service::{AuthError, AuthResult, AuthService};
use super::tokens::AccessClaims;
use crate::audit::{Action, NewEvent, Origin};
use crate::clock::Millis;
use crate::store::{Amr, Audit, Ceremony, PasskeyRow, Purpose, StoreError, User};

/// How long a ceremony may take (as long as its options tell the browser).
pub const CEREMONY_TTL_MS: Millis = 300_000;
/// How recent a sign-in must be to add or remove a passkey without the
/// password.
pub const RECENT_SIGN_IN_MS: Millis = 600_000;
/// Passkeys one account may hold.
pub const MAX_PASSKEYS: usize = 20;
/// Longest passkey name, in characters.
pub const MAX_PASSKEY_NAME_CHARS: usize = 64;
/// The name of a passkey added without one.
const DEFAULT_NAME: &str = "Passkey";
/// Why a passkey past [`MAX_PASSKEYS`] is refused.
const TOO_MANY: &str = "an account holds at most 20 passkeys: remove one first";

/// A ceremony begun: its id (opaque, 128-bit) and the options for the browser.
#[derive(Debug)]
pub struct Started<T> {
    pub challenge_id: String,
    pub options: T,
}

/// What a sign-in with a passkey proved.
#[derive(Debug)]
pub struct Asserted {
    pub user: User,
    pub amr: Amr,
}

/// Why a passkey was refused, for the audit log (the client sees only 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasskeyFailure {
    /// Unknown challenge or credential, a bad signature, origin or flags.
    Invalid,
    /// The signature counter went backwards: a cloned authenticator.
    CounterWentBack,
}

impl PasskeyFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "passkey_invalid",
            Self::CounterWentBack => "passkey_counter",
        }
    }
}

fn credential_ids(rows: Vec<PasskeyRow>) -> Vec<Vec<u8>> {
    rows.into_iter().map(|row| row.credential_id).collect()
}

fn ceremony_hash(challenge_id: &str) -> Option<[u8; 32]> {
    decode_opaque_token(challenge_id).map(|raw| sha256(&raw))
}

fn to_json<T: serde::Serialize>(value: &T) -> AuthResult<String> {
    serde_json::to_string(value).map_err(|e| AuthError::Internal(e.into()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> AuthResult<T> {
    serde_json::from_str(text).map_err(|e| AuthError::Internal(e.into()))
}

/// A passkey's name: trimmed, 1 to 64 characters, no control characters.
pub fn parse_passkey_name(name: Option<&str>) -> Result<String, &'static str> {
    let name = name.map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Ok(DEFAULT_NAME.into());
    }
    if name.chars().count() > MAX_PASSKEY_NAME_CHARS || name.chars().any(char::is_control) {
        return Err("must be at most 64 characters, without control characters");
    }
    Ok(name.to_owned())
}

impl AuthService {
    /// Whether `claims`' session was signed into within [`RECENT_SIGN_IN_MS`].
    pub fn signed_in_recently(&self, claims: &AccessClaims) -> bool {
        let signed_in = claims.auth_time.saturating_mul(1000);
        self.now().saturating_sub(signed_in) <= RECENT_SIGN_IN_MS
    }

    /// [`AuthService::signed_in_recently`], else `password` must be `user`'s
    /// ([`AuthError::InvalidCurrentPassword`]), and without one
    /// [`AuthError::ReauthenticationRequired`].
    pub async fn confirm_recent_sign_in(
        &self,
        claims: &AccessClaims,
        user: &User,
        password: Option<SecretString>,
    ) -> AuthResult<()> {
        if self.signed_in_recently(claims) {
            return Ok(());
        }
        match password {
            Some(password) => self.check_current_password(user, password).await,
            None => Err(AuthError::ReauthenticationRequired),
        }
    }

    /// The relying party, or [`AuthError::PasskeysOff`].
    fn webauthn(&self) -> AuthResult<&Webauthn> {
        self.webauthn
            .as_deref()
            .map_err(|why| AuthError::PasskeysOff(why.clone()))
    }

    /// Whether passkeys can be used here.
    pub fn passkeys_on(&self) -> bool {
        self.webauthn.is_ok()
    }

    /// Stores a ceremony; its id for the client.
    async fn begin(
        &self,
        purpose: Purpose,
        user_id: Option<Uuid>,
        mfa_token_hash: Option<Vec<u8>>,
        state: String,
    ) -> AuthResult<String> {
        let challenge_id = new_opaque_token();
        let hash = ceremony_hash(&challenge_id)
            .ok_or_else(|| AuthError::Internal(anyhow::anyhow!("a fresh token did not decode")))?;
        let now = self.now();
        let ceremony = Ceremony {
            purpose,
            user_id,
            mfa_token_hash,
            state,
            expires_at: now + CEREMONY_TTL_MS,
        };
        self.store.create_ceremony(hash, ceremony, now).await?;
        Ok(challenge_id)
    }

    /// Takes the ceremony `challenge_id` if it is live and for `purpose`
    /// (it is spent either way).
    async fn take(&self, challenge_id: &str, purpose: Purpose) -> AuthResult<Option<Ceremony>> {
        let Some(hash) = ceremony_hash(challenge_id) else {
            return Ok(None);
        };
        Ok(self
            .store
            .take_ceremony(hash, self.now())
            .await?
            .filter(|c| c.purpose == purpose))
    }

    /// The user's passkeys, oldest first.
    pub async fn passkeys(&self, user_id: Uuid) -> AuthResult<Vec<PasskeyRow>> {
        Ok(self.store.passkeys(user_id).await?)
    }

    /// Whether the user has a passkey. It is asked for after a password even
    /// while passkeys are off here (a `public_url` changed to an IP
    /// address): the second factor fails closed, and an administrator's
    /// reset is the way back.
    pub async fn has_passkey(&self, user_id: Uuid) -> AuthResult<bool> {
        Ok(self.store.has_passkey(user_id).await?)
    }

    /// Begins adding a passkey to `user`: a discoverable credential is
    /// preferred, user verification required, the user's own excluded.
    pub async fn start_passkey_registration(
        &self,
        user: &User,
    ) -> AuthResult<Started<CreationChallengeResponse>> {
        let webauthn = self.webauthn()?;
        let held = self.store.passkeys(user.id).await?;
        if held.len() >= MAX_PASSKEYS {
            return Err(AuthError::PasskeyRejected(TOO_MANY));
        }
        let exclude = held
            .into_iter()
            .map(|row| CredentialID::from(row.credential_id))
            .collect();
        let display = user.name.as_deref().unwrap_or(&user.email);
        let (mut options, state) = webauthn
            .start_passkey_registration(user.id, &user.email, display, Some(exclude))
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("webauthn: {e}")))?;
        // "Sign in with a passkey" needs no email: ask for a discoverable one.
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(ResidentKeyRequirement::Preferred);
            selection.require_resident_key = false;
        }
        let challenge_id = self
            .begin(Purpose::Register, Some(user.id), None, to_json(&state)?)
            .await?;
        Ok(Started {
            challenge_id,
            options,
        })
    }

    /// Finishes adding a passkey to `user` with `audit`. A ceremony of
    /// another user, spent or expired, or a credential that does not verify
    /// is [`AuthError::PasskeyRejected`].
    pub async fn finish_passkey_registration(
        &self,
        user: &User,
        challenge_id: &str,
        credential: &RegisterPublicKeyCredential,
        name: String,
        audit: Audit,
    ) -> AuthResult<PasskeyRow> {
        let webauthn = self.webauthn()?;
        let ceremony = self
            .take(challenge_id, Purpose::Register)
            .await?
            .filter(|c| c.user_id == Some(user.id))
            .ok_or(AuthError::PasskeyRejected(
                "the challenge is unknown, used or expired",
            ))?;
        let state: PasskeyRegistration = from_json(&ceremony.state)?;
        let passkey = webauthn
            .finish_passkey_registration(credential, &state)
            .map_err(|e| {
                tracing::debug!(error = %e, "passkey registration refused");
                AuthError::PasskeyRejected("the authenticator's answer does not verify")
            })?;
        let row = PasskeyRow {
            id: Uuid::new_v4(),
            user_id: user.id,
            credential_id: passkey.cred_id().to_vec(),
            name,
            credential: to_json(&passkey)?,
            created_at: self.now(),
            last_used_at: None,
        };
        let audit = audit
            .into_iter()
            .map(|e| {
                e.user(user.id)
                    .resource("passkey", row.id)
                    .extra("name", row.name.clone())
            })
            .collect();
        match self
            .store
            .add_passkey(row.clone(), MAX_PASSKEYS, audit)
            .await
        {
            Ok(true) => Ok(row),
            Ok(false) => Err(AuthError::PasskeyRejected(TOO_MANY)),
            Err(StoreError::Duplicate(_)) => Err(AuthError::PasskeyRejected(
                "this passkey is registered already",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the user's passkey `id` with `audit`; [`AuthError::NotFound`]
    /// when the user has none by that id.
    pub async fn remove_passkey(&self, user_id: Uuid, id: Uuid, audit: Audit) -> AuthResult<()> {
        let audit = audit
            .into_iter()
            .map(|e| e.user(user_id).resource("passkey", id))
            .collect();
        if self
            .store
            .remove_passkey(user_id, id, self.now(), audit)
            .await?
        {
            Ok(())
        } else {
            Err(AuthError::NotFound)
        }
    }

    /// Begins a sign-in with a passkey alone: any discoverable credential of
    /// this relying party, or, given the account's email, its passkeys. An
    /// unknown or disabled account, or one without passkeys, is named one
    /// credential id that stays the same (a keyed hash of the email), so the
    /// answer does not tell who has a passkey.
    pub async fn start_passkey_login(
        &self,
        email: Option<&str>,
    ) -> AuthResult<Started<RequestChallengeResponse>> {
        let Some(email) = email else {
            return self.start_sign_in(Purpose::Login, None, Vec::new()).await;
        };
        let mut allowed = match self.store.user_by_email(email).await? {
            Some(user) if !user.is_disabled() => {
                credential_ids(self.store.passkeys(user.id).await?)
            }
            _ => Vec::new(),
        };
        if allowed.is_empty() {
            allowed.push(hmac_sha256(&self.passkey_decoys, &[email.as_bytes()]).to_vec());
        }
        self.start_sign_in(Purpose::Login, None, allowed).await
    }

    /// Begins the second step of `pending` with one of its user's passkeys;
    /// [`AuthError::PasskeyRejected`] when the user has none.
    pub async fn start_passkey_second_factor(
        &self,
        pending: &PendingLogin,
    ) -> AuthResult<Started<RequestChallengeResponse>> {
        let allowed = credential_ids(self.store.passkeys(pending.user.id).await?);
        if allowed.is_empty() {
            return Err(AuthError::PasskeyRejected("this account has no passkey"));
        }
        self.start_sign_in(Purpose::SecondFactor, Some(pending), allowed)
            .await
    }

    /// A sign-in ceremony: user verification required, the credential ids
    /// `allowed` named (none: any discoverable one). The credential is
    /// checked at the end against its stored row, whatever was named here,
    /// so its counter is the newest.
    async fn start_sign_in(
        &self,
        purpose: Purpose,
        pending: Option<&PendingLogin>,
        allowed: Vec<Vec<u8>>,
    ) -> AuthResult<Started<RequestChallengeResponse>> {
        let (mut options, state) = self
            .webauthn()?
            .start_discoverable_authentication()
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("webauthn: {e}")))?;
        // A button, not the autofill of conditional mediation.
        options.mediation = None;
        options.public_key.allow_credentials = allowed
            .into_iter()
            .map(|id| AllowCredentials {
                type_: "public-key".into(),
                id,
                transports: None,
            })
            .collect();
        let challenge_id = self
            .begin(
                purpose,
                pending.map(|p| p.user.id),
                pending.map(|p| p.token_hash.to_vec()),
                to_json(&state)?,
            )
            .await?;
        Ok(Started {
            challenge_id,
            options,
        })
    }

    /// Checks a passkey sign-in: the ceremony `challenge_id` (spent now) of
    /// `purpose`, the credential's signature, origin, user verification and
    /// counter. On success the passkey's counter and last use are stored.
    /// `Err(Ok(failure))` is a refusal, with the account when it is known;
    /// `Err(Err(e))` a fault.
    pub async fn assert_passkey(
        &self,
        challenge_id: &str,
        credential: &PublicKeyCredential,
        purpose: Purpose,
        mfa_token_hash: Option<&[u8; 32]>,
    ) -> Result<Asserted, Result<(PasskeyFailure, Option<Uuid>), AuthError>> {
        let webauthn = self.webauthn().map_err(Err)?;
        let refused = |user: Option<Uuid>| Err(Ok((PasskeyFailure::Invalid, user)));
        let Some(ceremony) = self.take(challenge_id, purpose).await.map_err(Err)? else {
            return refused(None);
        };
        if ceremony.mfa_token_hash.as_deref() != mfa_token_hash.map(|h| &h[..]) {
            return refused(ceremony.user_id);
        }
        let Some(row) = self
            .store
            .passkey_by_credential(credential.get_credential_id().to_vec())
            .await
            .map_err(|e| Err(e.into()))?
        else {
            return refused(ceremony.user_id);
        };
        // The credential must be the ceremony's user's, and the one the
        // authenticator says it holds for that user.
        let user_handle = credential
            .get_user_unique_id()
            .and_then(|b| Uuid::from_slice(b).ok());
        if ceremony.user_id.is_some_and(|u| u != row.user_id)
            || user_handle.is_some_and(|u| u != row.user_id)
            || (ceremony.user_id.is_none() && user_handle.is_none())
        {
            return refused(Some(row.user_id));
        }
        let mut passkey: Passkey = from_json(&row.credential).map_err(Err)?;
        let state: DiscoverableAuthentication = from_json(&ceremony.state).map_err(Err)?;
        let verified = webauthn.finish_discoverable_authentication_v2(credential, state, &passkey);
        let result = match verified {
            Ok(result) if result.user_verified() => result,
            Ok(_) => return refused(Some(row.user_id)),
            Err(WebauthnError::CredentialPossibleCompromise) => {
                // A clone signs too: the credential is refused from now on.
                let removed = vec![NewEvent::new(Action::PasskeyRemoved, &Origin::default())
                    .extra("reason", "counter_went_back")];
                self.remove_passkey(row.user_id, row.id, removed)
                    .await
                    .map_err(Err)?;
                return Err(Ok((PasskeyFailure::CounterWentBack, Some(row.user_id))));
            }
            Err(e) => {
                tracing::debug!(error = %e, "passkey assertion refused");
                return refused(Some(row.user_id));
            }
        };
        passkey.update_credential(&result);
        let updated = to_json(&passkey).map_err(Err)?;
        // Two sign-ins at once with one passkey: the second finds the row
        // changed under it and is refused (its counter was checked against
        // an older one).
        if !self
            .store
            .passkey_used(row.id, row.credential.clone(), updated, self.now())
            .await
            .map_err(|e| Err(e.into()))?
        {
            return refused(Some(row.user_id));
        }
        let user = match self.store.user_by_id(row.user_id).await {
            Ok(Some(user)) if !user.is_disabled() => user,
            Ok(_) => return refused(Some(row.user_id)),
            Err(e) => return Err(Err(e.into())),
        };
        Ok(Asserted {
            user,
            amr: Amr::HWK.and(Amr::USER),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_bounded_and_printable() {
        assert_eq!(parse_passkey_name(None).unwrap(), DEFAULT_NAME);
        assert_eq!(parse_passkey_name(Some("   ")).unwrap(), DEFAULT_NAME);
        assert_eq!(parse_passkey_name(Some(" Laptop ")).unwrap(), "Laptop");
        assert_eq!(
            parse_passkey_name(Some(&"é".repeat(64)))
                .unwrap()
                .chars()
                .count(),
            64
        );
        assert!(parse_passkey_name(Some(&"x".repeat(65))).is_err());
        assert!(parse_passkey_name(Some("a\nb")).is_err());
        assert!(parse_passkey_name(Some("a\u{7}b")).is_err());
    }

    #[test]
    fn a_challenge_id_that_is_not_one_of_ours_has_no_hash() {
        assert!(ceremony_hash("").is_none());
        assert!(ceremony_hash("../../etc/passwd").is_none());
        assert!(ceremony_hash(&"A".repeat(10_000)).is_none());
        let id = new_opaque_token();
        assert_eq!(ceremony_hash(&id), ceremony_hash(&id));
    }
}
