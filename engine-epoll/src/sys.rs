//! The thin syscall layer: every `unsafe` of the epoll engine lives here.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

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

/// An owned fd, closed on drop.
#[derive(Debug)]
pub(crate) struct Fd(pub(crate) RawFd);

impl Drop for Fd {
    fn drop(&mut self) {
        close(self.0);
    }
}

pub(crate) fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and never uses it after this call.
    unsafe { libc::close(fd) };
}

pub(crate) fn epoll_create() -> io::Result<Fd> {
    // No pointer arguments.
    syscall!(epoll_create1(libc::EPOLL_CLOEXEC)).map(Fd)
}

pub(crate) fn epoll_add(ep: RawFd, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // `ev` is a valid epoll_event that outlives the call.
    syscall!(epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev)).map(drop)
}

pub(crate) fn epoll_del(ep: RawFd, fd: RawFd) -> io::Result<()> {
    let mut ev = empty_event();
    // `ev` is ignored by DEL but must be non-null on old kernels.
    syscall!(epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, &mut ev)).map(drop)
}

/// Waits for events; `timeout_ms` -1 blocks. EINTR reads as zero events.
pub(crate) fn epoll_wait(ep: RawFd, events: &mut [Event], timeout_ms: i32) -> io::Result<usize> {
    let max = events.len().min(i32::MAX as usize) as i32;
    // `events` is writable for `max` entries.
    match syscall!(epoll_wait(ep, events.as_mut_ptr(), max, timeout_ms)) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

pub(crate) fn eventfd() -> io::Result<Fd> {
    syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)).map(Fd)
}

/// Adds one to an eventfd (wakes its epoll). Errors are ignored: a full counter
/// already means "woken".
pub(crate) fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // `one` is 8 readable bytes for the duration of the call.
    let _ = syscall!(write(fd, (&one as *const u64).cast(), 8));
}

pub(crate) fn eventfd_drain(fd: RawFd) {
    let mut v: u64 = 0;
    // `v` is 8 writable bytes for the duration of the call.
    let _ = syscall!(read(fd, (&mut v as *mut u64).cast(), 8));
}

pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // `buf` is writable for `buf.len()` bytes.
    syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len())).map(|n| n as usize)
}

/// One gathered send with MSG_NOSIGNAL (a closed peer is EPIPE, not SIGPIPE).
pub(crate) fn sendv(fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
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
pub(crate) fn sendfile(fd: RawFd, file: RawFd, offset: u64, len: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `off` is a valid off_t, exclusively borrowed for the call; the kernel
    // writes the advanced offset into it and keeps no pointer. The descriptors are
    // plain integers (a closed one is EBADF, not undefined behaviour).
    syscall!(sendfile(fd, file, &mut off, len)).map(|n| n as usize)
}

/// Accepts one connection, non-blocking and close-on-exec.
pub(crate) fn accept(listener: RawFd) -> io::Result<RawFd> {
    // Null address pointers are allowed: we do not need the peer address.
    syscall!(accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC))
}

pub(crate) fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // `one` is a valid c_int for the call; the length matches.
    syscall!(setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        (&one as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
    ))
    .map(drop)
}

pub(crate) fn shutdown_write(fd: RawFd) {
    // No pointer arguments; errors (peer gone) are harmless here.
    let _ = syscall!(shutdown(fd, libc::SHUT_WR));
}

/// The spare descriptor for EMFILE handling.
pub(crate) fn open_spare() -> io::Result<Fd> {
    let path = c"/dev/null";
    // `path` is a valid NUL-terminated string.
    syscall!(open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC)).map(Fd)
}
