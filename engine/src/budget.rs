//! Write budgets: how much one loop turn sends, so that a turn stays short however
//! many large responses are in flight.
//!
//! Without them a loop turn sends each ready connection everything its socket takes,
//! and a socket takes a lot: the kernel grows a loopback send buffer to 4 MiB, so a
//! client that asks for a 1 MiB body and then reads 32 bytes every few seconds (a
//! slow-read attack) still costs the server the whole body at once. A thousand such
//! clients a second make every turn long, and a good client waits for the turns
//! ahead of it: its accept, then its request, each behind a whole turn. With a
//! [`TurnBudget`] a turn sends one connection at most a full share, all connections
//! together at most the turn's budget at full shares, and beyond that only small
//! responses (up to [`MIN_WRITE_SHARE`]); the rest goes out in later turns, and a small
//! response is never held back.
//!
//! The mechanism is the same in every engine; the two sizes are each engine's, set by
//! what a loop turn costs it (see [`WriteLimits`]).

/// Output up to this size is sent in the turn it is made even when the turn's budget
/// is spent: a small response (headers and a small body) is never held back.
pub const MIN_WRITE_SHARE: usize = 16 * 1024;

/// An engine's write budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteLimits {
    /// Bytes one connection is sent in one turn at most (its full share), memory and
    /// file bytes alike.
    pub share: usize,
    /// Bytes one turn sends at full shares, to all connections together. Past it, only
    /// small responses are sent in the turn; larger output waits for a full share.
    pub per_turn: usize,
}

impl WriteLimits {
    /// Checked at compile time where the limits are constants: a full share is more
    /// than a small response, and a turn holds at least two full shares.
    pub const fn new(share: usize, per_turn: usize) -> WriteLimits {
        assert!(share > MIN_WRITE_SHARE && per_turn >= 2 * share);
        WriteLimits { share, per_turn }
    }
}

/// What the current loop turn has sent, and so what the next connection may be sent.
///
/// An engine calls [`TurnBudget::start_turn`] once per turn, asks
/// [`TurnBudget::share`] before it sends to a connection (and sends it no more than that
/// in the turn), and reports what it sent (or offered) with [`TurnBudget::spend`]. A
/// connection that still has output when its share is used, or that gets no share,
/// waits in the engine's queue for a later turn; each turn serves that queue first,
/// oldest first, until [`TurnBudget::is_spent`], so every waiting connection moves and
/// gets full shares.
#[derive(Clone, Debug)]
pub struct TurnBudget {
    limits: WriteLimits,
    spent: usize,
}

impl TurnBudget {
    /// A budget with `limits` and nothing spent.
    pub fn new(limits: WriteLimits) -> TurnBudget {
        TurnBudget { limits, spent: 0 }
    }

    /// The limits it applies.
    pub fn limits(&self) -> WriteLimits {
        self.limits
    }

    /// A new loop turn: nothing spent yet.
    #[inline]
    pub fn start_turn(&mut self) {
        self.spent = 0;
    }

    /// Bytes a connection with `pending` bytes of output may be sent in this turn: a
    /// full share (or what is left of the turn's budget when that is less) while the
    /// turn has one; once it is spent, all of a small output (up to
    /// [`MIN_WRITE_SHARE`]) and nothing of a larger one, which waits for a full share in
    /// a later turn rather than going out in small pieces.
    #[inline]
    pub fn share(&self, pending: usize) -> usize {
        if !self.is_spent() {
            self.limits.share.min(self.limits.per_turn - self.spent)
        } else if pending <= MIN_WRITE_SHARE {
            MIN_WRITE_SHARE
        } else {
            0
        }
    }

    /// Counts `bytes` sent (or offered to one send) in this turn.
    #[inline]
    pub fn spend(&mut self, bytes: usize) {
        self.spent = self.spent.saturating_add(bytes);
    }

    /// The turn has no full share left (its budget is sent, give or take less than a
    /// small response): output waiting for a share waits for the next turn.
    #[inline]
    pub fn is_spent(&self) -> bool {
        self.spent > self.limits.per_turn - MIN_WRITE_SHARE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: WriteLimits = WriteLimits::new(256 * 1024, 1024 * 1024);

    #[test]
    fn full_shares_until_the_turn_budget_is_spent() {
        let mut budget = TurnBudget::new(LIMITS);
        let mut full = 0;
        while !budget.is_spent() {
            let share = budget.share(usize::MAX);
            assert!((MIN_WRITE_SHARE..=LIMITS.share).contains(&share));
            budget.spend(share);
            full += share;
        }
        assert_eq!(full, LIMITS.per_turn);
        budget.start_turn();
        assert!(!budget.is_spent());
        assert_eq!(budget.share(usize::MAX), LIMITS.share);
    }

    #[test]
    fn a_nearly_spent_turn_gives_what_is_left_and_never_less_than_a_small_response() {
        let mut budget = TurnBudget::new(LIMITS);
        budget.spend(LIMITS.per_turn - 100_000);
        assert_eq!(budget.share(usize::MAX), 100_000);
        budget.spend(100_000 - MIN_WRITE_SHARE);
        assert_eq!(budget.share(usize::MAX), MIN_WRITE_SHARE, "exactly one small response left");
        budget.spend(1);
        assert!(budget.is_spent());
    }

    #[test]
    fn a_spent_turn_sends_small_outputs_whole_and_larger_ones_nothing() {
        let mut budget = TurnBudget::new(LIMITS);
        budget.spend(usize::MAX);
        assert!(budget.is_spent(), "no overflow");
        assert_eq!(budget.share(1), MIN_WRITE_SHARE);
        assert_eq!(budget.share(MIN_WRITE_SHARE), MIN_WRITE_SHARE);
        assert_eq!(budget.share(MIN_WRITE_SHARE + 1), 0);
    }
}
