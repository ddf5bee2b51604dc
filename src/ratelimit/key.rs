//! Rate-limit keys as the limiter holds them: the same few bytes whatever the
//! text a client sent.
//!
//! A key's text (an address, or the email a login named) is chosen by the
//! client: a 16 KB "email" held whole would make each window cost 16 KB, and
//! `max_keys` would bound windows but not memory. So a key is kept as
//!
//! - its identity, [`KeyId`]: SipHash-2-4 with a 128-bit output, keyed by a
//!   secret derived from the storage key. Without the secret nobody can
//!   choose two texts that share an identity (and so a window or a budget),
//!   nor aim texts at one bucket of the in-memory store; instances that share
//!   the storage key (and a Redis) agree on it, and it is the same after a
//!   restart, so saved windows reload;
//! - what to show of it, [`Shown`]: at most [`SHOWN_BYTES`] bytes of the
//!   text, for the admin view and the audit log. An account key that is not
//!   an email address (a password typed into the email field) is never
//!   shown; its place holds `#` and the start of its identity.
//!
//! The tag of an event (whom a failure was made against) is the first half
//! of the other party's identity, keyed the same way.

use std::fmt;

use siphasher::sip128::SipHasher24;

use super::rules::KeyKind;
use crate::email::Email;

/// Bytes of a key's text that are kept to show it. An IPv6 network as a key
/// (`ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127`) takes at most 43.
pub const SHOWN_BYTES: usize = 46;

/// The identity of a rate-limit key: a keyed 128-bit digest of its text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 16]);

impl KeyId {
    /// The tag of events made against this key (see [`super::window::Event`]).
    pub fn tag(&self) -> u64 {
        let mut half = [0u8; 8];
        half.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(half)
    }

    /// Another 64 bits of the digest, to spread keys over buckets.
    pub fn spread(&self) -> u64 {
        let mut half = [0u8; 8];
        half.copy_from_slice(&self.0[8..]);
        u64::from_le_bytes(half)
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        hex::decode(text).ok()?.try_into().ok().map(Self)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

/// The start of a key's text, kept to show it; `…` marks a cut.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    len: u8,
    bytes: [u8; SHOWN_BYTES],
}

impl Shown {
    /// At most [`SHOWN_BYTES`] bytes of `text`, cut at a character boundary
    /// and ended with `…` when cut.
    pub fn new(text: &str) -> Self {
        const MARK: &str = "…";
        let (kept, cut) = if text.len() <= SHOWN_BYTES {
            (text, false)
        } else {
            let mut end = SHOWN_BYTES - MARK.len();
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            (&text[..end], true)
        };
        let mut bytes = [0u8; SHOWN_BYTES];
        bytes[..kept.len()].copy_from_slice(kept.as_bytes());
        let mut len = kept.len();
        if cut {
            bytes[len..len + MARK.len()].copy_from_slice(MARK.as_bytes());
            len += MARK.len();
        }
        Self {
            len: u8::try_from(len).unwrap_or(0),
            bytes,
        }
    }

    pub fn as_str(&self) -> &str {
        // Built from a `str` cut at a character boundary.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Debug for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rate-limit key: its identity and what is shown of it. 63 bytes, copied
/// freely, whatever the length of the text it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitKey {
    pub id: KeyId,
    pub shown: Shown,
}

/// Turns key texts into [`LimitKey`]s with the limiter's secret.
#[derive(Clone)]
pub struct KeyMaker {
    hasher: SipHasher24,
}

impl fmt::Debug for KeyMaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyMaker(***)")
    }
}

impl KeyMaker {
    /// A maker keyed by the first 128 bits of `secret`.
    pub fn new(secret: &[u8; 32]) -> Self {
        let mut key = [0u8; 16];
        key.copy_from_slice(&secret[..16]);
        Self {
            hasher: SipHasher24::new_with_key(&key),
        }
    }

    /// A maker with a random secret, for a limiter whose windows need not
    /// outlive the process (tests, benchmarks).
    pub fn random() -> Self {
        Self::new(&rand::random())
    }

    /// The identity of a key text.
    pub fn id(&self, text: &str) -> KeyId {
        let h = self.hasher.hash(text.as_bytes());
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&h.h1.to_le_bytes());
        out[8..].copy_from_slice(&h.h2.to_le_bytes());
        KeyId(out)
    }

    /// The key of a client address (already grouped by prefix), shown as is.
    pub fn ip(&self, text: &str) -> LimitKey {
        self.key(KeyKind::Ip, text)
    }

    /// The key of a normalized email, known or not: shown only when it is an
    /// address.
    pub fn account(&self, text: &str) -> LimitKey {
        self.key(KeyKind::Account, text)
    }

    fn key(&self, kind: KeyKind, text: &str) -> LimitKey {
        let id = self.id(text);
        LimitKey {
            id,
            shown: shown(kind, id, text),
        }
    }
}

