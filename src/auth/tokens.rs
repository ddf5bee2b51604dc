//! Access tokens: JWTs signed with Ed25519 (a key pair generated on first start,
//! its private half sealed in the database) or HS256 with a configured secret.
//! Verification accepts only the configured algorithm, a known `kid`,
//! `typ: at+jwt`, our issuer and audience, and the time window by our clock.
//!
//! A signature is checked once per token: the claims of a token that passed
//! are remembered under the SHA-256 of its exact bytes, so a client that sends
//! the same token on every request pays for one Ed25519 verification, not one
//! per request. The time window is checked on every use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{decode, decode_header, encode, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::crypto::{random_bytes, sha256, MasterKey, SecretIds};
use crate::clock::Millis;
use crate::config::{Algorithm, TokensConfig};
use crate::store::{Amr, Grant, SigningKeyRow, Store};

/// The `typ` header of our access tokens (RFC 9068).
pub const TOKEN_TYPE: &str = "at+jwt";
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Verified tokens remembered at once (a few MiB at most).
const VERIFIED_TOKENS: u64 = 16_384;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    pub email: String,
    /// The session id.
    pub sid: Uuid,
    pub jti: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub roles: Vec<String>,
    /// The factors the session was opened with (RFC 8176).
    #[serde(default)]
    pub amr: Vec<String>,
    /// When the user signed in (seconds), which a refresh does not change.
    #[serde(default)]
    pub auth_time: i64,
    /// The OpenID Connect client a token was issued to (SPEC section 13):
    /// such a token serves that client at `/oidc/userinfo`, not the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The scopes granted to that client, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Why a presented access token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("access token is malformed or its signature is invalid")]
    Invalid,
    #[error("access token has expired")]
    Expired,
    #[error("access token is not valid yet")]
    NotYetValid,
    #[error("access token has been revoked")]
    Revoked,
}

impl TokenError {
    /// A static client-facing message.
    pub fn message(self) -> &'static str {
        match self {
            Self::Invalid => "access token is malformed or its signature is invalid",
            Self::Expired => "access token has expired",
            Self::NotYetValid => "access token is not valid yet",
            Self::Revoked => "access token has been revoked",
        }
    }
}

/// What goes into a new access token.
#[derive(Debug, Clone)]
pub struct TokenSubject<'a> {
    pub user_id: Uuid,
    pub email: &'a str,
    pub session_id: Uuid,
    pub is_admin: bool,
    /// The token never outlives its session.
    pub session_expires_at: Millis,
    /// The session's factors.
    pub amr: Amr,
    /// When the session was opened.
    pub auth_time: Millis,
    /// An OIDC session's client and scopes.
    pub grant: Option<&'a Grant>,
}

/// A public key as `/.well-known/jwks.json` publishes it (RFC 7517).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Jwk {
    /// `OKP` for Ed25519, `RSA`.
    pub kty: &'static str,
    /// `Ed25519` (OKP keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<&'static str>,
    #[serde(rename = "use")]
    pub use_: &'static str,
    pub alg: &'static str,
    pub kid: String,
    /// An OKP public key, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// An RSA modulus, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// An RSA public exponent, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

impl Jwk {
    /// An Ed25519 public key.
    pub fn ed25519(kid: &str, public: &[u8]) -> Self {
        Self {
            kty: "OKP",
            crv: Some("Ed25519"),
            use_: "sig",
            alg: "EdDSA",
            kid: kid.to_owned(),
            x: Some(URL_SAFE_NO_PAD.encode(public)),
            n: None,
            e: None,
        }
    }
}

/// The JSON Web Key Set: every public key tokens are verified with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// Signing and verification keys plus the published JWKS.
pub struct TokenKeys {
    kid: String,
    algorithm: jsonwebtoken::Algorithm,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
    jwks: Jwks,
    issuer: String,
    audience: String,
    access_ttl_secs: i64,
    /// Claims of tokens whose signature and claims passed, by the token's
    /// in-memory identity (only a verified token is ever a key, so nobody
    /// fills this with strings of their own).
    verified: moka::sync::Cache<[u8; 16], Arc<AccessClaims>>,
    token_ids: SecretIds,
}

