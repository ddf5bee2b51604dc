//! Secrets at rest and randomness: the 256-bit storage key, sealing with
//! XChaCha20-Poly1305, keys derived from it for keyed hashes, random tokens
//! and their SHA-256 digests.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Name of the key file created in the data directory when no key is configured.
pub const KEY_FILE: &str = "encryption.key";
const NONCE_LEN: usize = 24;

/// The key that seals secrets stored in the database, and derives the keys
/// of keyed hashes (backup codes, rate-limit keys).
pub struct MasterKey {
    aead: XChaCha20Poly1305,
    /// HMAC-SHA-256 of the storage key over a fixed label: the root of
    /// [`MasterKey::subkey`], so the storage key itself is used for one thing.
    derive: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// From 64 hex characters.
    pub fn from_hex(hex_key: &str) -> anyhow::Result<Self> {
        let bytes =
            hex::decode(hex_key.trim()).map_err(|_| anyhow!("encryption key is not hex"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow!("encryption key must be 32 bytes (64 hex characters)"))?;
        Ok(Self::from_bytes(key))
    }

    fn from_bytes(key: [u8; 32]) -> Self {
        Self {
            aead: XChaCha20Poly1305::new(&key.into()),
            derive: hmac_sha256(&key, &[b"portcullis key derivation"]),
        }
    }

    /// A 256-bit key for one `purpose`, derived from the storage key
    /// (HMAC-SHA-256): the same on every instance that shares the storage
    /// key, and useless for anything but its purpose.
    pub fn subkey(&self, purpose: &str) -> [u8; 32] {
        hmac_sha256(&self.derive, &[purpose.as_bytes()])
    }

    /// The configured key, else the one in `data_dir/encryption.key`, created
    /// (mode 0600) when absent.
    pub fn load_or_create(configured: &str, data_dir: &Path) -> anyhow::Result<Self> {
        if !configured.is_empty() {
            return Self::from_hex(configured).context("storage.encryption_key");
        }
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                // A key file an earlier version left readable is narrowed.
                if let Err(e) = crate::private_files::narrow(&path) {
                    tracing::warn!(error = %e, path = %path.display(), "cannot make the key file 0600");
                }
                Self::from_hex(&text)
                    .with_context(|| format!("invalid key file {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = random_bytes();
                write_private_file(&path, format!("{}\n", hex::encode(key)).as_bytes())
                    .with_context(|| format!("cannot create key file {}", path.display()))?;
                tracing::info!(path = %path.display(), "created a new storage encryption key");
                Ok(Self::from_bytes(key))
            }
            Err(e) => Err(e).with_context(|| format!("cannot read key file {}", path.display())),
        }
    }

    /// Encrypts `plaintext`, bound to `context` (for example the row it belongs to).
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> anyhow::Result<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let ct = self
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .map_err(|_| anyhow!("encryption failed"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts what [`MasterKey::seal`] produced with the same `context`.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            bail!("sealed value is truncated");
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.aead
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context,
                },
            )
            .map_err(|_| Undecryptable.into())
    }
}

/// A sealed value that this key cannot open: another key sealed it, or it
/// was tampered with.
#[derive(Debug, thiserror::Error)]
#[error("cannot decrypt: wrong encryption key or tampered data")]
pub struct Undecryptable;

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = crate::private_files::create_new(path)?;
    f.write_all(contents)?;
    f.sync_all()
}
/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}

/// A fresh 256-bit opaque token, base64url without padding (43 characters).
pub fn new_opaque_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// Decodes an opaque token made by [`new_opaque_token`]; `None` if malformed.
pub fn decode_opaque_token(token: &str) -> Option<[u8; 32]> {
    if token.len() != 43 {
        return None;
    }
    // Into a buffer on the stack: this runs on every forward-auth check.
    let mut raw = [0u8; 33];
    let written = URL_SAFE_NO_PAD.decode_slice(token, &mut raw).ok()?;
    raw[..written].try_into().ok()
}

/// The identities under which secrets (session cookies, access tokens) are
/// remembered in memory: SipHash-2-4 with a 128-bit output under a key
/// random to this process. A cache keyed by these holds no usable secret (a
/// core dump or a heap read shows none), nobody without the key can choose a
/// string that shares an identity, and it costs some 20 ns where SHA-256
/// costs ten times that: a warm check does no cryptographic hash.
#[derive(Clone)]
pub struct SecretIds(siphasher::sip128::SipHasher24);

impl SecretIds {
    pub fn random() -> Self {
        Self(siphasher::sip128::SipHasher24::new_with_key(&random_bytes()))
    }

    /// The identity of `secret`.
    pub fn id(&self, secret: &[u8]) -> [u8; 16] {
        use siphasher::sip128::Hasher128;
        let mut hasher = self.0;
        std::hash::Hasher::write(&mut hasher, secret);
        hasher.finish128().as_bytes()
    }
}

impl std::fmt::Debug for SecretIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretIds(***)")
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of a well-formed opaque token (refresh, reset): what is stored and
/// looked up; an error for anything else.
pub fn opaque_token_hash(token: &str) -> anyhow::Result<[u8; 32]> {
    let raw = decode_opaque_token(token).ok_or_else(|| anyhow::anyhow!("malformed token"))?;
    Ok(sha256(&raw))
}

/// HMAC-SHA-256 under `key` of the concatenated `parts`.
pub fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC pads a key shorter than the hash's 64-byte block with zeros.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_context() {
        let key = MasterKey::from_hex(&"11".repeat(32)).unwrap();
        let sealed = key.seal(b"secret", b"row-1").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(key.open(&sealed, b"row-1").unwrap(), b"secret");
        assert!(key.open(&sealed, b"row-2").is_err());
        let other = MasterKey::from_hex(&"22".repeat(32)).unwrap();
        assert!(other.open(&sealed, b"row-1").is_err());
        assert!(key.open(&sealed[..10], b"row-1").is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = MasterKey::load_or_create("", dir.path()).unwrap();
        let sealed = a.seal(b"x", b"").unwrap();
        let b = MasterKey::load_or_create("", dir.path()).unwrap();
        assert_eq!(b.open(&sealed, b"").unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        assert!(MasterKey::load_or_create("", dir.path()).is_err());
    }

    #[test]
    fn subkeys_are_per_purpose_and_per_storage_key() {
        let key = MasterKey::from_hex(&"11".repeat(32)).unwrap();
        let again = MasterKey::from_hex(&"11".repeat(32)).unwrap();
        let other = MasterKey::from_hex(&"22".repeat(32)).unwrap();
        assert_eq!(key.subkey("backup codes"), again.subkey("backup codes"));
        assert_ne!(key.subkey("backup codes"), key.subkey("rate-limit keys"));
        assert_ne!(key.subkey("backup codes"), other.subkey("backup codes"));
        assert_ne!(key.subkey("backup codes"), [0x11; 32]);
        // The parts are one message.
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 32], &[b"Hi ", b"There"])),
            hex::encode(
                <Hmac<Sha256> as Mac>::new_from_slice(&[0x0b; 32])
                    .unwrap()
                    .chain_update(b"Hi There")
                    .finalize()
                    .into_bytes()
            )
        );
    }

    #[test]
    fn opaque_tokens() {
        let t = new_opaque_token();
        assert_eq!(t.len(), 43);
        assert!(decode_opaque_token(&t).is_some());
        assert_ne!(t, new_opaque_token());
        assert!(decode_opaque_token("short").is_none());
        assert!(decode_opaque_token(&"*".repeat(43)).is_none());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
