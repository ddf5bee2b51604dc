//! The configuration: a TOML document, then `PORTCULLIS_*` environment lines
//! after a NUL byte. No panic; a valid configuration prints (secrets masked)
//! as TOML that parses again, and never shows its secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::Config;

fuzz_target!(|data: &[u8]| {
    let (doc, env) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(doc) else {
        return;
    };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("PORTCULLIS_{k}"), v.to_owned()))
        .collect();
    let Ok(config) = Config::parse(text, "fuzz", &env) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    let masked = config.to_masked_toml();
    let secret = &config.tokens.secret;
    if secret.len() >= 16 {
        assert!(!masked.contains(secret.as_str()), "the secret is printed");
    }
    masked
        .parse::<toml::Table>()
        .expect("the printed configuration is TOML");
});
