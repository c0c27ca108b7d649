//! The loop timeout: one `Timeout` operation for the whole ring, at the earliest of
//! the next connection deadline, the drain deadline and the accept retry; moved earlier
//! with `TimeoutUpdate` when a wake hint asks for it. [`LoopTimer`] owns its state and
//! the timespecs its operations read.

use super::token::{Op, Token};
use crate::sys::Ring;
use duet_engine::TICK;
use io_uring::{opcode, types};
use std::io;
use std::time::{Duration, Instant};

/// How long from `now` until `at`, at least a millisecond (a zero timeout would spin).
fn timespec_until(at: Instant, now: Instant) -> types::Timespec {
    types::Timespec::from(at.saturating_duration_since(now).max(Duration::from_millis(1)))
}

/// The loop's one timeout and its update, with the memory they read.
pub(super) struct LoopTimer {
    /// When the one timeout in flight fires (`None`: no timeout in flight).
    at: Option<Instant>,
    /// Read by the timeout in flight; written only while none is.
    ts: Box<types::Timespec>,
    /// Read by the update in flight; written only while none is.
    update_ts: Box<types::Timespec>,
    update_in_flight: bool,
    /// The earliest wake-up asked for since the timeout was last armed.
    wake_hint: Option<Instant>,
}

impl LoopTimer {
    pub(super) fn new() -> LoopTimer {
        LoopTimer {
            at: None,
            ts: Box::new(types::Timespec::new()),
            update_ts: Box::new(types::Timespec::new()),
            update_in_flight: false,
            wake_hint: None,
        }
    }

    /// Keeps exactly one timeout in flight for the loop's next deadline, `next_wake`
    /// (asked only when none is in flight).
    ///
    /// The timespecs are boxed in `self`, which the worker owns: its guard reaps every
    /// completion before the worker is freed, or leaks it.
    pub(super) fn arm(&mut self, ring: &mut Ring, next_wake: impl FnOnce() -> Option<Instant>) -> io::Result<()> {
        let now = Instant::now();
        match self.at {
            None => {
                self.wake_hint = None;
                if let Some(at) = next_wake() {
                    *self.ts = timespec_until(at, now);
                    let entry =
                        opcode::Timeout::new(&*self.ts).build().user_data(Token::of_loop(Op::Timer).user_data());
                    // SAFETY: the timeout reads the boxed `ts`, which stays put and is
                    // written only while no timeout is in flight (`at` is None until this
                    // one's completion); the worker owning this timer outlives the
                    // operation (see above).
                    unsafe { ring.push(&entry) }?;
                    self.at = Some(at);
                }
            }
            Some(armed) => {
                let Some(hint) = self.wake_hint else { return Ok(()) };
                if hint + TICK / 2 >= armed {
                    self.wake_hint = None;
                } else if !self.update_in_flight {
                    self.wake_hint = None;
                    *self.update_ts = timespec_until(hint, now);
                    let timer = Token::of_loop(Op::Timer).user_data();
                    let entry = opcode::TimeoutUpdate::new(timer, &*self.update_ts)
                        .build()
                        .user_data(Token::of_loop(Op::TimerUpdate).user_data());
                    // SAFETY: the update reads the boxed `update_ts`, which stays put
                    // and is written only while no update is in flight
                    // (`update_in_flight`); the worker owning this timer outlives the
                    // operation (see above).
                    unsafe { ring.push(&entry) }?;
                    self.update_in_flight = true;
                    self.at = Some(hint);
                }
            }
        }
        Ok(())
    }

    /// Asks the loop to wake up by `at` (the timeout moves earlier if needed).
    #[inline]
    pub(super) fn note_wake(&mut self, at: Instant) {
        self.wake_hint = Some(self.wake_hint.map_or(at, |hint| hint.min(at)));
    }

    /// The loop timeout fired or was cancelled: none is in flight any more.
    pub(super) fn on_fired(&mut self) {
        self.at = None;
    }

    /// The update of the loop timeout completed.
    pub(super) fn on_updated(&mut self) {
        self.update_in_flight = false;
    }
}
