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

/// A close-on-exec anonymous file of `len` bytes, zero-filled (`memfd_create` +
/// `ftruncate`): memory that processes share by inheriting the descriptor.
pub(crate) fn shared_memory(name: &std::ffi::CStr, len: usize) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a live NUL-terminated string the kernel only reads during the
    // call; the result is checked.
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by memfd_create and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: no pointers; `fd` is open.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    Ok(fd)
}

/// A shared, read-write mapping of the first `len` bytes of `fd`, unmapped on drop.
#[derive(Debug)]
pub(crate) struct SharedMap {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory that only ever is accessed through atomics
// (`SharedMap::atomic`), so it may be used from any thread.
unsafe impl Send for SharedMap {}
// SAFETY: as for Send: every access goes through an atomic.
unsafe impl Sync for SharedMap {}

impl SharedMap {
    /// Maps `len` bytes of `fd` shared; fails when the file is shorter.
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<SharedMap> {
        // SAFETY: fstat writes one `stat` through the pointer, which points at the live,
        // exclusively borrowed `st`; `fd` is borrowed, so open for the call.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
        if len == 0 || (st.st_size as u64) < len as u64 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: a fresh mapping at an address the kernel picks (no existing memory is
        // touched); `fd` is open; the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        crate::syscalls::count(1);
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(SharedMap { ptr, len })
    }

    /// The `i`-th 64-bit word of the mapping, `None` past its end.
    pub(crate) fn atomic(&self, i: usize) -> Option<&std::sync::atomic::AtomicU64> {
        let end = i.checked_add(1)?.checked_mul(8)?;
        if end > self.len {
            return None;
        }
        // SAFETY: the word lies inside the mapping (checked above), which is page-aligned
        // so the word is 8-byte aligned, and stays mapped for as long as `self` lives
        // (the borrow's lifetime). Every process reaches it only through atomics.
        Some(unsafe { &*self.ptr.as_ptr().add(i * 8).cast::<std::sync::atomic::AtomicU64>() })
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `new`, not yet unmapped; no
        // reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
