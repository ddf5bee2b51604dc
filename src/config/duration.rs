//! Durations written as strings: `"900s"`, `"15m"`, `"1h"`, `"30d"`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A span of time written as a string: `"900s"`, `"15m"`, `"1h"`, `"30d"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// A duration of whole seconds.
    pub const fn secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }

    /// Milliseconds, saturating at `i64::MAX`.
    pub fn as_millis_i64(&self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }

    pub fn std(&self) -> std::time::Duration {
        self.0
    }
}

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a duration like \"900s\", \"15m\", \"1h\" or \"30d\"")]
pub struct DurationError(String);

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || DurationError(text.chars().take(40).collect());
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() || digits.len() > 12 {
            return Err(err());
        }
        let n: u64 = digits.parse().map_err(|_| err())?;
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(err()),
        };
        // Twelve digits of days overflow u64 milliseconds: refused, not wrapped.
        let ms = n.checked_mul(unit_ms).ok_or_else(err)?;
        Ok(Self(std::time::Duration::from_millis(ms)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let (n, unit) = if !ms.is_multiple_of(1000) {
            (ms, "ms")
        } else {
            let s = ms / 1000;
            match s {
                0 => (0, "s"),
                s if s % 86_400 == 0 => (s / 86_400, "d"),
                s if s % 3_600 == 0 => (s / 3_600, "h"),
                s if s % 60 == 0 => (s / 60, "m"),
                s => (s, "s"),
            }
        };
        write!(f, "{n}{unit}")
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({self})")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
