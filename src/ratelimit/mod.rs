//! Brute-force protection (SPEC section 6): exact sliding windows, checked and
//! reserved in one atomic step before any password is looked at.
//!
//! A handler calls [`Limiter::reserve`] for its route group, does its work, then
//! [`Limiter::settle`]s the reservation with the outcome: `failures` rules give
//! their slot back on success (and on a 5xx, which is no failure of the client),
//! `all` rules keep it. A reservation that is never settled keeps its slots, so
//! cancelling a request cannot dodge a limit.

pub mod key;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis_store;
pub mod rules;
pub mod store;
pub mod window;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use ipnet::Ipv6Net;
use moka::sync::Cache;
use smallvec::SmallVec;

use crate::clock::{Millis, SharedClock};
use crate::config::{Config, LimitStoreKind};
use crate::store::{RateLimitRow, Store, StoreResult};
use key::{KeyId, KeyMaker, LimitKey, Shown};
pub use rules::{Check, Counts, Guarded, KeyKind, Rule, RuleName, Rules};
pub use store::LimitError;
use store::{Acquired, LimitResult, LimitStore, Slot, WindowState};
use window::Event;

/// How many (account, address) pairs of recent successful logins are kept.
const MAX_KNOWN_DEVICES: u64 = 1_000_000;
/// How long a shared store's "not a known device" answer is trusted here, so
/// that a flood of one address against one account asks once, not per attempt.
/// A device that logs in on another instance is known here at most this late.
const UNKNOWN_DEVICE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// How many such answers are kept.
const MAX_UNKNOWN_DEVICES: u64 = 100_000;
/// Windows looked through to find a key by what the admin view shows of it.
const MAX_SCANNED: usize = 2_000_000;

/// The rate-limit key of a client address: the address itself, or for IPv6 its
/// network of `prefix` bits (`2001:db8:1:2::/64`).
pub fn ip_key(ip: IpAddr, ipv6_prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None if ipv6_prefix >= 128 => v6.to_string(),
            None => Ipv6Net::new(v6, ipv6_prefix)
                .map(|n| n.trunc().to_string())
                .unwrap_or_else(|_| v6.to_string()),
        },
    }
}

/// When a device became known or an account's devices were forgotten: the
/// time, then the order within this process (a clock may show one
/// millisecond for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Mark {
    at: Millis,
    seq: u64,
}

/// How a guarded request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Success,
    /// A 4xx after parsing.
    Failure,
    /// A 4xx because a password or a code was wrong: a failure under the
    /// rules that count that check ([`RuleName::counts_failed`]).
    Failed(Check),
    /// A 5xx: not the client's failure; counts only under `all` rules.
    ServerError,
}

impl Outcome {
    /// Whether the request counts as a failure under `rule`.
    fn is_failure_under(self, rule: RuleName) -> bool {
        match self {
            Self::Failure => true,
            Self::Failed(check) => rule.counts_failed(check),
            Self::Success | Self::ServerError => false,
        }
    }
}

/// Slots held by one request.
#[derive(Debug, Clone)]
pub struct Reservation {
    held: Vec<Held>,
}

#[derive(Debug, Clone)]
struct Held {
    rule: Rule,
    key: KeyId,
    event: Event,
}
/// The `RateLimit-*` values of the most restrictive rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u64,
    pub policy: String,
}

/// A refused request: which rule, for which key, and when to come back.
#[derive(Debug, Clone)]
pub struct Blocked {
    pub group: Guarded,
    pub rule: Rule,
    /// The key that is full; what may be shown of it is
    /// [`Limiter::shown`] of its text.
    pub key: KeyId,
    pub count: u32,
    pub retry_after: u64,
}

impl Blocked {
    pub fn message(&self) -> String {
        self.group.blocked_message(self.retry_after)
    }

