//! The in-process [`LimitStore`]: the sliding windows of every (rule, key) in
//! a moka cache bounded by `max_keys`, each entry expiring when its rule's
//! window has passed since it was last used. A check is a cache lookup and a
//! short lock: no I/O, no hashing of passwords.
//!
//! Memory is the design constraint. A moka entry costs about 300 bytes of
//! bookkeeping before its key and value, more than a window itself, so the
//! cache does not hold one entry per key: it holds buckets. Every (rule, key)
//! is spread by its keyed identity ([`KeyId`]) over `max_keys / 8` buckets,
//! and a bucket keeps the windows of its few keys in a small vector: the
//! identity, the shown start of the text and the events, 88 bytes whatever
//! the text was. The cache weighs a bucket by its number of windows, so
//! `max_keys` bounds windows and so bytes; a bucket expires when the longest
//! window among its keys' rules has passed since its last use; and an
//! attacker cannot aim many keys at one bucket without knowing the key of
//! the identities.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::ops::compute::Op;
use moka::sync::Cache;
use moka::Expiry;
use smallvec::SmallVec;

use super::key::{KeyId, LimitKey, Shown};
use super::rules::{Rule, RuleName, Rules};
use super::store::{Acquired, LimitResult, LimitStore, Slot, SlotUsage, WindowState};
use super::window::{Event, Usage, Window};
use crate::clock::Millis;

/// Windows per bucket when `max_keys` windows are tracked under one rule.
const WINDOWS_PER_BUCKET: u64 = 8;

/// A bucket number, below `max_keys / 8` rounded up to a power of two.
type BucketId = u64;

/// One (rule, key) and its window.
#[derive(Debug)]
struct Tracked {
    id: KeyId,
    shown: Shown,
    rule: RuleName,
    window: Window,
}

/// The windows of the (rule, key) pairs that hash to one bucket.
#[derive(Debug, Default)]
struct Bucket {
    tracked: Vec<Tracked>,
    /// The number of windows the cache last weighed this bucket with.
    weighed: usize,
}

/// The usage of `slot`'s key when it has no room left.
fn full(bucket: &mut Bucket, slot: &Slot<'_>, now: Millis) -> Option<SlotUsage> {
    let window = bucket.find(slot.rule.name, slot.id)?;
    window.prune(now, slot.rule.window_ms);
    (!window.has_room(slot.rule.limit)).then(|| SlotUsage {
        rule: slot.rule,
        usage: window.usage(now, slot.rule.window_ms),
    })
}

impl Bucket {
    /// Adds an event to the window of the slot's (rule, key), tracking it if
    /// it is new.
    fn record(&mut self, slot: &Slot<'_>, event: Event) {
        match self.find(slot.rule.name, slot.id) {
            Some(window) => window.push(event),
            None => {
                let mut window = Window::default();
                window.push(event);
                self.tracked.push(Tracked {
                    id: slot.id,
                    shown: slot.key().shown,
                    rule: slot.rule.name,
                    window,
                });
            }
        }
    }
    fn find(&mut self, rule: RuleName, id: KeyId) -> Option<&mut Window> {
        self.tracked
            .iter_mut()
            .find(|t| t.rule == rule && t.id == id)
            .map(|t| &mut t.window)
    }

    /// Drops the stale events, and windows left empty, of `rule`'s keys.
    fn prune(&mut self, rule: RuleName, now: Millis, window_ms: Millis) {
        self.tracked.retain_mut(|t| {
            if t.rule == rule {
                t.window.prune(now, window_ms);
            }
            !t.window.is_empty()
        });
    }
}

type Shared = Arc<Mutex<Bucket>>;

fn lock(bucket: &Mutex<Bucket>) -> MutexGuard<'_, Bucket> {
    bucket.lock().unwrap_or_else(|e| e.into_inner())
}

/// A bucket lives, past its last use, as long as the longest window of its
/// keys' rules: by then every event in it is stale.
struct ExpireAfterWindow {
    windows: [Duration; RuleName::ALL.len()],
}

