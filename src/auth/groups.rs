//! Groups (SPEC section 10): names a user belongs to, which feed forward-auth
//! rules, `Remote-Groups` and the OIDC `groups` claim. Every administrator is
//! also in the implicit group `admins`, which is the administrator flag and
//! cannot be given or taken as a group. The rules of names live here; the
//! service's `set_groups` and `all_groups` (in `service.rs`, with the rest of
//! an account) apply them.

pub use crate::group_name::{is_group_name, ADMINS};

/// Groups one user may have.
pub const MAX_GROUPS: usize = 64;

/// Checks a list of group names; sorted and without duplicates. `admins` is
/// refused: it follows the administrator flag. The error says why.
pub fn parse_groups<S: AsRef<str>>(names: &[S]) -> Result<Vec<String>, String> {
    let invalid = |reason: String| reason;
    let mut groups = Vec::with_capacity(names.len());
    for name in names {
        let name = name.as_ref();
        if name == ADMINS {
            return Err(invalid(
                "`admins` is the administrators' group: promote or demote the user instead".into(),
            ));
        }
        if !is_group_name(name) {
            return Err(invalid(format!(
                "{:?} is not a group name (1 to 64 of a-z, 0-9, _ and -)",
                name.chars().take(70).collect::<String>()
            )));
        }
        groups.push(name.to_owned());
    }
    groups.sort();
    groups.dedup();
    if groups.len() > MAX_GROUPS {
        return Err(invalid(format!("at most {MAX_GROUPS} groups")));
    }
    Ok(groups)
}

/// A user's stored groups with `admins` for an administrator, sorted.
pub fn with_admins(mut groups: Vec<String>, is_admin: bool) -> Vec<String> {
    if is_admin {
        if let Err(at) = groups.binary_search_by(|g| g.as_str().cmp(ADMINS)) {
            groups.insert(at, ADMINS.to_owned());
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_sorted_and_deduplicated() {
        assert_eq!(
            parse_groups(&["ops", "dev", "ops"]).unwrap(),
            vec!["dev".to_owned(), "ops".to_owned()]
        );
        for bad in ["", "Ops", "a b", "é", &"x".repeat(65), "admins"] {
            assert!(parse_groups(&[bad]).is_err(), "{bad:?}");
        }
        assert!(is_group_name(&"x".repeat(64)));
        assert_eq!(
            with_admins(vec!["alpha".into(), "zeta".into()], true),
            ["admins", "alpha", "zeta"].map(String::from).to_vec()
        );
    }
}