impl TokenKeys {
    /// Loads the active key for the configured algorithm, generating and storing an
    /// Ed25519 pair on first start.
    pub async fn load_or_create(
        cfg: &TokensConfig,
        store: &Store,
        master: &MasterKey,
        now: Millis,
    ) -> anyhow::Result<Self> {
        match cfg.algorithm {
            Algorithm::HS256 => Ok(Self::hs256(cfg)),
            Algorithm::EdDSA => {
                let row = match store.active_signing_key("EdDSA").await? {
                    Some(row) => row,
                    None => {
                        let row = new_ed25519_row(master, now)?;
                        store.insert_signing_key(row.clone()).await?;
                        tracing::info!(kid = %row.kid, "generated a new Ed25519 signing key");
                        row
                    }
                };
                // A key retired less than a token's lifetime ago may still
                // have signed a live token.
                let since = now.saturating_sub(cfg.access_ttl.as_millis_i64());
                let retired = store.retired_signing_keys("EdDSA", since).await?;
                Self::ed25519(cfg, &row, &retired, master)
            }
        }
    }

    /// Keys for HS256 with the configured secret (the config was validated).
    pub fn hs256(cfg: &TokensConfig) -> Self {
        let kid = format!(
            "hs256-{}",
            &hex::encode(sha256(cfg.secret.as_bytes()))[..12]
        );
        let decoding =
            HashMap::from([(kid.clone(), DecodingKey::from_secret(cfg.secret.as_bytes()))]);
        Self::assemble(
            cfg,
            kid,
            jsonwebtoken::Algorithm::HS256,
            EncodingKey::from_secret(cfg.secret.as_bytes()),
            decoding,
            // A symmetric secret is never published.
            Jwks { keys: Vec::new() },
        )
    }

