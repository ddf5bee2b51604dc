//! What a group's name may be (SPEC section 10): `[a-z0-9_-]{1,64}`. On the
//! ground floor, so that the configuration (forward-auth subjects) and the
//! accounts check names by the one rule.

/// The implicit group of administrators.
pub const ADMINS: &str = "admins";

/// Whether `name` is a group name: `[a-z0-9_-]{1,64}`.
pub fn is_group_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
