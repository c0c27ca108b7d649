//! The counters the HTTP layer keeps, and where `--metrics` gets the rest from.

/// The HTTP layer's own counters: what a connection counts as it answers. An engine
/// adds them to its own counters (syscalls, wakeups, ...) in its report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// Requests answered (error responses included).
    pub requests: u64,
    /// Requests answered with a 4xx/5xx status.
    pub errors: u64,
}

impl HttpStats {
    /// Counts one request answered with `status`.
    #[inline(always)]
    pub(crate) fn answered(&mut self, status: u16) {
        self.requests += 1;
        if status >= 400 {
            self.errors += 1;
        }
    }
}

/// Where the counters answered on `--metrics PATH` come from. The engine owns its
/// counters and their rendering; the HTTP layer only routes `GET PATH` to it and hands
/// over the live HTTP counters of the worker asking.
pub trait MetricsSource: Send + Sync + std::fmt::Debug {
    /// The path the counters are served at (e.g. `/metrics`).
    fn path(&self) -> &[u8];
    /// The counters of every worker in the Prometheus text format, with `live` (the
    /// current HTTP counters of worker `worker`) in place of what it last published.
    fn render(&self, worker: usize, live: &HttpStats) -> String;
}
