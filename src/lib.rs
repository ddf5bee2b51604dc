//! portcullis: an authentication server in one binary.
//!
//! The crate is laid out by layer (see `ARCHITECTURE.md`): [`http`] parses requests
//! and maps results to responses, [`pages`] serves the same to people, [`auth`] holds the account, password, token and
//! session logic, and [`store`] persists it. [`startup`] wires them together.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod audit;
pub mod audit_log;
pub mod auth;
pub mod authz;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod email;
pub mod error;
pub mod group_name;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod oidc;
pub mod pages;
pub mod private_files;
pub mod ratelimit;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod time_fmt;