    fn ed25519(
        cfg: &TokensConfig,
        row: &SigningKeyRow,
        retired: &[SigningKeyRow],
        master: &MasterKey,
    ) -> anyhow::Result<Self> {
        let seed = master
            .open(&row.private_key, key_context(&row.kid).as_bytes())
            .with_context(|| format!("cannot unseal signing key {}", row.kid))?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| anyhow!("signing key {} has the wrong length", row.kid))?;
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = signing.verifying_key().to_bytes();
        if public[..] != row.public_key[..] {
            return Err(anyhow!(
                "signing key {} does not match its public key",
                row.kid
            ));
        }
        let der = signing
            .to_pkcs8_der()
            .map_err(|e| anyhow!("cannot encode signing key: {e}"))?;
        let mut jwks = Jwks {
            keys: vec![Jwk::ed25519(&row.kid, &public)],
        };
        let mut decoding = HashMap::from([(row.kid.clone(), DecodingKey::from_ed_der(&public))]);
        // Keys that `keys rotate` retired still verify the tokens they signed.
        for old in retired {
            if old.kid != row.kid && old.public_key.len() == 32 {
                jwks.keys.push(Jwk::ed25519(&old.kid, &old.public_key));
                decoding.insert(old.kid.clone(), DecodingKey::from_ed_der(&old.public_key));
            }
        }
        Ok(Self::assemble(
            cfg,
            row.kid.clone(),
            jsonwebtoken::Algorithm::EdDSA,
            EncodingKey::from_ed_der(der.as_bytes()),
            decoding,
            jwks,
        ))
    }

    fn assemble(
        cfg: &TokensConfig,
        kid: String,
        algorithm: jsonwebtoken::Algorithm,
        encoding: EncodingKey,
        decoding: HashMap<String, DecodingKey>,
        jwks: Jwks,
    ) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&cfg.issuer]);
        validation.set_audience(&[&cfg.audience]);
        validation.set_required_spec_claims(&["iss", "aud", "sub", "exp", "nbf"]);
        // Time is checked against our injected clock instead.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Self {
            kid,
            algorithm,
            encoding,
            decoding,
            validation,
            jwks,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            access_ttl_secs: i64::try_from(cfg.access_ttl.as_secs()).unwrap_or(i64::MAX),
            // No token lives longer than access_ttl, so neither does its entry.
            token_ids: SecretIds::random(),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_TOKENS)
                .time_to_live(cfg.access_ttl.std().max(Duration::from_secs(1)))
                .build(),
        }
    }

    /// Signs a new access token; returns it with its `exp`.
    pub fn issue(&self, subject: &TokenSubject<'_>, now: Millis) -> anyhow::Result<(String, i64)> {
        let iat = now.div_euclid(1000);
        let exp = iat
            .saturating_add(self.access_ttl_secs)
            .min(subject.session_expires_at.div_euclid(1000));
        // A token issued to an OpenID Connect client tells it no more than
        // its scopes do: the email only with `email`, never the roles.
        let granted = |scope: &str| {
            subject
                .grant
                .is_none_or(|g| g.scope.split(' ').any(|s| s == scope))
        };
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: subject.user_id,
            email: if granted("email") {
                subject.email.to_owned()
            } else {
                String::new()
            },
            sid: subject.session_id,
            jti: Uuid::new_v4(),
            iat,
            nbf: iat,
            exp,
            roles: if subject.is_admin && subject.grant.is_none() {
                vec!["admin".to_owned()]
            } else {
                Vec::new()
            },
            amr: subject.amr.values().map(str::to_owned).collect(),
            auth_time: subject.auth_time.div_euclid(1000),
            client_id: subject.grant.map(|g| g.client_id.clone()),
            scope: subject.grant.map(|g| g.scope.clone()),
        };
        let mut header = Header::new(self.algorithm);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(self.kid.clone());
        let token = encode(&header, &claims, &self.encoding).context("cannot sign access token")?;
        Ok((token, exp))
    }

    /// Checks signature, algorithm, `kid`, `typ`, issuer, audience and time.
    /// Revocation is the caller's job (see `auth::revocation`).
    pub fn verify(&self, token: &str, now: Millis) -> Result<AccessClaims, TokenError> {
        self.verify_shared(token, now)
            .map(|claims| AccessClaims::clone(&claims))
    }

    /// [`TokenKeys::verify`], the claims shared with the cache of verified
    /// tokens rather than copied.
    pub fn verify_shared(&self, token: &str, now: Millis) -> Result<Arc<AccessClaims>, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid);
        }
        let id = self.token_ids.id(token.as_bytes());
        let claims = match self.verified.get(&id) {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.verify_signature(token)?);
                self.verified.insert(id, claims.clone());
                claims
            }
        };
        let now = now.div_euclid(1000);
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        if now < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// Header, signature, issuer and audience; not time.
    fn verify_signature(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != self.algorithm || header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(TokenError::Invalid);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.decoding.get(kid))
            .ok_or(TokenError::Invalid)?;
        decode::<AccessClaims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| TokenError::Invalid)
    }

    /// Signs `claims` with the access-token key (an EdDSA id_token), header
    /// `typ: JWT`.
    pub fn sign_jwt<T: Serialize>(&self, claims: &T) -> anyhow::Result<String> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.encoding).context("cannot sign a token")
    }

    /// The claims of a token [`TokenKeys::sign_jwt`] signed (any age: an
    /// id_token as a logout hint), if the signature holds.
    pub fn verify_jwt<T: serde::de::DeserializeOwned>(&self, token: &str) -> Option<T> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        // Not an access token (signed with the same key).
        if header.alg != self.algorithm || header.typ.as_deref() == Some(TOKEN_TYPE) {
            return None;
        }
        let key = self.decoding.get(header.kid.as_deref()?)?;
        let mut validation = Validation::new(self.algorithm);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims::<&str>(&[]);
        decode::<T>(token, key, &validation).ok().map(|d| d.claims)
    }

    /// How long an access token lives, in seconds.
    pub fn access_ttl_secs(&self) -> i64 {
        self.access_ttl_secs
    }

    /// The signature algorithm of access tokens.
    pub fn algorithm(&self) -> jsonwebtoken::Algorithm {
        self.algorithm
    }

    /// The JSON Web Key Set to publish.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// The `kid` new tokens carry.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

pub(crate) fn key_context(kid: &str) -> String {
    format!("portcullis signing key {kid}")
}

