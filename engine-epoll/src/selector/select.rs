//! select(2): the kernel takes two bitmaps (`fd_set`s: descriptors to watch for input and
//! for room to write), checks every descriptor below the highest one plus one, and
//! overwrites the bitmaps with the ready ones. So every wait starts from a fresh copy of
//! the watched sets (kept up to date as interest changes, as the classic select loop
//! keeps its master sets) and ends with a walk over the returned bitmaps. The kernel's
//! check grows with the number of connections, active or not: that is select's nature.
//! An `fd_set` holds FD_SETSIZE (1024) bits: a descriptor at or above it cannot be
//! watched at all, so the loop refuses such a connection at accept
//! ([`Select::can_watch`]) and nothing ever writes past the end of a set.

use super::{Interest, Ready, Selector};
use crate::sys::{self, FdSet, FD_SETSIZE};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

pub(crate) struct Select {
    /// What is watched, kept as interest changes.
    want_read: FdSet,
    want_write: FdSet,
    /// The copies select overwrites at each wait.
    read: FdSet,
    write: FdSet,
    /// Each watched descriptor's token, by descriptor number (below FD_SETSIZE).
    tokens: Vec<u64>,
    /// One above the highest descriptor registered (select's `nfds`).
    nfds: i32,
    /// The events of the last wait.
    ready: Vec<(u64, Ready)>,
}

impl Select {
    fn watch(&mut self, fd: RawFd, interest: Interest) {
        self.want_read.set(fd, interest.read);
        self.want_write.set(fd, interest.write);
    }
}

impl Selector for Select {
    const NAME: &'static str = "select";
    const EDGE: bool = false;
    const CLOSE_REMOVES: bool = false;

    fn new() -> io::Result<Select> {
        Ok(Select {
            want_read: FdSet::new(),
            want_write: FdSet::new(),
            read: FdSet::new(),
            write: FdSet::new(),
            tokens: vec![0; FD_SETSIZE],
            nfds: 0,
            ready: Vec::new(),
        })
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
        self.tokens[fd as usize] = token;
        self.watch(fd, interest);
        self.nfds = self.nfds.max(fd + 1);
        Ok(())
    }

    fn modify(&mut self, fd: BorrowedFd<'_>, _token: u64, _old: Interest, new: Interest) -> io::Result<()> {
        self.watch(fd.as_raw_fd(), new);
        Ok(())
    }

    fn remove(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let fd = fd.as_raw_fd();
        self.watch(fd, Interest::NONE);
        if fd + 1 == self.nfds {
            let read = self.want_read.highest().unwrap_or(-1);
            let write = self.want_write.highest().unwrap_or(-1);
            self.nfds = read.max(write) + 1;
        }
        Ok(())
    }

    fn wait(&mut self, timeout_ms: i32) -> io::Result<usize> {
        self.ready.clear();
        self.read.clone_from(&self.want_read);
        self.write.clone_from(&self.want_write);
        if sys::select(self.nfds, &mut self.read, &mut self.write, timeout_ms)? == 0 {
            return Ok(0);
        }
        for (fd, readable, writable) in self.read.iter_union(&self.write, self.nfds) {
            self.ready.push((self.tokens[fd as usize], Ready { readable, writable, hup: false }));
        }
        Ok(self.ready.len())
    }

    fn event(&self, i: usize) -> (u64, Ready) {
        self.ready[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_sets_hold_descriptors_below_fd_setsize_only() {
        let mut set = FdSet::new();
        assert!(set.set(0, true) && set.set(63, true) && set.set(64, true) && set.set(1023, true));
        assert!(!set.set(1024, true) && !set.set(-1, true), "out of range: refused, not written");
        let mut other = FdSet::new();
        assert!(other.set(64, true) && other.set(500, true));
        let union: Vec<_> = set.iter_union(&other, 1024).collect();
        assert_eq!(
            union,
            [(0, true, false), (63, true, false), (64, true, true), (500, false, true), (1023, true, false)]
        );
        let below: Vec<_> = set.iter_union(&other, 64).map(|(fd, ..)| fd).collect();
        assert_eq!(below, [0, 63], "only below nfds (a word at a time)");
        assert_eq!(set.highest(), Some(1023));
        assert!(set.set(1023, false) && !set.contains(1023) && set.contains(64));
        assert_eq!(set.highest(), Some(64));
        assert!(!Select::can_watch(1024) && Select::can_watch(1023) && !Select::can_watch(-1));
    }
}
