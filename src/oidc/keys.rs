//! The RSA 2048 key of id_tokens (RS256: every relying party supports it).
//! Made once, sealed under the storage key like the Ed25519 key, and loaded
//! at first need: making one takes a fraction of a second, so it happens on
//! a blocking thread after start-up, never before the server answers.
//! Keys that `keys rotate` retired stay published until the tokens they
//! signed have expired.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::auth::crypto::{sha256, MasterKey};
use crate::auth::tokens::{key_context, Jwk};
use crate::clock::Millis;
use crate::store::{SigningKeyRow, Store};

/// The algorithm name of these keys in `signing_keys`.
pub const RS256: &str = "RS256";

/// The loaded keys.
pub struct RsaSigner {
    kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    jwks: Vec<Jwk>,
}

/// The RSA keys, loaded (or made) at first need.
pub struct RsaKeys {
    cell: OnceCell<Arc<RsaSigner>>,
    store: Store,
    master: Arc<MasterKey>,
    /// How long a retired key stays published.
    keep_ms: Millis,
}

impl RsaKeys {
    pub fn new(store: Store, master: Arc<MasterKey>, keep_ms: Millis) -> Self {
        Self {
            cell: OnceCell::new(),
            store,
            master,
            keep_ms,
        }
    }

    /// The keys; the first call loads them, making one if there is none.
    pub async fn get(&self) -> anyhow::Result<Arc<RsaSigner>> {
        self.cell
            .get_or_try_init(|| async {
                load_or_create(&self.store, &self.master, self.keep_ms)
                    .await
                    .map(Arc::new)
            })
            .await
            .cloned()
    }

    /// Signs `claims` as an RS256 JWT.
    pub async fn sign<T: Serialize>(&self, claims: &T) -> anyhow::Result<String> {
        let signer = self.get().await?;
        let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, claims, &signer.encoding).context("cannot sign an id_token")
    }

    /// The public keys to publish.
    pub async fn jwks(&self) -> anyhow::Result<Vec<Jwk>> {
        Ok(self.get().await?.jwks.clone())
    }

    /// The claims of an RS256 token we signed (any age), if the signature holds.
    pub async fn verify<T: serde::de::DeserializeOwned>(&self, token: &str) -> Option<T> {
        let signer = self.get().await.ok()?;
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != jsonwebtoken::Algorithm::RS256 {
            return None;
        }
        let key = signer.decoding.get(header.kid.as_deref()?)?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims::<&str>(&[]);
        jsonwebtoken::decode::<T>(token, key, &validation)
            .ok()
            .map(|d| d.claims)
    }
}

/// A new key, its private half sealed.
pub fn new_rsa_row(master: &MasterKey, now: Millis) -> anyhow::Result<SigningKeyRow> {
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
        .map_err(|e| anyhow!("cannot make an RSA key: {e}"))?;
    let private = key
        .to_pkcs1_der()
        .map_err(|e| anyhow!("cannot encode the RSA key: {e}"))?;
    let public = key
        .to_public_key()
        .to_pkcs1_der()
        .map_err(|e| anyhow!("cannot encode the RSA public key: {e}"))?;
    let kid = format!("rsa-{}", hex::encode(&sha256(public.as_bytes())[..8]));
    Ok(SigningKeyRow {
        private_key: master.seal(private.as_bytes(), key_context(&kid).as_bytes())?,
        public_key: public.as_bytes().to_vec(),
        kid,
        algorithm: RS256.to_owned(),
        created_at: now,
    })
}

async fn load_or_create(
    store: &Store,
    master: &Arc<MasterKey>,
    keep_ms: Millis,
) -> anyhow::Result<RsaSigner> {
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
    let row = match store.active_signing_key(RS256).await? {
        Some(row) => row,
        None => {
            let master_for_job = master.clone();
            let row = tokio::task::spawn_blocking(move || new_rsa_row(&master_for_job, now))
                .await
                .map_err(|e| anyhow!("the RSA key job failed: {e}"))??;
            store.insert_signing_key(row.clone()).await?;
            tracing::info!(kid = %row.kid, "generated a new RSA signing key for id_tokens");
            // Another process may have made one at the same moment: both
            // converge on the newest.
            store
                .active_signing_key(RS256)
                .await?
                .ok_or_else(|| anyhow!("the RSA key just stored is gone"))?
        }
    };
    let private = master
        .open(&row.private_key, key_context(&row.kid).as_bytes())
        .with_context(|| format!("cannot unseal signing key {}", row.kid))?;
    let encoding = EncodingKey::from_rsa_der(&private);
    let mut decoding = HashMap::new();
    let mut jwks = Vec::new();
    let retired = store
        .retired_signing_keys(RS256, now.saturating_sub(keep_ms))
        .await?;
    for key in std::iter::once(&row).chain(retired.iter()) {
        let public = rsa::RsaPublicKey::from_pkcs1_der(&key.public_key)
            .map_err(|e| anyhow!("signing key {} has a bad public key: {e}", key.kid))?;
        let n = URL_SAFE_NO_PAD.encode(public.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(public.e().to_bytes_be());
        decoding.insert(
            key.kid.clone(),
            DecodingKey::from_rsa_components(&n, &e)
                .map_err(|e| anyhow!("signing key {}: {e}", key.kid))?,
        );
        jwks.push(Jwk {
            kty: "RSA",
            crv: None,
            use_: "sig",
            alg: RS256,
            kid: key.kid.clone(),
            x: None,
            n: Some(n),
            e: Some(e),
        });
    }
    Ok(RsaSigner {
        kid: row.kid,
        encoding,
        decoding,
        jwks,
    })
}
