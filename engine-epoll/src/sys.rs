//! The thin syscall layer: every `unsafe` of the readiness engine lives here, and every
//! syscall is counted here ([`duet_engine::syscalls`]), never at a call site.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Counts the syscall just made and turns a `-1` return into the thread's last OS error.
#[inline]
fn check<T: Copy + PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    duet_engine::syscalls::count(1);
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) type Event = libc::epoll_event;

pub(crate) fn empty_event() -> Event {
    libc::epoll_event { events: 0, u64: 0 }
}

pub(crate) fn event_token(ev: &Event) -> u64 {
    ev.u64
}

pub(crate) fn event_flags(ev: &Event) -> u32 {
    ev.events
}

pub(crate) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: no pointer arguments; the result is checked.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by epoll_create1 and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One `epoll_ctl`: `op` (ADD, MOD or DEL) of `fd` with `events` and `token`.
pub(crate) fn epoll_ctl(ep: BorrowedFd<'_>, op: i32, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a live local epoll_event (DEL ignores it, but old kernels want a
    // valid pointer); the kernel copies it and keeps no pointer. Both descriptors are
    // borrowed, so open for the call.
    check(unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) }).map(drop)
}

/// Waits for events; `timeout_ms` -1 blocks. EINTR reads as zero events.
pub(crate) fn epoll_wait(ep: BorrowedFd<'_>, events: &mut [Event], timeout_ms: i32) -> io::Result<usize> {
    let max = events.len().min(i32::MAX as usize) as i32;
    // SAFETY: `events` is exclusively borrowed and writable for `max` entries (at most
    // its length); the kernel writes only there and keeps no pointer.
    match check(unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) }) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// poll(2) on `fds`; `timeout_ms` -1 blocks. EINTR reads as nothing ready.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is exclusively borrowed, so valid and writable for `fds.len()`
    // entries for the call; the kernel writes only their `revents` and keeps no pointer.
    match check(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) }) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// The descriptors one `fd_set` can hold: select(2) cannot watch a descriptor at or
/// above this.
pub(crate) const FD_SETSIZE: usize = libc::FD_SETSIZE;

const WORD_BITS: usize = 8 * std::mem::size_of::<libc::c_ulong>();

/// An `fd_set` with safe, bounds-checked bit operations: the same layout as
/// `libc::fd_set` (an array of longs, descriptor `d` at bit `d % bits` of word
/// `d / bits`, as glibc's and musl's FD_SET do), so no FD_SET can ever write out of it.
#[repr(C)]
#[derive(Clone)]
pub(crate) struct FdSet([libc::c_ulong; FD_SETSIZE / WORD_BITS]);

const _: () = assert!(std::mem::size_of::<FdSet>() == std::mem::size_of::<libc::fd_set>());
const _: () = assert!(std::mem::align_of::<FdSet>() == std::mem::align_of::<libc::fd_set>());

impl FdSet {
    pub(crate) fn new() -> FdSet {
        FdSet([0; FD_SETSIZE / WORD_BITS])
    }

    /// Adds (`on`) or removes `fd`; false (and no change) if it is not below FD_SETSIZE.
    pub(crate) fn set(&mut self, fd: i32, on: bool) -> bool {
        match usize::try_from(fd) {
            Ok(d) if d < FD_SETSIZE => {
                let bit = 1 << (d % WORD_BITS);
                if on {
                    self.0[d / WORD_BITS] |= bit;
                } else {
                    self.0[d / WORD_BITS] &= !bit;
                }
                true
            }
            _ => false,
        }
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, fd: i32) -> bool {
        match usize::try_from(fd) {
            Ok(d) if d < FD_SETSIZE => self.0[d / WORD_BITS] & (1 << (d % WORD_BITS)) != 0,
            _ => false,
        }
    }

