//! select(2): two `fd_set`s (read and write) built from the registry before every wait,
//! because select overwrites them with the ready descriptors, then every registered
//! descriptor looked up in them. Both grow with the number of connections. An `fd_set`
//! is a fixed bitmap of FD_SETSIZE (1024) bits: a descriptor at or above it cannot be
//! watched at all, so the loop refuses such a connection at accept ([`Select::can_watch`])
//! and nothing ever writes past the end of a set.

use super::registry::{real_fd, Registry};
use super::{Interest, Ready, Selector};
use crate::sys::{self, FdSet, FD_SETSIZE};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

pub(crate) struct Select {
    registry: Registry,
    read: FdSet,
    write: FdSet,
    /// The events of the last wait.
    ready: Vec<(u64, Ready)>,
}

impl Selector for Select {
    const NAME: &'static str = "select";
    const EDGE: bool = false;
    const CTL_IS_SYSCALL: bool = false;
    const CLOSE_REMOVES: bool = false;

    fn new() -> io::Result<Select> {
        Ok(Select { registry: Registry::default(), read: FdSet::new(), write: FdSet::new(), ready: Vec::new() })
    }

    fn can_watch(fd: RawFd) -> bool {
        usize::try_from(fd).is_ok_and(|fd| fd < FD_SETSIZE)
    }

    fn add(&mut self, fd: BorrowedFd<'_>, token: u64, interest: Interest, _conn: bool) -> io::Result<()> {
        let fd = fd.as_raw_fd();
        if !Self::can_watch(fd) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("select cannot watch descriptor {fd} >= FD_SETSIZE ({FD_SETSIZE})"),
            ));
        }
        self.registry.add(fd, token, interest);
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
        self.read.clear();
        self.write.clear();
        let mut nfds = 0;
        for entry in &self.registry.fds {
            // A skipped entry (no interest) has a negative fd: in neither set.
            if entry.fd < 0 {
                continue;
            }
            if entry.events & libc::POLLIN != 0 {
                self.read.insert(entry.fd);
            }
            if entry.events & libc::POLLOUT != 0 {
                self.write.insert(entry.fd);
            }
            nfds = nfds.max(entry.fd + 1);
        }
        let mut left = sys::select(nfds, &mut self.read, &mut self.write, timeout_ms)?;
        for (entry, &token) in self.registry.fds.iter().zip(&self.registry.tokens) {
            if left == 0 {
                break;
            }
            let fd = real_fd(entry);
            let ready = Ready { readable: self.read.contains(fd), writable: self.write.contains(fd), hup: false };
            if ready.readable || ready.writable {
                // select counts a descriptor once per set it is ready in.
                left = left.saturating_sub(ready.readable as usize + ready.writable as usize);
                self.ready.push((token, ready));
            }
        }
        Ok(self.ready.len())
    }

    fn event(&self, i: usize) -> (u64, Ready) {
        self.ready[i]
    }
}
