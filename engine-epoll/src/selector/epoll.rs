//! Edge-triggered epoll: a connection is registered once for
//! `EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET` and never modified; the loop remembers its
//! readiness until a read or write would block.

use super::{Ready, Selector};
use crate::sys;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Events taken per epoll_wait.
const MAX_EVENTS: usize = 512;

pub(crate) struct Epoll {
    ep: OwnedFd,
    events: Vec<sys::Event>,
}

impl Selector for Epoll {
    const NAME: &'static str = "epoll";

    fn new() -> io::Result<Epoll> {
        Ok(Epoll { ep: sys::epoll_create()?, events: vec![sys::empty_event(); MAX_EVENTS] })
    }

    fn add_reader(&mut self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        sys::epoll_add(self.ep.as_fd(), fd, (libc::EPOLLIN | libc::EPOLLET) as u32, token)
    }

    fn add_conn(&mut self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        sys::epoll_add(self.ep.as_fd(), fd, events, token)
    }

    fn remove(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        sys::epoll_del(self.ep.as_fd(), fd)
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
