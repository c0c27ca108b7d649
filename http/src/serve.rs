//! What an engine is given and what it gives back (see the crate docs for the contract).

use crate::site::Snapshot;
use crate::{BufPool, DateCache, Limits, Site};
use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Tuning only the io_uring engine reads.
#[derive(Clone, Debug)]
pub struct UringOptions {
    /// Submission queue entries per ring (the completion queue is sized from it).
    pub ring_entries: u32,
    /// Buffers in the provided buffer ring (a power of two).
    pub buf_count: u16,
    /// Size of each provided buffer.
    pub buf_size: u32,
    /// Kernel submission-queue polling, with this idle time in milliseconds.
    pub sqpoll_idle_ms: Option<u32>,
}

impl Default for UringOptions {
    fn default() -> Self {
        UringOptions { ring_entries: 4096, buf_count: 1024, buf_size: 16 * 1024, sqpoll_idle_ms: None }
    }
}

/// Everything an engine needs to serve.
#[derive(Debug)]
pub struct ServeConfig {
    /// One bound, listening, non-blocking SO_REUSEPORT socket per worker thread.
    pub listeners: Vec<TcpListener>,
    /// Pin worker `i` to CPU `i`.
    pub pin: bool,
    /// Per-connection limits.
    pub limits: Limits,
    /// How long a graceful shutdown waits for busy connections.
    pub drain_timeout: Duration,
    /// io_uring engine tuning.
    pub uring: UringOptions,
}

/// Counters a worker keeps; merged into the [`Report`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed.
    pub closed: u64,
    /// Requests answered (error responses included).
    pub requests: u64,
    /// Requests answered with a 4xx/5xx status.
    pub errors: u64,
}

impl Stats {
    /// Adds another worker's counters.
    pub fn merge(&mut self, other: &Stats) {
        self.accepted += other.accepted;
        self.closed += other.closed;
        self.requests += other.requests;
        self.errors += other.errors;
    }
}

/// What `serve` returns when it has stopped.
pub type Report = Stats;

/// The per-thread state every connection of a worker shares: the site, limits, the
/// clock of the current loop turn, the Date cache and the output buffer pool.
#[derive(Debug)]
pub struct Context {
    /// The shared, swappable site.
    shared: Arc<Site>,
    /// This worker's copy of the current table, refreshed when `shared` changes.
    pub(crate) site: Arc<Snapshot>,
    generation: u64,
    pub(crate) limits: Limits,
    pub(crate) date: DateCache,
    pub(crate) now: Instant,
    pub(crate) pool: BufPool,
    /// This worker's counters.
    pub stats: Stats,
}

impl Context {
    /// A context at time `now` (monotonic) and `wall` (for the Date header).
    pub fn new(site: Arc<Site>, limits: Limits, now: Instant, wall: SystemTime) -> Self {
        let (snapshot, generation) = site.snapshot();
        Context {
            shared: site,
            site: snapshot,
            generation,
            limits,
            date: DateCache::new(wall),
            now,
            pool: BufPool::default(),
            stats: Stats::default(),
        }
    }

    /// Sets the time for this loop turn, and picks up a replaced site (one relaxed
    /// atomic load when nothing changed).
    pub fn set_time(&mut self, now: Instant, wall: SystemTime) {
        self.now = now;
        self.date.update(wall);
        if self.shared.generation() != self.generation {
            self.refresh_site();
        }
    }

    #[cold]
    #[inline(never)]
    fn refresh_site(&mut self) {
        let (snapshot, generation) = self.shared.snapshot();
        self.site = snapshot;
        self.generation = generation;
    }

    /// The time of this loop turn.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The limits connections are held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Output buffers pooled for reuse.
    pub fn pool(&self) -> &BufPool {
        &self.pool
    }
}

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

type Waker = Box<dyn Fn() + Send + Sync>;

/// A shutdown request shared by the binary and every worker. Workers register a waker
/// (an engine writes to its eventfd) so a blocked loop notices at once.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

#[derive(Default)]
struct ShutdownInner {
    state: AtomicU8,
    wakers: Mutex<Vec<Waker>>,
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

    fn wake(&self) {
        if let Ok(wakers) = self.inner.wakers.lock() {
            for w in wakers.iter() {
                w();
            }
        }
    }

    /// Registers a waker called on every state change. The caller checks
    /// [`Shutdown::state`] after registering, so no change is missed.
    pub fn register_waker(&self, waker: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut wakers) = self.inner.wakers.lock() {
            wakers.push(Box::new(waker));
        }
    }
}

/// Runs `worker(i, listener_i)` on one thread per listener, named `duet-<engine>-<i>`,
/// and merges their stats. The first worker error is returned after all have stopped;
/// a failing worker asks the others to stop.
pub fn run_workers<F>(engine: &str, listeners: Vec<TcpListener>, shutdown: &Shutdown, worker: F) -> io::Result<Report>
where
    F: Fn(usize, TcpListener) -> io::Result<Stats> + Send + Sync + 'static,
{
    let worker = Arc::new(worker);
    let mut handles = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let worker = Arc::clone(&worker);
        let shutdown = shutdown.clone();
        let handle = std::thread::Builder::new().name(format!("duet-{engine}-{i}")).spawn(move || {
            let result = worker(i, listener);
            if result.is_err() {
                shutdown.force();
            }
            result
        })?;
        handles.push(handle);
    }
    let mut report = Report::default();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(stats)) => report.merge(&stats),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(io::Error::other("a worker thread panicked"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}