    pub fn headers(&self) -> RateHeaders {
        RateHeaders {
            limit: self.rule.limit,
            remaining: 0,
            reset_secs: self.retry_after,
            policy: self.rule.policy(),
        }
    }
}

/// Why a guarded request may not go ahead.
#[derive(Debug)]
pub enum Refused {
    /// A rule is full: 429.
    Blocked(Blocked),
    /// The limiter could not check: the request is refused (503), never let through.
    Unavailable(LimitError),
}

#[cfg(test)]
impl Refused {
    fn blocked(self) -> Blocked {
        match self {
            Self::Blocked(b) => b,
            Self::Unavailable(e) => panic!("expected a full rule, got {e}"),
        }
    }
}

fn ceil_secs(ms: Millis) -> u64 {
    u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000)
}

/// One tracked key under one rule, for the admin view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitView {
    pub rule: RuleName,
    /// What is shown of the key (see [`key::Shown`]).
    pub key: String,
    pub count: u32,
    pub limit: u32,
    pub retry_after: u64,
}

/// The rate limiter: the rules, where windows live, and the known devices.
pub struct Limiter {
    rules: Rules,
    store: Arc<dyn LimitStore>,
    clock: SharedClock,
    ipv6_prefix: u8,
    /// Key texts to fixed-size keys.
    keys: KeyMaker,
    /// (account, address) → the last successful login from there.
    known_devices: Cache<(KeyId, KeyId), Mark>,
    /// Account → when its known devices were last forgotten: a device is
    /// known only by a login after that.
    forgotten: Cache<KeyId, Mark>,
    /// Orders the marks of one millisecond.
    marks: AtomicU64,
    /// Pairs a shared store recently said were not known devices.
    unknown_devices: Cache<(KeyId, KeyId), ()>,
    known_ttl_ms: Millis,
}

impl Limiter {
    /// A limiter over `store`, its keys made with `keys` (from the storage
    /// key, so that saved windows and other instances agree).
    pub fn new(
        config: &Config,
        store: Arc<dyn LimitStore>,
        clock: SharedClock,
        keys: KeyMaker,
    ) -> Self {
        Self {
            rules: Rules::from_config(&config.rate_limit),
            store,
            clock,
            ipv6_prefix: config.rate_limit.ipv6_prefix,
            keys,
            unknown_devices: Cache::builder()
                .max_capacity(MAX_UNKNOWN_DEVICES)
                .time_to_live(UNKNOWN_DEVICE_TTL)
                .build(),
            known_devices: Cache::builder()
                .max_capacity(MAX_KNOWN_DEVICES)
                .time_to_live(config.tokens.refresh_ttl.std())
                .build(),
            // A device remembered before a forget expires within refresh_ttl
            // of it, and so may the forget.
            forgotten: Cache::builder()
                .max_capacity(MAX_KNOWN_DEVICES)
                .time_to_live(config.tokens.refresh_ttl.std())
                .build(),
            known_ttl_ms: config.tokens.refresh_ttl.as_millis_i64(),
            marks: AtomicU64::new(0),
        }
    }

    /// A mark for something that happens at `at`, after every earlier mark.
    fn mark(&self, at: Millis) -> Mark {
        Mark {
            at,
            seq: self.marks.fetch_add(1, AtomicOrdering::Relaxed),
        }
    }

    /// The limiter the configuration asks for: windows in this process, or in
    /// the shared Redis of `rate_limit.redis_url`.
    pub async fn from_config(
        config: &Config,
        clock: SharedClock,
        keys: KeyMaker,
    ) -> anyhow::Result<Self> {
        match config.rate_limit.store {
            LimitStoreKind::Memory => Ok(Self::in_memory_with(config, clock, keys)),
            #[cfg(feature = "redis")]
            LimitStoreKind::Redis => {
                let store = redis_store::RedisStore::connect(&config.rate_limit.redis_url).await?;
                Ok(Self::new(config, Arc::new(store), clock, keys))
            }
            #[cfg(not(feature = "redis"))]
            LimitStoreKind::Redis => anyhow::bail!(
                "rate_limit.store = \"redis\" needs portcullis built with the `redis` feature"
            ),
        }
    }

