//! The clients: those of the config file, checked at start-up, and those
//! `portcullis client add` stored, read at each use so that a running server
//! knows them at once.

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::SecretString;

use crate::auth::crypto::{constant_time_eq, sha256};
use crate::auth::service::{AuthResult, AuthService};
use crate::config::{ClientAuthMethod, OidcClientConfig, OidcConfig};
use crate::store::Store;

/// A client as the endpoints check it.
#[derive(Debug)]
pub struct Client {
    pub config: OidcClientConfig,
}

impl Client {
    /// What the consent page calls it.
    pub fn display_name(&self) -> &str {
        if self.config.name.is_empty() {
            &self.config.id
        } else {
            &self.config.name
        }
    }

    pub fn is_public(&self) -> bool {
        self.config.public
    }

    pub fn method(&self) -> ClientAuthMethod {
        self.config.auth_method()
    }

    /// Whether `uri` is one of its redirect URIs, exactly.
    pub fn redirects_to(&self, uri: &str) -> bool {
        self.config.redirect_uris.iter().any(|r| r == uri)
    }

    /// Whether `secret` is its secret: compared in constant time, or
    /// against its argon2id hash on the hashing pool.
    pub async fn secret_matches(&self, auth: &AuthService, secret: &str) -> AuthResult<bool> {
        if !self.config.secret.is_empty() {
            // Digests of equal length: the time taken tells nothing of the
            // secret's length either.
            return Ok(constant_time_eq(
                &sha256(self.config.secret.as_bytes()),
                &sha256(secret.as_bytes()),
            ));
        }
        if self.config.secret_hash.is_empty() || secret.is_empty() || secret.len() > 512 {
            return Ok(false);
        }
        auth.verify_client_secret(
            SecretString::from(secret.to_owned()),
            self.config.secret_hash.clone(),
        )
        .await
    }
}

/// Every client.
pub struct Clients {
    configured: HashMap<String, Arc<Client>>,
    store: Store,
}

impl Clients {
    pub fn new(config: &OidcConfig, store: Store) -> Self {
        let configured = config
            .clients
            .iter()
            .map(|c| (c.id.clone(), Arc::new(Client { config: c.clone() })))
            .collect();
        Self { configured, store }
    }

    /// The client `id`: the config's, else one the CLI stored. A stored
    /// entry that no longer reads as a valid client is no client (and logged).
    pub async fn get(&self, id: &str) -> AuthResult<Option<Arc<Client>>> {
        if let Some(client) = self.configured.get(id) {
            return Ok(Some(client.clone()));
        }
        if !crate::config::is_client_id(id) {
            return Ok(None);
        }
        let Some(text) = self.store.oidc_client(id).await? else {
            return Ok(None);
        };
        Ok(parse_stored(id, &text).map(|config| Arc::new(Client { config })))
    }

    /// Whether any client is known (configured or stored).
    pub async fn any(&self) -> AuthResult<bool> {
        Ok(!self.configured.is_empty() || !self.store.oidc_clients().await?.is_empty())
    }
}

/// A stored client's settings, checked as the config's are.
pub fn parse_stored(id: &str, text: &str) -> Option<OidcClientConfig> {
    let parsed = serde_json::from_str::<OidcClientConfig>(text)
        .map_err(|e| e.to_string())
        .and_then(|c| {
            c.validate(&format!("client {id:?}"))
                .map(|()| c)
                .map_err(|e| e.to_string())
        });
    match parsed {
        Ok(config) if config.id == id => Some(config),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(client = %id, error = %e, "a stored OIDC client is not valid");
            None
        }
    }
}
