//! Write budgets: how much one loop turn sends, so that a turn stays short however
//! many large responses are in flight.
//!
//! Without them a loop turn sends each ready connection everything its socket takes,
//! and a socket takes a lot: the kernel grows a loopback send buffer to 4 MiB, so a
//! client that asks for a 1 MiB body and then reads 32 bytes every few seconds (a
//! slow-read attack) still costs the server the whole body at once. A thousand such
//! clients a second make every turn long, and a good client waits for the turns
//! ahead of it: its accept, then its request, each behind a whole turn. With the
//! budgets a turn sends at most [`TURN_WRITE_BUDGET`] at full shares plus
//! [`MIN_WRITE_SHARE`] per connection it drives; the rest of each response goes out in
//! later turns, and a small response is never held back.

/// Bytes one connection is sent in one turn at most (its full share), memory and file
/// bytes alike. Large enough that a large transfer costs only one more loop turn (an
/// `epoll_wait` or a completion) per 256 KiB; small enough that a few shares take
/// well under a millisecond.
pub const WRITE_BUDGET: usize = 256 * 1024;

/// Bytes one turn sends at full shares, to all connections together. Past it, each
/// connection driven in the turn is sent at most [`MIN_WRITE_SHARE`].
pub const TURN_WRITE_BUDGET: usize = 1024 * 1024;

/// Bytes any connection may be sent in a turn even when the turn's budget is spent: a
/// small response (headers and a small body) always leaves in the turn it is made.
pub const MIN_WRITE_SHARE: usize = 16 * 1024;

// A turn holds several full shares, and the minimum is below a full share.
const _: () = assert!(MIN_WRITE_SHARE < WRITE_BUDGET && 2 * WRITE_BUDGET <= TURN_WRITE_BUDGET);

/// What the current loop turn has sent, and so what the next connection may be sent.
///
/// An engine calls [`TurnBudget::start_turn`] once per turn, asks [`TurnBudget::share`]
/// before it sends to a connection (and sends no more than that to it in the turn), and
/// reports what it sent (or offered) with [`TurnBudget::spend`]. Connections that
/// still have output when their share is used go on waiting in the engine's own queue
/// (a readiness engine) or in their next completion (a completion engine); a readiness
/// engine serves its queue first each turn, oldest first, while
/// [`TurnBudget::is_spent`] is false, so every waiting connection moves.
#[derive(Clone, Debug, Default)]
pub struct TurnBudget {
    spent: usize,
}

impl TurnBudget {
    /// A budget with nothing spent.
    pub fn new() -> TurnBudget {
        TurnBudget::default()
    }

    /// A new loop turn: nothing spent yet.
    #[inline]
    pub fn start_turn(&mut self) {
        self.spent = 0;
    }

    /// Bytes the next connection may be sent in this turn: a full share
    /// ([`WRITE_BUDGET`]) while the turn's budget lasts, what is left of it when that
    /// is less, and never less than [`MIN_WRITE_SHARE`].
    #[inline]
    pub fn share(&self) -> usize {
        WRITE_BUDGET.min(TURN_WRITE_BUDGET.saturating_sub(self.spent)).max(MIN_WRITE_SHARE)
    }

    /// Counts `bytes` sent (or offered to one send) in this turn.
    #[inline]
    pub fn spend(&mut self, bytes: usize) {
        self.spent = self.spent.saturating_add(bytes);
    }

    /// The turn sent its [`TURN_WRITE_BUDGET`]: connections still waiting for a share
    /// wait for the next turn.
    #[inline]
    pub fn is_spent(&self) -> bool {
        self.spent >= TURN_WRITE_BUDGET
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_shares_until_the_turn_budget_is_spent_then_the_minimum() {
        let mut budget = TurnBudget::new();
        let mut full = 0;
        while !budget.is_spent() {
            let share = budget.share();
            assert!(share <= WRITE_BUDGET);
            budget.spend(share);
            full += share;
        }
        assert_eq!(full, TURN_WRITE_BUDGET);
        assert_eq!(budget.share(), MIN_WRITE_SHARE);
        budget.spend(usize::MAX);
        assert_eq!(budget.share(), MIN_WRITE_SHARE, "no overflow, still the minimum");
        budget.start_turn();
        assert!(!budget.is_spent());
        assert_eq!(budget.share(), WRITE_BUDGET);
    }

    #[test]
    fn a_turn_nearly_spent_gives_what_is_left_but_at_least_the_minimum() {
        let mut budget = TurnBudget::new();
        budget.spend(TURN_WRITE_BUDGET - 100_000);
        assert_eq!(budget.share(), 100_000);
        budget.spend(100_000 - 1000);
        assert_eq!(budget.share(), MIN_WRITE_SHARE);
        assert!(!budget.is_spent());
    }
}
