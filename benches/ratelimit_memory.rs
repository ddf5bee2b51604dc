//! Resident memory per tracked rate-limit key: RSS before and after 1,000,000
//! distinct addresses each hold one `login_ip` event.
//!
//! `cargo bench --bench ratelimit_memory`

use portcullis::config::Config;
use portcullis::ratelimit::memory::MemoryStore;
use portcullis::ratelimit::store::Slot;
use portcullis::ratelimit::{RuleName, Rules};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would run this too: keep it cheap there.
    let keys: usize = if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        10_000
    };
    let config = Config::default();
    let rules = Rules::from_config(&config.rate_limit);
    let rule = *rules.get(RuleName::LoginIp).expect("login_ip enabled");
    let before = rss_bytes();
    let store = MemoryStore::new(&rules, config.rate_limit.max_keys);
    for i in 0..keys {
        let key = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        store.acquire_now(
            &[Slot {
                rule,
                key: &key,
                tag: 0,
            }],
            0,
        );
    }
    let tracked = store.tracked_keys();
    let after = rss_bytes();
    let per_key = (after.saturating_sub(before)) as f64 / tracked.max(1) as f64;
    println!(
        "tracked keys: {tracked}; RSS before {:.1} MiB, after {:.1} MiB; {per_key:.0} bytes per key",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
}
