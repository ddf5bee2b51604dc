//! Every passkey body a client can send (SPEC section 14), through the same
//! parser as the handlers and then through the relying party's checks:
//! byte 0 picks the route (sign-in, registration, second step), the rest is
//! the JSON body. The relying party, its ceremonies and the stored passkey
//! are real ones (from a ceremony of the software authenticator the API
//! tests use), so a seed verifies and its mutations reach every check.
//! Nothing may panic; a parse failure must be a JSON 400.
#![no_main]

use std::sync::OnceLock;

use actix_web::ResponseError;
use libfuzzer_sys::fuzz_target;
use portcullis::auth::passkeys::relying_party;
use portcullis::config::Config;
use portcullis::error::ApiError;
use portcullis::http::extract::parse_json;
use portcullis::http::{mfa, passkeys};
use serde::de::DeserializeOwned;
use webauthn_rs::prelude::{DiscoverableAuthentication, Passkey, PasskeyRegistration};
use webauthn_rs::Webauthn;

/// The ceremonies the seeds answer, as the server stored them.
const REGISTRATION: &str = include_str!("../fixtures/passkey/registration.json");
const SIGN_IN: &str = include_str!("../fixtures/passkey/sign_in.json");
/// The registration seed, whose credential the sign-in seed uses.
const REGISTER_SEED: &[u8] = include_bytes!("../seeds/passkey_credential/register");

struct Party {
    webauthn: std::sync::Arc<Webauthn>,
    registration: PasskeyRegistration,
    sign_in: DiscoverableAuthentication,
    passkey: Passkey,
}

fn party() -> &'static Party {
    static PARTY: OnceLock<Party> = OnceLock::new();
    PARTY.get_or_init(|| {
        let mut config = Config::default();
        config.server.public_url = "http://localhost:18080".into();
        let webauthn = relying_party(&config).expect("a relying party on localhost");
        let registration: PasskeyRegistration =
            serde_json::from_str(REGISTRATION).expect("the registration state");
        let body: passkeys::RegisterFinishBody =
            parse_json(&REGISTER_SEED[1..]).expect("the registration seed");
        let passkey = webauthn
            .finish_passkey_registration(&body.credential, &registration)
            .expect("the registration seed verifies");
        Party {
            webauthn,
            registration,
            sign_in: serde_json::from_str(SIGN_IN).expect("the sign-in state"),
            passkey,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let party = party();
    match route % 3 {
        0 => {
            if let Some(b) = parse::<passkeys::LoginFinishBody>(body) {
                let _ = party.webauthn.identify_discoverable_authentication(&b.credential);
                if let Ok(result) = party.webauthn.finish_discoverable_authentication_v2(
                    &b.credential,
                    party.sign_in.clone(),
                    &party.passkey,
                ) {
                    let mut passkey = party.passkey.clone();
                    passkey.update_credential(&result);
                }
            }
        }
        1 => {
            if let Some(b) = parse::<passkeys::RegisterFinishBody>(body) {
                let _ = portcullis::auth::passkeys::parse_passkey_name(b.name.as_deref());
                let _ = party
                    .webauthn
                    .finish_passkey_registration(&b.credential, &party.registration);
            }
        }
        _ => {
            if let Some(b) = parse::<mfa::MfaLoginBody>(body) {
                if let Some(credential) = &b.credential {
                    let _ = party.webauthn.finish_discoverable_authentication_v2(
                        credential,
                        party.sign_in.clone(),
                        &party.passkey,
                    );
                }
            }
        }
    }
});

/// Parses like the `JsonBody` extractor; a refusal must render as a JSON 4xx.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    match parse_json::<T>(body) {
        Ok(value) => Some(value),
        Err(e) => {
            assert!(
                matches!(e, ApiError::BadRequest { .. }),
                "parse errors are 400s: {e:?}"
            );
            let res = e.error_response();
            assert!(res.status().is_client_error(), "{e:?}");
            None
        }
    }
}
