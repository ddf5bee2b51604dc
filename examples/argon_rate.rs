//! The ceiling for logins per second, for the load harness (`benches/load.py`):
//! argon2id verifications at the default parameters on every core (one thread
//! per core, as the hashing pool runs), with nothing else around them.
//!
//! `cargo run --release --example argon_rate -- 10` runs for 10 seconds and
//! prints `{"verifications_per_second": ...}`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::auth::password::Argon;
use portcullis::config::Config;

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let argon = Arc::new(Argon::new(&Config::default().passwords)?);
    let stored = Arc::new(argon.hash("correct horse battery staple")?);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (argon, stored, done, stop) =
                (argon.clone(), stored.clone(), done.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    assert!(argon.verify("correct horse battery staple", &stored).valid);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("{{\"threads\": {threads}, \"verifications_per_second\": {rate:.1}}}");
    Ok(())
}
