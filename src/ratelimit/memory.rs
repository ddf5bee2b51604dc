//! The in-process [`LimitStore`]: one sliding window per (rule, key) in a moka
//! cache bounded by `max_keys`, each entry expiring when its window has passed.
//! A check is a cache lookup and a short per-key lock: no I/O, no hashing.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::Cache;
use moka::Expiry;

use super::rules::{Rule, RuleName, Rules};
use super::store::{Acquired, LimitStore, Slot, SlotUsage, WindowState};
use super::window::{Event, Usage, Window};
use crate::clock::Millis;

/// The cache key of a (rule, key) pair: one byte naming the rule, then the key.
/// Lookups build it in a reused thread-local buffer, so a check of a tracked
/// key allocates nothing.
type PackedKey = Box<str>;

fn rule_byte(rule: RuleName) -> char {
    char::from(b'0' + rule.index() as u8)
}

fn unpack(packed: &str) -> Option<(RuleName, &str)> {
    let mut chars = packed.chars();
    let idx = chars.next()?.to_digit(10)? as usize;
    Some((*RuleName::ALL.get(idx)?, chars.as_str()))
}

thread_local! {
    static LOOKUP: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Runs `f` with the packed form of (rule, key) without allocating.
fn with_packed<T>(rule: RuleName, key: &str, f: impl FnOnce(&str) -> T) -> T {
    LOOKUP.with(|buf| match buf.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            buf.push(rule_byte(rule));
            buf.push_str(key);
            f(&buf)
        }
        // Re-entered (cannot happen today): fall back to an allocation.
        Err(_) => f(&format!("{}{key}", rule_byte(rule))),
    })
}

type Shared = Arc<Mutex<Window>>;

/// Entries live one window past their last use: by then every event is stale.
struct ExpireAfterWindow {
    windows: [Duration; 9],
}

impl ExpireAfterWindow {
    fn window(&self, key: &str) -> Option<Duration> {
        let (rule, _) = unpack(key)?;
        Some(self.windows[rule.index()])
    }
}

impl Expiry<PackedKey, Shared> for ExpireAfterWindow {
    fn expire_after_create(&self, key: &PackedKey, _: &Shared, _: Instant) -> Option<Duration> {
        self.window(key)
    }

    fn expire_after_read(
        &self,
        key: &PackedKey,
        _: &Shared,
        _: Instant,
        _: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        self.window(key)
    }

    fn expire_after_update(
        &self,
        key: &PackedKey,
        _: &Shared,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.window(key)
    }
}

/// Windows in a bounded moka cache.
pub struct MemoryStore {
    cache: Cache<PackedKey, Shared>,
}

fn lock(window: &Mutex<Window>) -> MutexGuard<'_, Window> {
    window.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryStore {
    /// A store holding at most `max_keys` windows.
    pub fn new(rules: &Rules, max_keys: u64) -> Self {
        let mut windows = [Duration::from_secs(1); 9];
        for rule in rules.enabled() {
            windows[rule.name.index()] =
                Duration::from_millis(u64::try_from(rule.window_ms).unwrap_or(0))
                    .max(Duration::from_secs(1));
        }
        let cache = Cache::builder()
            .max_capacity(max_keys)
            .expire_after(ExpireAfterWindow { windows })
            .build();
        Self { cache }
    }

    fn entry(&self, rule: RuleName, key: &str) -> Shared {
        if let Some(found) = self.existing(rule, key) {
            return found;
        }
        let packed: PackedKey = format!("{}{key}", rule_byte(rule)).into();
        self.cache.get_with(packed, Shared::default)
    }

    fn existing(&self, rule: RuleName, key: &str) -> Option<Shared> {
        with_packed(rule, key, |packed| self.cache.get(packed))
    }

    /// Check-and-reserve, synchronously (the body of [`LimitStore::acquire`]).
    pub fn acquire_now(&self, slots: &[Slot<'_>], now: Millis) -> Acquired {
        let mut entries: Vec<(usize, Shared)> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i, self.entry(s.rule.name, s.key)))
            .collect();
        // Lock in one global order so that concurrent multi-key checks cannot deadlock.
        entries.sort_by(|a, b| {
            (slots[a.0].rule.name, slots[a.0].key).cmp(&(slots[b.0].rule.name, slots[b.0].key))
        });
        let mut guards: Vec<(usize, MutexGuard<'_, Window>)> =
            entries.iter().map(|(i, w)| (*i, lock(w))).collect();

        let mut denied = Vec::new();
        for (i, window) in &mut guards {
            let rule = slots[*i].rule;
            window.prune(now, rule.window_ms);
            if !window.has_room(rule.limit) {
                denied.push(SlotUsage {
                    rule,
                    usage: window.usage(now, rule.window_ms),
                });
            }
        }
        if !denied.is_empty() {
            return Acquired::Denied(denied);
        }
        for (i, window) in &mut guards {
            window.push(Event {
                at: now,
                tag: slots[*i].tag,
            });
        }
        Acquired::Granted
    }
}

