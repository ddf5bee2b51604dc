//! What the pages know of a browser: its cookies (the session, the pre-login
//! form binding, a pending second step), its form tokens and where it may be
//! sent after signing in.

use std::sync::Arc;

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponseBuilder};
use url::Url;

use crate::auth::crypto::new_opaque_token;
use crate::auth::service::Profile;
use crate::auth::tokens::AccessClaims;
use crate::authz::host_matches;
use crate::config::{Config, Policy};
use crate::http::state::AppState;

/// The browser session (SPEC section 11).
pub use crate::auth::sessions::BROWSER_COOKIE as SESSION_COOKIE;
pub use crate::http::origin::same_origin;
/// What a signed-out browser's form tokens are bound to.
const FORM_COOKIE: &str = "portcullis_form";
/// The `mfa_token` of a sign-in waiting for its second step.
const MFA_COOKIE: &str = "portcullis_mfa";

/// The name of one of our own cookies: over https with the `__Host-` prefix,
/// which browsers keep to this host, `Secure` and `Path=/`, so that no
/// sibling subdomain can plant one. (The session cookie's name is the SPEC's:
/// it may carry a `Domain`.)
fn own(config: &Config, name: &'static str) -> &'static str {
    match (is_https(config), name) {
        (true, FORM_COOKIE) => "__Host-portcullis_form",
        (true, MFA_COOKIE) => "__Host-portcullis_mfa",
        _ => name,
    }
}

/// The name of the cookie of a pending second step.
pub fn mfa_cookie_name(config: &Config) -> &'static str {
    own(config, MFA_COOKIE)
}

/// A browser as a page sees it.
pub struct Browser {
    /// Signed in: the session's claims and the account.
    pub signed_in: Option<(AccessClaims, Arc<Profile>)>,
    /// What this browser's form tokens are bound to.
    binding: String,
    /// A pre-login binding made for this answer, to be set as a cookie.
    new_binding: Option<String>,
    secure: bool,
    form_cookie: &'static str,
}

impl Browser {
    /// Reads the cookies: a live session signs the browser in; a stale or
    /// forged one counts for nothing.
    pub async fn of(req: &HttpRequest, state: &AppState) -> Self {
        let secure = is_https(&state.config);
        let session = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned());
        let mut signed_in = None;
        if let Some(cookie) = session.as_deref() {
            signed_in = state.auth.browser_session(cookie).await.ok();
        }
        let (binding, new_binding) = match (&signed_in, session) {
            (Some(_), Some(cookie)) => (format!("session:{cookie}"), None),
            _ => match req
                .cookie(own(&state.config, FORM_COOKIE))
                .map(|c| c.value().to_owned())
            {
                Some(value) if is_token(&value) => (format!("form:{value}"), None),
                _ => {
                    let value = new_opaque_token();
                    (format!("form:{value}"), Some(value))
                }
            },
        };
        Self {
            signed_in,
            binding,
            new_binding,
            secure,
            form_cookie: own(&state.config, FORM_COOKIE),
        }
    }

    pub fn claims(&self) -> Option<&AccessClaims> {
        self.signed_in.as_ref().map(|(c, _)| c)
    }

    pub fn profile(&self) -> Option<&Arc<Profile>> {
        self.signed_in.as_ref().map(|(_, p)| p)
    }

    /// The token this browser's forms carry.
    pub fn form_token(&self, state: &AppState) -> String {
        state.auth.form_token(&self.binding)
    }

    /// Whether a posted form is this browser's own: its token matches and
    /// the request did not come from another site (`Origin`, `Sec-Fetch-Site`).
    pub fn form_is_genuine(&self, req: &HttpRequest, state: &AppState, token: &str) -> bool {
        self.new_binding.is_none()
            && same_origin(req, &state.config)
            && state.auth.form_token_matches(&self.binding, token)
    }

    /// Sets the pre-login cookie when this answer made one.
    pub fn keep(&self, res: &mut HttpResponseBuilder) {
        if let Some(value) = &self.new_binding {
            res.cookie(
                Cookie::build(self.form_cookie, value.clone())
                    .path("/")
                    .http_only(true)
                    .secure(self.secure)
                    .same_site(SameSite::Lax)
                    .finish(),
            );
        }
    }
}

fn is_token(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_https(config: &Config) -> bool {
    config.server.public_url.starts_with("https://")
}

/// The session cookie of a new sign-in: lasting as long as the session when
/// it was remembered, else until the browser closes.
pub fn session_cookie(config: &Config, value: String, max_age_ms: Option<i64>) -> Cookie<'static> {
    let mut cookie = Cookie::build(SESSION_COOKIE, value)
        .path("/")
        .http_only(true)
        .secure(is_https(config))
        .same_site(SameSite::Lax);
    if !config.web.cookie_domain.is_empty() {
        cookie = cookie.domain(config.web.cookie_domain.clone());
    }
    if let Some(ms) = max_age_ms {
        cookie = cookie.max_age(time::Duration::milliseconds(ms.max(0)));
    }
    cookie.finish()
}