    /// The descriptors below `nfds` in `self` or `other`, lowest first, each with whether
    /// it is in `self` and in `other`; a word at a time (an empty word costs one test).
    pub(crate) fn iter_union<'a>(
        &'a self,
        other: &'a FdSet,
        nfds: i32,
    ) -> impl Iterator<Item = (i32, bool, bool)> + 'a {
        let words = (nfds.max(0) as usize).div_ceil(WORD_BITS).min(self.0.len());
        (0..words).flat_map(move |w| {
            let (a, b) = (self.0[w], other.0[w]);
            let mut bits = a | b;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits & bits.wrapping_neg();
                bits &= bits - 1;
                let fd = (w * WORD_BITS + bit.trailing_zeros() as usize) as i32;
                Some((fd, a & bit != 0, b & bit != 0))
            })
        })
    }

    /// The highest descriptor in the set, if any.
    pub(crate) fn highest(&self) -> Option<i32> {
        let (w, &word) = self.0.iter().enumerate().rev().find(|(_, &word)| word != 0)?;
        Some((w * WORD_BITS + (WORD_BITS - 1 - word.leading_zeros() as usize)) as i32)
    }
}

/// select(2) over descriptors below `nfds` in `read` and `write` (which it rewrites to
/// the ready ones); `timeout_ms` -1 blocks. EINTR reads as nothing ready.
pub(crate) fn select(nfds: i32, read: &mut FdSet, write: &mut FdSet, timeout_ms: i32) -> io::Result<usize> {
    let mut tv = libc::timeval {
        tv_sec: (timeout_ms.max(0) / 1000) as libc::time_t,
        tv_usec: (timeout_ms.max(0) % 1000 * 1000) as libc::suseconds_t,
    };
    let timeout: *mut libc::timeval = if timeout_ms < 0 { std::ptr::null_mut() } else { &mut tv };
    let nfds = nfds.min(FD_SETSIZE as i32);
    // SAFETY: `read` and `write` are exclusively borrowed FdSets with the layout of
    // `libc::fd_set` (asserted above), and `nfds` is at most FD_SETSIZE, so the kernel
    // reads and writes only inside them; `timeout` is null or points at the live local
    // `tv`; the kernel keeps no pointer.
    let ret = unsafe {
        libc::select(nfds, (read as *mut FdSet).cast(), (write as *mut FdSet).cast(), std::ptr::null_mut(), timeout)
    };
    match check(ret) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is exclusively borrowed and writable for `buf.len()` bytes; the
    // socket is borrowed, so open for the call.
    check(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }).map(|n| n as usize)
}

/// One gathered send with MSG_NOSIGNAL (a closed peer is EPIPE, not SIGPIPE).
pub(crate) fn sendv(fd: BorrowedFd<'_>, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    let fd = fd.as_raw_fd();
    if let [one] = iov {
        // SAFETY: `one` is borrowed, so readable for its length for the duration of the
        // call; the kernel copies the bytes and keeps no pointer.
        return check(unsafe { libc::send(fd, one.as_ptr().cast(), one.len(), libc::MSG_NOSIGNAL) })
            .map(|n| n as usize);
    }
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix (documented by std).
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: `msg` points at `iov` (IoSlice has iovec's layout), borrowed and so valid
    // and unchanged for the call, and so are the slices it lists; the kernel copies the
    // bytes and keeps no pointer.
    check(unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) }).map(|n| n as usize)
}

/// Sends up to `len` bytes of `file` from `offset` to the socket `fd` with sendfile(2).
/// The explicit offset leaves the file's own offset alone, so one descriptor can serve
/// any number of responses at once. sendfile has no MSG_NOSIGNAL: a closed peer would
/// raise SIGPIPE, which the Rust runtime ignores in every Rust `main` binary (duet's),
/// so it is EPIPE here; a non-Rust host embedding this engine must ignore SIGPIPE too.
pub(crate) fn sendfile(fd: BorrowedFd<'_>, file: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `off` is a valid off_t, exclusively borrowed for the call; the kernel
    // writes the advanced offset into it and keeps no pointer. Both descriptors are
    // borrowed, so open for the call.
    check(unsafe { libc::sendfile(fd.as_raw_fd(), file.as_raw_fd(), &mut off, len) }).map(|n| n as usize)
}
