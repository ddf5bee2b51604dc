//! Integration tests: the real server over HTTP.

mod abuse;
mod accounts;
mod admin;
mod audit;
mod backends;
mod cli;
mod crash;
mod errors;
mod faults;
mod files;
mod forward_auth;
mod groups;
mod helpers;
mod jwks;
mod lockout;
mod mfa;
mod oauth;
mod oidc;
mod openapi;
mod pages;
mod passkey_pages;
mod passkeys;
mod proxies;
mod ratelimit;
mod readme;
mod reset;
mod schemathesis;
mod sessions;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod several;
mod tokens;
mod tools;
