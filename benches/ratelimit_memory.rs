//! Resident memory of a full limiter: 1,000,000 windows of distinct keys, once
//! with addresses (`login_ip`) and once with 254-character emails (the
//! longest valid address, `login_account`), each in a process of its own.
//! A window must cost the same whatever the length of its key, so the
//! emails' figure is set beside the addresses' measured in the same run.
//!
//! `cargo bench --bench ratelimit_memory`

use std::process::Command;

use portcullis::config::Config;
use portcullis::ratelimit::key::KeyMaker;
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

/// Fills a store with `windows` keys of one kind in this process; prints
/// `<tracked> <rss before> <rss after>`.
fn fill(kind: &str, windows: usize) {
    let config = Config::default();
    let rules = Rules::from_config(&config.rate_limit);
    let (name, key): (RuleName, fn(usize) -> String) = match kind {
        "addresses" => (RuleName::LoginIp, |i| {
            format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
        }),
        _ => (RuleName::LoginAccount, |i| {
            let email = format!("{i:0>64}@{}.example.com", "b".repeat(177));
            debug_assert_eq!(email.len(), 254);
            email
        }),
    };
    let rule = *rules.get(name).expect("rule enabled");
    let maker = KeyMaker::random();
    let before = rss_bytes();
    let store = MemoryStore::new(&rules, config.rate_limit.max_keys);
    for i in 0..windows {
        let text = key(i);
        let slot = Slot {
            rule,
            id: maker.id(&text),
            text: &text,
            tag: 0,
        };
        store.acquire_now(&[slot], 0);
    }
    println!("{} {before} {}", store.tracked_keys(), rss_bytes());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--fill") {
        let kind = args.get(i + 1).map_or("addresses", String::as_str);
        let windows = args.get(i + 2).and_then(|n| n.parse().ok()).unwrap_or(0);
        fill(kind, windows);
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` would run this too: keep it cheap there.
    let windows: usize = if args.iter().any(|a| a == "--bench") {
        1_000_000
    } else {
        10_000
    };
    let mut per_window = Vec::new();
    for kind in ["addresses", "emails"] {
        let out = Command::new(std::env::current_exe().expect("this program"))
            .args(["--fill", kind, &windows.to_string()])
            .output()
            .expect("a child process");
        let text = String::from_utf8_lossy(&out.stdout);
        let nums: Vec<u64> = text
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let [tracked, before, after] = nums[..] else {
            panic!("unexpected output: {text}");
        };
        let bytes = after.saturating_sub(before) as f64 / tracked.max(1) as f64;
        per_window.push(bytes);
        println!(
            "{kind:>9}: {tracked} windows; RSS {:.1} MiB before, {:.1} MiB after; {bytes:.0} bytes per window",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0
        );
    }
    println!(
        "254-character emails cost {:.2} × what addresses cost per window",
        per_window[1] / per_window[0].max(1.0)
    );
}
