//! Access tokens as a client can present them. The first byte picks a mode:
//! the rest is the whole token, or the claims, or the header of a token signed
//! with the server's own HS256 key (so that the fuzzer gets past the signature
//! and into claim validation). Oracle: an accepted token is one the server
//! could have issued: HS256, our issuer and audience, live at `NOW`.
#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use portcullis::auth::tokens::TokenKeys;
use portcullis::config::TokensConfig;

const NOW: i64 = 1_800_000_000_000;
const SECRET: &str = "fuzzing-secret-that-is-at-least-32-bytes-long";

static KEYS: LazyLock<TokenKeys> = LazyLock::new(|| {
    let mut cfg = TokensConfig::default();
    cfg.algorithm = portcullis::config::Algorithm::HS256;
    cfg.secret = SECRET.to_owned();
    TokenKeys::hs256(&cfg)
});

fn signed(header: &[u8], claims: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
        .expect("HMAC signs anything");
    format!("{message}.{signature}")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let kid = KEYS.kid().to_owned();
    let token = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => {
            let header = format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{kid}"}}"#);
            signed(header.as_bytes(), rest)
        }
        _ => {
            let claims = format!(
                r#"{{"iss":"portcullis","aud":"portcullis","sub":"00000000-0000-4000-8000-000000000001","email":"a@example.com","sid":"00000000-0000-4000-8000-000000000002","jti":"00000000-0000-4000-8000-000000000003","iat":{0},"nbf":{0},"exp":{1},"roles":[]}}"#,
                NOW / 1000 - 10,
                NOW / 1000 + 600
            );
            signed(rest, claims.as_bytes())
        }
    };
    if let Ok(claims) = KEYS.verify(&token, NOW) {
        let header = jsonwebtoken::decode_header(&token).expect("an accepted token has a header");
        assert_eq!(
            header.alg,
            Algorithm::HS256,
            "only the configured algorithm"
        );
        assert_eq!(claims.iss, "portcullis");
        assert_eq!(claims.aud, "portcullis");
        assert!(
            claims.exp * 1000 > NOW,
            "expired token accepted: {claims:?}"
        );
        assert!(
            claims.nbf * 1000 <= NOW,
            "token not yet valid accepted: {claims:?}"
        );
        // Seen before: the same answer from the cache.
        assert!(KEYS.verify(&token, NOW).is_ok());
        // And refused once expired, cache or not.
        assert!(KEYS
            .verify(&token, claims.exp.saturating_mul(1000))
            .is_err());
    }
});
