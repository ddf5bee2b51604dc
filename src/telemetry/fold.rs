//! Folding repeated request lines, so that a flood does not flood the log.
//!
//! Every request is logged once, but a flood of blocked logins would write a
//! line per request: gigabytes an hour, its own outage on a small disk, and
//! the lines that matter buried. So lines are folded the way the audit log
//! folds 429s: per interval of [`INTERVAL_MS`], the first [`FIRST_LINES`]
//! lines of each (route, status, client) are written at `info`, and at most
//! [`ROUTE_LINES`] of each (route, status) over all clients; the rest are
//! written at `debug` only (so `RUST_LOG=debug` still shows every line) and
//! counted. When the interval closes, each (route, status) that folded lines
//! gets one `info` summary: how many, from how many clients, and the busiest.
//! A 5xx is never folded.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use crate::clock::Millis;

/// How long one folding interval lasts.
pub const INTERVAL_MS: Millis = 10_000;
/// Lines of one (route, status, client) written at `info` per interval.
pub const FIRST_LINES: u32 = 3;
/// Lines of one (route, status) written at `info` per interval, over all
/// clients (a flood from many addresses).
pub const ROUTE_LINES: u32 = 100;
/// Clients counted per interval; beyond, their lines fold at once.
const MAX_CLIENTS: usize = 10_000;

/// Whether a line is written at `info` or folded (written at `debug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    Write,
    Fold,
}

/// The lines one (route, status) folded in an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub route: String,
    pub status: u16,
    /// Lines folded.
    pub folded: u64,
    /// Clients whose lines were folded (at least; see [`MAX_CLIENTS`]).
    pub clients: u64,
    /// The client with the most lines in the interval, and how many.
    pub busiest: String,
    pub busiest_lines: u32,
    /// Seconds the interval lasted.
    pub seconds: u64,
}

#[derive(Debug, Default)]
struct Route {
    route: String,
    status: u16,
    written: u32,
    folded: u64,
    clients: u64,
    busiest: String,
    busiest_lines: u32,
}

/// One (route, status, client) in an interval.
#[derive(Debug, Default)]
struct Client {
    lines: u32,
    folded: bool,
}

#[derive(Debug)]
struct Interval {
    started: Millis,
    /// By a hash of (route, status).
    routes: HashMap<u64, Route>,
    /// By a hash of (route, status, client).
    clients: HashMap<u64, Client>,
}

/// The folding state of one process.
#[derive(Debug)]
pub struct LineFolder {
    hasher: RandomState,
    interval: Mutex<Interval>,
}

impl LineFolder {
    pub fn new(now: Millis) -> Self {
        Self {
            hasher: RandomState::new(),
            interval: Mutex::new(Interval {
                started: now,
                routes: HashMap::new(),
                clients: HashMap::new(),
            }),
        }
    }

    /// Decides a request line, and closes the interval when it is over
    /// (its summaries are returned, to be written first).
    pub fn observe(
        &self,
        route: &str,
        status: u16,
        client: &str,
        now: Millis,
    ) -> (Line, Vec<Summary>) {
        if status >= 500 {
            return (Line::Write, Vec::new());
        }
        let route_key = self.hasher.hash_one((route, status));
        let client_key = self.hasher.hash_one((route, status, client));
        let mut guard = self.interval.lock().unwrap_or_else(|e| e.into_inner());
        let closed = close_if_due(&mut guard, now, false);
        let Interval {
            routes, clients, ..
        } = &mut *guard;
        let entry = routes.entry(route_key).or_insert_with(|| Route {
            route: route.to_owned(),
            status,
            ..Route::default()
        });
        // Beyond MAX_CLIENTS a new client is not counted: its lines fold.
        let mut untracked = Client {
            lines: u32::MAX,
            folded: false,
        };
        let this = if clients.len() < MAX_CLIENTS || clients.contains_key(&client_key) {
            clients.entry(client_key).or_default()
        } else {
            &mut untracked
        };
        this.lines = this.lines.saturating_add(1);
        if this.lines != u32::MAX && this.lines > entry.busiest_lines {
            entry.busiest_lines = this.lines;
            if entry.busiest != client {
                entry.busiest = client.to_owned();
            }
        }
        let line = if this.lines <= FIRST_LINES && entry.written < ROUTE_LINES {
            entry.written += 1;
            Line::Write
        } else {
            if !this.folded {
                this.folded = true;
                entry.clients += 1;
            }
            entry.folded += 1;
            Line::Fold
        };
        (line, closed)
    }