    /// The in-memory limiter of a default deployment.
    pub fn in_memory_with(config: &Config, clock: SharedClock, keys: KeyMaker) -> Self {
        let rules = Rules::from_config(&config.rate_limit);
        let store = Arc::new(memory::MemoryStore::new(&rules, config.rate_limit.max_keys));
        Self::new(config, store, clock, keys)
    }

    /// An in-memory limiter with a random key secret, whose windows need not
    /// outlive the process (tests, benchmarks).
    pub fn in_memory(config: &Config, clock: SharedClock) -> Self {
        Self::in_memory_with(config, clock, KeyMaker::random())
    }
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn store(&self) -> &Arc<dyn LimitStore> {
        &self.store
    }

    /// What may be shown of a key of `rule`'s kind with `text` (see
    /// [`key::shown`]).
    pub fn shown(&self, rule: RuleName, text: &str) -> Shown {
        key::shown(rule.key_kind(), self.keys.id(text), text)
    }

    /// The key of a client address under this configuration.
    pub fn ip_key(&self, ip: IpAddr) -> String {
        ip_key(ip, self.ipv6_prefix)
    }

    /// Checks and reserves a slot under every enabled rule of `group`, atomically.
    /// `account` is the normalized email for account-keyed rules.
    pub async fn reserve(
        &self,
        group: Guarded,
        ip_key: &str,
        account: Option<&str>,
    ) -> Result<Reservation, Refused> {
        let now = self.clock.now_ms();
        let ip = self.keys.id(ip_key);
        let account = account.map(|a| (self.keys.id(a), a));
        let mut slots: SmallVec<[Slot<'_>; 3]> = SmallVec::new();
        for name in group.rules() {
            let Some(rule) = self.rules.get(*name) else {
                continue;
            };
            let slot = match (rule.name.key_kind(), account) {
                (KeyKind::Ip, _) => Slot {
                    rule: *rule,
                    id: ip,
                    text: ip_key,
                    tag: account.map_or(0, |(id, _)| id.tag()),
                },
                (KeyKind::Account, Some((id, text))) => {
                    if rule.name == RuleName::LoginAccount
                        && self
                            .is_known_device(id, ip, now)
                            .await
                            .map_err(Refused::Unavailable)?
                    {
                        continue;
                    }
                    Slot {
                        rule: *rule,
                        id,
                        text,
                        tag: ip.tag(),
                    }
                }
                (KeyKind::Account, None) => continue,
            };
            slots.push(slot);
        }
        if slots.is_empty() {
            return Ok(Reservation { held: Vec::new() });
        }
        match self
            .store
            .acquire(&slots, now)
            .await
            .map_err(Refused::Unavailable)?
        {
            Acquired::Granted => Ok(Reservation {
                held: slots
                    .iter()
                    .map(|slot| Held {
                        rule: slot.rule,
                        key: slot.id,
                        event: Event {
                            at: now,
                            tag: slot.tag,
                        },
                    })
                    .collect(),
            }),
            Acquired::Denied(full) => {
                let worst = full
                    .iter()
                    .max_by_key(|f| f.usage.reset_ms)
                    .copied()
                    .unwrap_or(full[0]);
                let key = slots
                    .iter()
                    .find(|s| s.rule.name == worst.rule.name)
                    .map_or(ip, |s| s.id);
                Err(Refused::Blocked(Blocked {
                    group,
                    rule: worst.rule,
                    key,
                    count: worst.usage.count,
                    retry_after: ceil_secs(worst.usage.reset_ms).max(1),
                }))
            }
        }
    }

    /// Settles a reservation: `failures` rules give their slot back unless the
    /// request failed under them. A slot that cannot be given back stays
    /// counted (the safe side) until its window passes.
    pub async fn settle(&self, reservation: &Reservation, outcome: Outcome) {
        for held in &reservation.held {
            if held.rule.name.counts() == Counts::Failures
                && !outcome.is_failure_under(held.rule.name)
            {
                if let Err(e) = self.store.release(&held.rule, held.key, held.event).await {
                    tracing::warn!(error = %e, rule = held.rule.name.as_str(), "cannot give back a rate-limit slot");
                }
            }
        }
    }

    /// The `RateLimit-*` values after the request settled: the rule with the
    /// fewest remaining slots (ties: the longest wait) among those it held.
    /// `None` when the store cannot say (the answer goes out without them).
    pub async fn headers(&self, reservation: &Reservation) -> Option<RateHeaders> {
        let now = self.clock.now_ms();
        let mut best: Option<RateHeaders> = None;
        for held in &reservation.held {
            let usage = match self.store.usage(&held.rule, held.key, now).await {
                Ok(usage) => usage,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read rate-limit usage for headers");
                    return None;
                }
            };
            let h = RateHeaders {
                limit: held.rule.limit,
                remaining: held.rule.limit.saturating_sub(usage.count),
                reset_secs: ceil_secs(usage.reset_ms),
                policy: held.rule.policy(),
            };
            let better = best.as_ref().is_none_or(|b| {
                (h.remaining, std::cmp::Reverse(h.reset_secs))
                    < (b.remaining, std::cmp::Reverse(b.reset_secs))
            });
            if better {
                best = Some(h);
            }
        }
        best
    }

