//! Readiness selectors: how a worker learns which descriptors are ready. The loop in
//! `worker.rs` is generic over [`Selector`] (static dispatch: one loop compiled per
//! selector, no virtual call per event); each selector keeps its own registrations and
//! its own event buffer, and all its syscalls are in `sys.rs`.

mod epoll;

pub(crate) use epoll::Epoll;

use std::io;
use std::os::fd::BorrowedFd;

/// What one event reports, in the selector's own terms translated to the loop's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ready {
    /// Reading would not block (data, EOF, or an error to collect).
    pub(crate) readable: bool,
    /// Writing would not block (room, or an error to collect).
    pub(crate) writable: bool,
    /// The peer's FIN, a hang-up or an error was reported: no further edge will come.
    pub(crate) hup: bool,
}

/// A readiness selector: registrations keyed by a `u64` token and one wait per turn.
pub(crate) trait Selector: Sized {
    /// The engine name shown in logs and stats.
    const NAME: &'static str;

    fn new() -> io::Result<Self>;

    /// Watches a listener or the waker for input.
    fn add_reader(&mut self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()>;

    /// Watches a new connection.
    fn add_conn(&mut self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()>;

    /// Stops watching `fd` (which stays open).
    fn remove(&mut self, fd: BorrowedFd<'_>) -> io::Result<()>;

    /// Waits up to `timeout_ms` (-1 blocks) and returns how many events it holds.
    fn wait(&mut self, timeout_ms: i32) -> io::Result<usize>;

    /// The `i`-th event of the last wait: its token and readiness.
    fn event(&self, i: usize) -> (u64, Ready);
}