/// A cookie that removes `name` (with the attributes it was set with).
pub fn removal(config: &Config, name: &'static str) -> Cookie<'static> {
    let mut cookie = Cookie::build(name, "")
        .path("/")
        .http_only(true)
        .secure(is_https(config))
        .same_site(SameSite::Lax)
        .max_age(time::Duration::ZERO);
    if name == SESSION_COOKIE && !config.web.cookie_domain.is_empty() {
        cookie = cookie.domain(config.web.cookie_domain.clone());
    }
    cookie.finish()
}

/// The cookie of a sign-in waiting for its second step (five minutes).
pub fn mfa_cookie(config: &Config, mfa_token: String, seconds: i64) -> Cookie<'static> {
    Cookie::build(mfa_cookie_name(config), mfa_token)
        .path("/")
        .http_only(true)
        .secure(is_https(config))
        .same_site(SameSite::Strict)
        .max_age(time::Duration::seconds(seconds))
        .finish()
}

/// `rd` when it may be followed: an absolute http(s) URL on `public_url`'s
/// host, a forward-auth rule's domain or an allowed domain (SPEC section 11).
/// Anything else is ignored.
pub fn safe_redirect(rd: &str, config: &Config) -> Option<String> {
    if rd.is_empty() || rd.len() > 2048 {
        return None;
    }
    let url = Url::parse(rd).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    let public_host = Url::parse(&config.server.public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    let allowed = public_host.as_deref() == Some(host.as_str())
        || config
            .web
            .allowed_redirect_domains
            .iter()
            .chain(
                config
                    .forward_auth
                    .rules
                    .iter()
                    .filter(|r| matches!(r.policy, Policy::OneFactor | Policy::TwoFactor))
                    .map(|r| &r.domain),
            )
            .any(|d| host_matches(&host, d));
    allowed.then(|| url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut c = Config::default();
        c.server.public_url = "https://auth.example.com".into();
        c.web.allowed_redirect_domains =
            vec!["*.apps.example.com".into(), "wiki.example.org".into()];
        c
    }

    fn post(headers: &[(&str, &str)]) -> HttpRequest {
        let mut req = actix_web::test::TestRequest::post().uri("/ui/login");
        for (name, value) in headers {
            req = req.insert_header((*name, *value));
        }
        req.to_http_request()
    }

    #[test]
    fn forms_from_another_site_are_refused() {
        let c = config();
        let host = ("host", "auth.example.com");
        for good in [
            vec![host],
            vec![host, ("origin", "https://auth.example.com")],
            vec![host, ("origin", "null"), ("sec-fetch-site", "same-origin")],
            vec![host, ("sec-fetch-site", "same-origin")],
            vec![
                ("host", "auth.internal:8443"),
                ("origin", "https://auth.internal:8443"),
            ],
        ] {
            assert!(same_origin(&post(&good), &c), "{good:?}");
        }
        for bad in [
            vec![host, ("origin", "https://evil.example")],
            vec![host, ("origin", "null")],
            vec![host, ("origin", "null"), ("sec-fetch-site", "cross-site")],
            vec![host, ("sec-fetch-site", "same-site")],
            vec![host, ("origin", "http://auth.example.com")],
            vec![
                ("host", "auth.internal:8443"),
                ("origin", "http://auth.internal:8443"),
            ],
            vec![host, ("origin", "not a url")],
        ] {
            assert!(!same_origin(&post(&bad), &c), "{bad:?}");
        }
    }

    #[test]
    fn our_own_cookies_are_host_only_over_https() {
        let https = config();
        let cookie = mfa_cookie(&https, "t".into(), 300);
        assert_eq!(cookie.name(), "__Host-portcullis_mfa");
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.domain(), None);
        let mut http = config();
        http.server.public_url = "http://127.0.0.1:8080".into();
        assert_eq!(mfa_cookie(&http, "t".into(), 300).name(), "portcullis_mfa");
        let mut shared = config();
        shared.web.cookie_domain = "example.com".into();
        let session = session_cookie(&shared, "v".into(), Some(1_000));
        assert_eq!(session.name(), SESSION_COOKIE);
        assert_eq!(session.domain(), Some("example.com"));
        assert_eq!(session.http_only(), Some(true));
        assert_eq!(session.same_site(), Some(SameSite::Lax));
    }

    #[test]
    fn only_our_hosts_are_followed() {
        let c = config();
        for good in [
            "https://auth.example.com/ui/account",
            "http://auth.example.com:8443/x?y=1",
            "https://grafana.apps.example.com/d/1",
            "https://wiki.example.org/",
        ] {
            assert!(safe_redirect(good, &c).is_some(), "{good}");
        }
        for bad in [
            "",
            "/ui/account",
            "//evil.example/",
            "https://evil.example/",
            "https://auth.example.com.evil.example/",
            "https://apps.example.com/",
            "https://evilapps.example.com/",
            "javascript:alert(1)",
            "https://user@auth.example.com/",
            "ftp://auth.example.com/",
            "https:/\\evil.example",
        ] {
            assert!(safe_redirect(bad, &c).is_none(), "{bad}");
        }
    }
}
