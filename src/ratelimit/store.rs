//! The seam between the limiter and where windows live: check-and-reserve,
//! release, clear, inspect, export and import. [`super::memory::MemoryStore`]
//! keeps them in process; a shared store (Redis) implements the same trait.

use async_trait::async_trait;

use super::key::{self, KeyId, LimitKey};
use super::rules::{Rule, RuleName, Rules};
use super::window::{Event, Usage};
use crate::clock::Millis;

/// One slot to reserve: a rule, its key (identity and text), and the
/// event's tag.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    pub rule: Rule,
    pub id: KeyId,
    pub text: &'a str,
    pub tag: u64,
}

impl Slot<'_> {
    /// The key as a window keeps it (see [`key::shown`]).
    pub fn key(&self) -> LimitKey {
        LimitKey {
            id: self.id,
            shown: key::shown(self.rule.name.key_kind(), self.id, self.text),
        }
    }
}
/// A rule's usage after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotUsage {
    pub rule: Rule,
    pub usage: Usage,
}

/// The answer of [`LimitStore::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// Every slot had room; one event at `now` was recorded in each.
    Granted,
    /// At least one slot was full; nothing was recorded. The full ones.
    Denied(Vec<SlotUsage>),
}

/// One window, for inspection and persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowState {
    pub rule: RuleName,
    pub key: LimitKey,
    pub events: Vec<Event>,
}

/// The store could not be reached or did not answer in time. The limiter
/// fails closed on it: a guarded request that cannot be checked is refused.
#[derive(Debug, thiserror::Error)]
#[error("rate-limit store unavailable: {0}")]
pub struct LimitError(pub String);

pub type LimitResult<T> = Result<T, LimitError>;

/// Where rate-limit windows live. The in-process store never fails; a shared
/// one (Redis) can, and then says so instead of guessing.
#[async_trait]
pub trait LimitStore: Send + Sync + 'static {
    /// Checks every slot and, only if all have room, records one event at `now`
    /// in each — one atomic step for all the slots' keys.
    async fn acquire(&self, slots: &[Slot<'_>], now: Millis) -> LimitResult<Acquired>;
    /// Gives back an event recorded by `acquire`.
    async fn release(&self, rule: &Rule, key: KeyId, event: Event) -> LimitResult<()>;
    /// A key's usage under a rule at `now`, without reserving.
    async fn usage(&self, rule: &Rule, key: KeyId, now: Millis) -> LimitResult<Usage>;
    /// Forgets a key's events under a rule, or only those with `tag`.
    async fn clear(&self, rule: &Rule, key: KeyId, tag: Option<u64>) -> LimitResult<()>;
    /// Live windows (at most `max`), only `key`'s when given, pruned to `now`.
    async fn windows(
        &self,
        rules: &Rules,
        key: Option<KeyId>,
        now: Millis,
        max: usize,
    ) -> LimitResult<Vec<WindowState>>;
    /// Replaces windows with saved ones (events outside their window are dropped).
    async fn import(&self, rules: &Rules, windows: Vec<WindowState>, now: Millis);
    /// Records that `account` logged in from `ip` at `at` (for the
    /// `login_account` exemption), kept for `ttl_ms`. A shared store tells
    /// every instance; the in-process one leaves it to the limiter's own cache.
    async fn remember_device(
        &self,
        _account: KeyId,
        _ip: KeyId,
        _at: Millis,
        _ttl_ms: Millis,
    ) -> LimitResult<()> {
        Ok(())
    }
    /// Forgets the devices of `account` remembered at or before `before`, for
    /// every instance; one remembered later (a sign-in after the recovery)
    /// stays, so hearing a recovery again, or late, does no harm.
    async fn forget_devices(&self, _account: KeyId, _before: Millis) -> LimitResult<()> {
        Ok(())
    }
    /// Whether an instance recorded `account` from `ip` after `since`.
    async fn known_device(&self, _account: KeyId, _ip: KeyId, _since: Millis) -> LimitResult<bool> {
        Ok(false)
    }
    /// Whether the windows outlive this process by themselves (a shared store):
    /// then they are neither saved at shutdown nor imported at start-up.
    fn is_shared(&self) -> bool {
        false
    }
    /// How many keys this process tracks; `None` for a shared store, whose
    /// keys are counted where they live.
    fn tracked_keys(&self) -> Option<u64>;
}