    /// A successful login: clears the account's failures and this address's
    /// failures against this account (not its failures against others), and
    /// remembers the address as a known device of the account, as of
    /// `opened`, when its session was opened (so that a recovery made while
    /// the login was under way still forgets it).
    pub async fn login_succeeded(&self, ip_key: &str, account: &str, opened: Millis) {
        let (ip, account) = (self.keys.id(ip_key), self.keys.id(account));
        let mut cleared = Ok(());
        if let Some(rule) = self.rules.get(RuleName::LoginAccount) {
            cleared = cleared.and(self.store.clear(rule, account, None).await);
        }
        if let Some(rule) = self.rules.get(RuleName::LoginIp) {
            cleared = cleared.and(self.store.clear(rule, ip, Some(account.tag())).await);
        }
        if let Err(e) = cleared {
            // The failures stay counted until their window passes: the safe side.
            tracing::warn!(error = %e, "cannot clear failures after a successful login");
        }
        self.remember(account, ip, opened);
        if self.store.is_shared() {
            if let Err(e) = self
                .store
                .remember_device(account, ip, opened, self.known_ttl_ms)
                .await
            {
                tracing::warn!(error = %e, "cannot share a known device with other instances");
            }
        }
    }

    /// Records that `account` logged in from `ip_key` at `at`.
    pub fn remember_device(&self, account: &str, ip_key: &str, at: Millis) {
        self.remember(self.keys.id(account), self.keys.id(ip_key), at);
    }

    fn remember(&self, account: KeyId, ip: KeyId, at: Millis) {
        self.unknown_devices.invalidate(&(account, ip));
        self.known_devices.insert((account, ip), self.mark(at));
    }
    /// Forgets every known device of `account` (its password was changed or
    /// reset, it logged out everywhere, it was disabled): from `at` on, only
    /// a new successful login makes an address known again. With a shared
    /// store, every instance forgets at once.
    /// A recovery heard again changes nothing. False when a shared store
    /// could not be told (worth trying again).
    pub async fn forget_devices(&self, account: &str, at: Millis) -> bool {
        let account = self.keys.id(account);
        if self
            .forgotten
            .get(&account)
            .is_some_and(|before| before.at >= at)
        {
            return true;
        }
        if self.store.is_shared() {
            if let Err(e) = self.store.forget_devices(account, at).await {
                // Not marked as done: the next poll of storage tries again.
                tracing::warn!(error = %e, "cannot forget known devices in the shared store");
                return false;
            }
        }
        self.forgotten.insert(account, self.mark(at));
        true
    }