    /// Closes the interval if it is over (every one, with `force`, at
    /// shutdown) and returns its summaries.
    pub fn flush(&self, now: Millis, force: bool) -> Vec<Summary> {
        let mut interval = self.interval.lock().unwrap_or_else(|e| e.into_inner());
        close_if_due(&mut interval, now, force)
    }
}

fn close_if_due(interval: &mut Interval, now: Millis, force: bool) -> Vec<Summary> {
    if !force && now < interval.started.saturating_add(INTERVAL_MS) {
        return Vec::new();
    }
    let seconds = u64::try_from(now.saturating_sub(interval.started) / 1000).unwrap_or(0);
    let summaries = interval
        .routes
        .drain()
        .map(|(_, r)| r)
        .filter(|r| r.folded > 0)
        .map(|r| Summary {
            route: r.route,
            status: r.status,
            folded: r.folded,
            clients: r.clients,
            busiest: r.busiest,
            busiest_lines: r.busiest_lines,
            seconds,
        })
        .collect();
    interval.clients.clear();
    interval.started = now;
    summaries
}

/// Writes the summaries of closed intervals at `info`.
pub fn log_summaries(summaries: Vec<Summary>) {
    for s in summaries {
        tracing::info!(
            route = %s.route,
            status = s.status,
            folded = s.folded,
            clients = s.clients,
            busiest = %s.busiest,
            busiest_lines = s.busiest_lines,
            seconds = s.seconds,
            "similar request lines folded (every line is logged at debug)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_from_one_client_writes_a_few_lines_and_one_summary() {
        let folder = LineFolder::new(0);
        let mut written = 0;
        for i in 0..10_000 {
            let (line, closed) = folder.observe("/auth/login", 429, "203.0.113.9", i);
            assert!(closed.is_empty());
            written += usize::from(line == Line::Write);
        }
        assert_eq!(written, FIRST_LINES as usize);
        // Another client and another status are their own lines.
        assert_eq!(
            folder.observe("/auth/login", 429, "198.51.100.1", 10).0,
            Line::Write
        );
        assert_eq!(
            folder.observe("/auth/login", 401, "203.0.113.9", 10).0,
            Line::Write
        );
        // A 5xx is never folded.
        for _ in 0..10 {
            assert_eq!(
                folder.observe("/auth/login", 503, "203.0.113.9", 10).0,
                Line::Write
            );
        }
        let summaries = folder.flush(INTERVAL_MS, false);
        assert_eq!(summaries.len(), 1, "{summaries:?}");
        let s = &summaries[0];
        assert_eq!((s.route.as_str(), s.status), ("/auth/login", 429));
        assert_eq!(s.folded, 10_000 - u64::from(FIRST_LINES));
        assert_eq!(s.clients, 1);
        assert_eq!(
            (s.busiest.as_str(), s.busiest_lines),
            ("203.0.113.9", 10_000)
        );
        assert_eq!(s.seconds, 10);
        // The next interval starts afresh.
        assert_eq!(
            folder
                .observe("/auth/login", 429, "203.0.113.9", INTERVAL_MS + 1)
                .0,
            Line::Write
        );
        assert!(folder.flush(INTERVAL_MS + 2, false).is_empty());
    }

    #[test]
    fn a_flood_from_many_clients_is_bounded_per_route() {
        let folder = LineFolder::new(0);
        let mut written = 0u32;
        for i in 0..5_000u32 {
            let client = format!("2001:db8:{i:x}::/64");
            written += u32::from(folder.observe("/auth/login", 401, &client, 1).0 == Line::Write);
        }
        assert_eq!(written, ROUTE_LINES);
        let summaries = folder.flush(1, true);
        assert_eq!(summaries[0].folded, u64::from(5_000 - ROUTE_LINES));
        assert_eq!(summaries[0].clients, u64::from(5_000 - ROUTE_LINES));
    }

    #[test]
    fn an_interval_closes_on_the_next_line_too() {
        let folder = LineFolder::new(0);
        for i in 0..5 {
            folder.observe("/auth/me", 200, "a", i);
        }
        let (line, closed) = folder.observe("/auth/me", 200, "a", INTERVAL_MS);
        assert_eq!(line, Line::Write);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].folded, 2);
    }
}
