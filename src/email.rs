//! A validated, normalized email address.

use std::fmt;

/// An email address that passed validation: trimmed and lower-cased.
/// The only way to build one is [`Email::parse`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

/// Longest accepted address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

impl Email {
    /// Trims, lower-cases and validates `raw`.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("is required");
        }
        if trimmed.len() > MAX_EMAIL_LEN {
            return Err("is too long");
        }
        let lower = trimmed.to_lowercase();
        if lower.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("is not a valid email address");
        }
        let parsed = email_address::EmailAddress::parse_with_options(
            &lower,
            email_address::Options::default()
                .without_display_text()
                .without_domain_literal(),
        );
        match parsed {
            Ok(addr) if addr.domain().contains('.') || addr.domain() == "localhost" => {
                Ok(Self(lower))
            }
            _ => Err("is not a valid email address"),
        }
    }

    /// The normalized form, used to match and store.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or(self.0.as_str(), |(l, _)| l)
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Normalizes an email for lookups and rate-limit keys, without validating it:
/// a login with a malformed address must behave like one with an unknown address.
pub fn normalize(raw: &str) -> String {
    raw.trim().to_lowercase()
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_space() {
        let e = Email::parse("  Alice.Smith@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "alice.smith@example.com");
        assert_eq!(e.local_part(), "alice.smith");
        assert_eq!(normalize(" A@B.c "), "a@b.c");
    }

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "x@localhost",
            "ünï@exämple.de",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed() {
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in [
            "",
            "   ",
            "plain",
            "@example.com",
            "a@",
            "a@@b.com",
            "a b@c.com",
            "a@b",
            "Name <a@b.com>",
            "a@[127.0.0.1]",
            "a\u{0}@b.com",
            long.as_str(),
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
