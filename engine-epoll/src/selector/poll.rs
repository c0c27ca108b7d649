//! poll(2): the whole registry's `pollfd` array goes to the kernel at every wait, which
//! checks every descriptor in it and fills in `revents`; the loop then scans the array
//! for the entries that are ready. Both costs grow with the number of connections,
//! whether they are active or not: that is poll's nature, and nothing more is added.

use super::registry::Registry;
use super::{Interest, Ready, Selector};
use crate::sys;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

#[derive(Default)]
pub(crate) struct Poll {
    registry: Registry,
    /// The events of the last wait.
    ready: Vec<(u64, Ready)>,
}

impl Selector for Poll {
    const NAME: &'static str = "poll";
    const EDGE: bool = false;
    const CLOSE_REMOVES: bool = false;

    fn new() -> io::Result<Poll> {
        Ok(Poll::default())
    }

    fn add(&mut self, fd: BorrowedFd<'_>, token: u64, interest: Interest, _conn: bool) -> io::Result<()> {
        self.registry.add(fd.as_raw_fd(), token, interest);
        Ok(())
    }

    fn modify(&mut self, fd: BorrowedFd<'_>, _token: u64, _old: Interest, new: Interest) -> io::Result<()> {
        self.registry.set(fd.as_raw_fd(), new);
        Ok(())
    }

    fn remove(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.registry.remove(fd.as_raw_fd());
        Ok(())
    }

    fn wait(&mut self, timeout_ms: i32) -> io::Result<usize> {
        self.ready.clear();
        let mut left = sys::poll(&mut self.registry.fds, timeout_ms)?;
        if left == 0 {
            return Ok(0);
        }
        // The scan poll requires: one test per entry, the rest only for ready ones.
        for (i, entry) in self.registry.fds.iter().enumerate() {
            let r = entry.revents;
            if r == 0 {
                continue;
            }
            let any = |mask: i16| r & mask != 0;
            let hangup = libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
            let ready = Ready {
                readable: any(libc::POLLIN | libc::POLLRDHUP | hangup),
                writable: any(libc::POLLOUT | hangup),
                hup: any(libc::POLLRDHUP | hangup),
            };
            self.ready.push((self.registry.tokens[i], ready));
            left -= 1;
            if left == 0 {
                break;
            }
        }
        Ok(self.ready.len())
    }

    fn event(&self, i: usize) -> (u64, Ready) {
        self.ready[i]
    }
}
