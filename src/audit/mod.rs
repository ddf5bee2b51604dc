//! What an audit row is (SPEC section 7): the actions ([`event`]), the
//! hash chain that makes the log tamper-evident ([`chain`]) and the filters
//! of a page ([`query`]). Kept by the storage wing (`store::audit`),
//! recorded by [`crate::audit_log::AuditLog`].

pub mod chain;
pub mod event;
pub mod query;

pub use event::{Action, EventRow, NewEvent, Origin};
