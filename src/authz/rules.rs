//! `[[forward_auth.rules]]`, compiled: first match wins, else the default
//! policy. Matching a request allocates nothing.

use super::request::Forwarded;
use crate::config::{ForwardAuthConfig, ForwardAuthRule, Policy};

#[derive(Debug, Clone)]
enum Domain {
    Exact(String),
    /// `*.suffix`: any host ending in `.suffix` (not the suffix itself).
    Below(String),
}

impl Domain {
    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h == host,
            Self::Below(suffix) => is_below(host, suffix),
        }
    }
}

/// Whether `host` is strictly below `suffix` (`a.example.com` below
/// `example.com`; not `example.com` itself, not `aexample.com`).
fn is_below(host: &str, suffix: &str) -> bool {
    host.strip_suffix(suffix)
        .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.'))
}

/// `host` (lower case) against a domain as rules and `web.allowed_redirect_domains`
/// write it: an exact host or `*.suffix`.
pub fn host_matches(host: &str, pattern: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => is_below(host, suffix),
        None => host.eq_ignore_ascii_case(pattern),
    }
}

#[derive(Debug, Clone)]
struct Rule {
    index: usize,
    domain: Domain,
    paths: Vec<String>,
    methods: Vec<String>,
    policy: Policy,
    groups: Vec<String>,
    users: Vec<String>,
}

/// What the rules say of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'r> {
    pub policy: Policy,
    /// The rule's position in the configuration; `None` for the default.
    pub rule: Option<usize>,
    groups: &'r [String],
    users: &'r [String],
}

impl Decision<'_> {
    /// Whether the user is one of the rule's subjects (every user when the
    /// rule names none).
    pub fn admits(&self, email: &str, groups: &[String]) -> bool {
        if self.groups.is_empty() && self.users.is_empty() {
            return true;
        }
        self.users.iter().any(|u| u == email) || self.groups.iter().any(|g| groups.contains(g))
    }
}

/// The compiled rules.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
    default: Policy,
}

impl Rules {
    /// Compiles validated rules (see `ForwardAuthConfig::validate`).
    pub fn new(config: &ForwardAuthConfig) -> Self {
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(index, r)| compile(index, r))
            .collect();
        Self {
            rules,
            default: config.default_policy,
        }
    }

    /// The first rule that matches, or the default policy.
    pub fn decide(&self, request: &Forwarded<'_>) -> Decision<'_> {
        let found = self.rules.iter().find(|r| {
            r.domain.matches(&request.host)
                && (r.paths.is_empty() || r.paths.iter().any(|p| under(&request.path, p)))
                && (r.methods.is_empty()
                    || r.methods
                        .iter()
                        .any(|m| m.eq_ignore_ascii_case(request.method)))
        });
        match found {
            Some(r) => Decision {
                policy: r.policy,
                rule: Some(r.index),
                groups: &r.groups,
                users: &r.users,
            },
            None => Decision {
                policy: self.default,
                rule: None,
                groups: &[],
                users: &[],
            },
        }
    }

    /// Whether some rule that admits signed-in users names `host` (so that
    /// signing in may return there).
    pub fn covers(&self, host: &str) -> bool {
        self.rules.iter().any(|r| {
            matches!(r.policy, Policy::OneFactor | Policy::TwoFactor) && r.domain.matches(host)
        })
    }
}

/// Whether `path` is under the prefix `prefix`; `/admin/` also covers
/// `/admin` itself.
fn under(path: &str, prefix: &str) -> bool {
    path.starts_with(prefix) || prefix.strip_suffix('/').is_some_and(|bare| path == bare)
}

fn compile(index: usize, rule: &ForwardAuthRule) -> Rule {
    let domain = match rule.domain.strip_prefix("*.") {
        Some(suffix) => Domain::Below(suffix.to_owned()),
        None => Domain::Exact(rule.domain.clone()),
    };
    let mut groups = Vec::new();
    let mut users = Vec::new();
    for subject in &rule.subjects {
        match subject.split_once(':') {
            Some(("group", g)) => groups.push(g.to_owned()),
            Some(("user", u)) => users.push(crate::email::normalize(u)),
            _ => {}
        }
    }
    Rule {
        index,
        domain,
        paths: rule.paths.clone(),
        methods: rule.methods.clone(),
        policy: rule.policy,
        groups,
        users,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        let config: ForwardAuthConfig = toml::from_str(
            r#"
            default_policy = "deny"
            [[rules]]
            domain = "public.example.com"
            policy = "bypass"
            [[rules]]
            domain = "*.example.com"
            paths = ["/admin/"]
            policy = "two_factor"
            subjects = ["group:admins", "user:Ada@Example.com"]
            [[rules]]
            domain = "*.example.com"
            methods = ["GET"]
            policy = "one_factor"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        Rules::new(&config)
    }

    fn ask<'a>(method: &'a str, host: &'a str, uri: &'a str) -> Forwarded<'a> {
        Forwarded::from_parts(Some(method), Some("https"), Some(host), Some(uri)).unwrap()
    }

    #[test]
    fn first_match_wins_else_the_default() {
        let r = rules();
        assert_eq!(
            r.decide(&ask("GET", "public.example.com", "/admin/x"))
                .policy,
            Policy::Bypass
        );
        let admin = r.decide(&ask("POST", "wiki.example.com", "/admin/users"));
        assert_eq!((admin.policy, admin.rule), (Policy::TwoFactor, Some(1)));
        assert!(admin.admits("ada@example.com", &[]));
        assert!(admin.admits("bob@example.com", &["admins".to_owned()]));
        assert!(!admin.admits("bob@example.com", &["ops".to_owned()]));
        assert_eq!(
            r.decide(&ask("get", "wiki.example.com", "/page")).policy,
            Policy::OneFactor
        );
        assert_eq!(
            r.decide(&ask("POST", "wiki.example.com", "/page")).policy,
            Policy::Deny
        );
        assert_eq!(
            r.decide(&ask("GET", "example.com", "/")).policy,
            Policy::Deny
        );
        assert_eq!(
            r.decide(&ask("GET", "evilexample.com", "/")).policy,
            Policy::Deny
        );
        assert_eq!(
            r.decide(&ask("GET", "a.example.com.evil", "/")).policy,
            Policy::Deny
        );
        assert!(r.covers("wiki.example.com") && !r.covers("example.org"));
    }

    #[test]
    fn bad_rules_are_named() {
        for (text, key) in [
            (
                "[[rules]]\ndomain = \"https://x.example\"\npolicy = \"deny\"",
                "forward_auth.rules[0].domain",
            ),
            (
                "[[rules]]\ndomain = \"x.example\"\npaths = [\"admin\"]\npolicy = \"deny\"",
                "forward_auth.rules[0].paths",
            ),
            (
                "[[rules]]\ndomain = \"x.example\"\nmethods = [\"get\"]\npolicy = \"deny\"",
                "forward_auth.rules[0].methods",
            ),
            (
                "[[rules]]\ndomain = \"x.example\"\nsubjects = [\"team:x\"]\npolicy = \"deny\"",
                "forward_auth.rules[0].subjects",
            ),
        ] {
            let config: ForwardAuthConfig = toml::from_str(text).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        assert!(toml::from_str::<ForwardAuthConfig>(
            "[[rules]]\ndomain = \"x\"\npolicy = \"maybe\""
        )
        .is_err());
    }
}
