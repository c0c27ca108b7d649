//! The per-thread state connections share.

use crate::access_log::AccessLog;
use crate::date::DateCache;
use crate::limits::Limits;
use crate::out::BufPool;
use crate::response::Stamped;
use crate::site::{Site, Snapshot};
use crate::stats::{HttpStats, MetricsSource};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The deadlines that anything starting in this loop turn gets: computed once per turn
/// in [`Context::set_time`], so a request pays no time arithmetic.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TurnDeadlines {
    /// A head started now must be complete by then.
    pub(crate) header: Instant,
    /// A connection idle from now closes then.
    pub(crate) keepalive: Instant,
    /// Output queued or progressing now must progress again by then.
    pub(crate) send: Instant,
    /// A write side shut now lingers until then.
    pub(crate) linger: Instant,
    /// A body whose head ended now must be complete by then.
    pub(crate) body: Instant,
}

impl TurnDeadlines {
    fn at(now: Instant, limits: &Limits) -> TurnDeadlines {
        TurnDeadlines {
            header: now + limits.header_timeout,
            keepalive: now + limits.keepalive_timeout,
            send: now + limits.send_timeout,
            linger: now + limits.linger_timeout,
            body: now + limits.body_timeout,
        }
    }
}

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
    /// The response answered last, rendered whole for this second.
    pub(crate) stamped: Stamped,
    pub(crate) now: Instant,
    /// `now` plus each timeout.
    pub(crate) deadlines: TurnDeadlines,
    pub(crate) pool: BufPool,
    /// This worker's HTTP counters.
    pub stats: HttpStats,
    /// `--metrics`: where the counters are rendered, and this worker's index.
    pub(crate) metrics: Option<(Arc<dyn MetricsSource>, usize)>,
    /// `--access-log`: the lines not yet written (`None`: off, no cost).
    pub(crate) access_log: Option<Box<AccessLog>>,
    /// Graceful shutdown's lame-duck period ends then ([`Context::begin_lame_duck`]):
    /// until then a draining idle connection waits for its next request.
    pub(crate) lame_duck_end: Option<Instant>,
}

impl Context {
    /// A context at time `now` (monotonic) and `wall` (for the Date header).
    pub fn new(site: Arc<Site>, limits: Limits, now: Instant, wall: SystemTime) -> Self {
        let (snapshot, generation) = site.snapshot();
        Context {
            shared: site,
            site: snapshot,
            generation,
            deadlines: TurnDeadlines::at(now, &limits),
            limits,
            date: DateCache::new(wall),
            stamped: Stamped::default(),
            now,
            pool: BufPool::default(),
            stats: HttpStats::default(),
            metrics: None,
            access_log: None,
            lame_duck_end: None,
        }
    }

    /// Makes this context worker `worker` of `metrics`: its connections answer `GET`
    /// on the metrics path with what `metrics` renders.
    pub fn attach_metrics(&mut self, metrics: Option<Arc<dyn MetricsSource>>, worker: usize) {
        self.metrics = metrics.map(|m| (m, worker));
    }

    /// Turns the access log on: from now on every response queued by a connection
    /// created after this appends its line to [`Context::access_log_lines`].
    pub fn enable_access_log(&mut self) {
        self.access_log = Some(Box::new(AccessLog::new(self.now, self.date.value())));
    }

    /// Turns the access log off (the lines not yet taken are dropped).
    pub fn disable_access_log(&mut self) {
        self.access_log = None;
    }

    /// Whether the access log is on.
    pub fn access_log_enabled(&self) -> bool {
        self.access_log.is_some()
    }

    /// The access log lines not written yet, each ending in `\n`, when the log is on:
    /// the engine writes them out and clears the buffer.
    pub fn access_log_lines(&mut self) -> Option<&mut Vec<u8>> {
        self.access_log.as_deref_mut().map(|log| &mut log.lines)
    }

    /// Sets the time for this loop turn, and picks up a replaced site (one relaxed
    /// atomic load when nothing changed).
    pub fn set_time(&mut self, now: Instant, wall: SystemTime) {
        self.now = now;
        self.deadlines = TurnDeadlines::at(now, &self.limits);
        if let Some(end) = self.lame_duck_end {
            // No keep-alive wait that starts while draining outlasts the lame duck.
            self.deadlines.keepalive = self.deadlines.keepalive.min(end);
        }
        self.date.update(wall);
        if let Some(log) = self.access_log.as_deref_mut() {
            log.set_time(now, self.date.value());
        }
        if self.shared.generation() != self.generation {
            self.refresh_site();
        }
    }

    #[cold]
    #[inline(never)]
    fn refresh_site(&mut self) {
        let (snapshot, generation) = self.shared.snapshot();
        self.site = snapshot;
        self.stamped.forget();
        self.generation = generation;
    }

    /// Graceful shutdown began, with a lame-duck period until `end`: a connection then
    /// asked to finish ([`crate::Connection::begin_shutdown`]) answers its next request
    /// with `Connection: close`, and one with nothing in progress stays open for that
    /// request until `end` (or its keep-alive deadline, the earlier) instead of closing
    /// at once. The request a client already had on the wire when the drain began is
    /// so answered, not lost in a close. An `end` not after now is no period at all.
    pub fn begin_lame_duck(&mut self, end: Instant) {
        self.lame_duck_end = Some(end);
        self.deadlines.keepalive = self.deadlines.keepalive.min(end);
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