impl ExpireAfterWindow {
    fn window(&self, bucket: &Shared) -> Option<Duration> {
        let bucket = lock(bucket);
        let longest = bucket
            .tracked
            .iter()
            .filter_map(|t| self.windows.get(t.rule.index()))
            .max()
            .copied();
        // A bucket just created and still empty gets a short lease.
        Some(longest.unwrap_or(Duration::from_secs(1)))
    }
}

impl Expiry<BucketId, Shared> for ExpireAfterWindow {
    fn expire_after_create(&self, _: &BucketId, bucket: &Shared, _: Instant) -> Option<Duration> {
        self.window(bucket)
    }

    fn expire_after_read(
        &self,
        _: &BucketId,
        bucket: &Shared,
        _: Instant,
        _: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        self.window(bucket)
    }

    fn expire_after_update(
        &self,
        _: &BucketId,
        bucket: &Shared,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.window(bucket)
    }
}

/// Windows in bounded moka buckets.
pub struct MemoryStore {
    cache: Cache<BucketId, Shared>,
    mask: u64,
}

impl MemoryStore {
    /// A store holding at most `max_keys` windows.
    pub fn new(rules: &Rules, max_keys: u64) -> Self {
        let mut windows = [Duration::from_secs(1); RuleName::ALL.len()];
        for rule in rules.enabled() {
            windows[rule.name.index()] =
                Duration::from_millis(u64::try_from(rule.window_ms).unwrap_or(0))
                    .max(Duration::from_secs(1));
        }
        let buckets = (max_keys / WINDOWS_PER_BUCKET)
            .clamp(1, 1 << 31)
            .next_power_of_two();
        let cache = Cache::builder()
            .max_capacity(max_keys)
            // A bucket weighs its windows (an empty one, briefly, weighs one).
            // Pruning lowers the count without telling the cache, so the cache
            // may overestimate a bucket until it grows again; never under.
            .weigher(|_, bucket: &Shared| {
                let mut bucket = lock(bucket);
                bucket.weighed = bucket.tracked.len();
                u32::try_from(bucket.weighed.max(1)).unwrap_or(u32::MAX)
            })
            .expire_after(ExpireAfterWindow { windows })
            .build();
        Self {
            cache,
            mask: buckets - 1,
        }
    }

