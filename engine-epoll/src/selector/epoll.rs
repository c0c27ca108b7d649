//! epoll, edge- or level-triggered.
//!
//! - `epoll` (`EDGE = true`): a connection is registered once for
//!   `EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET` and never modified; the loop remembers its
//!   readiness until a read or write would block.
//! - `epoll-lt` (`EDGE = false`): no `EPOLLET`; each registration carries exactly the
//!   interest its connection needs, changed with `EPOLL_CTL_MOD` when the need changes.
//!   A descriptor that needs nothing is taken out of the set (`EPOLL_CTL_DEL`) and put
//!   back (`EPOLL_CTL_ADD`) when it needs something again: epoll reports a hang-up or an
//!   error whatever the interest, and level-triggered it would report it every wait.

use super::{Interest, Ready, Selector};
use crate::sys;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Events taken per epoll_wait.
const MAX_EVENTS: usize = 512;

pub(crate) struct EpollSelector<const EDGE: bool> {
    ep: OwnedFd,
    events: Vec<sys::Event>,
}

/// Edge-triggered epoll.
pub(crate) type Epoll = EpollSelector<true>;
/// Level-triggered epoll.
pub(crate) type EpollLt = EpollSelector<false>;

impl<const EDGE: bool> EpollSelector<EDGE> {
    fn flags(interest: Interest, conn: bool) -> u32 {
        let mut flags = 0;
        if EDGE {
            flags |= libc::EPOLLET;
            if conn {
                return (flags | libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP) as u32;
            }
        }
        if interest.read {
            flags |= libc::EPOLLIN;
            if conn {
                flags |= libc::EPOLLRDHUP;
            }
        }
        if interest.write {
            flags |= libc::EPOLLOUT;
        }
        flags as u32
    }
}

impl<const EDGE: bool> Selector for EpollSelector<EDGE> {
    const NAME: &'static str = if EDGE { "epoll" } else { "epoll-lt" };
    const EDGE: bool = EDGE;
    const CLOSE_REMOVES: bool = true;

    fn new() -> io::Result<Self> {
        Ok(EpollSelector { ep: sys::epoll_create()?, events: vec![sys::empty_event(); MAX_EVENTS] })
    }

    fn add(&mut self, fd: BorrowedFd<'_>, token: u64, interest: Interest, conn: bool) -> io::Result<()> {
        if !EDGE && interest.is_none() {
            return Ok(());
        }
        sys::epoll_ctl(self.ep.as_fd(), libc::EPOLL_CTL_ADD, fd, Self::flags(interest, conn), token)
    }

    fn modify(&mut self, fd: BorrowedFd<'_>, token: u64, old: Interest, new: Interest) -> io::Result<()> {
        let op = match (old.is_none(), new.is_none()) {
            (true, true) => return Ok(()),
            (true, false) => libc::EPOLL_CTL_ADD,
            (false, true) => libc::EPOLL_CTL_DEL,
            (false, false) => libc::EPOLL_CTL_MOD,
        };
        // Only connections change their interest (a listener changes read only, and
        // EPOLLRDHUP is harmless on a listener, which never receives a FIN).
        sys::epoll_ctl(self.ep.as_fd(), op, fd, Self::flags(new, true), token)
    }

    fn remove(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        sys::epoll_ctl(self.ep.as_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    fn wait(&mut self, timeout_ms: i32) -> io::Result<usize> {
        sys::epoll_wait(self.ep.as_fd(), &mut self.events, timeout_ms)
    }

    fn event(&self, i: usize) -> (u64, Ready) {
        let ev = &self.events[i];
        let flags = sys::event_flags(ev);
        let any = |mask: i32| flags & mask as u32 != 0;
        let ready = Ready {
            readable: any(libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR),
            writable: any(libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR),
            hup: any(libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR),
        };
        (sys::event_token(ev), ready)
    }
}
