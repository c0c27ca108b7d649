//! The syscalls the shared engine core makes itself: the waker's eventfd and the socket
//! calls every engine makes the same way (accept, TCP_NODELAY, half-close, unread
//! bytes). Each counts itself ([`crate::syscalls`]).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Counts the syscall just made ([`crate::syscalls`]) and turns a negative return
/// into the thread's last OS error.
#[inline]
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    crate::syscalls::count(1);
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A close-on-exec eventfd with a zero counter; `nonblocking` adds `EFD_NONBLOCK`.
pub(crate) fn eventfd(nonblocking: bool) -> io::Result<OwnedFd> {
    let flags = libc::EFD_CLOEXEC | if nonblocking { libc::EFD_NONBLOCK } else { 0 };
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let fd = check(unsafe { libc::eventfd(0, flags) })?;
    // SAFETY: `fd` was just returned by eventfd, is valid, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Accepts one connection from `listener`, non-blocking and close-on-exec.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: the address pointers may be null (the peer address is not wanted); the
    // listener is borrowed, so open for the call; the result is checked.
    let fd = check(unsafe { libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), flags) })?;
    // SAFETY: `fd` was just returned by accept4 and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets TCP_NODELAY: responses are written whole, so there is no reason to wait for an
/// ACK before sending the next one.
pub(crate) fn set_nodelay(socket: BorrowedFd<'_>) -> io::Result<()> {
    let one: libc::c_int = 1;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `one` is a live c_int and `len` is its size; the kernel only reads it
    // during the call. The socket is borrowed, so open for the call.
    check(unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            len,
        )
    })
    .map(drop)
}

/// `shutdown(socket, SHUT_WR)`: sends a FIN after what is queued.
pub(crate) fn shutdown_write(socket: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: no pointers; the socket is borrowed, so open for the call.
    check(unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_WR) }).map(drop)
}

/// `ioctl(socket, FIONREAD)`: bytes received and not yet read.
pub(crate) fn unread_bytes(socket: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at the live,
    // exclusively borrowed `n`; the socket is borrowed, so open for the call.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `SO_ATTACH_REUSEPORT_CBPF` (linux/asm-generic/socket.h; not in the libc crate for
/// Linux).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Attaches to the `SO_REUSEPORT` group of `listener` a classic BPF program that picks,
/// for each new connection, one of the group's first `count` sockets at random.
pub(crate) fn reuseport_pick_among_first(listener: BorrowedFd<'_>, count: u32) -> io::Result<()> {
    if count == 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let insn = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let mut program = [
        // A = a random 32-bit number (an ancillary load: no packet bytes are read)
        insn(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32),
        // A %= count
        insn(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, count),
        // the index of the socket in the group
        insn(libc::BPF_RET | libc::BPF_A, 0),
    ];
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    let len = std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t;
    // SAFETY: `fprog` is a live sock_fprog whose `filter` points at the live `program`
    // of `len` instructions; the kernel copies the program during the call and keeps no
    // pointer. The listener is borrowed, so open for the call.
    check(unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            len,
        )
    })
    .map(drop)
}