    /// How many windows are tracked (pending cache maintenance done first).
    pub fn tracked_keys(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    /// The bucket of (rule, key): bits of the keyed identity, which nobody
    /// can aim without the key, moved per rule.
    fn bucket_id(&self, rule: RuleName, id: KeyId) -> BucketId {
        let rule = u64::try_from(rule.index()).unwrap_or(0);
        (id.spread() ^ rule.wrapping_mul(0x9e37_79b9_7f4a_7c15)) & self.mask
    }

    /// Check-and-reserve, synchronously (the body of [`LimitStore::acquire`]).
    pub fn acquire_now(&self, slots: &[Slot<'_>], now: Millis) -> Acquired {
        let mut buckets: SmallVec<[(BucketId, Option<Shared>); 4]> = slots
            .iter()
            .map(|s| {
                let id = self.bucket_id(s.rule.name, s.id);
                (id, self.cache.get(&id))
            })
            .collect();
        // Before creating a bucket, refuse if another key is already full, so
        // that refusals leave no empty buckets behind.
        if buckets.iter().any(|(_, bucket)| bucket.is_none()) {
            let denied: Vec<SlotUsage> = slots
                .iter()
                .zip(&buckets)
                .filter_map(|(slot, (_, bucket))| full(&mut lock(bucket.as_ref()?), slot, now))
                .collect();
            if !denied.is_empty() {
                return Acquired::Denied(denied);
            }
        }

        // Take the buckets in one global order (so that concurrent multi-key
        // checks cannot deadlock), check under the locks, and reserve in all
        // or none.
        let mut buckets: SmallVec<[(BucketId, Shared); 4]> = buckets
            .drain(..)
            .map(|(id, found)| {
                (
                    id,
                    found.unwrap_or_else(|| self.cache.get_with(id, Shared::default)),
                )
            })
            .collect();
        buckets.sort_by_key(|(id, _)| *id);
        buckets.dedup_by_key(|(id, _)| *id);
        let mut guards: SmallVec<[MutexGuard<'_, Bucket>; 4]> =
            buckets.iter().map(|(_, bucket)| lock(bucket)).collect();
        let index = |slot: &Slot<'_>| {
            let id = self.bucket_id(slot.rule.name, slot.id);
            buckets.iter().position(|(b, _)| *b == id)
        };

        let mut denied = Vec::new();
        for slot in slots {
            if let Some(i) = index(slot) {
                let bucket = &mut guards[i];
                bucket.prune(slot.rule.name, now, slot.rule.window_ms);
                denied.extend(full(bucket, slot, now));
            }
        }
        if !denied.is_empty() {
            return Acquired::Denied(denied);
        }
        for slot in slots {
            if let Some(i) = index(slot) {
                guards[i].record(
                    slot,
                    Event {
                        at: now,
                        tag: slot.tag,
                    },
                );
            }
        }
        // The cache learns a bucket's weight when it is inserted: tell it when
        // a bucket holds more windows than it was last weighed with.
        let grown: SmallVec<[bool; 4]> =
            guards.iter().map(|b| b.tracked.len() > b.weighed).collect();
        drop(guards);
        for ((id, bucket), grown) in buckets.iter().zip(grown) {
            if grown {
                self.reweigh(*id, bucket);
            }
        }
        Acquired::Granted
    }

    /// Tells the cache that `bucket` grew, so that it weighs it again. If the
    /// cache evicted it meanwhile and a new bucket took its number, the
    /// windows recorded here move into that one: no event is lost, and none
    /// is counted twice.
    fn reweigh(&self, id: BucketId, bucket: &Shared) {
        self.cache
            .entry(id)
            .and_compute_with(|current| match current {
                Some(entry) if !Arc::ptr_eq(entry.value(), bucket) => {
                    let current = entry.into_value();
                    {
                        let mut orphan = lock(bucket);
                        let mut into = lock(&current);
                        for t in orphan.tracked.drain(..) {
                            match into.find(t.rule, t.id) {
                                Some(window) => {
                                    for event in t.window.events() {
                                        window.push(*event);
                                    }
                                }
                                None => into.tracked.push(t),
                            }
                        }
                    }
                    Op::Put(current)
                }
                _ => Op::Put(bucket.clone()),
            });
    }

    /// Runs `f` on the tracked window of (rule, key), if there is one.
    fn with_window<T>(
        &self,
        rule: RuleName,
        id: KeyId,
        f: impl FnOnce(&mut Tracked) -> T,
    ) -> Option<T> {
        let bucket = self.cache.get(&self.bucket_id(rule, id))?;
        let mut bucket = lock(&bucket);
        bucket
            .tracked
            .iter_mut()
            .find(|t| t.rule == rule && t.id == id)
            .map(f)
    }
}

fn live(rule: &Rule, tracked: &mut Tracked, now: Millis) -> Option<WindowState> {
    tracked.window.prune(now, rule.window_ms);
    (!tracked.window.is_empty()).then(|| WindowState {
        rule: rule.name,
        key: LimitKey {
            id: tracked.id,
            shown: tracked.shown,
        },
        events: tracked.window.events().copied().collect(),
    })
}

#[async_trait]
impl LimitStore for MemoryStore {
    async fn acquire(&self, slots: &[Slot<'_>], now: Millis) -> LimitResult<Acquired> {
        Ok(self.acquire_now(slots, now))
    }

    async fn release(&self, rule: &Rule, key: KeyId, event: Event) -> LimitResult<()> {
        self.with_window(rule.name, key, |t| t.window.remove(event));
        Ok(())
    }

    async fn usage(&self, rule: &Rule, key: KeyId, now: Millis) -> LimitResult<Usage> {
        Ok(self
            .with_window(rule.name, key, |t| {
                t.window.prune(now, rule.window_ms);
                t.window.usage(now, rule.window_ms)
            })
            .unwrap_or(Usage {
                count: 0,
                reset_ms: 0,
            }))
    }

    async fn clear(&self, rule: &Rule, key: KeyId, tag: Option<u64>) -> LimitResult<()> {
        self.with_window(rule.name, key, |t| t.window.clear(tag));
        Ok(())
    }

    async fn windows(
        &self,
        rules: &Rules,
        key: Option<KeyId>,
        now: Millis,
        max: usize,
    ) -> LimitResult<Vec<WindowState>> {
        let mut out: Vec<WindowState> = match key {
            Some(key) => rules
                .enabled()
                .filter_map(|rule| {
                    self.with_window(rule.name, key, |t| live(rule, t, now))
                        .flatten()
                })
                .collect(),
            None => {
                let mut out = Vec::new();
                for (_, bucket) in self.cache.iter() {
                    let mut bucket = lock(&bucket);
                    out.extend(
                        bucket
                            .tracked
                            .iter_mut()
                            .filter_map(|t| live(rules.get(t.rule)?, t, now)),
                    );
                    if out.len() >= max {
                        break;
                    }
                }
                out
            }
        };
        out.truncate(max);
        out.sort_by(|a, b| (a.rule, a.key.shown.as_str()).cmp(&(b.rule, b.key.shown.as_str())));
        Ok(out)
    }

    async fn import(&self, rules: &Rules, windows: Vec<WindowState>, now: Millis) {
        for saved in windows {
            let Some(rule) = rules.get(saved.rule) else {
                continue;
            };
            let mut window = Window::from_events(saved.events);
            window.prune(now, rule.window_ms);
            if window.is_empty() {
                continue;
            }
            let id = self.bucket_id(saved.rule, saved.key.id);
            let bucket = self.cache.get_with(id, Shared::default);
            let grown = {
                let mut b = lock(&bucket);
                match b.find(saved.rule, saved.key.id) {
                    Some(existing) => *existing = window,
                    None => b.tracked.push(Tracked {
                        id: saved.key.id,
                        shown: saved.key.shown,
                        rule: saved.rule,
                        window,
                    }),
                }
                b.tracked.len() > b.weighed
            };
            if grown {
                self.cache.insert(id, bucket);
            }
        }
    }

    fn tracked_keys(&self) -> Option<u64> {
        Some(MemoryStore::tracked_keys(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn rules() -> Rules {
        Rules::from_config(&Config::default().rate_limit)
    }

    /// The key of `text` under a fixed secret.
    pub(super) fn k(text: &str) -> LimitKey {
        super::super::key::KeyMaker::new(&[9; 32]).ip(text)
    }

    fn slot<'a>(rules: &Rules, name: RuleName, key: &'a str) -> Slot<'a> {
        Slot {
            rule: *rules.get(name).unwrap(),
            id: k(key).id,
            text: key,
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
    async fn keys_sharing_a_bucket_keep_their_own_windows() {
        let rules = rules();
        // 1,000 keys over 128 buckets: about 8 windows share each bucket.
        let store = MemoryStore::new(&rules, 1_000);
        let keys: Vec<String> = (0..1_000)
            .map(|i| format!("10.1.{}.{}", i / 256, i % 256))
            .collect();
        for key in &keys {
            assert_eq!(
                store.acquire_now(&[slot(&rules, RuleName::LoginIp, key)], 0),
                Acquired::Granted
            );
        }
        assert_eq!(store.tracked_keys(), 1_000);
        for t in 1..5 {
            store.acquire_now(&[slot(&rules, RuleName::LoginIp, &keys[0])], t);
        }
        assert!(matches!(
            store.acquire_now(&[slot(&rules, RuleName::LoginIp, &keys[0])], 5),
            Acquired::Denied(_)
        ));
        let rule = *rules.get(RuleName::LoginIp).unwrap();
        for key in &keys[1..] {
            assert_eq!(
                store.usage(&rule, k(key).id, 5).await.unwrap().count,
                1,
                "{key}"
            );
        }
        // A window that has passed is dropped and its key starts afresh.
        let later = rule.window_ms + 10;
        assert_eq!(
            store.acquire_now(&[slot(&rules, RuleName::LoginIp, &keys[0])], later),
            Acquired::Granted
        );
        assert_eq!(
            store
                .usage(&rule, k(&keys[0]).id, later)
                .await
                .unwrap()
                .count,
            1
        );
        assert!(store.tracked_keys() <= 1_000);
    }

    /// A bucket the cache evicted while a request was recording into it is
    /// merged into the bucket that took its number, not lost.
    #[tokio::test]
    async fn a_bucket_evicted_mid_request_is_merged_not_lost() {
        let rules = rules();
        let store = MemoryStore::new(&rules, 1000);
        let (a, b) = (
            slot(&rules, RuleName::LoginIp, "10.0.0.1"),
            slot(&rules, RuleName::LoginIp, "10.0.0.2"),
        );
        let id = store.bucket_id(RuleName::LoginIp, a.id);
        // Two keys in one bucket (whatever numbers their identities give):
        // the test puts both in the bucket of the first.
        let orphan = store.cache.get_with(id, Shared::default);
        lock(&orphan).record(&a, Event { at: 1, tag: 0 });
        store.cache.invalidate(&id);
        let fresh = store.cache.get_with(id, Shared::default);
        lock(&fresh).record(&a, Event { at: 2, tag: 0 });
        lock(&fresh).record(&b, Event { at: 2, tag: 0 });
        store.reweigh(id, &orphan);
        assert!(lock(&orphan).tracked.is_empty());
        let mut merged = lock(&fresh);
        assert_eq!(
            merged
                .find(RuleName::LoginIp, a.id)
                .unwrap()
                .events()
                .count(),
            2
        );
        assert_eq!(
            merged
                .find(RuleName::LoginIp, b.id)
                .unwrap()
                .events()
                .count(),
            1
        );
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
        let saved = store.windows(&rules, None, 600_000, 1000).await.unwrap();
        assert_eq!(saved.len(), 2);

        let fresh = MemoryStore::new(&rules, 1000);
        fresh.import(&rules, saved, 900_000).await;
        let back = fresh
            .windows(&rules, Some(k("a").id), 900_000, 1000)
            .await
            .unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(
            back[0].events.len(),
            1,
            "the event at 0 left its 15m window"
        );
        assert_eq!(
            fresh
                .windows(&rules, None, 900_000, 1000)
                .await
                .unwrap()
                .len(),
            2
        );
    }
}

#[cfg(test)]
mod model_tests {
    //! The store against a model that is obviously right: per (rule, key), a
    //! list of event times, counted afresh at every check. Random sequences of
    //! multi-key checks, releases, clears and clock moves, on two rules with
    //! random limits and windows over a few keys (so that keys share buckets).

    use std::collections::HashMap;

    use futures_util::FutureExt;
    use proptest::prelude::*;

    use super::tests::k;
    use super::*;
    use crate::config::Config;

    #[derive(Debug, Clone)]
    enum Op {
        /// Check-and-reserve under the IP rule, the account rule, or both at once.
        Acquire {
            ip: u8,
            account: u8,
            which: u8,
            tag: u64,
        },
        /// Give back the n-th granted event (a success under a failures rule).
        Release(prop::sample::Index),
        /// Clear a key under one rule, every event or those of one tag.
        Clear {
            account_rule: bool,
            key: u8,
            tag: Option<u64>,
        },
        /// Move the clock by up to two windows.
        Advance(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3u8, 0..3u8, 1..=3u8, 0..3u64)
                .prop_map(|(ip, account, which, tag)| Op::Acquire { ip, account, which, tag }),
            1 => any::<prop::sample::Index>().prop_map(Op::Release),
            1 => (any::<bool>(), 0..3u8, prop::option::of(0..3u64))
                .prop_map(|(account_rule, key, tag)| Op::Clear { account_rule, key, tag }),
            3 => (0..=200u32).prop_map(Op::Advance),
        ]
    }

    type Model = HashMap<(RuleName, String), Vec<Event>>;

    fn live(model: &Model, rule: &Rule, key: &str, now: Millis) -> usize {
        model.get(&(rule.name, key.to_owned())).map_or(0, |events| {
            events
                .iter()
                .filter(|e| e.at > now - rule.window_ms)
                .count()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn random_sequences_match_the_model(
            limits in (1..6u32, 1..6u32),
            // Whole seconds: the cache expires windows on its own clock, at
            // the longest window of a bucket, never sooner than a second.
            windows in (60..600i64, 60..600i64),
            ops in prop::collection::vec(op(), 1..300),
        ) {
            let mut config = Config::default().rate_limit;
            for (name, limit, window) in [(RuleName::LoginIp, limits.0, windows.0), (RuleName::LoginAccount, limits.1, windows.1)] {
                let rule = config.rules.get_mut(&name).expect("a default rule");
                rule.limit = limit;
                rule.window = format!("{window}s").parse().expect("duration");
            }
            let rules = Rules::from_config(&config);
            let ip_rule = *rules.get(RuleName::LoginIp).expect("rule");
            let account_rule = *rules.get(RuleName::LoginAccount).expect("rule");
            let step_ms = (windows.0.min(windows.1) * 1000) / 100;

            let store = MemoryStore::new(&rules, 1_000);
            let mut model = Model::new();
            let mut granted: Vec<(Rule, String, Event)> = Vec::new();
            let mut now: Millis = 1_800_000_000_000;
            for (step, op) in ops.iter().enumerate() {
                match op {
                    Op::Acquire { ip, account, which, tag } => {
                        let ip = format!("198.51.100.{ip}");
                        let account = format!("user{account}@example.com");
                        let mut slots = Vec::new();
                        if which & 1 != 0 {
                            slots.push(Slot { rule: ip_rule, id: k(&ip).id, text: &ip, tag: *tag });
                        }
                        if which & 2 != 0 {
                            slots.push(Slot { rule: account_rule, id: k(&account).id, text: &account, tag: *tag });
                        }
                        let room = slots.iter().all(|s| live(&model, &s.rule, s.text, now) < s.rule.limit as usize);
                        let got = store.acquire_now(&slots, now);
                        prop_assert_eq!(got == Acquired::Granted, room, "step {}: {:?}", step, op);
                        if let Acquired::Denied(denied) = &got {
                            // Exactly the full rules are named.
                            for d in denied {
                                let slot = slots.iter().find(|s| s.rule.name == d.rule.name).expect("a slot of the check");
                                prop_assert!(live(&model, &slot.rule, slot.text, now) >= slot.rule.limit as usize);
                            }
                        }
                        if room {
                            for s in &slots {
                                let event = Event { at: now, tag: s.tag };
                                model.entry((s.rule.name, s.text.to_owned())).or_default().push(event);
                                granted.push((s.rule, s.text.to_owned(), event));
                            }
                        }
                    }
                    Op::Release(index) => {
                        if granted.is_empty() {
                            continue;
                        }
                        let (rule, key, event) = granted.swap_remove(index.index(granted.len()));
                        store.release(&rule, k(&key).id, event).now_or_never().expect("synchronous").expect("in memory");
                        if let Some(events) = model.get_mut(&(rule.name, key.clone())) {
                            if let Some(i) = events.iter().position(|e| *e == event) {
                                events.remove(i);
                            }
                        }
                    }
                    Op::Clear { account_rule: on_account, key, tag } => {
                        let (rule, key) = if *on_account {
                            (account_rule, format!("user{key}@example.com"))
                        } else {
                            (ip_rule, format!("198.51.100.{key}"))
                        };
                        store.clear(&rule, k(&key).id, *tag).now_or_never().expect("synchronous").expect("in memory");
                        if let Some(events) = model.get_mut(&(rule.name, key.clone())) {
                            events.retain(|e| tag.is_some_and(|t| e.tag != t));
                        }
                        granted.retain(|(r, k, e)| !(r.name == rule.name && *k == key && tag.is_none_or(|t| e.tag == t)));
                    }
                    Op::Advance(by) => now += Millis::from(*by) * step_ms,
                }
                // Every usage the store reports is the model's.
                for n in 0..3 {
                    for (rule, key) in [(ip_rule, format!("198.51.100.{n}")), (account_rule, format!("user{n}@example.com"))] {
                        let usage = store.usage(&rule, k(&key).id, now).now_or_never().expect("synchronous").expect("in memory");
                        prop_assert_eq!(usage.count as usize, live(&model, &rule, &key, now), "step {}: {} {}", step, rule.name.as_str(), key);
                    }
                }
            }
        }
    }
}