    /// Known here, or (with a shared store, the only source then) made known
    /// by any instance and not forgotten since.
    async fn is_known_device(&self, account: KeyId, ip: KeyId, now: Millis) -> LimitResult<bool> {
        let pair = (account, ip);
        if !self.store.is_shared() {
            let forgotten = self.forgotten.get(&account);
            return Ok(self.known_devices.get(&pair).is_some_and(|known| {
                forgotten.is_none_or(|f| known > f)
                    && known.at.saturating_add(self.known_ttl_ms) > now
            }));
        }
        if self.unknown_devices.contains_key(&pair) {
            return Ok(false);
        }
        let since = now.saturating_sub(self.known_ttl_ms);
        let known = self.store.known_device(account, ip, since).await?;
        if !known {
            self.unknown_devices.insert(pair, ());
        }
        Ok(known)
    }

    /// The identities an administrator means by `text`: the key of an
    /// address as the limiter groups it (an IPv6 address stands for its
    /// network), of an email normalized, or of the text itself; and, for a
    /// key as the admin view shows it (`#…` for a hidden one, or cut with
    /// `…`), every tracked key shown so.
    async fn keys_meant(&self, text: &str, now: Millis) -> LimitResult<Vec<KeyId>> {
        let text = text.trim();
        let meant = match text.parse::<IpAddr>() {
            Ok(ip) => self.ip_key(ip),
            Err(_) if text.contains('@') => crate::email::normalize(text),
            Err(_) => text.to_owned(),
        };
        let mut ids = vec![self.keys.id(&meant)];
        if text.starts_with('#') || text.ends_with('…') {
            ids.extend(
                self.store
                    .windows(&self.rules, None, now, MAX_SCANNED)
                    .await?
                    .into_iter()
                    .filter(|w| w.key.shown.as_str() == text)
                    .map(|w| w.key.id),
            );
            ids.sort();
            ids.dedup();
        }
        Ok(ids)
    }

    /// Tracked keys with counted events (at most 1000), or only those meant
    /// by `key` (see [`Limiter::keys_meant`]).
    pub async fn inspect(&self, key: Option<&str>) -> LimitResult<Vec<LimitView>> {
        let now = self.clock.now_ms();
        let windows = match key {
            None => self.store.windows(&self.rules, None, now, 1000).await?,
            Some(text) => {
                let mut windows = Vec::new();
                for id in self.keys_meant(text, now).await? {
                    windows.extend(self.store.windows(&self.rules, Some(id), now, 1000).await?);
                }
                windows
            }
        };
        Ok(windows
            .into_iter()
            .filter_map(|w| {
                let rule = self.rules.get(w.rule)?;
                let count = u32::try_from(w.events.len()).unwrap_or(u32::MAX);
                let oldest = w.events.iter().map(|e| e.at).min().unwrap_or(now);
                let retry_after = if count >= rule.limit {
                    ceil_secs(oldest + rule.window_ms - now).max(1)
                } else {
                    0
                };
                Some(LimitView {
                    rule: w.rule,
                    key: w.key.shown.as_str().to_owned(),
                    count,
                    limit: rule.limit,
                    retry_after,
                })
            })
            .collect())
    }

    /// Clears the keys meant by `key` (see [`Limiter::keys_meant`]) under
    /// one rule or every rule.
    pub async fn clear(&self, key: &str, rule: Option<RuleName>) -> LimitResult<()> {
        for id in self.keys_meant(key, self.clock.now_ms()).await? {
            for r in self.rules.enabled() {
                if rule.is_none_or(|only| only == r.name) {
                    self.store.clear(r, id, None).await?;
                }
            }
        }
        Ok(())
    }

