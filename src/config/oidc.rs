//! `[oidc]`: the OpenID Connect clients of the config file (SPEC section 13).
//! A bad entry stops start-up with an error naming it; `oidc::clients` turns
//! them (and the ones the CLI stores) into what the endpoints check.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// The scopes a client may be allowed.
pub const SCOPES: [&str; 5] = ["openid", "profile", "email", "groups", "offline_access"];

/// How a client proves itself at the token endpoint.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
    /// A public client: no secret, PKCE instead.
    None,
}

impl ClientAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::None => "none",
        }
    }
}

/// The signature of a client's id_tokens.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum IdTokenAlg {
    /// Every relying party supports it.
    #[default]
    RS256,
    EdDSA,
}

impl IdTokenAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::EdDSA => "EdDSA",
        }
    }
}

/// When the consent page is shown.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    /// Once per user, client and scopes.
    #[default]
    Once,
    /// Never: a first-party app.
    Implicit,
    /// At every authorization.
    Always,
}

/// One `[[oidc.clients]]` (and the settings of a client the CLI added).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OidcClientConfig {
    /// `[A-Za-z0-9._-]{1,64}`.
    pub id: String,
    /// What people see on the consent page; empty: the id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The secret in clear (compared in constant time).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub secret: String,
    /// Or its argon2id PHC string.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub secret_hash: String,
    /// Exact matches only.
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// No secret; PKCE required.
    pub public: bool,
    /// Empty: every scope there is.
    pub scopes: Vec<String>,
    /// Empty: `client_secret_basic`, or `none` for a public client.
    pub token_endpoint_auth_method: Option<ClientAuthMethod>,
    pub id_token_signed_response_alg: IdTokenAlg,
    pub consent: Consent,
    /// Whether every code grant gets a refresh token, not only one that
    /// asked for `offline_access`.
    pub refresh_tokens: bool,
}

impl OidcClientConfig {
    /// The way it authenticates: `none` for a public client.
    pub fn auth_method(&self) -> ClientAuthMethod {
        match self.token_endpoint_auth_method {
            Some(m) => m,
            None if self.public => ClientAuthMethod::None,
            None => ClientAuthMethod::ClientSecretBasic,
        }
    }

    /// The scopes it may ask for.
    pub fn allowed_scopes(&self) -> Vec<String> {
        if self.scopes.is_empty() {
            SCOPES.iter().map(|s| (*s).to_owned()).collect()
        } else {
            self.scopes.clone()
        }
    }

    /// Checks one client; `at` names it in errors (`oidc.clients[0]`).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        if !is_client_id(&self.id) {
            return Err(invalid(
                &key("id"),
                format!("{:?} must be 1 to 64 of A-Z a-z 0-9 . _ -", self.id),
            ));
        }
        if self.name.chars().count() > 100 || self.name.chars().any(char::is_control) {
            return Err(invalid(
                &key("name"),
                "at most 100 characters, no control characters",
            ));
        }
        if self.redirect_uris.is_empty() {
            return Err(invalid(&key("redirect_uris"), "at least one is needed"));
        }
        for uri in &self.redirect_uris {
            check_uri(uri).map_err(|r| invalid(&key("redirect_uris"), format!("{uri:?} {r}")))?;
        }
        for uri in &self.post_logout_redirect_uris {
            check_uri(uri)
                .map_err(|r| invalid(&key("post_logout_redirect_uris"), format!("{uri:?} {r}")))?;
        }
        for scope in &self.scopes {
            if !SCOPES.contains(&scope.as_str()) {
                return Err(invalid(
                    &key("scopes"),
                    format!("{scope:?} is not one of {}", SCOPES.join(", ")),
                ));
            }
        }
        let method = self.auth_method();
        if self.public {
            if !self.secret.is_empty() || !self.secret_hash.is_empty() {
                return Err(invalid(&key("secret"), "a public client has no secret"));
            }
            if method != ClientAuthMethod::None {
                return Err(invalid(
                    &key("token_endpoint_auth_method"),
                    "a public client authenticates with \"none\" (and PKCE)",
                ));
            }
        } else {
            if method == ClientAuthMethod::None {
                return Err(invalid(
                    &key("token_endpoint_auth_method"),
                    "\"none\" is for public clients (public = true)",
                ));
            }
            match (self.secret.is_empty(), self.secret_hash.is_empty()) {
                (true, true) => {
                    return Err(invalid(
                        &key("secret"),
                        "a confidential client needs secret or secret_hash",
                    ))
                }
                (false, false) => {
                    return Err(invalid(
                        &key("secret"),
                        "give secret or secret_hash, not both",
                    ))
                }
                (false, true) if self.secret.len() < 16 => {
                    return Err(invalid(&key("secret"), "at least 16 characters"));
                }
                (true, false) if argon2::PasswordHash::new(&self.secret_hash).is_err() => {
                    return Err(invalid(&key("secret_hash"), "is not a PHC string"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `[oidc]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    pub clients: Vec<OidcClientConfig>,
}

impl OidcConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, client) in self.clients.iter().enumerate() {
            let at = if client.id.is_empty() {
                format!("oidc.clients[{i}]")
            } else {
                format!("oidc.clients[{i}] ({:?})", client.id)
            };
            client.validate(&at)?;
            if self.clients[..i].iter().any(|c| c.id == client.id) {
                return Err(invalid(&format!("{at}.id"), "another client has this id"));
            }
        }
        Ok(())
    }
}

/// A client id: what the CLI, the config and the endpoints accept.
pub fn is_client_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A redirect URI a client may register: absolute http(s), no fragment, no
/// user info. Plain http is allowed (local apps, CI).
pub fn check_uri(uri: &str) -> Result<(), &'static str> {
    if uri.len() > 2000 {
        return Err("is longer than 2000 characters");
    }
    let parsed = url::Url::parse(uri).map_err(|_| "is not an absolute URL")?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be http or https");
    }
    if parsed.fragment().is_some() {
        return Err("must not have a #fragment");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry a user name or password");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host");
    }
    Ok(())
}
