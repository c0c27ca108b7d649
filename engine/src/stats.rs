//! The engine counters, merged into the report `serve` returns, and `--metrics`: each
//! worker publishes its counters, and the HTTP layer answers `GET PATH` with
//! [`Metrics`] rendered as Prometheus text (through [`duet_http::MetricsSource`]).

use crate::sys::SharedMap;
use duet_http::{HttpStats, MetricsSource};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Counters a worker keeps; merged into the report of `serve`. Plain integers bumped
/// by the worker that owns them (no atomics on the hot path). The engine counts its own
/// work; `requests` and `errors` are the HTTP layer's ([`Stats::set_http`]).
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
    /// Times the loop blocked for events: `epoll_wait`, `poll`, `select` or
    /// `io_uring_enter` calls.
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
    /// Changes of what a level-triggered selector watches a descriptor for (each an
    /// `epoll_ctl` for epoll-lt; an update of its own array for poll and select).
    pub interest_changes: u64,
    /// Connections closed at accept because the selector cannot watch their descriptor
    /// (select: at or above FD_SETSIZE).
    pub refused: u64,
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
        self.interest_changes += other.interest_changes;
        self.refused += other.refused;
    }

    /// How many counters there are ([`Stats::to_words`]).
    pub const WORDS: usize = 13;

    /// The counters in a fixed order, for memory shared between processes.
    pub fn to_words(&self) -> [u64; Stats::WORDS] {
        [
            self.accepted,
            self.closed,
            self.requests,
            self.errors,
            self.wakeups,
            self.events,
            self.syscalls,
            self.bytes_read,
            self.bytes_written,
            self.enobufs,
            self.partial_writes,
            self.interest_changes,
            self.refused,
        ]
    }

    /// The counters from [`Stats::to_words`]'s order.
    pub fn from_words(w: [u64; Stats::WORDS]) -> Stats {
        Stats {
            accepted: w[0],
            closed: w[1],
            requests: w[2],
            errors: w[3],
            wakeups: w[4],
            events: w[5],
            syscalls: w[6],
            bytes_read: w[7],
            bytes_written: w[8],
            enobufs: w[9],
            partial_writes: w[10],
            interest_changes: w[11],
            refused: w[12],
        }
    }

    /// Takes the HTTP layer's counters (requests and errors) of the same worker.
    pub fn set_http(&mut self, http: &HttpStats) {
        self.requests = http.requests;
        self.errors = http.errors;
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
        let counters: [(&str, &str, u64); 13] = [
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
            (
                "duet_interest_changes_total",
                "Changes of what a level-triggered selector watches a descriptor for.",
                self.interest_changes,
            ),
            ("duet_refused_total", "Connections closed at accept: the selector cannot watch them.", self.refused),
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
    /// In a process group: every process's workers' counters.
    group: Option<GroupCounters>,
}

/// The counters of every worker of every process of a `--processes` group, in memory
/// they share: `slots` slots of [`Stats::WORDS`] words, this process's workers at
/// `first..first + workers`. Each worker stores its own slot (relaxed atomic stores,
/// once per loop turn); whichever process answers `GET PATH` sums them all.
///
/// Prometheus counters must not go backwards, so a process that exits (or dies) does
/// not leave its slots to be overwritten from zero by the process that later takes
/// them: the supervisor folds them into one more slot, the retired one, and zeroes them
/// ([`GroupCounters::retire`]). Its connections went with it, so the fold counts them
/// closed (`accepts - closes`, the connections open, drops by what it held). A fold
/// moves counts between two slots, so readers go round a sequence word (odd while a
/// fold is under way) and sum again if it moved: a scrape never sees a dead process's
/// counts twice or not at all.
#[derive(Debug)]
pub struct GroupCounters {
    map: SharedMap,
    slots: usize,
    first: usize,
}

/// Times a reader sums again while folds keep happening before it takes the sum as it
/// is (a supervisor killed in the middle of a fold leaves the word odd for good).
const FOLD_RETRIES: usize = 1000;

impl GroupCounters {
    /// The bytes of the memory for `slots` worker slots: those, the retired slot and
    /// the sequence word.
    fn len(slots: usize) -> usize {
        (slots.max(1) + 1) * Stats::WORDS * 8 + 8
    }

    /// Memory for `slots` worker slots (and the retired slot), zero, to be handed to
    /// the processes ([`GroupCounters::map`]).
    pub fn create(slots: usize) -> io::Result<OwnedFd> {
        crate::sys::shared_memory(c"duet-metrics", GroupCounters::len(slots))
    }

    /// Maps the memory `fd` made by [`GroupCounters::create`] for `slots` slots; this
    /// process's workers use the slots from `first` on.
    pub fn map(fd: BorrowedFd<'_>, slots: usize, first: usize) -> io::Result<GroupCounters> {
        let map = SharedMap::new(fd, GroupCounters::len(slots))?;
        Ok(GroupCounters { map, slots: slots.max(1), first })
    }

    fn store(&self, slot: usize, stats: &Stats) {
        for (i, w) in stats.to_words().into_iter().enumerate() {
            if let Some(a) = self.map.atomic(slot * Stats::WORDS + i) {
                a.store(w, Ordering::Relaxed);
            }
        }
    }

    fn load(&self, slot: usize) -> Stats {
        let mut w = [0u64; Stats::WORDS];
        for (i, word) in w.iter_mut().enumerate() {
            *word = self.map.atomic(slot * Stats::WORDS + i).map_or(0, |a| a.load(Ordering::Relaxed));
        }
        Stats::from_words(w)
    }

    /// The retired slot: past the workers'.
    fn retired(&self) -> usize {
        self.slots
    }

    fn sequence(&self) -> Option<&std::sync::atomic::AtomicU64> {
        self.map.atomic((self.slots + 1) * Stats::WORDS)
    }

    /// Folds the `count` slots from `first` (a process that has exited) into the
    /// retired slot, its connections counted closed, and zeroes them. Only the
    /// supervisor calls it, one fold at a time.
    pub fn retire(&self, first: usize, count: usize) {
        let Some(seq) = self.sequence() else { return };
        seq.fetch_add(1, Ordering::AcqRel);
        std::sync::atomic::fence(Ordering::Release);
        let mut retired = self.load(self.retired());
        for slot in (first..first.saturating_add(count)).filter(|&s| s < self.slots) {
            let mut gone = self.load(slot);
            gone.closed = gone.closed.max(gone.accepted);
            retired.merge(&gone);
            self.store(slot, &Stats::default());
        }
        self.store(self.retired(), &retired);
        seq.fetch_add(1, Ordering::Release);
    }

    /// The sum of every slot but `skip` (and the retired one), read between folds.
    fn sum_except(&self, skip: std::ops::Range<usize>) -> Stats {
        let mut total = Stats::default();
        for _ in 0..FOLD_RETRIES {
            let before = self.sequence().map_or(0, |s| s.load(Ordering::Acquire));
            total = Stats::default();
            for slot in (0..=self.slots).filter(|i| !skip.contains(i)) {
                total.merge(&self.load(slot));
            }
            std::sync::atomic::fence(Ordering::Acquire);
            let after = self.sequence().map_or(0, |s| s.load(Ordering::Relaxed));
            if before == after && before.is_multiple_of(2) {
                break;
            }
            std::thread::yield_now();
        }
        total
    }
}

impl Metrics {
    /// Metrics served at `path` (e.g. `/metrics`) for `workers` worker threads of `engine`.
    pub fn new(path: &str, engine: &str, workers: usize) -> Arc<Metrics> {
        Arc::new(Metrics {
            path: path.as_bytes().into(),
            engine: engine.into(),
            slots: (0..workers).map(|_| Mutex::new(Stats::default())).collect(),
            group: None,
        })
    }

    /// Like [`Metrics::new`], for one process of a group whose counters are in `group`:
    /// `GET PATH` answers with the sum over every process.
    pub fn in_group(path: &str, engine: &str, workers: usize, group: GroupCounters) -> Arc<Metrics> {
        Arc::new(Metrics {
            path: path.as_bytes().into(),
            engine: engine.into(),
            slots: (0..workers).map(|_| Mutex::new(Stats::default())).collect(),
            group: Some(group),
        })
    }

    /// Stores worker `worker`'s counters: the engine's `stats` with the HTTP layer's
    /// `http`. A worker calls it once per loop turn, before it blocks.
    pub fn publish(&self, worker: usize, stats: &Stats, http: &HttpStats) {
        if let Some(slot) = self.slots.get(worker) {
            if let Ok(mut s) = slot.lock() {
                s.clone_from(stats);
                s.set_http(http);
                if let Some(group) = &self.group {
                    group.store(group.first + worker, &s);
                }
            }
        }
    }

    /// The merged counters; with `live`, worker `worker`'s HTTP counters are taken
    /// from it instead of from what that worker last published (its engine counters
    /// are those of its last publish: at most one loop turn old).
    pub fn snapshot(&self, live: Option<(usize, &HttpStats)>) -> Stats {
        let mut total = Stats::default();
        for (i, slot) in self.slots.iter().enumerate() {
            if let Ok(s) = slot.lock() {
                match live {
                    Some((w, http)) if w == i => {
                        let mut own = s.clone();
                        own.set_http(http);
                        total.merge(&own);
                    }
                    _ => total.merge(&s),
                }
            }
        }
        if let Some(group) = &self.group {
            // The other processes' workers and the retired ones (this one's are counted
            // above).
            total.merge(&group.sum_except(group.first..group.first + self.slots.len()));
        }
        total
    }
}

impl MetricsSource for Metrics {
    fn path(&self) -> &[u8] {
        &self.path
    }

    fn render(&self, worker: usize, live: &HttpStats) -> String {
        self.snapshot(Some((worker, live))).prometheus(&self.engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_group_sums_every_processes_workers() {
        use std::os::fd::AsFd;
        let fd = GroupCounters::create(4).expect("memfd");
        // Two processes of two workers each, sharing the memory.
        let a = Metrics::in_group("/metrics", "epoll", 2, GroupCounters::map(fd.as_fd(), 4, 0).unwrap());
        let b = Metrics::in_group("/metrics", "uring", 2, GroupCounters::map(fd.as_fd(), 4, 2).unwrap());
        a.publish(0, &Stats { accepted: 1, ..Stats::default() }, &HttpStats { requests: 10, errors: 0 });
        a.publish(1, &Stats { accepted: 2, ..Stats::default() }, &HttpStats { requests: 20, errors: 1 });
        b.publish(1, &Stats { accepted: 4, ..Stats::default() }, &HttpStats { requests: 40, errors: 0 });
        let seen_by_b = b.snapshot(Some((0, &HttpStats { requests: 5, errors: 0 })));
        assert_eq!((seen_by_b.accepted, seen_by_b.requests, seen_by_b.errors), (7, 75, 1));
        let seen_by_a = a.snapshot(None);
        assert_eq!((seen_by_a.accepted, seen_by_a.requests), (7, 70));
        assert!(GroupCounters::map(fd.as_fd(), 5, 0).is_err(), "more slots than the memory holds");
    }

    #[test]
    fn a_retired_process_keeps_its_counts_and_its_connections_are_closed() {
        use std::os::fd::AsFd;
        let fd = GroupCounters::create(2).expect("memfd");
        let a = Metrics::in_group("/metrics", "epoll", 1, GroupCounters::map(fd.as_fd(), 2, 0).unwrap());
        let b = Metrics::in_group("/metrics", "epoll", 1, GroupCounters::map(fd.as_fd(), 2, 1).unwrap());
        let supervisor = GroupCounters::map(fd.as_fd(), 2, 0).unwrap();
        a.publish(0, &Stats { accepted: 10, closed: 4, ..Stats::default() }, &HttpStats { requests: 50, errors: 1 });
        b.publish(0, &Stats { accepted: 3, closed: 1, ..Stats::default() }, &HttpStats { requests: 7, errors: 0 });
        let before = b.snapshot(None);
        assert_eq!((before.accepted - before.closed, before.requests), (8, 57));
        // Process a dies holding 6 connections; its successor starts from zero.
        supervisor.retire(0, 1);
        let after = b.snapshot(None);
        assert_eq!((after.accepted, after.requests, after.errors), (13, 57, 1), "counters kept");
        assert_eq!(after.accepted - after.closed, 2, "the dead process's 6 connections are closed");
        let successor = Metrics::in_group("/metrics", "epoll", 1, GroupCounters::map(fd.as_fd(), 2, 0).unwrap());
        successor.publish(0, &Stats { accepted: 1, ..Stats::default() }, &HttpStats { requests: 2, errors: 0 });
        let later = b.snapshot(None);
        assert_eq!((later.accepted, later.requests), (14, 59), "the successor adds to them");
        supervisor.retire(0, 1);
        assert_eq!(b.snapshot(None).requests, 59, "folded twice, still counted once");
    }

    #[test]
    fn metrics_merge_published_slots_with_the_live_worker() {
        let m = Metrics::new("/metrics", "epoll", 2);
        let a = Stats { syscalls: 12, wakeups: 2, events: 6, ..Stats::default() };
        let b = Stats { syscalls: 8, ..Stats::default() };
        m.publish(0, &a, &HttpStats { requests: 3, errors: 0 });
        m.publish(1, &b, &HttpStats { requests: 1, errors: 1 });
        m.publish(7, &b, &HttpStats::default()); // no such worker: ignored
        let live = HttpStats { requests: 5, errors: 2 };
        let total = m.snapshot(Some((1, &live)));
        assert_eq!((total.requests, total.errors, total.syscalls), (8, 2, 20));
        assert_eq!(total.syscalls_per_request(), 2.5);
        assert_eq!(m.path(), b"/metrics");
        let text = m.snapshot(None).prometheus("epoll");
        assert!(text.contains("# TYPE duet_requests_total counter\nduet_requests_total 4\n"), "{text}");
        assert!(text.contains("duet_engine_info{engine=\"epoll\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE duet_syscalls_per_request gauge\nduet_syscalls_per_request 5\n"), "{text}");
        assert!(text.contains("duet_events_per_wakeup 3\n"), "{text}");
        assert_eq!(Stats::default().syscalls_per_request(), 0.0);
    }
}
