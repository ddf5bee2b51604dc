//! Process logging: human-readable lines or JSON objects on stderr, filtered
//! by `RUST_LOG` (default `info`). Each request is logged once (see
//! `http::request_id`), repeated lines folded under a flood ([`fold`]);
//! nothing logged anywhere includes a secret.
//!
//! Lines are formatted on the thread that logs and written by a thread of
//! their own through a buffer, so request workers never wait on stderr or on
//! each other for it. If stderr cannot keep up, lines beyond a backlog of
//! 128,000 are dropped rather than stalling requests (the audit log, not the
//! process log, is the durable record).

pub mod fold;

use std::io::{BufWriter, IsTerminal};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber once; later calls do nothing. Keep the
/// guard until the process ends: dropping it flushes the lines still queued.
pub fn init(format: LogFormat) -> WorkerGuard {
    // actix-server's own start lines repeat ours; they stay at debug.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn"));
    let (writer, guard) = tracing_appender::non_blocking(BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .try_init(),
    };
    guard
}
