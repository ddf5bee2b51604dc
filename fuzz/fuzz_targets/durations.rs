//! Durations (`"15m"`, config values) and time bounds (RFC 3339 or an age, the
//! audit filters): no panic, no overflow, and what parses prints back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::audit::query::parse_time;
use portcullis::config::Duration;
use portcullis::time_fmt::{parse_rfc3339, rfc3339_ms};

const NOW: i64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = text.parse::<Duration>() {
        assert!(d.as_millis_i64() >= 0);
        let again: Duration = d.to_string().parse().expect("a duration prints back");
        assert_eq!(again.as_millis_i64(), d.as_millis_i64());
        assert!(parse_time(text, NOW).is_some_and(|t| t <= NOW));
    }
    if let Some(ms) = parse_rfc3339(text) {
        // What we print we can read, at millisecond precision.
        let printed = rfc3339_ms(ms);
        assert_eq!(
            parse_rfc3339(&printed),
            Some(ms),
            "{text:?} -> {ms} -> {printed}"
        );
    }
    let _ = parse_time(text, NOW);
});