    /// Every live window, for saving at shutdown.
    pub async fn export(&self) -> LimitResult<Vec<WindowState>> {
        self.store
            .windows(&self.rules, None, self.clock.now_ms(), usize::MAX)
            .await
    }

    /// Restores saved windows; stale events are dropped.
    pub async fn import(&self, windows: Vec<WindowState>) {
        self.store
            .import(&self.rules, windows, self.clock.now_ms())
            .await;
    }

    /// Saves every live window to storage (at graceful shutdown). Returns how
    /// many; none for a shared store, whose windows outlive this process anyway.
    pub async fn save(&self, store: &Store) -> anyhow::Result<usize> {
        if self.store.is_shared() {
            return Ok(0);
        }
        let rows: Vec<RateLimitRow> = self
            .export()
            .await?
            .into_iter()
            .map(|w| RateLimitRow {
                rule: w.rule.as_str().to_owned(),
                key_id: Some(w.key.id.0.to_vec()),
                key: w.key.shown.as_str().to_owned(),
                events: serde_json::to_string(&w.events).unwrap_or_else(|_| "[]".into()),
            })
            .collect();
        let saved = rows.len();
        store.save_rate_limits(rows, self.clock.now_ms()).await?;
        Ok(saved)
    }

    /// Loads the windows saved at the last graceful stop and the known devices
    /// (live sessions opened within `refresh_ttl`) at start-up.
    pub async fn load(&self, store: &Store) -> StoreResult<()> {
        if !self.store.is_shared() {
            self.load_windows(store).await?;
        }
        let now = self.clock.now_ms();
        let since = now.saturating_sub(self.known_ttl_ms);
        for login in store.recent_logins(since, now).await? {
            if let Ok(ip) = login.ip_address.parse::<IpAddr>() {
                self.remember_device(&login.email, &self.ip_key(ip), login.at);
            }
        }
        Ok(())
    }

