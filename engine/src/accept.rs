//! The accept policy: what an engine does with each result of `accept`, written once
//! for every engine and kept in plain Rust so it is tested without sockets.
//!
//! An engine calls [`AcceptPolicy::on_accepted`] for every connection it gets and
//! [`AcceptPolicy::on_error`] for every failure, and does what the returned [`Next`]
//! says. The rules:
//!
//! - **Transient errors** (the new connection died before it was taken, a signal:
//!   `ECONNABORTED`, `EINTR`, `EPROTO`, the network errors Linux passes on from the new
//!   socket) say nothing about the listener: accept again at once.
//! - **Nothing pending** (`EAGAIN`): wait until the listener is readable again.
//! - **Out of descriptors** (`EMFILE`, `ENFILE`): a client that knocks must not hang in
//!   the backlog, and the loop must not spin on a listener it cannot serve (Linux
//!   reports `EMFILE` before it looks at the backlog, so "retry at once" spins even
//!   with nobody knocking). So: give back the spare descriptor, accept and close what
//!   is pending until `EAGAIN` (the clients see a close), take the spare again
//!   ([`AcceptPolicy::shed_done`]), then wait for the listener to become readable —
//!   the next knock is shed the same way. A readiness engine waits on its
//!   edge-triggered registration; a completion engine arms one poll on the listener
//!   rather than an accept that would fail at once.
//! - **No spare to give back** (it could not be reopened): pause — accept again when
//!   a descriptor is freed ([`AcceptPolicy::on_fd_freed`], which also retakes the
//!   spare) or at [`AcceptPolicy::retry_at`], whichever comes first.
//! - **Any other error** (`ENOMEM`, `ENOBUFS`, ...): pause the same way. An engine
//!   never gives up on its listener.
//! - One log line per episode: when it starts, and one when accepting works again.
//!
//! # The spare descriptor across threads
//!
//! libuv documents the caveat of the spare-fd trick: descriptors are a per-process
//! table, so with several threads another thread may take the number freed by closing
//! the spare before this thread's `accept` does, and the shed fails. duet runs one
//! loop per thread, each with its own spare, so that race exists here. What duet does
//! about it: nothing breaks — the `accept` fails with `EMFILE` again and the episode
//! goes on; when the spare cannot be reopened either, the worker pauses and retries at
//! [`AcceptPolicy::retry_at`] (a wake-up every [`RETRY`], not a spin) or as soon as one
//! of its own connections closes. A knocking client then waits in the backlog until a
//! descriptor frees up, rather than being shed.

use crate::syscalls;
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long a paused accept waits before trying again (unless a descriptor frees).
pub const RETRY: Duration = Duration::from_millis(100);

/// Pending connections accepted and closed per shed before the loop looks at the rest.
pub const SHED_BATCH: usize = 64;

/// What to do after an accept result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Accept again now.
    Again,
    /// Stop until the listener is readable again.
    Wait,
    /// Out of descriptors and the spare was just given back: accept and close what is
    /// pending until `EAGAIN` (or a batch), then call [`AcceptPolicy::shed_done`].
    Shed,
    /// Stop until a descriptor is freed or [`AcceptPolicy::retry_at`].
    Pause,
}

/// A failed accept, as the engine saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptFailure {
    /// `accept4`, or an accept completion that installs a process descriptor, failed
    /// with this `errno`.
    Process(i32),
    /// An io_uring accept into the ring's registered file table (a direct descriptor)
    /// failed with this `errno`. `ENFILE` here means the table is full, not the system:
    /// the kernel took the connection off the backlog and closed it (the client sees a
    /// close), and the table has one slot per descriptor the process may open, so it is
    /// the process's limit that was reached.
    Direct(i32),
}

/// Which descriptor limit an out-of-descriptors episode hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The process's (`EMFILE`, or a full io_uring file table): `ulimit -n`.
    Process,
    /// The whole system's (`ENFILE` from `accept4`): `fs.file-max`.
    System,
}

