//! The exact sliding window: a key is blocked while it holds `limit` counted
//! events inside the last `window`. Each event is kept with its time, so there
//! is no burst at any boundary; a blocked attempt is not an event, so a window
//! never holds more than `limit` entries.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::clock::Millis;

/// One counted event. `tag` says whom it was made against (for example which
/// account an IP's failure targeted), so that part of a window can be cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at: Millis,
    pub tag: u64,
}

/// Events kept inline before spilling to the heap: most tracked keys hold one
/// (a single failure), and memory per key is what bounds a flood of addresses.
const INLINE_EVENTS: usize = 1;

/// The counted events of one (rule, key), oldest first. A window never holds
/// more than its rule's limit, so removing from the front is cheap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    events: SmallVec<[Event; INLINE_EVENTS]>,
}

/// The state of a window after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Events inside the window, including one just reserved.
    pub count: u32,
    /// Milliseconds until the oldest event leaves the window (0 when empty).
    pub reset_ms: Millis,
}

impl Window {
    /// Restores a window from saved events.
    pub fn from_events(mut events: Vec<Event>) -> Self {
        events.sort_by_key(|e| e.at);
        Self {
            events: SmallVec::from_vec(events),
        }
    }

    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// Drops events that are no longer inside `(now - window, now]`.
    pub fn prune(&mut self, now: Millis, window_ms: Millis) {
        let horizon = now.saturating_sub(window_ms);
        let stale = self.events.partition_point(|e| e.at <= horizon);
        if stale > 0 {
            self.events.drain(..stale);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The usage at `now`; call [`Window::prune`] first.
    pub fn usage(&self, now: Millis, window_ms: Millis) -> Usage {
        let count = u32::try_from(self.events.len()).unwrap_or(u32::MAX);
        let reset_ms = self
            .events
            .first()
            .map_or(0, |e| (e.at.saturating_add(window_ms) - now).max(0));
        Usage { count, reset_ms }
    }

    /// Whether one more event fits; call [`Window::prune`] first.
    pub fn has_room(&self, limit: u32) -> bool {
        self.events.len() < limit as usize
    }

    /// Records an event (the caller checked [`Window::has_room`]).
    pub fn push(&mut self, event: Event) {
        // Keep order even if the clock stepped back.
        let pos = self.events.partition_point(|e| e.at <= event.at);
        self.events.insert(pos, event);
    }

    /// Removes one event equal to `event`; false if there was none.
    pub fn remove(&mut self, event: Event) -> bool {
        match self.events.iter().position(|e| *e == event) {
            Some(i) => {
                self.events.remove(i);
                true
            }
            None => false,
        }
    }

    /// Removes every event, or those with `tag`.
    pub fn clear(&mut self, tag: Option<u64>) {
        match tag {
            None => self.events.clear(),
            Some(t) => self.events.retain(|e| e.tag != t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Millis = 900_000;

    fn ev(at: Millis) -> Event {
        Event { at, tag: 0 }
    }

    #[test]
    fn blocks_at_limit_and_frees_exactly_one_window_later() {
        let mut w = Window::default();
        for t in [0, 10, 20, 30, 40] {
            w.prune(t, W);
            assert!(w.has_room(5));
            w.push(ev(t));
        }
        w.prune(40, W);
        assert!(!w.has_room(5));
        assert_eq!(
            w.usage(40, W),
            Usage {
                count: 5,
                reset_ms: W - 40
            }
        );
        // Just before the first event leaves: still blocked.
        w.prune(W - 1, W);
        assert!(!w.has_room(5));
        // When it leaves, exactly one slot frees: no burst at a boundary.
        w.prune(W, W);
        assert!(w.has_room(5));
        w.push(ev(W));
        assert!(!w.has_room(5));
        w.prune(W + 10, W);
        assert!(w.has_room(5));
    }

    #[test]
    fn remove_and_clear_by_tag() {
        let mut w = Window::default();
        w.push(Event { at: 1, tag: 7 });
        w.push(Event { at: 2, tag: 8 });
        w.push(Event { at: 2, tag: 7 });
        assert!(w.remove(Event { at: 2, tag: 7 }));
        assert!(!w.remove(Event { at: 2, tag: 7 }));
        w.clear(Some(7));
        assert_eq!(
            w.events().copied().collect::<Vec<_>>(),
            vec![Event { at: 2, tag: 8 }]
        );
        w.clear(None);
        assert!(w.is_empty());
    }

    #[test]
    fn stays_ordered_when_the_clock_steps_back() {
        let mut w = Window::default();
        w.push(ev(100));
        w.push(ev(50));
        let times: Vec<Millis> = w.events().map(|e| e.at).collect();
        assert_eq!(times, vec![50, 100]);
        let restored = Window::from_events(vec![ev(9), ev(3)]);
        assert_eq!(restored.events().next().unwrap().at, 3);
    }
}
