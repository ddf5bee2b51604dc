//! Forward authentication (SPEC section 12): the request a reverse proxy asks
//! about, read from its headers and refused on anything odd, and the rules
//! that decide it, compiled once at start-up.

mod request;
mod rules;

pub use request::{Forwarded, Malformed, Scheme};
pub use rules::{host_matches, Decision, Rules};