impl Limit {
    /// The log line that starts an episode at this limit.
    pub fn message(self) -> &'static str {
        match self {
            Limit::Process => {
                "out of file descriptors (Too many open files: the process's limit, `ulimit -n`, is reached): \
                 closing new connections until some close (raise `ulimit -n`)"
            }
            Limit::System => {
                "out of file descriptors (Too many open files in system: the system's limit, fs.file-max, is \
                 reached): closing new connections until some close (raise fs.file-max)"
            }
        }
    }
}

/// What an accept error means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptError {
    /// The listener is fine; the one connection or the call was not.
    Transient,
    /// Nothing is pending.
    Drained,
    /// The process or the system is out of descriptors.
    OutOfDescriptors,
    /// Something else; retry later.
    Other,
}

impl AcceptError {
    /// Classifies an `errno` from `accept4` or an accept completion.
    pub fn from_errno(errno: i32) -> AcceptError {
        match errno {
            libc::EAGAIN => AcceptError::Drained,
            libc::EMFILE | libc::ENFILE => AcceptError::OutOfDescriptors,
            // The peer gave up, or a signal; Linux also passes on the new socket's
            // pending network errors (accept(2), "Error handling").
            libc::ECONNABORTED
            | libc::EINTR
            | libc::EPROTO
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH
            | libc::ECANCELED => AcceptError::Transient,
            _ => AcceptError::Other,
        }
    }
}

/// The spare descriptor given back to make room for shedding.
pub trait Spare {
    /// Whether the spare is held.
    fn is_held(&self) -> bool;
    /// Closes the spare.
    fn release(&mut self);
    /// Reopens the spare if it is not held; returns whether it is held now.
    fn reclaim(&mut self) -> bool;
}

/// The real spare: `/dev/null` opened read-only.
#[derive(Debug)]
pub struct SpareFd(Option<File>);

impl SpareFd {
    /// Opens the spare (held unless the open failed).
    pub fn open() -> SpareFd {
        SpareFd(File::open("/dev/null").ok())
    }
}

impl Spare for SpareFd {
    fn is_held(&self) -> bool {
        self.0.is_some()
    }

    fn release(&mut self) {
        if let Some(file) = self.0.take() {
            syscalls::close(file);
        }
    }

