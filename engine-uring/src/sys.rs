//! The unsafe layer: the ring and its one `push`, the provided-buffer ring, the
//! `sendmsg` header kept for an in-flight send, and the few raw syscalls.
//!
//! Everything outside this module is safe code. The rules that make the whole engine
//! sound are stated once, on [`Ring::push`].

use duet_http::OutBuf;
use io_uring::{cqueue, squeue, types, IoUring};
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;
use std::time::Instant;

/// One io_uring instance, used by the thread that created it only.
pub struct Ring {
    uring: IoUring,
    mode: &'static str,
    sqpoll: bool,
    /// `io_uring_enter` calls made by [`Ring::push`] on a full submission queue, not
    /// yet taken by [`Ring::take_extra_enters`].
    extra_enters: u64,
}

/// Ring setups tried in order; the first the kernel accepts wins.
type Setup = (&'static str, fn(&mut io_uring::Builder));

const PLAIN_SETUPS: &[Setup] = &[
    ("SINGLE_ISSUER|DEFER_TASKRUN", |b| {
        b.setup_single_issuer().setup_defer_taskrun();
    }),
    ("COOP_TASKRUN", |b| {
        b.setup_coop_taskrun();
    }),
    ("no task-run flags", |_| {}),
];

const SQPOLL_SETUPS: &[Setup] = &[
    ("SQPOLL|SINGLE_ISSUER", |b| {
        b.setup_single_issuer();
    }),
    ("SQPOLL", |_| {}),
];

impl Ring {
    /// A ring with `entries` submission entries and a completion queue four times as
    /// large (so multishot bursts do not overflow it), trying
    /// `SINGLE_ISSUER|DEFER_TASKRUN` first and falling back when the kernel refuses
    /// (`EINVAL`). With `sqpoll_idle_ms` a kernel thread polls the submission queue.
    pub fn new(entries: u32, sqpoll_idle_ms: Option<u32>) -> io::Result<Ring> {
        let entries = entries.clamp(8, 32768).next_power_of_two();
        let cq_entries = entries.saturating_mul(4).min(65536);
        let setups = if sqpoll_idle_ms.is_some() { SQPOLL_SETUPS } else { PLAIN_SETUPS };
        let mut last_err = io::Error::from_raw_os_error(libc::EINVAL);
        for (mode, apply) in setups {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(cq_entries).setup_clamp();
            if let Some(idle) = sqpoll_idle_ms {
                builder.setup_sqpoll(idle);
            }
            apply(&mut builder);
            match builder.build(entries) {
                Ok(uring) => return Ok(Ring { uring, mode, sqpoll: sqpoll_idle_ms.is_some(), extra_enters: 0 }),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = e,
                Err(e) => return Err(e),
            }
        }
        Err(last_err)
    }

    /// Which setup flags the kernel accepted, for the log.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// Submission and completion queue sizes.
    pub fn sizes(&self) -> (u32, u32) {
        (self.uring.params().sq_entries(), self.uring.params().cq_entries())
    }

    /// Queues one submission, handing the queued batch to the kernel first if the
    /// submission queue is full.
    ///
    /// # Safety
    ///
    /// The kernel may read or write what `entry` refers to at any time until the
    /// *last* completion of the operation has been reaped: the one without
    /// `IORING_CQE_F_MORE` (for a cancelled operation, its `-ECANCELED` completion).
    /// Until then:
    /// - **Memory** the entry points to stays valid, unmoved, and untouched by Rust if
    ///   the kernel writes it: `msghdr`s and `iovec` arrays (a boxed [`SendHeader`] held
    ///   in the connection's slot), the segments those point to (kept unchanged by
    ///   `duet_http::Connection` until `handle_sent`, rule 4 of the engine contract),
    ///   and timespecs and the eventfd read buffer (boxed in the worker, one operation
    ///   per buffer at a time).
    /// - **File descriptors** the entry names stay open: a socket is closed only after
    ///   every completion of every operation naming it has been reaped, cancellations
    ///   included, so the kernel can never act on a reused fd number.
    /// - **Provided buffers**: the [`BufRing`] a receive selects from stays registered
    ///   and mapped while any receive operation is left.
    ///
    /// A worker that cannot reap every completion (its ring failed) leaks this memory
    /// instead of freeing it.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller keeps everything `entry` refers to alive until its last
            // completion, as this function's contract requires.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            // Full: let the kernel consume the queued entries, then retry.
            self.extra_enters += 1;
            if self.sqpoll {
                // Wake the polling thread first (submit sets IORING_ENTER_SQ_WAKEUP when
                // it went idle); waiting for space on an idle thread would hang.
                self.uring.submit()?;
                if self.uring.submission().is_full() {
                    self.uring.submitter().squeue_wait()?;
                }
            } else {
                match self.uring.submit() {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// The `io_uring_enter` calls [`Ring::push`] made since the last call.
    pub fn take_extra_enters(&mut self) -> u64 {
        std::mem::take(&mut self.extra_enters)
    }

    /// Submits everything queued and waits for at least `want` completions, in one
    /// `io_uring_enter`. Interruptions and a full completion queue are not errors: the
    /// caller reaps and comes back.
    pub fn submit_and_wait(&self, want: usize) -> io::Result<()> {
        match self.uring.submit_and_wait(want) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::ETIME)) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Like [`Ring::submit_and_wait`], but returns after `timeout` at the latest.
    pub fn submit_and_wait_timeout(&self, want: usize, timeout: Duration) -> io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.uring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::ETIME)) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves up to `max` completions into `out` (cleared first).
    pub fn reap(&mut self, out: &mut Vec<cqueue::Entry>, max: usize) {
        out.clear();
        out.extend(self.uring.completion().take(max));
    }

    /// True when the kernel reported that completions did not fit the queue (they
    /// are kept and flushed by the next enter).
    pub fn cq_overflowed(&mut self) -> bool {
        self.uring.submission().cq_overflow()
    }

    /// Which opcodes this kernel supports.
    pub fn probe(&self) -> io::Result<io_uring::Probe> {
        let mut probe = io_uring::Probe::new();
        self.uring.submitter().register_probe(&mut probe)?;
        Ok(probe)
    }

    fn register_buf_ring(&self, addr: u64, count: u16, bgid: u16) -> io::Result<()> {
        // SAFETY: `addr` is the page-aligned mapping of `count` entries owned by the
        // calling `BufRing`, which stays mapped for as long as the ring can use it (it
        // is unmapped only after this ring is dropped, or after unregistering).
        unsafe { self.uring.submitter().register_buf_ring_with_flags(addr, count, bgid, 0) }
    }

    fn unregister_buf_ring(&self, bgid: u16) -> io::Result<()> {
        self.uring.submitter().unregister_buf_ring(bgid)
    }
}