/// What is shown of a key of `kind` whose identity is `id`: its text, cut to
/// [`SHOWN_BYTES`]; for an account key that is not an email address, `#` and
/// 12 hex digits of its identity instead. (Checking the address costs more
/// than the rest of a check, so the limiter asks only when it keeps a new
/// window or writes a row.)
pub fn shown(kind: KeyKind, id: KeyId, text: &str) -> Shown {
    match kind {
        KeyKind::Ip => Shown::new(text),
        KeyKind::Account if Email::parse(text).is_ok() => Shown::new(text),
        KeyKind::Account => hidden(id),
    }
}
/// What stands for a key that must not be shown: `#` and 12 hex digits of
/// its identity.
fn hidden(id: KeyId) -> Shown {
    Shown::new(&format!("#{}", &id.to_hex()[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_costs_the_same_whatever_its_text() {
        assert_eq!(std::mem::size_of::<LimitKey>(), 63);
        let maker = KeyMaker::new(&[1; 32]);
        let long = format!("{}@example.com", "a".repeat(16_000));
        let key = maker.ip(&long);
        assert_eq!(key.shown.as_str().len(), SHOWN_BYTES);
        assert!(key.shown.as_str().ends_with('…'));
        assert_eq!(key.id, maker.id(&long));
        assert_ne!(key.id, maker.id(&long[1..]));
        // Too long to be an address: an account key of it is not shown.
        let account = maker.account(&long);
        assert_eq!(account.id, key.id);
        assert!(account.shown.as_str().starts_with('#'));
    }

    #[test]
    fn identities_depend_on_the_secret() {
        let a = KeyMaker::new(&[1; 32]);
        let b = KeyMaker::new(&[2; 32]);
        assert_eq!(a.id("203.0.113.7"), a.id("203.0.113.7"));
        assert_ne!(a.id("203.0.113.7"), b.id("203.0.113.7"));
        assert_ne!(a.id("203.0.113.7").tag(), a.id("203.0.113.8").tag());
        assert_eq!(KeyId::from_hex(&a.id("x").to_hex()), Some(a.id("x")));
        assert_eq!(KeyId::from_hex("zz"), None);
    }

    #[test]
    fn cuts_keep_whole_characters() {
        let text = "é".repeat(40);
        let shown = Shown::new(&text);
        assert!(shown.as_str().len() <= SHOWN_BYTES);
        assert!(shown.as_str().starts_with("éé"));
        assert!(shown.as_str().ends_with('…'));
        assert_eq!(Shown::new("").as_str(), "");
        let v6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127";
        assert_eq!(Shown::new(v6).as_str(), v6);
    }

    proptest::proptest! {
        /// Whatever the text, a key is held in its fixed size: what is shown
        /// is at most SHOWN_BYTES, a start of the text (or, for an account key
        /// that is no address, `#` and part of the identity), and distinct
        /// texts get distinct identities.
        #[test]
        fn any_text_makes_a_bounded_key(
            a in ".{0,400}",
            b in ".{0,400}",
            account in proptest::bool::ANY,
        ) {
            let maker = KeyMaker::new(&[4; 32]);
            let key = if account { maker.account(&a) } else { maker.ip(&a) };
            let shown = key.shown.as_str();
            proptest::prop_assert!(shown.len() <= SHOWN_BYTES);
            if shown.starts_with('#') && account && Email::parse(&a).is_err() {
                proptest::prop_assert_eq!(&shown[1..], &key.id.to_hex()[..12]);
            } else if a.len() <= SHOWN_BYTES {
                proptest::prop_assert_eq!(shown, a.as_str());
            } else {
                let kept = shown.strip_suffix('…').expect("a cut is marked");
                proptest::prop_assert!(a.starts_with(kept));
            }
            proptest::prop_assert_eq!(key.id == maker.id(&b), a == b);
        }
    }

    #[test]
    fn account_keys_that_are_not_addresses_are_not_shown() {
        let maker = KeyMaker::new(&[3; 32]);
        assert_eq!(
            maker.account("ada@example.com").shown.as_str(),
            "ada@example.com"
        );
        let typed = maker.account("correct horse battery staple");
        assert!(typed.shown.as_str().starts_with('#'), "{typed:?}");
        assert!(!typed.shown.as_str().contains("horse"));
        assert_eq!(typed.id, maker.id("correct horse battery staple"));
    }
}