    fn reclaim(&mut self) -> bool {
        if self.0.is_none() {
            syscalls::count(1);
            self.0 = File::open("/dev/null").ok();
        }
        self.0.is_some()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Episode {
    /// Accepting normally.
    None,
    /// Out of descriptors since the first failure: which limit, and the connections
    /// closed at once so far (shed, or closed by the kernel for a full table).
    OutOfDescriptors { limit: Limit, shed: u64 },
    /// Failing with another error.
    Failing,
}

/// One listener's accept state (see the module docs).
#[derive(Debug)]
pub struct AcceptPolicy<S: Spare = SpareFd> {
    spare: S,
    episode: Episode,
    paused_until: Option<Instant>,
}

impl AcceptPolicy<SpareFd> {
    /// A policy holding a freshly opened `/dev/null` spare.
    pub fn new() -> Self {
        AcceptPolicy::with_spare(SpareFd::open())
    }
}

impl Default for AcceptPolicy<SpareFd> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Spare> AcceptPolicy<S> {
    /// A policy with the given spare.
    pub fn with_spare(spare: S) -> Self {
        AcceptPolicy { spare, episode: Episode::None, paused_until: None }
    }

    /// A connection was accepted: any failure episode is over.
    #[inline]
    pub fn on_accepted(&mut self) {
        if self.episode != Episode::None {
            self.end_episode();
        }
    }

    #[cold]
    fn end_episode(&mut self) {
        match self.episode {
            Episode::OutOfDescriptors { shed, .. } => {
                info!("accepting connections again (closed {shed} at once while out of file descriptors)")
            }
            Episode::Failing => info!("accepting connections again"),
            Episode::None => {}
        }
        self.episode = Episode::None;
        self.paused_until = None;
    }

    /// An accept (`accept4`, or a completion installing a process descriptor) failed
    /// with `errno` at `now`.
    pub fn on_error(&mut self, errno: i32, now: Instant) -> Next {
        self.on_failure(AcceptFailure::Process(errno), now)
    }

    /// An accept failed at `now` (see [`AcceptFailure`]).
    pub fn on_failure(&mut self, failure: AcceptFailure, now: Instant) -> Next {
        let (errno, limit, dropped) = match failure {
            AcceptFailure::Direct(libc::ENFILE) => (libc::ENFILE, Limit::Process, 1),
            AcceptFailure::Direct(errno) | AcceptFailure::Process(errno) => {
                let limit = if errno == libc::ENFILE { Limit::System } else { Limit::Process };
                (errno, limit, 0)
            }
        };
        match AcceptError::from_errno(errno) {
            AcceptError::Transient => Next::Again,
            AcceptError::Drained => Next::Wait,
            AcceptError::OutOfDescriptors => {
                match &mut self.episode {
                    Episode::OutOfDescriptors { shed, .. } => *shed += dropped,
                    episode => {
                        warn!("{}", limit.message());
                        *episode = Episode::OutOfDescriptors { limit, shed: dropped };
                    }
                }
                if self.spare.reclaim() {
                    self.spare.release();
                    Next::Shed
                } else {
                    self.pause(now)
                }
            }
            AcceptError::Other => {
                if self.episode != Episode::Failing {
                    warn!(
                        "accept failed: {}; retrying every {} ms",
                        io::Error::from_raw_os_error(errno),
                        RETRY.as_millis()
                    );
                    self.episode = Episode::Failing;
                }
                self.pause(now)
            }
        }
    }

    /// Shedding (after [`Next::Shed`]) closed `shed` connections; `drained` tells
    /// whether it stopped at `EAGAIN` (rather than at its batch size).
    pub fn shed_done(&mut self, shed: usize, drained: bool, now: Instant) -> Next {
        if let Episode::OutOfDescriptors { shed: total, .. } = &mut self.episode {
            *total += shed as u64;
        }
        if !self.spare.reclaim() {
            return self.pause(now);
        }
        if drained {
            Next::Wait
        } else {
            Next::Again
        }
    }

    /// The shed step after [`Next::Shed`], for every engine: accepts what is pending on
    /// `listener` and closes it at once (the clients see a close rather than a hang),
    /// until `EAGAIN` or [`SHED_BATCH`], then retakes the spare
    /// ([`AcceptPolicy::shed_done`]).
    pub fn shed(&mut self, listener: BorrowedFd<'_>, now: Instant) -> Next {
        let mut shed = 0;
        let mut drained = false;
        while shed < SHED_BATCH {
            match crate::socket::accept(listener) {
                Ok(connection) => {
                    syscalls::close(connection);
                    shed += 1;
                }
                // EAGAIN: nothing pending. Anything else (the freed number was taken by
                // another thread): stop here and let the policy decide; never spin.
                Err(_) => {
                    drained = true;
                    break;
                }
            }
        }
        self.shed_done(shed, drained, now)
    }

    fn pause(&mut self, now: Instant) -> Next {
        self.paused_until = Some(now + RETRY);
        Next::Pause
    }

    /// Whether accepting is paused.
    pub fn is_paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// When a paused accept retries.
    pub fn retry_at(&self) -> Option<Instant> {
        self.paused_until
    }

    /// A descriptor was freed (a connection closed). Returns true when accepting was
    /// paused and should resume now (the spare is retaken first).
    #[inline]
    pub fn on_fd_freed(&mut self) -> bool {
        if self.paused_until.is_none() {
            return false;
        }
        self.spare.reclaim();
        self.paused_until = None;
        true
    }

    /// Returns true when accepting was paused and `now` is past the retry time.
    #[inline]
    pub fn retry_due(&mut self, now: Instant) -> bool {
        if self.paused_until.is_some_and(|at| at <= now) {
            self.paused_until = None;
            true
        } else {
            false
        }
    }

    /// Whether the spare is held (for tests and logs).
    pub fn spare_held(&self) -> bool {
        self.spare.is_held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spare whose reopening can be made to fail.
    #[derive(Debug, Default)]
    struct FakeSpare {
        held: bool,
        reopen_fails: bool,
        opens: u32,
    }

    impl Spare for FakeSpare {
        fn is_held(&self) -> bool {
            self.held
        }
        fn release(&mut self) {
            assert!(self.held, "released a spare not held");
            self.held = false;
        }
        fn reclaim(&mut self) -> bool {
            if !self.held && !self.reopen_fails {
                self.held = true;
                self.opens += 1;
            }
            self.held
        }
    }

    fn policy(held: bool) -> AcceptPolicy<FakeSpare> {
        AcceptPolicy::with_spare(FakeSpare { held, ..FakeSpare::default() })
    }

    #[test]
    fn transient_errors_retry_at_once_and_eagain_waits() {
        let now = Instant::now();
        let mut p = policy(true);
        for errno in [libc::ECONNABORTED, libc::EINTR, libc::EPROTO, libc::ENETUNREACH] {
            assert_eq!(p.on_error(errno, now), Next::Again, "errno {errno}");
        }
        assert_eq!(p.on_error(libc::EAGAIN, now), Next::Wait);
        assert!(!p.is_paused());
    }

    #[test]
    fn out_of_descriptors_sheds_with_the_spare_then_waits_for_the_listener() {
        let now = Instant::now();
        let mut p = policy(true);
        assert_eq!(p.on_error(libc::EMFILE, now), Next::Shed);
        assert!(!p.spare_held(), "the spare is given back to make room");
        // Nothing was pending (Linux reports EMFILE before looking at the backlog):
        // wait for the listener rather than accepting again, which would spin.
        assert_eq!(p.shed_done(0, true, now), Next::Wait);
        assert!(p.spare_held());
        assert!(!p.is_paused());
        // A full batch: more may be pending, go on.
        assert_eq!(p.on_error(libc::ENFILE, now), Next::Shed);
        assert_eq!(p.shed_done(64, false, now), Next::Again);
        assert_eq!(p.episode, Episode::OutOfDescriptors { limit: Limit::Process, shed: 64 });
        p.on_accepted();
        assert_eq!(p.episode, Episode::None);
    }

    #[test]
    fn a_spare_that_cannot_be_reopened_pauses_until_a_descriptor_frees_or_the_retry() {
        let now = Instant::now();
        let mut p = policy(true);
        assert_eq!(p.on_error(libc::EMFILE, now), Next::Shed);
        p.spare.reopen_fails = true;
        assert_eq!(p.shed_done(1, true, now), Next::Pause);
        assert_eq!(p.retry_at(), Some(now + RETRY));
        // Still no spare at the next failure: pause again, never Shed without a spare.
        assert_eq!(p.on_error(libc::EMFILE, now), Next::Pause);
        assert!(!p.retry_due(now), "not yet");
        assert!(p.retry_due(now + RETRY));
        assert!(!p.is_paused());
        // A close frees a descriptor: the spare is retaken and accepting resumes.
        assert_eq!(p.on_error(libc::EMFILE, now), Next::Pause);
        p.spare.reopen_fails = false;
        assert!(p.on_fd_freed());
        assert!(p.spare_held(), "the spare is retaken once a descriptor is free");
        assert!(!p.on_fd_freed(), "not paused any more");
        assert_eq!(p.on_error(libc::EMFILE, now), Next::Shed);
    }

    #[test]
    fn a_spare_missing_from_the_start_is_opened_at_the_first_shortage() {
        let now = Instant::now();
        let mut p = policy(false);
        assert_eq!(p.on_error(libc::EMFILE, now), Next::Shed);
        assert_eq!(p.spare.opens, 1);
    }

    #[test]
    fn shedding_closes_every_pending_connection_then_waits_for_the_listener() {
        use std::io::Read;
        use std::net::{TcpListener, TcpStream};
        use std::os::fd::AsFd;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let mut clients: Vec<_> = (0..3).map(|_| TcpStream::connect(addr).expect("connect")).collect();
        // Non-blocking, so the shed ends at EAGAIN instead of waiting for a fourth.
        listener.set_nonblocking(true).expect("nonblocking");
        let now = Instant::now();
        let mut p = policy(true);
        assert_eq!(p.on_error(libc::EMFILE, now), Next::Shed);
        let before = syscalls::made();
        // On loopback a connection is in the accept queue once connect returns.
        let next = p.shed(listener.as_fd(), now);
        let made = syscalls::made() - before;
        assert_eq!(next, Next::Wait, "the backlog was drained");
        assert_eq!(p.episode, Episode::OutOfDescriptors { limit: Limit::Process, shed: 3 });
        assert!(p.spare_held(), "the spare is retaken");
        for client in &mut clients {
            client.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut byte = [0u8; 1];
            assert_eq!(client.read(&mut byte).expect("a close, not a hang"), 0);
        }
        assert_eq!(made, 3 * 2 + 1, "accepts, closes and the EAGAIN (the fake spare makes none)");
    }

    /// An io_uring accept into a full file table fails with ENFILE after the kernel took
    /// the connection off the backlog and closed it: that close is one of the episode's,
    /// and the limit reached is the process's (the table has `ulimit -n` slots), not the
    /// system's. Seen under a flood: "closed 37 at once" while clients saw 1,025 closes,
    /// and "Too many open files in system".
    #[test]
    fn a_full_io_uring_file_table_counts_its_closed_connection_and_names_the_process_limit() {
        let now = Instant::now();
        let mut p = policy(true);
        assert_eq!(p.on_failure(AcceptFailure::Direct(libc::ENFILE), now), Next::Shed);
        assert_eq!(p.episode, Episode::OutOfDescriptors { limit: Limit::Process, shed: 1 });
        assert_eq!(p.shed_done(2, true, now), Next::Wait);
        // Every later knock is one more connection the kernel closed.
        for _ in 0..3 {
            assert_eq!(p.on_failure(AcceptFailure::Direct(libc::ENFILE), now), Next::Shed);
            assert_eq!(p.shed_done(0, true, now), Next::Wait);
        }
        assert_eq!(p.episode, Episode::OutOfDescriptors { limit: Limit::Process, shed: 1 + 2 + 3 });
        // A process descriptor's accept that fails closes nothing.
        assert_eq!(p.on_failure(AcceptFailure::Process(libc::EMFILE), now), Next::Shed);
        assert_eq!(p.episode, Episode::OutOfDescriptors { limit: Limit::Process, shed: 6 });
    }

    #[test]
    fn the_out_of_descriptors_line_names_the_limit_that_was_reached() {
        let now = Instant::now();
        let mut process = policy(true);
        process.on_error(libc::EMFILE, now);
        assert_eq!(process.episode, Episode::OutOfDescriptors { limit: Limit::Process, shed: 0 });
        let mut system = policy(true);
        system.on_error(libc::ENFILE, now);
        assert_eq!(system.episode, Episode::OutOfDescriptors { limit: Limit::System, shed: 0 });
        let (p, s) = (Limit::Process.message(), Limit::System.message());
        assert!(p.starts_with("out of file descriptors (") && s.starts_with("out of file descriptors ("));
        assert!(p.contains("ulimit -n") && !p.contains("in system"), "{p}");
        assert!(s.contains("in system") && s.contains("fs.file-max"), "{s}");
    }

    #[test]
    fn unknown_errors_pause_and_retry_and_never_give_up() {
        let now = Instant::now();
        let mut p = policy(true);
        assert_eq!(p.on_error(libc::ENOMEM, now), Next::Pause);
        assert!(p.spare_held(), "the spare is kept for out-of-descriptor episodes");
        assert!(p.retry_due(now + RETRY));
        assert_eq!(p.on_error(libc::ENOBUFS, now + RETRY), Next::Pause);
        assert_eq!(p.retry_at(), Some(now + RETRY + RETRY));
        p.on_accepted();
        assert!(!p.is_paused());
        assert_eq!(p.episode, Episode::None);
    }
}
