//! The client IP of SPEC section 4: the TCP peer, unless the peer is a trusted
//! proxy; then the right-most `X-Forwarded-For` address that is not itself a
//! trusted proxy (else `X-Real-IP`, else the peer).

use std::future::{ready, Ready};
use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::http::header::HeaderMap;
use actix_web::{web, FromRequest, HttpRequest};
use ipnet::IpNet;

use super::AppState;
use crate::error::ApiError;

/// The configured proxy networks.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// Whether `ip` is one of the proxies.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = canonical(*ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Resolves the client address from the peer and the forwarding headers.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(&peer) {
            return peer;
        }
        let mut forwarded = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(text) = value.to_str() else {
                return peer;
            };
            forwarded.extend(text.split(',').map(str::trim).filter(|s| !s.is_empty()));
        }
        for entry in forwarded.iter().rev() {
            match parse_addr(entry) {
                Some(ip) if self.contains(&ip) => continue,
                Some(ip) => return ip,
                // Garbage between trusted hops: stop trusting the chain.
                None => return peer,
            }
        }
        if let Some(ip) = forwarded.first().and_then(|e| parse_addr(e)) {
            // Every hop was a trusted proxy: the left-most is the origin.
            return ip;
        }
        headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_addr(v.trim()))
            .unwrap_or(peer)
    }
}

/// Parses `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1` or `[2001:db8::1]:80`.
fn parse_addr(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = text.parse::<std::net::SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    None
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Extractor for the resolved client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequest for ClientIp {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(peer) = req.peer_addr() else {
            return ready(Err(ApiError::bad_request(
                "cannot determine the client address",
            )));
        };
        let resolved = match req.app_data::<web::Data<AppState>>() {
            Some(state) => state.trusted_proxies.resolve(peer.ip(), req.headers()),
            None => canonical(peer.ip()),
        };
        ready(Ok(ClientIp(resolved)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ])
    }

    #[test]
    fn untrusted_peer_cannot_forge() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "2.2.2.2")]);
        assert_eq!(
            TrustedProxies::default().resolve(ip("203.0.113.7"), &h),
            ip("203.0.113.7")
        );
        assert_eq!(proxies().resolve(ip("203.0.113.7"), &h), ip("203.0.113.7"));
    }

    #[test]
    fn rightmost_untrusted_wins() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.9, 10.0.0.2")]);
        assert_eq!(proxies().resolve(ip("10.0.0.1"), &h), ip("198.51.100.9"));
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.9"),
        ]);
        assert_eq!(proxies().resolve(ip("10.0.0.1"), &h), ip("198.51.100.9"));
    }

    #[test]
    fn falls_back_to_real_ip_then_peer() {
        let h = headers(&[("x-real-ip", "198.51.100.9")]);
        assert_eq!(proxies().resolve(ip("10.0.0.1"), &h), ip("198.51.100.9"));
        assert_eq!(
            proxies().resolve(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        let h = headers(&[("x-forwarded-for", "10.0.0.5, 10.0.0.6")]);
        assert_eq!(proxies().resolve(ip("10.0.0.1"), &h), ip("10.0.0.5"));
    }

    #[test]
    fn garbage_and_ports_and_mapped() {
        let h = headers(&[("x-forwarded-for", "not-an-ip, 10.0.0.3")]);
        assert_eq!(proxies().resolve(ip("10.0.0.1"), &h), ip("10.0.0.1"));
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        assert_eq!(proxies().resolve(ip("::1"), &h), ip("2001:db8::1"));
        let h = headers(&[("x-forwarded-for", "198.51.100.9:1234")]);
        assert_eq!(
            proxies().resolve(ip("::ffff:10.0.0.1"), &h),
            ip("198.51.100.9")
        );
        assert_eq!(
            TrustedProxies::default().resolve(ip("::ffff:1.2.3.4"), &h),
            ip("1.2.3.4")
        );
    }
}