#[async_trait]
impl LimitStore for MemoryStore {
    async fn acquire(&self, slots: &[Slot<'_>], now: Millis) -> Acquired {
        self.acquire_now(slots, now)
    }

    async fn release(&self, rule: &Rule, key: &str, event: Event) {
        if let Some(window) = self.existing(rule.name, key) {
            lock(&window).remove(event);
        }
    }

    async fn usage(&self, rule: &Rule, key: &str, now: Millis) -> Usage {
        match self.existing(rule.name, key) {
            Some(window) => {
                let mut window = lock(&window);
                window.prune(now, rule.window_ms);
                window.usage(now, rule.window_ms)
            }
            None => Usage {
                count: 0,
                reset_ms: 0,
            },
        }
    }

    async fn clear(&self, rule: &Rule, key: &str, tag: Option<u64>) {
        if let Some(window) = self.existing(rule.name, key) {
            lock(&window).clear(tag);
        }
    }

    async fn windows(
        &self,
        rules: &Rules,
        key: Option<&str>,
        now: Millis,
        max: usize,
    ) -> Vec<WindowState> {
        let live = |rule: RuleName, key: &str, w: &Shared| -> Option<WindowState> {
            let r = rules.get(rule)?;
            let mut window = lock(w);
            window.prune(now, r.window_ms);
            (!window.is_empty()).then(|| WindowState {
                rule,
                key: key.to_owned(),
                events: window.events().copied().collect(),
            })
        };
        let mut out: Vec<WindowState> = match key {
            Some(key) => rules
                .enabled()
                .filter_map(|rule| live(rule.name, key, &self.existing(rule.name, key)?))
                .collect(),
            None => self
                .cache
                .iter()
                .filter_map(|(packed, w)| {
                    let (rule, key) = unpack(&packed)?;
                    live(rule, key, &w)
                })
                .take(max)
                .collect(),
        };
        out.truncate(max);
        out.sort_by(|a, b| (a.rule, &a.key).cmp(&(b.rule, &b.key)));
        out
    }

    async fn import(&self, rules: &Rules, windows: Vec<WindowState>, now: Millis) {
        for saved in windows {
            let Some(rule) = rules.get(saved.rule) else {
                continue;
            };
            let mut window = Window::from_events(saved.events);
            window.prune(now, rule.window_ms);
            if !window.is_empty() {
                let packed: PackedKey = format!("{}{}", rule_byte(saved.rule), saved.key).into();
                self.cache.insert(packed, Arc::new(Mutex::new(window)));
            }
        }
    }

    fn tracked_keys(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn rules() -> Rules {
        Rules::from_config(&Config::default().rate_limit)
    }

    fn slot<'a>(rules: &Rules, name: RuleName, key: &'a str) -> Slot<'a> {
        Slot {
            rule: *rules.get(name).unwrap(),
            key,
            tag: 0,
        }
    }

