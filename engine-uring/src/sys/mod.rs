//! The unsafe layer, one file per subject: `ring` (the ring, its submissions, the
//! `io_uring_enter` wrapper and the completions), `buf_ring` (the provided-buffer rings
//! a ring owns), `send` (the `sendmsg` header kept for an in-flight send); here, what
//! names a socket in an entry ([`Target`], `on_sock!`) and the few raw syscalls (among
//! them the file-body ones: `sendfile`, the head sent right before it, the splice pipe).
//!
//! Outside this module the only `unsafe` is the submission sites — [`Ring::push`] is an
//! `unsafe fn` whose contract every caller meets at the call site, with its own
//! `// SAFETY:` for that entry: the one submit path of a connection's operations
//! (`worker::conn`) and the loop's own few — the worker guard's `Drop`, and the one
//! place an accepted descriptor (an accept completion's result) is adopted as an
//! `OwnedFd` (an installed one is adopted here, [`adopt_installed_fd`]). Every syscall made here is counted in `duet_engine::syscalls` by the
//! wrapper that makes it. What the types enforce here:
//! - the ring owns its buffer rings; on drop it closes the ring before it unmaps them,
//!   and unmaps them only when no operation is in flight (it leaks them otherwise:
//!   closing the ring fd does not stop an armed receive synchronously) ([`Ring`]'s
//!   `Drop`), whatever the field order;
//! - a ring has at most one buffer group, because a completion names a buffer by its id
//!   only, not by its group;
//! - a provided buffer named by a completion can be given back once only: it travels as
//!   a [`BufId`] (neither `Clone` nor `Copy`) taken once from its [`Completion`] and
//!   consumed by value by [`BufRing::consume`](buf_ring::BufRing::consume);
//! - [`Ring::in_flight`] counts the operations whose last completion has not been
//!   reaped yet, so a caller can tell when nothing refers to its memory or fds any more.

mod buf_ring;
mod mmap;
mod ring;
mod send;

pub use buf_ring::{BufGroup, BufId, BufMode};
pub use mmap::Mapping;
pub use ring::{Completion, Ring};
pub use send::{SendHeader, IORING_NOTIF_USAGE_ZC_COPIED, MAX_IOV};

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// What an entry names to reach a socket: a process descriptor, or a slot of the
/// ring's registered file table (a direct descriptor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Fd(RawFd),
    Direct(u32),
}

/// Builds an entry for a socket [`Target`]: `on_sock!(target, t => opcode::X::new(t, ..))`
/// with `t` a `types::Fd` or a `types::Fixed`, as the target is.
macro_rules! on_sock {
    ($target:expr, $t:ident => $entry:expr) => {
        match $target {
            $crate::sys::Target::Fd(fd) => {
                let $t = io_uring::types::Fd(fd);
                $entry
            }
            $crate::sys::Target::Direct(slot) => {
                let $t = io_uring::types::Fixed(slot);
                $entry
            }
        }
    };
}
pub(crate) use on_sock;

/// The open-file soft limit (`None` if unreadable).
pub fn nofile_soft_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    duet_engine::syscalls::count(1);
    // SAFETY: getrlimit writes one `rlimit` into `limit`, which lives across the call.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (got == 0).then_some(limit.rlim_cur)
}

/// Sends up to `len` bytes of `file` from `offset` to the non-blocking socket `sock` with
/// sendfile(2), from the loop thread: page-cache pages go to the socket by reference.
/// The explicit offset leaves the file's own offset alone (one descriptor serves any
/// number of responses). sendfile has no MSG_NOSIGNAL: a closed peer would raise
/// SIGPIPE, which every Rust `main` binary (duet) ignores, so it is EPIPE here.
pub fn sendfile(sock: BorrowedFd<'_>, file: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    duet_engine::syscalls::count(1);
    // SAFETY: `off` is a valid off_t exclusively borrowed for the call; the kernel writes
    // the advanced offset into it and keeps no pointer. Both descriptors are borrowed, so
    // open for the call.
    let n = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sends `iov` on the non-blocking socket `sock` now, from the loop thread (a response
/// head right before a `sendfile` body: no ring turn between them). `more`: MSG_MORE, so
/// the head waits for the body's first bytes and they leave in one segment.
pub fn send_now(sock: BorrowedFd<'_>, iov: &[IoSlice<'_>], more: bool) -> io::Result<usize> {
    // SAFETY: msghdr is a plain C struct for which all-zero bytes are a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix (documented by std).
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | if more { libc::MSG_MORE } else { 0 };
    duet_engine::syscalls::count(1);
    // SAFETY: `msg` points at `iov` (iovec's layout), borrowed and so valid and unchanged
    // for the call, as are the slices it lists; the kernel copies the bytes and keeps no
    // pointer.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A non-blocking, close-on-exec pipe, its capacity asked to be `size` bytes
/// (`F_SETPIPE_SZ`; the kernel may give less, up to `/proc/sys/fs/pipe-max-size`):
/// `(read end, write end)`.
pub fn pipe(size: usize) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    duet_engine::syscalls::count(1);
    // SAFETY: pipe2 writes two descriptors into `fds`, which lives across the call.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors of this process that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    duet_engine::syscalls::count(1);
    // SAFETY: fcntl on a descriptor we own, with an int argument; no memory. A refusal
    // (over pipe-max-size) leaves the default size, which only means smaller splices.
    let _ = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
    Ok((r, w))
}

/// Adopts the process descriptor an `IORING_OP_FIXED_FD_INSTALL` completion returned
/// (`res`, non-negative).
pub fn adopt_installed_fd(res: i32) -> OwnedFd {
    debug_assert!(res >= 0);
    // SAFETY: the kernel has just installed `res` in this process's fd table for this
    // completion alone; nothing else knows the number, so this is its only owner.
    unsafe { OwnedFd::from_raw_fd(res) }
}

/// `SOCKET_URING_OP_SIOCINQ`: the unread bytes of a socket, as a completion's result.
pub const SOCKET_URING_OP_SIOCINQ: u32 = 0;

#[cfg(test)]
pub(crate) mod test_ring {
    use super::Ring;

    /// A ring, or `None` (with a note) where io_uring is unavailable and not required.
    pub(crate) fn ring(entries: u32) -> Option<Ring> {
        ring_with(entries, false)
    }

    /// [`ring`], with `IORING_SETUP_NO_SQARRAY` tried first when `flat_sq`.
    pub(crate) fn ring_with(entries: u32, flat_sq: bool) -> Option<Ring> {
        match Ring::new(entries, None, flat_sq) {
            Ok(ring) => Some(ring),
            Err(e) if std::env::var("DUET_REQUIRE_URING").as_deref() != Ok("1") => {
                eprintln!("io_uring unavailable here ({e}): skipped");
                None
            }
            Err(e) => panic!("DUET_REQUIRE_URING=1 but no ring: {e}"),
        }
    }
}
