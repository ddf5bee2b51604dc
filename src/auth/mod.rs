//! The domain: accounts, passwords, access tokens and sessions. Nothing here
//! knows about HTTP; handlers in [`crate::http`] call [`service::AuthService`].

pub mod crypto;
pub mod first_run;
pub mod grants;
pub mod groups;
pub mod mfa;
pub mod passkeys;
pub mod password;
#[cfg(feature = "postgres")]
pub mod pg_bus;
#[cfg(feature = "redis")]
pub mod redis_bus;
mod relying_party;
pub mod revocation;
pub mod service;
pub mod sessions;
pub mod tokens;
pub mod totp;

#[cfg(test)]
mod peers;
#[cfg(test)]
mod properties;
