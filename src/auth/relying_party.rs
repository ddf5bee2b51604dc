//! The relying party of passkeys (SPEC section 14): who they are for, from
//! `[webauthn]` or `server.public_url`, or why there are none here.

use std::sync::Arc;

use url::Url;
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::config::Config;

/// The relying party, or why there is none.
pub type RelyingParty = Result<Arc<Webauthn>, String>;

/// The relying party of `config`: `[webauthn]`, else `public_url`'s host and
/// origin. `Err` says why passkeys are off (an IP address, a bad pairing).
pub fn relying_party(config: &Config) -> RelyingParty {
    let public = Url::parse(&config.server.public_url)
        .map_err(|e| format!("server.public_url is not a URL: {e}"))?;
    let rp_id = if config.webauthn.rp_id.is_empty() {
        match public.host() {
            Some(url::Host::Domain(host)) => host.to_owned(),
            Some(_) => {
                return Err(format!(
                    "passkeys need a domain name: browsers refuse WebAuthn on an IP address \
                     ({}); set server.public_url (http://localhost:PORT serves for development) \
                     or webauthn.rp_id and webauthn.origins",
                    config.server.public_url
                ))
            }
            None => return Err("server.public_url has no host".into()),
        }
    } else {
        config.webauthn.rp_id.clone()
    };
    let origins = if config.webauthn.origins.is_empty() {
        vec![public]
    } else {
        config
            .webauthn
            .origins
            .iter()
            .map(|o| Url::parse(o).map_err(|e| format!("webauthn.origins: {o:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?
    };
    let Some((first, rest)) = origins.split_first() else {
        return Err("no origin".into());
    };
    let mut builder = WebauthnBuilder::new(&rp_id, first)
        .map_err(|e| format!("{first} is not on the relying party {rp_id:?}: {e}"))?
        .rp_name(&config.web.title)
        // A development server on localhost moves from port to port.
        .allow_any_port(rp_id == "localhost");
    for origin in rest {
        if origin
            .domain()
            .is_none_or(|d| d != rp_id && !d.ends_with(&format!(".{rp_id}")))
        {
            return Err(format!("{origin} is not on the relying party {rp_id:?}"));
        }
        builder = builder.append_allowed_origin(origin);
    }
    builder
        .build()
        .map(Arc::new)
        .map_err(|e| format!("cannot set up passkeys: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(public_url: &str) -> Config {
        let mut config = Config::default();
        config.server.public_url = public_url.into();
        config
    }

    #[test]
    fn the_relying_party_follows_public_url_and_refuses_an_ip_address() {
        for on in [
            "https://auth.example.com",
            "http://localhost:8080",
            "https://auth.example.com:8443/",
        ] {
            assert!(relying_party(&config(on)).is_ok(), "{on}");
        }
        for off in ["http://127.0.0.1:8080", "http://[::1]:8080", "not a url"] {
            let why = relying_party(&config(off)).expect_err(off);
            assert!(!why.is_empty());
        }
        let ip = relying_party(&config("http://127.0.0.1:8080")).unwrap_err();
        assert!(ip.contains("IP address"), "{ip}");
    }

    #[test]
    fn configured_origins_must_be_on_the_relying_party() {
        let mut c = config("http://127.0.0.1:8080");
        c.webauthn.rp_id = "example.com".into();
        c.webauthn.origins = vec![
            "https://auth.example.com".into(),
            "https://example.com".into(),
        ];
        assert!(relying_party(&c).is_ok());
        c.webauthn.origins.push("https://example.org".into());
        let why = relying_party(&c).unwrap_err();
        assert!(why.contains("example.org"), "{why}");
        c.webauthn.origins = vec!["https://notexample.com".into()];
        assert!(relying_party(&c).is_err());
    }
}
