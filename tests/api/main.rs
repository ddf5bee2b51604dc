//! Integration tests: the real server over HTTP.

mod accounts;
mod audit;
mod cli;
mod errors;
mod helpers;
mod mfa;
mod oauth;
mod ratelimit;
mod reset;
mod sessions;
mod tokens;
