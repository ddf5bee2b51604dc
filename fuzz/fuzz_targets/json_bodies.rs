//! Every JSON request body, through the same parser and checks as the handlers:
//! `parse_json` (UTF-8, object, fields, types), then the email and password
//! rules, then the error's HTTP response. Nothing may panic; a body that parses
//! must have come from a JSON object.
#![no_main]

use actix_web::ResponseError;
use libfuzzer_sys::fuzz_target;
use portcullis::email::{normalize, Email};
use portcullis::auth::password::PasswordPolicy;
use portcullis::config::PasswordsConfig;
use portcullis::error::ApiError;
use portcullis::http::extract::parse_json;
use portcullis::http::{accounts, mfa, reset};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let policy = PasswordPolicy::from_config(&PasswordsConfig::default());
    match route % 9 {
        0 => {
            if let Some(b) = parse::<accounts::RegisterBody>(body) {
                if let Ok(email) = Email::parse(&b.email) {
                    let inputs = [
                        email.as_str(),
                        email.local_part(),
                        b.name.as_deref().unwrap_or(""),
                    ];
                    // The cheap rules first, as the handler does: zxcvbn only sees
                    // passwords within max_length.
                    if policy.check_length(b.password.expose_secret()).is_ok() {
                        let _ = policy.check(b.password.expose_secret(), &inputs);
                    }
                }
            }
        }
        1 => {
            if let Some(b) = parse::<accounts::LoginBody>(body) {
                let account = normalize(&b.email);
                assert_eq!(account, normalize(&account), "normalize is idempotent");
            }
        }
        2 => drop(parse::<accounts::RefreshBody>(body)),
        3 => {
            if let Some(b) = parse::<accounts::ChangePasswordBody>(body) {
                let _ = policy.check_length(b.new_password.expose_secret());
            }
        }
        4 => drop(parse::<mfa::CodeBody>(body)),
        5 => drop(parse::<mfa::PasswordAndCode>(body)),
        6 => drop(parse::<mfa::MfaLoginBody>(body)),
        7 => {
            if let Some(b) = parse::<reset::RequestBody>(body) {
                let _ = Email::parse(&b.email);
            }
        }
        _ => drop(parse::<reset::ConfirmBody>(body)),
    }
});

/// Parses like the `JsonBody` extractor; a refusal must render as a JSON 4xx.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    match parse_json::<T>(body) {
        Ok(value) => {
            let text = std::str::from_utf8(body).expect("accepted bodies are UTF-8");
            assert!(
                text.trim_start().starts_with('{'),
                "accepted bodies are objects"
            );
            Some(value)
        }
        Err(e) => {
            assert!(
                matches!(e, ApiError::BadRequest { .. }),
                "parse errors are 400s: {e:?}"
            );
            let res = e.error_response();
            assert_eq!(res.status().as_u16(), 400);
            None
        }
    }
}
