//! The thin syscall layer: every `unsafe` of the epoll engine lives here.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Calls a libc function and turns `-1` into the thread's last OS error.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: each caller states why its arguments are valid for this call.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 { Err(io::Error::last_os_error()) } else { Ok(res) }
    }};
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
    // No pointer arguments.
    let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
    // SAFETY: `fd` was just returned by epoll_create1 and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn epoll_add(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // `ev` is a valid epoll_event that outlives the call.
    syscall!(epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev)).map(drop)
}

pub(crate) fn epoll_del(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut ev = empty_event();
    // `ev` is ignored by DEL but must be non-null on old kernels.
    syscall!(epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_DEL, fd.as_raw_fd(), &mut ev)).map(drop)
}

/// Waits for events; `timeout_ms` -1 blocks. EINTR reads as zero events.
pub(crate) fn epoll_wait(ep: BorrowedFd<'_>, events: &mut [Event], timeout_ms: i32) -> io::Result<usize> {
    let max = events.len().min(i32::MAX as usize) as i32;
    // `events` is writable for `max` entries.
    match syscall!(epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms)) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // `buf` is writable for `buf.len()` bytes.
    syscall!(read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())).map(|n| n as usize)
}

/// One gathered send with MSG_NOSIGNAL (a closed peer is EPIPE, not SIGPIPE).
pub(crate) fn sendv(fd: BorrowedFd<'_>, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    let fd = fd.as_raw_fd();
    if let [one] = iov {
        // SAFETY: `one` is readable for its length for the duration of the call.
        return syscall!(send(fd, one.as_ptr().cast(), one.len(), libc::MSG_NOSIGNAL)).map(|n| n as usize);
    }
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix (documented by std).
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    // `msg` points at `iov`, which is valid and unchanged for the call.
    syscall!(sendmsg(fd, &msg, libc::MSG_NOSIGNAL)).map(|n| n as usize)
}

/// Sends up to `len` bytes of `file` from `offset` to the socket `fd` with sendfile(2).
/// The explicit offset leaves the file's own offset alone, so one descriptor can serve
/// any number of responses at once. sendfile has no MSG_NOSIGNAL: a closed peer would
/// raise SIGPIPE, which the Rust runtime ignores in every binary, so it is EPIPE here.
pub(crate) fn sendfile(fd: BorrowedFd<'_>, file: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `off` is a valid off_t, exclusively borrowed for the call; the kernel
    // writes the advanced offset into it and keeps no pointer. Both descriptors are
    // borrowed, so open for the call.
    syscall!(sendfile(fd.as_raw_fd(), file.as_raw_fd(), &mut off, len)).map(|n| n as usize)
}
