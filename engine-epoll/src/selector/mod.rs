//! Readiness selectors: how a worker learns which descriptors are ready. The loop in
//! `worker.rs` is generic over [`Selector`] (static dispatch: one loop compiled per
//! selector, no virtual call per event); each selector keeps its own registrations and
//! its own event list, and all its syscalls are in `sys.rs`, each counted there (a
//! change of a registration is counted only where it is a syscall, `epoll_ctl`; poll
//! and select change their own arrays).
//!
//! Two kinds, told apart by [`Selector::EDGE`]:
//! - **edge-triggered** (`epoll`): a descriptor is registered once and each change of
//!   its readiness is reported once; the loop remembers what it was told until a read
//!   or write would block, and never touches the registration again.
//! - **level-triggered** (`epoll-lt`, `poll`, `select`): a descriptor is reported for
//!   as long as it is ready, so the loop keeps each descriptor's [`Interest`] equal to
//!   what its connection needs (no write interest while nothing waits to be sent, no
//!   read interest while the connection does not want input): otherwise a socket with
//!   room to write, or input the connection cannot take yet, would wake every turn.

mod epoll;
mod poll;
mod registry;
mod select;

pub(crate) use epoll::{Epoll, EpollLt};
pub(crate) use poll::Poll;
pub(crate) use select::Select;

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

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

/// What a level-triggered selector watches a descriptor for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Interest {
    pub(crate) read: bool,
    pub(crate) write: bool,
}

impl Interest {
    pub(crate) const NONE: Interest = Interest { read: false, write: false };
    pub(crate) const READ: Interest = Interest { read: true, write: false };

    pub(crate) fn is_none(self) -> bool {
        !self.read && !self.write
    }
}

/// A readiness selector: registrations keyed by a `u64` token and one wait per turn.
pub(crate) trait Selector: Sized {
    /// The engine name shown in logs, stats and `--engine`.
    const NAME: &'static str;
    /// Edge-triggered (see the module documentation): [`Selector::modify`] is never
    /// called and a connection is registered for everything at once.
    const EDGE: bool;

    fn new() -> io::Result<Self>;

    /// Whether this selector can watch `fd` at all (select: only below FD_SETSIZE).
    fn can_watch(_fd: RawFd) -> bool {
        true
    }

    /// Watches `fd` (a listener, the waker or a new connection) for `interest`; an
    /// edge-triggered selector watches a connection for everything.
    fn add(&mut self, fd: BorrowedFd<'_>, token: u64, interest: Interest, conn: bool) -> io::Result<()>;

    /// Changes what `fd`, registered with interest `old`, is watched for (level-triggered
    /// selectors only).
    fn modify(&mut self, fd: BorrowedFd<'_>, token: u64, old: Interest, new: Interest) -> io::Result<()>;

    /// Stops watching `fd` before it is closed, or a listener that stays open.
    fn remove(&mut self, fd: BorrowedFd<'_>) -> io::Result<()>;

    /// Whether closing a descriptor is enough to stop watching it (epoll), so the loop
    /// need not call [`Selector::remove`] first.
    const CLOSE_REMOVES: bool;

    /// Waits up to `timeout_ms` (-1 blocks) and returns how many events it holds.
    fn wait(&mut self, timeout_ms: i32) -> io::Result<usize>;

    /// The `i`-th event of the last wait: its token and readiness.
    fn event(&self, i: usize) -> (u64, Ready);
}