pub(crate) fn new_ed25519_row(master: &MasterKey, now: Millis) -> anyhow::Result<SigningKeyRow> {
    let seed: [u8; 32] = random_bytes();
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let public = signing.verifying_key().to_bytes();
    let kid = hex::encode(&sha256(&public)[..8]);
    Ok(SigningKeyRow {
        private_key: master.seal(&seed, key_context(&kid).as_bytes())?,
        public_key: public.to_vec(),
        kid,
        algorithm: "EdDSA".to_owned(),
        created_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use serde_json::json;

    const NOW: Millis = 1_800_000_000_000;

    fn subject() -> TokenSubject<'static> {
        TokenSubject {
            user_id: Uuid::new_v4(),
            email: "a@example.com",
            session_id: Uuid::new_v4(),
            is_admin: true,
            session_expires_at: NOW + 86_400_000,
            amr: Amr::PWD,
            auth_time: NOW,
            grant: None,
        }
    }

    async fn ed_keys(dir: &std::path::Path) -> TokenKeys {
        let store = Store::sqlite(&dir.join("db")).unwrap();
        let master = MasterKey::load_or_create("", dir).unwrap();
        TokenKeys::load_or_create(&TokensConfig::default(), &store, &master, NOW)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn ed25519_round_trip_and_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ed_keys(dir.path()).await;
        let (token, exp) = keys.issue(&subject(), NOW).unwrap();
        assert_eq!(exp, NOW / 1000 + 3600);
        let claims = keys.verify(&token, NOW).unwrap();
        assert_eq!(claims.roles, vec!["admin"]);
        assert_eq!(
            keys.verify(&token, NOW + 3_600_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            keys.verify(&token, NOW - 1_000),
            Err(TokenError::NotYetValid)
        );

        let again = ed_keys(dir.path()).await;
        assert_eq!(again.kid(), keys.kid());
        assert!(again.verify(&token, NOW).is_ok());
        assert_eq!(keys.jwks().keys[0].kid, keys.kid());
    }

    #[tokio::test]
    async fn private_key_is_not_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::sqlite(&dir.path().join("db")).unwrap();
        let master = MasterKey::load_or_create("", dir.path()).unwrap();
        TokenKeys::load_or_create(&TokensConfig::default(), &store, &master, NOW)
            .await
            .unwrap();
        let row = store.active_signing_key("EdDSA").await.unwrap().unwrap();
        assert_eq!(row.private_key.len(), 24 + 32 + 16);
        let other = MasterKey::from_hex(&"00".repeat(32)).unwrap();
        assert!(TokenKeys::ed25519(&TokensConfig::default(), &row, &[], &other).is_err());
    }

    #[tokio::test]
    async fn token_never_outlives_session() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ed_keys(dir.path()).await;
        let s = TokenSubject {
            session_expires_at: NOW + 60_000,
            ..subject()
        };
        let (_, exp) = keys.issue(&s, NOW).unwrap();
        assert_eq!(exp, NOW / 1000 + 60);
    }

    #[tokio::test]
    async fn refuses_other_algorithms_and_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ed_keys(dir.path()).await;
        let (token, _) = keys.issue(&subject(), NOW).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        // The genuine token is verified (and remembered) first: what is
        // remembered must not vouch for any other string.
        assert!(keys.verify(&token, NOW).is_ok());

        // alg: none with the same claims.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#);
        let forged = format!("{none_header}.{}.", parts[1]);
        assert_eq!(keys.verify(&forged, NOW), Err(TokenError::Invalid));

        // HS256 signed with the public key as the secret (algorithm confusion).
        let cfg = TokensConfig {
            algorithm: Algorithm::HS256,
            secret: keys.jwks().keys[0].x.clone().unwrap_or_default().repeat(2),
            ..TokensConfig::default()
        };
        let hs = TokenKeys::hs256(&cfg);
        let (hs_token, _) = hs.issue(&subject(), NOW).unwrap();
        assert_eq!(keys.verify(&hs_token, NOW), Err(TokenError::Invalid));

        // A changed claim breaks the signature.
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["roles"] = json!(["admin", "root"]);
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            parts[2]
        );
        assert_eq!(keys.verify(&tampered, NOW), Err(TokenError::Invalid));
        assert_eq!(keys.verify("", NOW), Err(TokenError::Invalid));
        assert_eq!(
            keys.verify(&"a".repeat(5000), NOW),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn hs256_round_trip_and_wrong_audience() {
        let cfg = TokensConfig {
            algorithm: Algorithm::HS256,
            secret: "0123456789abcdef0123456789abcdef".into(),
            ..TokensConfig::default()
        };
        let keys = TokenKeys::hs256(&cfg);
        let (token, _) = keys.issue(&subject(), NOW).unwrap();
        assert!(keys.verify(&token, NOW).is_ok());
        assert!(keys.jwks().keys.is_empty());
        let other = TokenKeys::hs256(&TokensConfig {
            audience: "else".into(),
            ..cfg
        });
        assert_eq!(other.verify(&token, NOW), Err(TokenError::Invalid));
    }
}