/// `struct io_uring_buf` from the kernel ABI; the ring's tail overlays `resv` of
/// entry 0.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// Offset of the ring tail (`resv` of entry 0).
const TAIL_OFFSET: usize = 14;

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `populate`: fault every page in now (MAP_POPULATE), so the receive path never
    /// faults and the pool is a fixed cost from the start rather than growing as the
    /// ring cycles through its buffers.
    fn new(len: usize, populate: bool) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping with no address hint touches no existing
        // memory; the result is checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if populate { libc::MAP_POPULATE } else { 0 },
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and the owner (a
        // `BufRing`) is dropped only when the kernel no longer uses the memory.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A provided-buffer ring: `count` buffers of `size` bytes the kernel picks from
/// for multishot receives. A buffer is the engine's from the completion that names
/// it until [`BufRing::consume`] hands it back.
pub struct BufRing {
    entries: Mapping,
    buffers: Mapping,
    count: u16,
    size: u32,
    /// Our copy of the tail; published to the kernel after each recycle.
    tail: u16,
    bgid: u16,
}

impl BufRing {
    /// Maps `count` (a power of two, at most 32768) buffers of `size` bytes, registers
    /// them as group `bgid` on `ring`, and gives them all to the kernel.
    pub fn new(ring: &Ring, count: u16, size: u32, bgid: u16) -> io::Result<BufRing> {
        if count == 0 || !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--uring-buffers {count} must be a power of two between 1 and 32768"),
            ));
        }
        if size == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "--uring-buffer-size must be above 0"));
        }
        let entries = Mapping::new(count as usize * std::mem::size_of::<RawBuf>(), true)?;
        let buffers = Mapping::new(count as usize * size as usize, true)?;
        let mut ring_bufs = BufRing { entries, buffers, count, size, tail: 0, bgid };
        for bid in 0..count {
            ring_bufs.write_entry(bid);
        }
        ring.register_buf_ring(ring_bufs.entries.ptr as u64, count, bgid)?;
        ring_bufs.publish();
        Ok(ring_bufs)
    }

    /// The buffer group id receives name.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Writes the entry for `bid` at our tail and advances it (not yet published).
    fn write_entry(&mut self, bid: u16) {
        let idx = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `idx < count`, so the entry is inside the mapping. The kernel reads
        // only entries between its head and the published tail; this one is past the
        // published tail (the ring never holds more than `count` buffers and `bid` is
        // not in it), so nothing reads it concurrently. Only addr/len/bid are written:
        // `resv` of entry 0 is the tail the kernel reads.
        unsafe {
            let entry = self.entries.ptr.cast::<RawBuf>().add(idx);
            ptr::addr_of_mut!((*entry).addr).write(self.buffers.ptr.add(bid as usize * self.size as usize) as u64);
            ptr::addr_of_mut!((*entry).len).write(self.size);
            ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the written entries visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail is a naturally aligned u16 inside the page-aligned mapping
        // (offset 14 of entry 0); the kernel reads it with acquire ordering, and it is
        // only ever accessed atomically from this side.
        let tail = unsafe { &*self.entries.ptr.add(TAIL_OFFSET).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Runs `f` on the bytes a receive completion delivered, then gives its buffer
    /// back to the kernel. Returns `None` if the completion carries no buffer (or one
    /// this ring does not own).
    pub fn consume<R>(&mut self, cqe: &cqueue::Entry, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let bid = cqueue::buffer_select(cqe.flags())?;
        if bid >= self.count {
            return None;
        }
        let len = (cqe.result().max(0) as usize).min(self.size as usize);
        // SAFETY: the completion names `bid`, so the kernel has finished writing it and
        // will not pick it again until it is recycled below; `len` bytes within the
        // buffer were written by the receive. The slice does not outlive `f`.
        let bytes = unsafe { std::slice::from_raw_parts(self.buffers.ptr.add(bid as usize * self.size as usize), len) };
        let result = f(bytes);
        self.write_entry(bid);
        self.publish();
        Some(result)
    }

    /// How many buffers the ring holds.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Unregisters the group from `ring` (used by the probe, whose ring outlives it).
    pub fn unregister(&self, ring: &Ring) {
        let _ = ring.unregister_buf_ring(self.bgid);
    }
}

/// Most segments one send carries; the rest goes in the next send.
pub const MAX_IOV: usize = 16;

/// The `msghdr` and `iovec`s of one in-flight `sendmsg`, boxed so their address is
/// stable while the kernel may read them.
pub struct SendHeader {
    msg: libc::msghdr,
    iov: [libc::iovec; MAX_IOV],
    /// Bytes the loaded segments hold.
    total: usize,
}

impl SendHeader {
    /// An empty header.
    pub fn boxed() -> Box<SendHeader> {
        let empty = libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 };
        // SAFETY: msghdr is a plain C struct for which all-zero bytes are a valid
        // value (null pointers, zero lengths).
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        Box::new(SendHeader { msg, iov: [empty; MAX_IOV], total: 0 })
    }

    /// Points the header at the unsent segments of `out`; returns how many bytes they
    /// hold.
    pub fn load(&mut self, out: &OutBuf) -> usize {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let n = out.fill(&mut slices);
        let mut total = 0;
        for (iov, slice) in self.iov.iter_mut().zip(&slices[..n]) {
            iov.iov_base = slice.as_ptr() as *mut libc::c_void;
            iov.iov_len = slice.len();
            total += slice.len();
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = n as _;
        self.total = total;
        total
    }

    /// Bytes offered by the last [`SendHeader::load`].
    pub fn total(&self) -> usize {
        self.total
    }

    /// A `sendmsg` entry for `fd` with this header (MSG_NOSIGNAL: a closed peer is an
    /// error, not a SIGPIPE).
    pub fn entry(&self, fd: RawFd) -> squeue::Entry {
        io_uring::opcode::SendMsg::new(types::Fd(fd), &self.msg).flags(libc::MSG_NOSIGNAL as u32).build()
    }
}

/// Converts a -1 return into the errno.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A blocking, close-on-exec eventfd.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; the result is checked.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd (wakes the ring's read on it).
pub fn eventfd_signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local to an fd the caller keeps open.
    unsafe { libc::write(fd.as_raw_fd(), ptr::addr_of!(one).cast(), 8) };
}

/// Sets TCP_NODELAY (responses are written whole; no reason to wait for an ACK).
pub fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: passes a live c_int and its size; a failure is harmless.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            ptr::addr_of!(one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// `shutdown(fd, SHUT_WR)`: sends FIN after what is queued.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: no memory involved; an error (the peer is gone) is harmless.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
}

/// Closes an accepted socket the engine owns. The caller guarantees no ring
/// operation refers to `fd` any more (see [`Ring::push`]).
pub fn close(fd: RawFd) {
    // SAFETY: `fd` is a socket this worker accepted and owns; it is closed once, after
    // its last completion.
    unsafe { libc::close(fd) };
}

/// Accepts one pending connection on `listener` and closes it at once. Returns false
/// when nothing was pending (or the accept failed): one syscall, else two.
pub fn accept_and_close(listener: RawFd) -> bool {
    // SAFETY: null address pointers are allowed by accept4; the fd returned is
    // closed immediately and never shared.
    let fd =
        unsafe { libc::accept4(listener, ptr::null_mut(), ptr::null_mut(), libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) };
    if fd < 0 {
        return false;
    }
    close(fd);
    true
}

/// The probe's functional test: receives "ping" through a multishot receive on a
/// socket pair. Returns the first completion's result (4 only if the bytes were
/// right) and flags. On failure, also says whether every operation completed (if not,
/// the caller must leak `ring` and `bufs`).
pub fn check_multishot_recv(ring: &mut Ring, bufs: &mut BufRing) -> Result<(i32, u32), (String, bool)> {
    use io_uring::opcode;
    let (a, mut b) = UnixStream::pair().map_err(|e| (format!("cannot create a socket pair: {e}"), true))?;
    let recv = opcode::RecvMulti::new(types::Fd(a.as_raw_fd()), bufs.bgid()).build().user_data(1);
    // SAFETY: the receive names `a` and the registered `bufs`. This function returns
    // before the receive's last completion only with `settled == false`, and the
    // caller then leaks ring and buffers; `a` is dropped (closed) after that point.
    unsafe { ring.push(&recv) }.map_err(|e| (format!("cannot submit to io_uring: {e}"), true))?;
    let _ = b.write_all(b"ping");

    let mut first: Option<(i32, u32)> = None;
    let mut recv_done = false;
    let mut cancel_done = true;
    let mut cancel_sent = false;
    let mut cqes = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(2);
    while !(recv_done && cancel_done) {
        if Instant::now() >= give_up {
            return Err(("io_uring did not complete a receive within 2 s".into(), false));
        }
        if let Err(e) = ring.submit_and_wait_timeout(1, Duration::from_millis(100)) {
            return Err((format!("io_uring_enter failed: {e}"), false));
        }
        ring.reap(&mut cqes, 16);
        for cqe in &cqes {
            if cqe.user_data() != 1 {
                cancel_done = true;
                continue;
            }
            let right = bufs.consume(cqe, |bytes| bytes == b"ping").unwrap_or(false);
            if first.is_none() {
                let res = cqe.result();
                first = Some((if res == 4 && !right { 0 } else { res }, cqe.flags()));
            }
            if !cqueue::more(cqe.flags()) {
                recv_done = true;
            }
        }
        if first.is_some() && !recv_done && !cancel_sent {
            cancel_sent = true;
            cancel_done = false;
            let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(1)).build().user_data(2);
            // SAFETY: a cancellation refers to no memory and no fd.
            unsafe { ring.push(&cancel) }.map_err(|e| (format!("cannot submit to io_uring: {e}"), false))?;
        }
    }
    drop(a);
    first.ok_or_else(|| ("a multishot receive completed without a result".into(), true))
}