    async fn load_windows(&self, store: &Store) -> StoreResult<()> {
        let windows: Vec<WindowState> = store
            .load_rate_limits()
            .await?
            .into_iter()
            .filter_map(|row| {
                let rule = RuleName::parse(&row.rule)?;
                let events: Vec<Event> = serde_json::from_str(&row.events).ok()?;
                let key = match row.key_id {
                    Some(id) => LimitKey {
                        id: KeyId(id.try_into().ok()?),
                        shown: Shown::new(&row.key),
                    },
                    // Saved by an earlier version, under the whole text.
                    None => match rule.key_kind() {
                        KeyKind::Ip => self.keys.ip(&row.key),
                        KeyKind::Account => self.keys.account(&row.key),
                    },
                };
                Some(WindowState { rule, key, events })
            })
            .collect();
        self.import(windows).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::clock::ManualClock;
    use std::time::Duration;

    fn limiter() -> (Limiter, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        (
            Limiter::in_memory(&Config::default(), Arc::new(clock.clone())),
            clock,
        )
    }

    #[test]
    fn ipv6_is_grouped_by_prefix() {
        let ip: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        assert_eq!(ip_key(ip, 64), "2001:db8:1:2::/64");
        assert_eq!(ip_key(ip, 48), "2001:db8:1::/48");
        assert_eq!(ip_key(ip, 128), "2001:db8:1:2:aaaa::1");
        assert_eq!(ip_key("203.0.113.7".parse().unwrap(), 64), "203.0.113.7");
        assert_eq!(
            ip_key("::ffff:203.0.113.7".parse().unwrap(), 64),
            "203.0.113.7"
        );
    }

    #[tokio::test]
    async fn five_failures_then_blocked_for_the_rest_of_the_window() {
        let (l, clock) = limiter();
        for _ in 0..5 {
            let r = l
                .reserve(Guarded::Login, "1.1.1.1", Some("a@x.io"))
                .await
                .unwrap();
            l.settle(&r, Outcome::Failure).await;
            clock.advance(Duration::from_secs(1));
        }
        let b = l
            .reserve(Guarded::Login, "1.1.1.1", Some("a@x.io"))
            .await
            .unwrap_err()
            .blocked();
        assert_eq!(b.rule.name, RuleName::LoginIp);
        assert_eq!(b.retry_after, 900 - 5);
        assert_eq!(
            b.message(),
            "Too many login attempts. Try again in 895 seconds."
        );
        // Another address is not blocked.
        assert!(l
            .reserve(Guarded::Login, "2.2.2.2", Some("a@x.io"))
            .await
            .is_ok());
        // One window after the first failure exactly one slot frees.
        clock.advance(Duration::from_secs(895));
        let r = l
            .reserve(Guarded::Login, "1.1.1.1", Some("a@x.io"))
            .await
            .unwrap();
        l.settle(&r, Outcome::Failure).await;
        assert!(l
            .reserve(Guarded::Login, "1.1.1.1", Some("a@x.io"))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn success_gives_back_failures_slots_only() {
        let (l, _) = limiter();
        for _ in 0..10 {
            let r = l
                .reserve(Guarded::Login, "1.1.1.1", Some("a@x.io"))
                .await
                .unwrap();
            l.settle(&r, Outcome::Success).await;
        }
        // register_ip_hourly counts all; register_ip counts failures.
        for _ in 0..20 {
            let r = l.reserve(Guarded::Register, "3.3.3.3", None).await.unwrap();
            l.settle(&r, Outcome::Success).await;
        }
        let b = l
            .reserve(Guarded::Register, "3.3.3.3", None)
            .await
            .unwrap_err()
            .blocked();
        assert_eq!(b.rule.name, RuleName::RegisterIpHourly);
        assert_eq!(
            b.message(),
            format!("Too many requests. Try again in {} seconds.", b.retry_after)
        );
    }

    #[tokio::test]
    async fn login_success_clears_only_failures_against_that_account() {
        let (l, _) = limiter();
        for account in ["victim1@x.io", "victim2@x.io", "me@x.io", "victim3@x.io"] {
            let r = l
                .reserve(Guarded::Login, "6.6.6.6", Some(account))
                .await
                .unwrap();
            l.settle(&r, Outcome::Failure).await;
        }
        l.login_succeeded("6.6.6.6", "me@x.io", l.clock.now_ms())
            .await;
        // Three failures against others remain: two more, then blocked.
        for _ in 0..2 {
            let r = l
                .reserve(Guarded::Login, "6.6.6.6", Some("victim4@x.io"))
                .await
                .unwrap();
            l.settle(&r, Outcome::Failure).await;
        }
        assert!(l
            .reserve(Guarded::Login, "6.6.6.6", Some("victim5@x.io"))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn known_devices_are_exempt_from_the_account_rule_only() {
        let (l, clock) = limiter();
        l.login_succeeded("7.7.7.7", "owner@x.io", l.clock.now_ms())
            .await;
        // Twenty failures from many addresses lock the account for strangers.
        for i in 0..20 {
            let ip = format!("10.0.0.{i}");
            let r = l
                .reserve(Guarded::Login, &ip, Some("owner@x.io"))
                .await
                .unwrap();
            l.settle(&r, Outcome::Failure).await;
        }
        let b = l
            .reserve(Guarded::Login, "10.0.1.1", Some("owner@x.io"))
            .await
            .unwrap_err()
            .blocked();
        assert_eq!(b.rule.name, RuleName::LoginAccount);
        // The owner's device still gets in.
        assert!(l
            .reserve(Guarded::Login, "7.7.7.7", Some("owner@x.io"))
            .await
            .is_ok());
        // Until refresh_ttl has passed since its last success.
        clock.advance(Duration::from_secs(30 * 86_400));
        for i in 0..20 {
            let ip = format!("10.0.2.{i}");
            let r = l
                .reserve(Guarded::Login, &ip, Some("owner@x.io"))
                .await
                .unwrap();
            l.settle(&r, Outcome::Failure).await;
        }
        assert!(l
            .reserve(Guarded::Login, "7.7.7.7", Some("owner@x.io"))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn forgotten_devices_are_strangers_until_they_sign_in_again() {
        let (l, clock) = limiter();
        l.login_succeeded("7.7.7.7", "owner@x.io", l.clock.now_ms())
            .await;
        for i in 0..20 {
            let r = l
                .reserve(Guarded::Login, &format!("10.0.0.{i}"), Some("owner@x.io"))
                .await
                .unwrap();
            l.settle(&r, Outcome::Failure).await;
        }
        assert!(l
            .reserve(Guarded::Login, "7.7.7.7", Some("owner@x.io"))
            .await
            .is_ok());
        // Forgotten in the same millisecond as the login: still forgotten.
        l.forget_devices("owner@x.io", clock.now_ms()).await;
        let b = l
            .reserve(Guarded::Login, "7.7.7.7", Some("owner@x.io"))
            .await
            .unwrap_err()
            .blocked();
        assert_eq!(b.rule.name, RuleName::LoginAccount);
        // Hearing the same recovery again (a poll's overlap) changes nothing
        // for a device that signs in after it, even in that millisecond.
        l.remember_device("owner@x.io", "7.7.7.7", clock.now_ms());
        l.forget_devices("owner@x.io", clock.now_ms()).await;
        assert!(l
            .reserve(Guarded::Login, "7.7.7.7", Some("owner@x.io"))
            .await
            .is_ok());
        // Other accounts' devices are untouched.
        l.login_succeeded("8.8.8.8", "other@x.io", l.clock.now_ms())
            .await;
        l.forget_devices("owner@x.io", clock.now_ms() + 1).await;
        assert!(l
            .is_known_device(
                l.keys.id("other@x.io"),
                l.keys.id("8.8.8.8"),
                clock.now_ms()
            )
            .await
            .unwrap());
        assert!(!l
            .is_known_device(
                l.keys.id("owner@x.io"),
                l.keys.id("7.7.7.7"),
                clock.now_ms()
            )
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn headers_name_the_most_restrictive_rule() {
        let (l, clock) = limiter();
        let r = l
            .reserve(Guarded::Login, "1.1.1.1", Some("a@x.io"))
            .await
            .unwrap();
        let h = l.headers(&r).await.unwrap();
        assert_eq!(
            h,
            RateHeaders {
                limit: 5,
                remaining: 4,
                reset_secs: 900,
                policy: "5;w=900".into()
            }
        );
        l.settle(&r, Outcome::Failure).await;
        clock.advance(Duration::from_secs(100));
        let r = l
            .reserve(Guarded::Login, "1.1.1.1", Some("a@x.io"))
            .await
            .unwrap();
        l.settle(&r, Outcome::Success).await;
        let h = l.headers(&r).await.unwrap();
        assert_eq!((h.remaining, h.reset_secs), (4, 800));
    }

    #[tokio::test]
    async fn disabled_rules_do_not_limit() {
        let mut config = Config::default();
        config
            .rate_limit
            .rules
            .get_mut(&RuleName::LoginIp)
            .unwrap()
            .enabled = false;
        let l = Limiter::in_memory(&config, Arc::new(ManualClock::new(0)));
        for _ in 0..19 {
            let r = l
                .reserve(Guarded::Login, "1.1.1.1", Some("a@x.io"))
                .await
                .unwrap();
            l.settle(&r, Outcome::Failure).await;
        }
        let r = l
            .reserve(Guarded::Login, "1.1.1.1", Some("a@x.io"))
            .await
            .unwrap();
        assert_eq!(l.headers(&r).await.unwrap().policy, "20;w=900");
    }
}
