//! The original request behind a forward-auth check. Fail closed: anything
//! that is not plainly well formed is [`Malformed`], never a guess.

use url::Url;

/// The headers did not describe a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    fn parse(text: &str) -> Result<Self, Malformed> {
        match text {
            "http" => Ok(Self::Http),
            "https" => Ok(Self::Https),
            _ => Err(Malformed("the scheme must be http or https")),
        }
    }
}

/// The request a proxy asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded<'a> {
    pub method: &'a str,
    pub scheme: Scheme,
    /// Lower case, without port.
    pub host: String,
    /// The host as sent, with its port if any (for the `rd` URL).
    pub authority: &'a str,
    /// Starts with `/`; without the query.
    pub path: &'a str,
    /// Path and query, as sent.
    pub uri: &'a str,
}

impl<'a> Forwarded<'a> {
    /// Traefik's and Caddy's headers: `X-Forwarded-Method`, `-Proto`,
    /// `-Host`, `-Uri`.
    pub fn from_parts(
        method: Option<&'a str>,
        proto: Option<&'a str>,
        host: Option<&'a str>,
        uri: Option<&'a str>,
    ) -> Result<Self, Malformed> {
        let method = method.ok_or(Malformed("X-Forwarded-Method is missing"))?;
        let scheme = Scheme::parse(proto.ok_or(Malformed("X-Forwarded-Proto is missing"))?)?;
        let authority = host.ok_or(Malformed("X-Forwarded-Host is missing"))?;
        let uri = uri.ok_or(Malformed("X-Forwarded-Uri is missing"))?;
        Self::checked(method, scheme, authority, uri)
    }

    /// nginx's headers: `X-Original-Method` and the absolute `X-Original-URL`.
    pub fn from_url(method: Option<&'a str>, url: Option<&'a str>) -> Result<Self, Malformed> {
        let method = method.ok_or(Malformed("X-Original-Method is missing"))?;
        let url = url.ok_or(Malformed("X-Original-URL is missing"))?;
        let (scheme, rest) = url
            .split_once("://")
            .ok_or(Malformed("X-Original-URL must be an absolute http(s) URL"))?;
        let scheme = Scheme::parse(scheme)?;
        let split = rest
            .find('/')
            .ok_or(Malformed("X-Original-URL has no path"))?;
        let (authority, uri) = rest.split_at(split);
        Self::checked(method, scheme, authority, uri)
    }

    fn checked(
        method: &'a str,
        scheme: Scheme,
        authority: &'a str,
        uri: &'a str,
    ) -> Result<Self, Malformed> {
        if !is_token(method) {
            return Err(Malformed("the method is not an HTTP method token"));
        }
        if !uri.starts_with('/') || uri.starts_with("//") || !uri.bytes().all(is_uri_byte) {
            return Err(Malformed(
                "the URI must start with / and be plain ASCII without spaces",
            ));
        }
        // The host as the URL parser reads it (no user info, no path, a
        // valid host and port): what the browser would have asked.
        if authority.is_empty() || authority.contains(['@', '/', '\\', '?', '#']) {
            return Err(Malformed("the host is not a host"));
        }
        let parsed = Url::parse(&format!("{}://{authority}/", scheme.as_str()))
            .map_err(|_| Malformed("the host is not a host"))?;
        let host = parsed
            .host_str()
            .ok_or(Malformed("the host is not a host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let path = uri.split_once('?').map_or(uri, |(p, _)| p);
        Ok(Self {
            method,
            scheme,
            host,
            authority,
            path,
            uri,
        })
    }

    /// The original URL, for `rd`.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme.as_str(), self.authority, self.uri)
    }
}

/// An RFC 9110 method token (upper or lower case letters and the usual
/// punctuation), at most 20 bytes.
fn is_token(text: &str) -> bool {
    (1..=20).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Visible ASCII: a URI as a proxy passes it is percent-encoded already.
fn is_uri_byte(b: u8) -> bool {
    b.is_ascii_graphic()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_requests_are_read() {
        let f = Forwarded::from_parts(
            Some("GET"),
            Some("https"),
            Some("App.Example.com:8443"),
            Some("/a/b?c=d"),
        )
        .unwrap();
        assert_eq!(f.host, "app.example.com");
        assert_eq!(f.path, "/a/b");
        assert_eq!(f.url(), "https://App.Example.com:8443/a/b?c=d");
        let f = Forwarded::from_url(Some("POST"), Some("http://wiki.example.com/x?y")).unwrap();
        assert_eq!(
            (f.method, f.host.as_str(), f.path),
            ("POST", "wiki.example.com", "/x")
        );
        let f = Forwarded::from_url(Some("GET"), Some("http://[::1]:8080/")).unwrap();
        assert_eq!(f.host, "::1");
    }

    #[test]
    fn anything_odd_is_refused() {
        let bad_parts = [
            (None, Some("https"), Some("a.example"), Some("/")),
            (Some("GET"), Some("ftp"), Some("a.example"), Some("/")),
            (Some("GET"), Some("https"), Some(""), Some("/")),
            (Some("GET"), Some("https"), Some("a.example"), Some("x")),
            (
                Some("GET"),
                Some("https"),
                Some("a.example"),
                Some("//evil"),
            ),
            (Some("G ET"), Some("https"), Some("a.example"), Some("/")),
            (Some(""), Some("https"), Some("a.example"), Some("/")),
            (
                Some("GET"),
                Some("https"),
                Some("user@a.example"),
                Some("/"),
            ),
            (Some("GET"), Some("https"), Some("a.example/x"), Some("/")),
            (Some("GET"), Some("https"), Some("a.example"), Some("/a b")),
            (Some("GET"), Some("https"), Some("a.example"), Some("/é")),
            (
                Some("GET"),
                Some("https"),
                Some("a.example:99999"),
                Some("/"),
            ),
            (Some("GET"), Some("HTTPS"), Some("a.example"), Some("/")),
        ];
        for (m, p, h, u) in bad_parts {
            assert!(
                Forwarded::from_parts(m, p, h, u).is_err(),
                "{m:?} {p:?} {h:?} {u:?}"
            );
        }
        for url in [
            "/relative",
            "https://a.example",
            "javascript:x",
            "https://a.example?x",
            "https:///x",
            "",
        ] {
            assert!(
                Forwarded::from_url(Some("GET"), Some(url)).is_err(),
                "{url}"
            );
        }
    }
}
