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
    /// Starts with `/`; without the query; percent-encoded unreserved
    /// characters decoded (see [`normalized_path`]).
    pub path: String,
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
        let host = match plain_host(authority) {
            Some(host) => host.to_owned(),
            None => parsed_host(scheme, authority)?,
        };
        let path = normalized_path(uri.split_once('?').map_or(uri, |(p, _)| p))?;
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

/// The host of an authority the URL parser would read as itself, without
/// running the parser (this is every check's common case): lower-case
/// letters, digits and `-` in non-empty labels, a last label that starts
/// with a letter (so not an IPv4 address), no IDNA (`xn--`) label, and an
/// optional port. `None` sends anything else to [`parsed_host`].
fn plain_host(authority: &str) -> Option<&str> {
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        port.parse::<u16>().ok()?;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    let mut last = "";
    for label in host.split('.') {
        let plain = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with("xn--")
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !plain {
            return None;
        }
        last = label;
    }
    last.starts_with(|c: char| c.is_ascii_lowercase())
        .then_some(host)
}

/// The host as the URL parser reads it (no user info, no path, a valid host
/// and port): what the browser would have asked. Lower case, without the
/// brackets of an IPv6 address or a trailing dot.
fn parsed_host(scheme: Scheme, authority: &str) -> Result<String, Malformed> {
    let parsed = Url::parse(&format!("{}://{authority}/", scheme.as_str()))
        .map_err(|_| Malformed("the host is not a host"))?;
    let host = parsed
        .host_str()
        .ok_or(Malformed("the host is not a host"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    // `app.example.com.` is `app.example.com`.
    Ok(host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase())
}

/// The path as rules compare it, or [`Malformed`] when it could mean more
/// than one path to the app behind: percent-encoded unreserved characters
/// (`%61` is `a`) are decoded, other escapes kept (upper-case hex); dot
/// segments, empty segments (`//`), `\`, `;` and escaped `/`, `\`, `.` or
/// NUL are refused, since servers read them differently and a prefix rule
/// must not be walked around.
fn normalized_path(raw: &str) -> Result<String, Malformed> {
    let refuse = Malformed(
        "the path has dot segments, empty segments or escapes that could hide another path",
    );
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(refuse)?;
                let text = std::str::from_utf8(hex).map_err(|_| refuse)?;
                let value = u8::from_str_radix(text, 16).map_err(|_| refuse)?;
                if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'_' | b'~') {
                    out.push(char::from(value));
                } else if matches!(value, b'/' | b'\\' | b'.' | 0) {
                    return Err(refuse);
                } else {
                    out.push('%');
                    out.push_str(&text.to_ascii_uppercase());
                }
                i += 3;
            }
            b'\\' | b';' => return Err(refuse),
            _ => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    let segments: Vec<&str> = out.split('/').collect();
    let last = segments.len() - 1;
    let hidden = segments
        .iter()
        .enumerate()
        .skip(1)
        .any(|(n, seg)| *seg == "." || *seg == ".." || (seg.is_empty() && n != last));
    if hidden {
        return Err(refuse);
    }
    Ok(out)
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

    /// The shortcut answers only where the URL parser would answer the same.
    #[test]
    fn plain_hosts_are_read_as_the_url_parser_reads_them() {
        let plain = [
            "app.example.com",
            "app.example.com:8443",
            "app.example.com.",
            "a-b.c1.example",
            "localhost",
            "localhost:0",
            "-x.example",
            "x.example:65535",
        ];
        for authority in plain {
            let fast = plain_host(authority).unwrap_or_else(|| panic!("{authority} is plain"));
            assert_eq!(
                Ok(fast.to_owned()),
                parsed_host(Scheme::Https, authority),
                "{authority}"
            );
        }
        let other = [
            "App.example.com",
            "127.0.0.1",
            "127.1",
            "1.2.3.0x4",
            "x.0x10",
            "x.10",
            "[::1]:80",
            "xn--nxasmq6b.example",
            "bücher.example",
            "a..b",
            ".a",
            "a.example:",
            "a.example:65536",
            "a.example:+80",
            "a_b.example",
            "",
        ];
        for authority in other {
            assert_eq!(
                plain_host(authority),
                None,
                "{authority} is left to the parser"
            );
        }
    }

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
        let f = Forwarded::from_parts(
            Some("GET"),
            Some("https"),
            Some("app.example.com."),
            Some("/%61dmin/x%2a/"),
        )
        .unwrap();
        assert_eq!(
            (f.host.as_str(), f.path.as_str()),
            ("app.example.com", "/admin/x%2A/")
        );
        let f = Forwarded::from_url(Some("POST"), Some("http://wiki.example.com/x?y")).unwrap();
        assert_eq!(
            (f.method, f.host.as_str(), f.path.as_str()),
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
            (
                Some("GET"),
                Some("https"),
                Some("a.example"),
                Some("/public/../admin/"),
            ),
            (
                Some("GET"),
                Some("https"),
                Some("a.example"),
                Some("/./admin/"),
            ),
            (
                Some("GET"),
                Some("https"),
                Some("a.example"),
                Some("/public/%2e%2e/admin/"),
            ),
            (
                Some("GET"),
                Some("https"),
                Some("a.example"),
                Some("/public%2F..%2Fadmin/"),
            ),
            (
                Some("GET"),
                Some("https"),
                Some("a.example"),
                Some("/a//admin/"),
            ),
            (
                Some("GET"),
                Some("https"),
                Some("a.example"),
                Some("/admin\\x"),
            ),
            (
                Some("GET"),
                Some("https"),
                Some("a.example"),
                Some("/admin;x/"),
            ),
            (Some("GET"), Some("https"), Some("a.example"), Some("/a%00")),
            (Some("GET"), Some("https"), Some("a.example"), Some("/a%zz")),
            (Some("GET"), Some("https"), Some("a.example"), Some("/a%4")),
            (Some("GET"), Some("https"), Some("a.example"), Some("/..")),
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
