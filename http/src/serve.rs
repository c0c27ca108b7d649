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
    /// Where workers publish their counters for `--metrics` (`None`: off, no cost).
    pub metrics: Option<Arc<Metrics>>,
}

/// Counters a worker keeps; merged into the [`Report`]. Plain integers bumped by the
/// worker that owns them (no atomics on the hot path).
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
    /// Times the loop blocked for events: `epoll_wait` or `io_uring_enter` calls.
    pub wakeups: u64,
    /// Readiness events (epoll) or completions (io_uring) handled.
    pub events: u64,
    /// System calls on the serving path (reads, sends, accepts, epoll_ctl, close,
    /// shutdown, setsockopt, epoll_wait, io_uring_enter, ...).
    pub syscalls: u64,
    /// Bytes received from clients.
    pub bytes_read: u64,
    /// Bytes sent to clients (files included).
    pub bytes_written: u64,
    /// Receives that found the provided buffer ring empty (io_uring).
    pub enobufs: u64,
    /// Sends that took fewer bytes than offered.
    pub partial_writes: u64,
}

impl Stats {
    /// Adds another worker's counters.
    pub fn merge(&mut self, other: &Stats) {
        self.accepted += other.accepted;
        self.closed += other.closed;
        self.requests += other.requests;
        self.errors += other.errors;
        self.wakeups += other.wakeups;
        self.events += other.events;
        self.syscalls += other.syscalls;
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.enobufs += other.enobufs;
        self.partial_writes += other.partial_writes;
    }

    /// System calls per request answered (0 before the first request).
    pub fn syscalls_per_request(&self) -> f64 {
        ratio(self.syscalls, self.requests)
    }

    /// Events (or completions) handled per wakeup (0 before the first wakeup).
    pub fn events_per_wakeup(&self) -> f64 {
        ratio(self.events, self.wakeups)
    }

    /// The counters in the Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(&self, engine: &str) -> String {
        use std::fmt::Write;
        let counters: [(&str, &str, u64); 11] = [
            ("duet_requests_total", "Requests answered (error responses included).", self.requests),
            ("duet_errors_total", "Requests answered with a 4xx/5xx status.", self.errors),
            ("duet_accepts_total", "Connections accepted.", self.accepted),
            ("duet_closes_total", "Connections closed.", self.closed),
            ("duet_wakeups_total", "Times the loop blocked for events (epoll_wait / io_uring_enter).", self.wakeups),
            ("duet_events_total", "Readiness events or completions handled.", self.events),
            ("duet_syscalls_total", "System calls made on the serving path.", self.syscalls),
            ("duet_read_bytes_total", "Bytes received from clients.", self.bytes_read),
            ("duet_written_bytes_total", "Bytes sent to clients.", self.bytes_written),
            ("duet_enobufs_total", "Receives that found no provided buffer (io_uring).", self.enobufs),
            ("duet_partial_writes_total", "Sends that took fewer bytes than offered.", self.partial_writes),
        ];
        let mut out = String::with_capacity(2048);
        let _ = writeln!(out, "# HELP duet_engine_info The I/O engine serving.");
        let _ = writeln!(out, "# TYPE duet_engine_info gauge");
        let _ = writeln!(out, "duet_engine_info{{engine=\"{engine}\"}} 1");
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let gauges = [
            ("duet_syscalls_per_request", "System calls per request answered.", self.syscalls_per_request()),
            ("duet_events_per_wakeup", "Events or completions handled per wakeup.", self.events_per_wakeup()),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        out
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The counters of every worker for `duet serve --metrics PATH`: each worker publishes
/// a copy of its [`Stats`] into its own slot once per loop turn (only when metrics are
/// on), and a `GET PATH` answers with the merged snapshot in Prometheus text format.
#[derive(Debug)]
pub struct Metrics {
    path: Box<[u8]>,
    engine: Box<str>,
    slots: Vec<Mutex<Stats>>,
}

impl Metrics {
    /// Metrics served at `path` (e.g. `/metrics`) for `workers` worker threads of `engine`.
    pub fn new(path: &str, engine: &str, workers: usize) -> Arc<Metrics> {
        Arc::new(Metrics {
            path: path.as_bytes().into(),
            engine: engine.into(),
            slots: (0..workers).map(|_| Mutex::new(Stats::default())).collect(),
        })
    }

    /// The path the counters are served at.
    pub fn path(&self) -> &[u8] {
        &self.path
    }

    /// Stores worker `worker`'s counters.
    pub fn publish(&self, worker: usize, stats: &Stats) {
        if let Some(slot) = self.slots.get(worker) {
            if let Ok(mut s) = slot.lock() {
                s.clone_from(stats);
            }
        }
    }

    /// The merged counters, with `own` (the live counters of worker `worker`) in place
    /// of what that worker last published.
    pub fn snapshot(&self, worker: Option<(usize, &Stats)>) -> Stats {
        let mut total = Stats::default();
        for (i, slot) in self.slots.iter().enumerate() {
            match worker {
                Some((w, own)) if w == i => total.merge(own),
                _ => {
                    if let Ok(s) = slot.lock() {
                        total.merge(&s);
                    }
                }
            }
        }
        total
    }

    /// The Prometheus text for the merged counters (see [`Metrics::snapshot`]).
    pub fn render(&self, worker: Option<(usize, &Stats)>) -> String {
        self.snapshot(worker).prometheus(&self.engine)
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
    /// `--metrics`: where this worker publishes its counters, and its index.
    pub(crate) metrics: Option<(Arc<Metrics>, usize)>,
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
            metrics: None,
        }
    }

    /// Makes this context worker `worker` of `metrics`: it answers `GET` on the metrics
    /// path and [`Context::publish_stats`] stores its counters there.
    pub fn attach_metrics(&mut self, metrics: Option<Arc<Metrics>>, worker: usize) {
        self.metrics = metrics.map(|m| (m, worker));
    }

    /// Publishes this worker's counters for `--metrics` (nothing when metrics are off).
    /// Engines call it once per loop turn, before blocking.
    #[inline]
    pub fn publish_stats(&self) {
        if let Some((metrics, worker)) = &self.metrics {
            metrics.publish(*worker, &self.stats);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_merge_published_slots_with_the_live_worker() {
        let m = Metrics::new("/metrics", "epoll", 2);
        let a = Stats { requests: 3, syscalls: 12, wakeups: 2, events: 6, ..Stats::default() };
        let stale = Stats { requests: 1, ..Stats::default() };
        let live = Stats { requests: 5, syscalls: 8, ..Stats::default() };
        m.publish(0, &a);
        m.publish(1, &stale);
        m.publish(7, &stale); // no such worker: ignored
        let total = m.snapshot(Some((1, &live)));
        assert_eq!((total.requests, total.syscalls), (8, 20));
        assert_eq!(total.syscalls_per_request(), 2.5);
        let text = m.render(None);
        assert!(text.contains("# TYPE duet_requests_total counter\nduet_requests_total 4\n"), "{text}");
        assert!(text.contains("duet_engine_info{engine=\"epoll\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE duet_syscalls_per_request gauge\nduet_syscalls_per_request 3\n"), "{text}");
        assert!(text.contains("duet_events_per_wakeup 3\n"), "{text}");
        assert_eq!(Stats::default().syscalls_per_request(), 0.0);
    }
}
