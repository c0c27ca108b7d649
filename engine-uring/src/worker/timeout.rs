//! The loop timeout: one `Timeout` operation for the whole ring, at the earliest of
//! the next connection deadline, the drain deadline and the accept retry; moved earlier
//! with `TimeoutUpdate` when a wake hint asks for it.

use super::token::{loop_token, Op};
use super::Worker;
use duet_engine::{next_wake, TICK};
use io_uring::{opcode, types};
use std::io;
use std::time::{Duration, Instant};

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How long from `now` until `at`, at least a millisecond (a zero timeout would spin).
fn timespec_until(at: Instant, now: Instant) -> types::Timespec {
    types::Timespec::from(at.saturating_duration_since(now).max(Duration::from_millis(1)))
}

impl Worker {
    /// Keeps exactly one timeout in flight for the loop's next deadline.
    pub(super) fn arm_loop_timeout(&mut self) -> io::Result<()> {
        let now = Instant::now();
        match self.timer_at {
            None => {
                self.wake_hint = None;
                let next = next_wake(&mut self.deadlines, &self.drain, &self.accept);
                if let Some(at) = next {
                    *self.timer_ts = timespec_until(at, now);
                    let entry = opcode::Timeout::new(&*self.timer_ts).build().user_data(loop_token(Op::Timer));
                    // SAFETY: the timeout reads the boxed `timer_ts`, which stays put and
                    // is written only while no timeout is in flight (`timer_at` is None
                    // until this one's completion); the worker outlives the operation.
                    unsafe { self.ring.push(&entry) }?;
                    self.timer_at = Some(at);
                }
            }
            Some(armed) => {
                let Some(hint) = self.wake_hint else { return Ok(()) };
                if hint + TICK / 2 >= armed {
                    self.wake_hint = None;
                } else if !self.timer_update_inflight {
                    self.wake_hint = None;
                    *self.timer_update_ts = timespec_until(hint, now);
                    let entry = opcode::TimeoutUpdate::new(loop_token(Op::Timer), &*self.timer_update_ts)
                        .build()
                        .user_data(loop_token(Op::TimerUpdate));
                    // SAFETY: the update reads the boxed `timer_update_ts`, which stays
                    // put and is written only while no update is in flight
                    // (`timer_update_inflight`); the worker outlives the operation.
                    unsafe { self.ring.push(&entry) }?;
                    self.timer_update_inflight = true;
                    self.timer_at = Some(hint);
                }
            }
        }
        Ok(())
    }

    /// Asks the loop to wake up by `at` (the timeout moves earlier if needed).
    pub(super) fn note_wake(&mut self, at: Instant) {
        self.wake_hint = earliest(self.wake_hint, Some(at));
    }

    /// The loop timeout fired or was cancelled: none is in flight any more.
    pub(super) fn on_loop_timeout(&mut self) {
        self.timer_at = None;
    }

    /// The update of the loop timeout completed.
    pub(super) fn on_loop_timeout_update(&mut self) {
        self.timer_update_inflight = false;
    }
}
