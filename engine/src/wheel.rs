//! A coarse hashed timing wheel for connection deadlines.
//!
//! Deadlines here are seconds long (keep-alive, header read), so a resolution of
//! `tick` (default 100 ms) is plenty and every operation is O(1). Entries are never
//! removed: a connection whose deadline moved later is simply re-armed when its old
//! entry fires (the engine asks the connection again when its old entry fires), and entries for
//! closed connections are recognised by a generation in the key.

use std::time::{Duration, Instant};

/// A timing wheel of keys `K` (an engine uses slot + generation).
#[derive(Debug)]
pub struct TimerWheel<K> {
    origin: Instant,
    tick: Duration,
    /// The first tick not yet expired.
    current: u64,
    slots: Vec<Vec<(u64, K)>>,
    len: usize,
    /// The earliest armed tick, when known (recomputed lazily after it expires).
    earliest: Option<u64>,
}

impl<K: Copy> TimerWheel<K> {
    /// A wheel starting at `origin` with resolution `tick` and `slots` buckets.
    pub fn new(origin: Instant, tick: Duration, slots: usize) -> Self {
        let slots = slots.max(1);
        TimerWheel {
            origin,
            tick: tick.max(Duration::from_millis(1)),
            current: 0,
            slots: (0..slots).map(|_| Vec::new()).collect(),
            len: 0,
            earliest: None,
        }
    }

    /// A wheel with 100 ms ticks and 1024 buckets.
    pub fn with_defaults(origin: Instant) -> Self {
        Self::new(origin, Duration::from_millis(100), 1024)
    }

    /// The tick at or after `at` (rounded up, so nothing fires early).
    #[inline]
    fn tick_of(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        let t = self.tick.as_nanos();
        d.as_nanos().div_ceil(t) as u64
    }

    /// The instant a tick starts.
    fn instant_of(&self, tick: u64) -> Instant {
        self.origin + self.tick * (tick.min(u32::MAX as u64) as u32)
    }

    /// Arms `key` to fire at `at` (or at the next tick if `at` has passed). Returns the
    /// tick it was armed for, which a caller may keep to avoid re-arming.
    pub fn arm(&mut self, at: Instant, key: K) -> u64 {
        let tick = self.tick_of(at).max(self.current);
        let n = self.slots.len();
        self.slots[(tick % n as u64) as usize].push((tick, key));
        if self.len == 0 || self.earliest.is_some_and(|e| tick < e) {
            self.earliest = Some(tick);
        }
        self.len += 1;
        tick
    }

    /// The tick `at` falls into, for comparing with a value `arm` returned.
    #[inline]
    pub fn tick_for(&self, at: Instant) -> u64 {
        self.tick_of(at).max(self.current)
    }

    /// Entries armed and not yet expired (stale ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// When the engine must wake next, if anything is armed. O(1) except right after
    /// the earliest entry expired, when one round of buckets is scanned.
    pub fn next_expiry(&mut self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        if self.earliest.is_none() {
            self.earliest = self.scan_earliest();
        }
        self.earliest.map(|t| self.instant_of(t))
    }

    fn scan_earliest(&self) -> Option<u64> {
        let n = self.slots.len() as u64;
        let mut best: Option<u64> = None;
        for i in 0..n {
            let tick = self.current + i;
            let slot = &self.slots[(tick % n) as usize];
            if let Some(min) = slot.iter().map(|(t, _)| *t).min() {
                if min == tick {
                    return Some(tick);
                }
                best = Some(best.map_or(min, |b| b.min(min)));
            }
        }
        best
    }

    /// Moves every key whose tick has come by `now` into `due`.
    pub fn expire(&mut self, now: Instant, due: &mut Vec<K>) {
        let now_tick = {
            let d = now.saturating_duration_since(self.origin);
            (d.as_nanos() / self.tick.as_nanos()) as u64
        };
        if now_tick < self.current {
            return;
        }
        let n = self.slots.len() as u64;
        // Past a full round every bucket is visited once.
        let steps = (now_tick + 1 - self.current).min(n);
        for i in 0..steps {
            let slot = &mut self.slots[((self.current + i) % n) as usize];
            let before = slot.len();
            slot.retain(|&(t, k)| {
                if t <= now_tick {
                    due.push(k);
                    false
                } else {
                    true
                }
            });
            self.len -= before - slot.len();
        }
        self.current = self.current.max(now_tick + 1);
        if self.earliest.is_some_and(|e| e <= now_tick) || self.len == 0 {
            self.earliest = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_no_earlier_than_armed_and_once() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, Duration::from_millis(100), 8);
        w.arm(t0 + Duration::from_millis(250), 1u32);
        w.arm(t0 + Duration::from_secs(5), 2u32);
        let mut due = Vec::new();
        w.expire(t0 + Duration::from_millis(200), &mut due);
        assert!(due.is_empty());
        assert_eq!(w.next_expiry(), Some(t0 + Duration::from_millis(300)));
        w.expire(t0 + Duration::from_millis(300), &mut due);
        assert_eq!(due, vec![1]);
        due.clear();
        // Wraps the 8-bucket wheel several times before the 5 s entry is due.
        w.expire(t0 + Duration::from_millis(4900), &mut due);
        assert!(due.is_empty());
        assert_eq!(w.next_expiry(), Some(t0 + Duration::from_secs(5)));
        w.expire(t0 + Duration::from_secs(60), &mut due);
        assert_eq!(due, vec![2]);
        assert!(w.is_empty());
        assert_eq!(w.next_expiry(), None);
    }

    #[test]
    fn past_deadline_fires_on_next_expire() {
        let t0 = Instant::now();
        let mut w = TimerWheel::with_defaults(t0);
        let mut due = Vec::new();
        w.expire(t0 + Duration::from_secs(3), &mut due);
        w.arm(t0, 7u8);
        w.expire(t0 + Duration::from_millis(3100), &mut due);
        assert_eq!(due, vec![7]);
    }
}
