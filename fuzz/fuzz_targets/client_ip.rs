//! The client address of SPEC section 4 from hostile forwarding headers, and
//! the rate-limit key made from it. Input: the first line picks the TCP peer,
//! each further line is `x-forwarded-for: ...`, `x-real-ip: ...` or any header.
//! Oracles: an untrusted peer is always the answer; the answer is the peer or
//! an address that appears in a forwarding header; the key is well formed.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::http::client_ip::TrustedProxies;
use portcullis::ratelimit::ip_key;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let (prefix, peer) = match first.split_first() {
        Some((&p, rest)) => (p % 129, String::from_utf8_lossy(rest).trim().parse().ok()),
        None => (64, None),
    };
    // Inside the trusted networks by default, so the headers are read.
    let peer: IpAddr = peer.unwrap_or(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(line[..colon].trim_ascii()),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let proxies = TrustedProxies::new(vec![
        "10.0.0.0/8".parse().expect("a CIDR"),
        "127.0.0.1/32".parse().expect("a CIDR"),
        "2001:db8::/32".parse().expect("a CIDR"),
    ]);
    let nobody = TrustedProxies::new(Vec::new());
    let client = proxies.resolve(peer, &headers);
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    assert_eq!(
        nobody.resolve(peer, &headers),
        canonical(peer),
        "no proxies: the peer"
    );
    if client != canonical(peer) {
        let named: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .chain(headers.get_all("x-real-ip"))
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<IpAddr>()
                    .ok()
                    .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
            })
            .map(canonical)
            .collect();
        assert!(
            named.contains(&client),
            "{client} is named by no forwarding header"
        );
    }
    let key = ip_key(client, prefix);
    match client {
        IpAddr::V4(v4) => assert_eq!(key, v4.to_string()),
        IpAddr::V6(_) => assert!(key.contains('/') || key.parse::<IpAddr>().is_ok(), "{key}"),
    }
});
