//! Connection deadlines: one [`TimerWheel`] for the whole loop, the tick each connection
//! is armed for, and the filter that drops entries gone stale.
//!
//! Entries are never removed from the wheel. A connection keeps an [`Armed`]: the tick
//! of its one live entry. Arming for a tick no earlier than that is a no-op (the live
//! entry fires first and the connection re-arms then, since
//! `Connection::handle_timeout` ignores early calls); arming earlier adds an entry and
//! makes the old one stale. When entries fire, [`Armed::fire`] keeps only the live one,
//! and the [`Slab`](crate::Slab) generation in the [`ConnId`] drops entries of closed
//! connections.

use crate::accept::{AcceptPolicy, Spare};
use crate::shutdown::Drain;
use crate::slab::ConnId;
use crate::wheel::TimerWheel;
use std::time::{Duration, Instant};

/// Resolution of the deadline wheel: a deadline fires at most this late.
pub const TICK: Duration = Duration::from_millis(100);
const BUCKETS: usize = 1024;

/// The tick a connection's live wheel entry is for (none by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Armed(Option<u64>);

impl Armed {
    /// Whether an entry that fired for `tick` is this connection's live one; if so the
    /// connection is no longer armed.
    #[inline]
    pub fn fire(&mut self, tick: u64) -> bool {
        if self.0 == Some(tick) {
            self.0 = None;
            true
        } else {
            false
        }
    }

    /// Whether an entry is live.
    pub fn is_armed(&self) -> bool {
        self.0.is_some()
    }
}

/// A deadline that came due: which connection, and which arming of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expired {
    /// The connection (possibly closed since: check the slab).
    pub id: ConnId,
    /// The tick it was armed for (check with [`Armed::fire`]).
    pub tick: u64,
}

/// The deadlines of one loop.
#[derive(Debug)]
pub struct Deadlines {
    wheel: TimerWheel<Expired>,
}

impl Deadlines {
    /// Deadlines measured from `now`, at [`TICK`] resolution.
    pub fn new(now: Instant) -> Self {
        Deadlines { wheel: TimerWheel::new(now, TICK, BUCKETS) }
    }

    /// Arms `id` (whose live entry is `armed`) to fire at `at`. Returns whether a new
    /// entry was added (so the loop's next wake-up may have moved earlier).
    #[inline]
    pub fn arm(&mut self, armed: &mut Armed, id: ConnId, at: Instant) -> bool {
        let tick = self.wheel.tick_for(at);
        if armed.0.is_some_and(|live| live <= tick) {
            return false;
        }
        armed.0 = Some(self.wheel.arm(at, Expired { id, tick }));
        true
    }

    /// When the earliest entry fires, if any.
    pub fn next_expiry(&mut self) -> Option<Instant> {
        self.wheel.next_expiry()
    }

    /// Moves every entry due by `now` into `due` (stale ones included: filter them with
    /// the slab and [`Armed::fire`]).
    pub fn expire(&mut self, now: Instant, due: &mut Vec<Expired>) {
        self.wheel.expire(now, due);
    }

    /// Entries in the wheel, stale ones included.
    pub fn len(&self) -> usize {
        self.wheel.len()
    }

    /// True when no entry is in the wheel.
    pub fn is_empty(&self) -> bool {
        self.wheel.is_empty()
    }
}

/// When a loop must wake next for its own reasons, whatever its I/O model: the earliest
/// connection deadline, the drain deadline, or a paused accept's retry. `None`: block
/// until I/O.
pub fn next_wake<S: Spare>(deadlines: &mut Deadlines, drain: &Drain, accept: &AcceptPolicy<S>) -> Option<Instant> {
    [deadlines.next_expiry(), drain.deadline(), accept.retry_at()].into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Slab;

    fn fired(deadlines: &mut Deadlines, now: Instant, slab: &mut Slab<Armed>) -> Vec<ConnId> {
        let mut due = Vec::new();
        deadlines.expire(now, &mut due);
        due.into_iter().filter(|e| slab.get_mut(e.id).is_some_and(|armed| armed.fire(e.tick))).map(|e| e.id).collect()
    }

    #[test]
    fn a_later_deadline_keeps_the_earlier_entry_and_an_earlier_one_makes_it_stale() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0);
        let mut slab = Slab::new();
        let id = slab.insert(Armed::default());
        let armed = slab.get_mut(id).unwrap();
        assert!(d.arm(armed, id, t0 + Duration::from_secs(5)));
        assert!(!d.arm(armed, id, t0 + Duration::from_secs(9)), "later: the live entry stays");
        assert!(!d.arm(armed, id, t0 + Duration::from_secs(5)), "same tick: nothing new");
        assert!(d.arm(armed, id, t0 + Duration::from_secs(2)), "earlier: a new entry");
        assert_eq!(d.len(), 2);
        assert_eq!(d.next_expiry(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(fired(&mut d, t0 + Duration::from_secs(2), &mut slab), vec![id]);
        assert!(!slab.get(id).unwrap().is_armed());
        // The superseded 5 s entry fires as stale and is dropped.
        assert_eq!(fired(&mut d, t0 + Duration::from_secs(6), &mut slab), vec![]);
        assert!(d.is_empty());
    }

    #[test]
    fn entries_of_a_closed_connection_are_dropped_even_when_its_slot_is_reused() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0);
        let mut slab = Slab::new();
        let old = slab.insert(Armed::default());
        d.arm(slab.get_mut(old).unwrap(), old, t0 + Duration::from_secs(1));
        slab.remove(old);
        let new = slab.insert(Armed::default());
        assert_eq!(new.index, old.index);
        d.arm(slab.get_mut(new).unwrap(), new, t0 + Duration::from_secs(3));
        assert_eq!(fired(&mut d, t0 + Duration::from_secs(1), &mut slab), vec![], "old entry: stale");
        assert_eq!(fired(&mut d, t0 + Duration::from_secs(3), &mut slab), vec![new]);
    }

    #[test]
    fn the_loop_wakes_for_the_earliest_of_deadlines_drain_and_accept_retry() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0);
        let mut drain = Drain::new(Duration::from_secs(3), Duration::ZERO);
        let mut accept = AcceptPolicy::new();
        assert_eq!(next_wake(&mut d, &drain, &accept), None, "nothing to wait for: block");
        let mut armed = Armed::default();
        d.arm(&mut armed, ConnId { index: 0, generation: 0 }, t0 + Duration::from_secs(5));
        assert_eq!(next_wake(&mut d, &drain, &accept), Some(t0 + Duration::from_secs(5)));
        drain.begin(t0);
        assert_eq!(next_wake(&mut d, &drain, &accept), Some(t0 + Duration::from_secs(3)));
        assert_eq!(accept.on_error(libc::ENOMEM, t0), crate::Next::Pause);
        assert_eq!(next_wake(&mut d, &drain, &accept), Some(t0 + crate::accept::RETRY));
    }

    #[test]
    fn nothing_fires_before_its_deadline() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0);
        let mut slab = Slab::new();
        let id = slab.insert(Armed::default());
        d.arm(slab.get_mut(id).unwrap(), id, t0 + Duration::from_millis(250));
        assert_eq!(fired(&mut d, t0 + Duration::from_millis(200), &mut slab), vec![]);
        assert_eq!(fired(&mut d, t0 + Duration::from_millis(300), &mut slab), vec![id]);
    }
}
