//! TOTP (RFC 6238: SHA-1, 6 digits, 30-second steps, one step of skew) and
//! backup codes. Pure functions; storage and replay protection live in
//! `AuthService`.

use totp_rs::{Algorithm, TOTP};
use uuid::Uuid;

use super::crypto::{constant_time_eq, hmac_sha256, random_bytes, sha256};

pub const DIGITS: usize = 6;
pub const STEP_SECS: u64 = 30;
pub const SKEW: u8 = 1;
/// Secret length: 160 bits, as RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;
/// Backup codes issued at a time.
pub const BACKUP_CODES: usize = 10;

/// A new random secret.
pub fn new_secret() -> [u8; SECRET_BYTES] {
    random_bytes()
}

fn totp(secret: &[u8], issuer: &str, account: &str) -> TOTP {
    // The otpauth label cannot hold ':'.
    TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        SKEW,
        STEP_SECS,
        secret.to_vec(),
        Some(issuer.replace(':', " ")),
        account.replace(':', " "),
    )
}

/// The base32 secret and the `otpauth://` URL for an authenticator app.
pub fn provisioning(secret: &[u8], issuer: &str, account: &str) -> (String, String) {
    let t = totp(secret, issuer, account);
    (t.get_secret_base32(), t.get_url())
}

/// The time step whose code equals `code`, among the current step and one on
/// either side; compared in constant time.
pub fn matching_step(secret: &[u8], code: &str, now_secs: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(secret, "", "");
    let current = now_secs / STEP_SECS;
    let mut found = None;
    for step in current.saturating_sub(u64::from(SKEW))..=current + u64::from(SKEW) {
        let expected = t.generate(step * STEP_SECS);
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// The code for a time, for tests and tools.
pub fn code_at(secret: &[u8], time_secs: u64) -> String {
    totp(secret, "", "").generate(time_secs)
}

const CODE_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// Ten new backup codes, `xxxxx-xxxxx` (about 49 bits each).
pub fn new_backup_codes() -> Vec<String> {
    (0..BACKUP_CODES)
        .map(|_| {
            let bytes: [u8; 10] = random_bytes();
            let chars: String = bytes
                .iter()
                .map(|b| char::from(CODE_ALPHABET[usize::from(*b) % CODE_ALPHABET.len()]))
                .collect();
            format!("{}-{}", &chars[..5], &chars[5..])
        })
        .collect()
}

/// Whether `code` looks like a backup code rather than a TOTP code.
pub fn is_backup_code(code: &str) -> bool {
    normalize_backup(code).len() == 10
}

fn normalize_backup(code: &str) -> String {
    code.chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The stored form of a backup code: HMAC-SHA-256 under `key` (derived from
/// the storage key) over the user id and the code, so that a copy of the
/// database alone does not let anyone try the ~2^49 codes offline.
pub fn backup_hash(key: &[u8; 32], user_id: Uuid, code: &str) -> [u8; 32] {
    hmac_sha256(
        key,
        &[user_id.as_bytes(), normalize_backup(code).as_bytes()],
    )
}

/// The form backup codes were stored in before they were keyed (SHA-256
/// over the user id and the code). Such codes keep working until the user
/// makes new ones; nothing stores this form any more.
pub fn legacy_backup_hash(user_id: Uuid, code: &str) -> [u8; 32] {
    let mut input = user_id.as_bytes().to_vec();
    input.extend_from_slice(normalize_backup(code).as_bytes());
    sha256(&input)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 (8 digits).
    #[test]
    fn rfc6238_sha1_vectors() {
        let secret = b"12345678901234567890".to_vec();
        let t = TOTP::new_unchecked(Algorithm::SHA1, 8, 0, 30, secret, None, String::new());
        for (time, code) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(t.generate(time), code, "T = {time}");
        }
    }

    #[test]
    fn accepts_one_step_of_skew_and_names_the_step() {
        let secret = new_secret();
        let now = 1_800_000_000;
        let code = code_at(&secret, now);
        assert_eq!(matching_step(&secret, &code, now), Some(now / 30));
        assert_eq!(matching_step(&secret, &code, now + 30), Some(now / 30));
        assert_eq!(matching_step(&secret, &code, now - 30), Some(now / 30));
        assert_eq!(matching_step(&secret, &code, now + 60), None);
        for bad in ["", "12345", "1234567", "abcdef", " 12 34 "] {
            assert_eq!(matching_step(&secret, bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn provisioning_url() {
        let secret = new_secret();
        let (b32, url) = provisioning(&secret, "portcullis", "ada@example.com");
        assert_eq!(b32.len(), 32);
        assert!(
            url.starts_with("otpauth://totp/portcullis:ada%40example.com?"),
            "{url}"
        );
        assert!(url.contains(&format!("secret={b32}")));
    }

    #[test]
    fn backup_codes_are_distinct_and_normalized() {
        let codes = new_backup_codes();
        assert_eq!(codes.len(), 10);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
        let u = Uuid::new_v4();
        let code = &codes[0];
        assert!(is_backup_code(code));
        assert!(!is_backup_code("123456"));
        let key = [7u8; 32];
        assert_eq!(
            backup_hash(&key, u, code),
            backup_hash(&key, u, &code.to_uppercase().replace('-', " "))
        );
        assert_ne!(
            backup_hash(&key, u, code),
            backup_hash(&key, Uuid::new_v4(), code)
        );
        // Keyed: another key, or the unkeyed form, gives another hash.
        assert_ne!(backup_hash(&key, u, code), backup_hash(&[8; 32], u, code));
        assert_ne!(backup_hash(&key, u, code), legacy_backup_hash(u, code));
    }
}
