//! The waker: an eventfd a blocked loop watches, so [`crate::Shutdown`] reaches it at
//! once.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// An eventfd owned as a `File`: writing adds to its counter (the loop wakes), reading
/// takes the counter back to zero. Both count their syscall ([`crate::syscalls`]).
#[derive(Debug)]
pub struct Waker {
    fd: File,
}

impl Waker {
    /// A waker for a readiness loop: non-blocking, so a drain never blocks.
    pub fn nonblocking() -> std::io::Result<Waker> {
        Ok(Waker { fd: File::from(crate::sys::eventfd(true)?) })
    }

    /// A waker for a completion loop: blocking, so a read submitted to io_uring waits
    /// for the counter instead of completing with `EAGAIN`.
    pub fn blocking() -> std::io::Result<Waker> {
        Ok(Waker { fd: File::from(crate::sys::eventfd(false)?) })
    }

    /// Wakes the loop. An error is ignored: the only one possible on a live eventfd is
    /// a full counter, which already means "woken".
    pub fn wake(&self) {
        crate::syscalls::count(1);
        let _ = (&self.fd).write(&1u64.to_ne_bytes());
    }

    /// Takes the counter back to zero (non-blocking wakers; nothing to take is fine).
    pub fn drain(&self) {
        crate::syscalls::count(1);
        let mut counter = [0u8; 8];
        let _ = (&self.fd).read(&mut counter);
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_accumulate_and_a_drain_clears_them() {
        let waker = Waker::nonblocking().expect("eventfd");
        waker.wake();
        waker.wake();
        let mut counter = [0u8; 8];
        assert_eq!((&waker.fd).read(&mut counter).expect("readable after a wake"), 8);
        assert_eq!(u64::from_ne_bytes(counter), 2);
        let err = (&waker.fd).read(&mut counter).expect_err("empty after the read");
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        waker.drain(); // nothing to take: no error, no block
    }
}