    #[test]
    fn all_or_nothing_across_rules() {
        let rules = rules();
        let store = MemoryStore::new(&rules, 1000);
        // Fill register_ip (5) for one IP.
        for _ in 0..5 {
            let got = store.acquire_now(&[slot(&rules, RuleName::RegisterIp, "1.2.3.4")], 0);
            assert_eq!(got, Acquired::Granted);
        }
        // A check of both register rules is denied and records nothing in the hourly one.
        let both = [
            slot(&rules, RuleName::RegisterIp, "1.2.3.4"),
            slot(&rules, RuleName::RegisterIpHourly, "1.2.3.4"),
        ];
        match store.acquire_now(&both, 1) {
            Acquired::Denied(full) => {
                assert_eq!(full.len(), 1);
                assert_eq!(full[0].rule.name, RuleName::RegisterIp);
                assert_eq!(full[0].usage.count, 5);
            }
            other => panic!("{other:?}"),
        }
        let hourly = store.acquire_now(&[slot(&rules, RuleName::RegisterIpHourly, "1.2.3.4")], 2);
        match hourly {
            Acquired::Granted => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bounded_by_max_keys() {
        let rules = rules();
        let store = MemoryStore::new(&rules, 100);
        for i in 0..5_000 {
            let key = format!("10.0.{}.{}", i / 256, i % 256);
            store.acquire_now(&[slot(&rules, RuleName::LoginIp, &key)], 0);
        }
        assert!(store.tracked_keys() <= 100, "{}", store.tracked_keys());
    }

    #[tokio::test]
    async fn export_import_round_trip_drops_stale_events() {
        let rules = rules();
        let store = MemoryStore::new(&rules, 1000);
        store.acquire_now(&[slot(&rules, RuleName::LoginIp, "a")], 0);
        store.acquire_now(&[slot(&rules, RuleName::LoginIp, "a")], 600_000);
        store.acquire_now(
            &[slot(&rules, RuleName::ResetRequestAccount, "b@x.io")],
            600_000,
        );
        let saved = store.windows(&rules, None, 600_000, 1000).await;
        assert_eq!(saved.len(), 2);

        let fresh = MemoryStore::new(&rules, 1000);
        fresh.import(&rules, saved, 900_000).await;
        let back = fresh.windows(&rules, Some("a"), 900_000, 1000).await;
        assert_eq!(back.len(), 1);
        assert_eq!(
            back[0].events.len(),
            1,
            "the event at 0 left its 15m window"
        );
        assert_eq!(fresh.windows(&rules, None, 900_000, 1000).await.len(), 2);
    }
}

#[cfg(test)]
mod model_tests {
    //! The store against a model that is obviously right: a list of event times,
    //! counted afresh at every check.

    use super::*;
    use crate::config::Config;

    /// xorshift64*: a small deterministic generator, so failures replay.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn random_sequences_match_the_model() {
        let rules = Rules::from_config(&Config::default().rate_limit);
        for seed in 1..=200u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let limit = 1 + rng.below(6) as u32;
            let window_ms = 1 + rng.below(5_000) as Millis;
            let rule = Rule {
                name: RuleName::LoginIp,
                limit,
                window_ms,
            };
            let store = MemoryStore::new(&rules, 1_000);
            let mut model: Vec<Millis> = Vec::new();
            let mut granted: Vec<Millis> = Vec::new();
            let mut now: Millis = 0;
            for step in 0..400 {
                match rng.below(10) {
                    0..=3 => now += rng.below(2 * window_ms as u64 / limit as u64 + 2) as Millis,
                    4 if !granted.is_empty() => {
                        // Give back a slot, as a success under a failures rule would.
                        let at = granted.swap_remove(rng.below(granted.len() as u64) as usize);
                        futures_util::FutureExt::now_or_never(store.release(
                            &rule,
                            "k",
                            Event { at, tag: 0 },
                        ));
                        if let Some(i) = model.iter().position(|t| *t == at) {
                            model.remove(i);
                        }
                    }
                    _ => {
                        let live = model.iter().filter(|t| **t > now - window_ms).count();
                        let expect = live < limit as usize;
                        let got = store.acquire_now(
                            &[Slot {
                                rule,
                                key: "k",
                                tag: 0,
                            }],
                            now,
                        );
                        assert_eq!(
                            got == Acquired::Granted,
                            expect,
                            "seed {seed} step {step}: now {now}, window {window_ms}, limit {limit}, model {model:?}"
                        );
                        if expect {
                            model.push(now);
                            granted.push(now);
                        }
                    }
                }
            }
        }
    }
}
