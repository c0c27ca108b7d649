//! Shutdown: the request shared by the binary and every worker, and the drain each
//! worker runs when it turns graceful.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::info;

/// The state of a [`Shutdown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownState {
    /// Serving.
    Running,
    /// Stop accepting, finish in-flight responses, close idle connections.
    Graceful,
    /// Stop now.
    Immediate,
}

type WakeFn = Box<dyn Fn() + Send + Sync>;

/// A shutdown request shared by the binary and every worker. Workers register a waker
/// (an engine writes to its eventfd) so a blocked loop notices at once.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

#[derive(Default)]
struct ShutdownInner {
    state: AtomicU8,
    wakers: Mutex<Vec<WakeFn>>,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown").field("state", &self.state()).finish()
    }
}

impl Shutdown {
    /// A shutdown handle in the running state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current state.
    pub fn state(&self) -> ShutdownState {
        match self.inner.state.load(Ordering::Acquire) {
            0 => ShutdownState::Running,
            1 => ShutdownState::Graceful,
            _ => ShutdownState::Immediate,
        }
    }

    /// Asks for a graceful shutdown (a second call escalates to immediate).
    pub fn trigger(&self) {
        let prev = self.inner.state.fetch_add(1, Ordering::AcqRel);
        if prev >= 2 {
            self.inner.state.store(2, Ordering::Release);
        }
        self.wake();
    }

    /// Asks for an immediate stop.
    pub fn force(&self) {
        self.inner.state.store(2, Ordering::Release);
        self.wake();
    }

    /// Calls every registered waker (a state change, or anything else every worker
    /// must look at at once: a replaced site).
    pub(crate) fn wake(&self) {
        if let Ok(wakers) = self.inner.wakers.lock() {
            for w in wakers.iter() {
                w();
            }
        }
    }

    /// Registers a waker called on every state change, and when the site is replaced
    /// (see [`run_workers`](crate::run_workers)). The caller checks [`Shutdown::state`]
    /// after registering, so no change is missed.
    pub fn register_waker(&self, waker: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut wakers) = self.inner.wakers.lock() {
            wakers.push(Box::new(waker));
        }
    }
}

/// A worker's graceful drain: when it started, when its lame-duck period ends, and
/// when it gives up on busy connections.
///
/// The lame duck is what keeps a drain from costing a keep-alive client an error: a
/// client may have its next request on the wire when the drain begins, and closing
/// its idle connection then (as nginx and Go's `Server.Shutdown` do) makes that
/// request meet an end of stream or a reset. Within the period an idle connection
/// stays open and its next request is answered with `Connection: close`; only those
/// idle for the whole period are closed at its end.
#[derive(Debug)]
pub struct Drain {
    timeout: Duration,
    lame_duck: Duration,
    started: Option<Instant>,
}

impl Drain {
    /// A drain that will give connections `timeout` to finish, the first `lame_duck`
    /// of it (at most `timeout`) a lame-duck period.
    pub fn new(timeout: Duration, lame_duck: Duration) -> Drain {
        Drain { timeout, lame_duck: lame_duck.min(timeout), started: None }
    }

    /// Starts draining at `now`; returns true only the first time (the caller then
    /// stops accepting and asks every connection to finish).
    pub fn begin(&mut self, now: Instant) -> bool {
        if self.started.is_some() {
            return false;
        }
        self.started = Some(now);
        true
    }

    /// When the lame-duck period ends, once the drain has begun.
    pub fn lame_duck_end(&self) -> Option<Instant> {
        self.started.map(|t| t + self.lame_duck)
    }

    /// How long connections get to finish.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether draining has begun.
    pub fn is_draining(&self) -> bool {
        self.started.is_some()
    }

    /// When the drain gives up, once it has begun.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.map(|t| t + self.timeout)
    }

    /// Whether the loop should stop now, given the shutdown `state`, the connections
    /// still `open`, and the time. Logs when the drain deadline cuts connections off.
    pub fn should_stop(&self, state: ShutdownState, open: usize, now: Instant) -> bool {
        match state {
            ShutdownState::Running => false,
            ShutdownState::Immediate => true,
            ShutdownState::Graceful => match self.deadline() {
                None => false,
                Some(_) if open == 0 => true,
                Some(deadline) if now >= deadline => {
                    info!("drain deadline passed with {open} connections open; closing them");
                    true
                }
                Some(_) => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_is_graceful_then_immediate_and_wakes_every_waker() {
        let shutdown = Shutdown::new();
        let woken = Arc::new(AtomicU8::new(0));
        for _ in 0..2 {
            let woken = Arc::clone(&woken);
            shutdown.register_waker(move || {
                woken.fetch_add(1, Ordering::Relaxed);
            });
        }
        assert_eq!(shutdown.state(), ShutdownState::Running);
        shutdown.trigger();
        assert_eq!(shutdown.state(), ShutdownState::Graceful);
        assert_eq!(woken.load(Ordering::Relaxed), 2);
        shutdown.trigger();
        assert_eq!(shutdown.state(), ShutdownState::Immediate);
        shutdown.trigger();
        assert_eq!(shutdown.state(), ShutdownState::Immediate, "stays immediate");
    }

    #[test]
    fn a_drain_stops_when_connections_are_gone_or_at_its_deadline() {
        let t0 = Instant::now();
        let mut drain = Drain::new(Duration::from_secs(5), Duration::from_secs(9));
        assert!(!drain.should_stop(ShutdownState::Running, 0, t0));
        assert!(drain.should_stop(ShutdownState::Immediate, 3, t0));
        assert!(!drain.should_stop(ShutdownState::Graceful, 0, t0), "not begun yet");
        assert!(drain.begin(t0));
        assert!(!drain.begin(t0 + Duration::from_secs(1)), "begins once");
        assert_eq!(drain.deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(drain.lame_duck_end(), Some(t0 + Duration::from_secs(5)), "the lame duck is part of the drain");
        assert!(!drain.should_stop(ShutdownState::Graceful, 2, t0 + Duration::from_secs(4)));
        assert!(drain.should_stop(ShutdownState::Graceful, 0, t0 + Duration::from_secs(1)));
        assert!(drain.should_stop(ShutdownState::Graceful, 2, t0 + Duration::from_secs(5)));
    }
}
