//! The OpenID Connect provider (SPEC section 13): clients, the RSA key of
//! id_tokens, discovery, and the endpoints. Grants are the domain's
//! (`auth::grants`): a code is spent once for a session of kind `oidc`, whose
//! refresh tokens rotate like an API session's, so logout-all, a password
//! reset and disabling an account end them with no code of their own.

pub mod authorize;
pub mod clients;
pub mod endpoints;
pub mod keys;
pub mod routes;

use std::sync::Arc;

use serde::Serialize;

use crate::auth::service::{AuthService, Profile};
use crate::config::{Config, IdTokenAlg};
use crate::store::Session;
pub use clients::{Client, Clients};
pub use keys::RsaKeys;

/// What the endpoints share.
pub struct Oidc {
    pub clients: Clients,
    pub rsa: RsaKeys,
    /// `public_url`, without a trailing slash.
    pub issuer: String,
    /// Signs the `login_after` of an authorization request sent to sign in.
    pub(crate) login_key: [u8; 32],
}

impl Oidc {
    pub fn new(config: &Config, auth: &AuthService) -> Self {
        Self {
            clients: Clients::new(&config.oidc, auth.store().clone()),
            rsa: RsaKeys::new(
                auth.store().clone(),
                auth.master().clone(),
                config.tokens.access_ttl.as_millis_i64(),
            ),
            issuer: config.server.public_url.trim_end_matches('/').to_owned(),
            login_key: auth.master().subkey("oidc login_after"),
        }
    }
}

/// The claims of an id_token.
#[derive(Debug, Serialize)]
pub struct IdClaims<'a> {
    pub iss: &'a str,
    pub sub: String,
    pub aud: &'a str,
    pub azp: &'a str,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<&'a str>,
    pub amr: Vec<&'static str>,
    pub sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    #[serde(flatten)]
    pub profile: ScopedClaims,
}

/// The claims of the granted scopes: the id_token's and userinfo's.
#[derive(Debug, Default, Serialize)]
pub struct ScopedClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

/// Whether the space-separated `scope` holds `one`.
pub fn has_scope(scope: &str, one: &str) -> bool {
    scope.split(' ').any(|s| s == one)
}

impl ScopedClaims {
    /// What `scope` lets a client read of `profile`.
    pub fn of(profile: &Profile, scope: &str) -> Self {
        let user = &profile.user;
        let mut claims = Self::default();
        if has_scope(scope, "email") {
            claims.email = Some(user.email.clone());
            // Addresses are not verified by portcullis.
            claims.email_verified = Some(false);
        }
        if has_scope(scope, "profile") {
            claims.name = Some(user.name.clone().unwrap_or_else(|| user.email.clone()));
            claims.preferred_username = Some(user.email.clone());
        }
        if has_scope(scope, "groups") {
            claims.groups = Some(profile.groups.clone());
        }
        claims
    }
}

/// The left half of the hash of `access_token` (OIDC Core 3.1.3.6), with
/// the hash of the id_token's algorithm: SHA-256 for RS256, SHA-512 for EdDSA.
pub fn at_hash(access_token: &str, alg: IdTokenAlg) -> String {
    use base64::Engine;
    use sha2::Digest;
    let half = match alg {
        IdTokenAlg::RS256 => sha2::Sha256::digest(access_token.as_bytes())[..16].to_vec(),
        IdTokenAlg::EdDSA => sha2::Sha512::digest(access_token.as_bytes())[..32].to_vec(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(half)
}

/// Signs an id_token for `session` of `client`.
pub async fn id_token(
    oidc: &Oidc,
    auth: &AuthService,
    client: &Client,
    session: &Session,
    profile: &Arc<Profile>,
    nonce: Option<&str>,
    access_token: &str,
) -> anyhow::Result<String> {
    let now = auth.now().div_euclid(1000);
    let alg = client.config.id_token_signed_response_alg;
    let scope = session.grant.as_ref().map_or("", |g| g.scope.as_str());
    let claims = IdClaims {
        iss: &oidc.issuer,
        sub: profile.user.id.to_string(),
        aud: &client.config.id,
        azp: &client.config.id,
        exp: now + auth.tokens().access_ttl_secs(),
        iat: now,
        auth_time: session.created_at.div_euclid(1000),
        nonce,
        amr: session.amr.values().collect(),
        sid: session.id.to_string(),
        at_hash: Some(at_hash(access_token, alg)),
        profile: ScopedClaims::of(profile, scope),
    };
    match alg {
        IdTokenAlg::RS256 => oidc.rsa.sign(&claims).await,
        IdTokenAlg::EdDSA => auth.tokens().sign_jwt(&claims),
    }
}
