//! The unsafe layer: the ring, its provided-buffer rings and its completions, the
//! `sendmsg` header kept for an in-flight send, and the few raw syscalls.
//!
//! Outside this module the only `unsafe` is the submission sites — [`Ring::push`] is an
//! `unsafe fn` whose contract every caller meets at the call site, with its own
//! `// SAFETY:` for that entry — and the one place an accepted descriptor (an accept
//! completion's result) is adopted as an `OwnedFd`. What the types enforce here:
//! - the ring owns its buffer rings; on drop it closes the ring before it unmaps them,
//!   and unmaps them only when no operation is in flight (it leaks them otherwise:
//!   closing the ring fd does not stop an armed receive synchronously) ([`Ring`]'s
//!   `Drop`), whatever the field order;
//! - a ring has at most one buffer group, because a completion names a buffer by its id
//!   only, not by its group;
//! - a provided buffer named by a completion can be given back once only: it travels as
//!   a [`BufId`] (neither `Clone` nor `Copy`) taken once from its [`Completion`] and
//!   consumed by value by [`BufRing::consume`];
//! - [`Ring::in_flight`] counts the operations whose last completion has not been
//!   reaped yet, so a caller can tell when nothing refers to its memory or fds any more.

use duet_http::OutBuf;
use io_uring::{cqueue, squeue, types, IoUring};
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;
use std::time::Instant;

/// One io_uring instance and the provided-buffer rings registered on it, used by the
/// thread that created it only.
pub struct Ring {
    /// Dropped explicitly, first, by `Drop for Ring`.
    uring: ManuallyDrop<IoUring>,
    /// Indexed by buffer group id (at most one, see [`Ring::add_buf_ring`]). Unmapped
    /// only after `uring` is gone and only if no operation is in flight.
    buf_rings: Vec<BufRing>,
    /// Completions taken out of the completion queue by [`Ring::push`] (to make room
    /// when the kernel answered `EBUSY`), handed out first by the next [`Ring::reap`].
    backlog: VecDeque<cqueue::Entry>,
    /// Operations pushed whose last completion (the one without `F_MORE`) has not been
    /// handed out by [`Ring::reap`] yet.
    in_flight: usize,
    mode: &'static str,
    sqpoll: bool,
    /// `io_uring_enter` calls made by [`Ring::push`] on a full submission queue, not
    /// yet taken by [`Ring::take_extra_enters`].
    extra_enters: u64,
    /// Set up with `IORING_SETUP_NO_SQARRAY`.
    flat_sq: bool,
    /// The ring's index among this thread's registered ring fds
    /// ([`Ring::register_ring_fd`]): `io_uring_enter` names it instead of the fd.
    ring_index: Option<u32>,
    /// Not `Send`: a registered ring index is valid on the registering thread only.
    _thread_bound: std::marker::PhantomData<*const ()>,
}

impl Drop for Ring {
    fn drop(&mut self) {
        if let Some(index) = self.ring_index.take() {
            // The registration holds a reference to the ring: drop it so closing the fd
            // below really ends the ring. (Registered on this thread, which drops it.)
            let up = RsrcUpdate { offset: index, resv: 0, data: 0 };
            // SAFETY: io_uring_register reads one `io_uring_rsrc_update` from `up`,
            // which lives across the call; the fd is this ring's, still open.
            unsafe {
                libc::syscall(
                    libc::SYS_io_uring_register,
                    self.uring.as_raw_fd(),
                    IORING_UNREGISTER_RING_FDS,
                    &up as *const RsrcUpdate,
                    1,
                )
            };
        }
        if self.in_flight > 0 {
            // An operation (an armed receive) may still write the buffers after the
            // ring fd is closed: leak them rather than unmap memory the kernel may use.
            std::mem::forget(std::mem::take(&mut self.buf_rings));
        }
        // SAFETY: `uring` is dropped here once and never used again (this is `drop`).
        // The buffer rings, dropped with the remaining fields right after this, are
        // still there only if no operation was in flight (see above), so nothing can
        // write them once they are unmapped.
        unsafe { ManuallyDrop::drop(&mut self.uring) };
    }
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

const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
const IORING_ENTER_SQ_WAKEUP: u32 = 1 << 1;
const IORING_ENTER_EXT_ARG: u32 = 1 << 3;
const IORING_ENTER_REGISTERED_RING: u32 = 1 << 4;
const IORING_REGISTER_RING_FDS: u32 = 20;
const IORING_UNREGISTER_RING_FDS: u32 = 21;
/// `io_uring_buf_reg.flags`: consume each buffer incrementally (6.12).
const IOU_PBUF_RING_INC: u16 = 2;
/// A completion's buffer is only partly used: later completions continue in it.
pub const IORING_CQE_F_BUF_MORE: u32 = 1 << 4;

/// `struct io_uring_rsrc_update`.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// `struct __kernel_timespec`.
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// `struct io_uring_getevents_arg`.
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// Errors of `io_uring_enter` after which the caller simply reaps and comes back.
fn transient(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::ETIME))
}

impl Ring {
    /// A ring with `entries` submission entries and a completion queue four times as
    /// large (so multishot bursts do not overflow it), trying
    /// `SINGLE_ISSUER|DEFER_TASKRUN` first and falling back when the kernel refuses
    /// (`EINVAL`). With `sqpoll_idle_ms` a kernel thread polls the submission queue.
    /// With `flat_sq` each setup is tried with `IORING_SETUP_NO_SQARRAY` first
    /// ([`Ring::flat_sq`] says whether it was accepted).
    pub fn new(entries: u32, sqpoll_idle_ms: Option<u32>, flat_sq: bool) -> io::Result<Ring> {
        let entries = entries.clamp(8, 32768).next_power_of_two();
        let cq_entries = entries.saturating_mul(4).min(65536);
        let setups = if sqpoll_idle_ms.is_some() { SQPOLL_SETUPS } else { PLAIN_SETUPS };
        let flat_choices: &[bool] = if flat_sq { &[true, false] } else { &[false] };
        let mut last_err = io::Error::from_raw_os_error(libc::EINVAL);
        for ((mode, apply), &flat) in setups.iter().flat_map(|setup| flat_choices.iter().map(move |f| (setup, f))) {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(cq_entries).setup_clamp();
            if let Some(idle) = sqpoll_idle_ms {
                builder.setup_sqpoll(idle);
            }
            if flat {
                builder.setup_no_sqarray();
            }
            apply(&mut builder);
            match builder.build(entries) {
                Ok(uring) => {
                    return Ok(Ring {
                        uring: ManuallyDrop::new(uring),
                        buf_rings: Vec::new(),
                        backlog: VecDeque::new(),
                        in_flight: 0,
                        mode,
                        sqpoll: sqpoll_idle_ms.is_some(),
                        extra_enters: 0,
                        flat_sq: flat,
                        ring_index: None,
                        _thread_bound: std::marker::PhantomData,
                    })
                }
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

    /// Whether the ring was set up with `IORING_SETUP_NO_SQARRAY`.
    pub fn flat_sq(&self) -> bool {
        self.flat_sq
    }

    /// Registers the ring's fd with the kernel for this thread
    /// (`IORING_REGISTER_RING_FDS`): from now on `io_uring_enter` names the ring by
    /// its index, and the kernel skips the fd lookup (and its reference count) on every
    /// call. The registration is per thread: only the thread that registers may enter
    /// this way, and it is dropped with the ring.
    pub fn register_ring_fd(&mut self) -> io::Result<()> {
        if self.ring_index.is_some() {
            return Ok(());
        }
        let mut up = RsrcUpdate { offset: u32::MAX, resv: 0, data: self.uring.as_raw_fd() as u64 };
        // SAFETY: io_uring_register reads and writes one `io_uring_rsrc_update` at `up`,
        // which lives across the call (offset -1: the kernel picks a free index and
        // writes it back); the fd is this ring's, open.
        let registered = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.uring.as_raw_fd(),
                IORING_REGISTER_RING_FDS,
                &mut up as *mut RsrcUpdate,
                1,
            )
        };
        match registered {
            1 => {
                self.ring_index = Some(up.offset);
                Ok(())
            }
            n if n < 0 => Err(io::Error::last_os_error()),
            n => Err(io::Error::other(format!("registered {n} ring fds instead of one"))),
        }
    }

    /// Whether the kernel fills several provided buffers per receive completion
    /// (`IORING_FEAT_RECVSEND_BUNDLE`, 6.10).
    pub fn has_recv_bundles(&self) -> bool {
        self.uring.params().is_feature_recvsend_bundle()
    }

    /// Registers an empty file table of `slots` entries: accepts then install their
    /// sockets in free slots (direct descriptors), and operations name the slot.
    pub fn register_files_sparse(&mut self, slots: u32) -> io::Result<()> {
        self.uring.submitter().register_files_sparse(slots)
    }

    /// Submission and completion queue sizes.
    pub fn sizes(&self) -> (u32, u32) {
        (self.uring.params().sq_entries(), self.uring.params().cq_entries())
    }

    /// Queues one submission, handing the queued batch to the kernel first if the
    /// submission queue is full. If the kernel refuses that batch because completions
    /// are pending (`EBUSY`), they are moved to a backlog the next [`Ring::reap`]
    /// returns first, and the batch is offered again.
    ///
    /// # Safety
    ///
    /// The kernel may read or write what `entry` refers to at any time until the
    /// *last* completion of the operation has been reaped: the one without
    /// `IORING_CQE_F_MORE` (for a cancelled operation, its `-ECANCELED` completion).
    /// Until then:
    /// - **Memory** the entry points to stays valid, unmoved, and untouched by Rust if
    ///   the kernel writes it.
    /// - **File descriptors** the entry names stay open, so the kernel (and a
    ///   cancellation by fd) can never act on a reused fd number.
    /// - **Provided buffers**: an entry that selects from a buffer group names a group
    ///   registered on this ring (this ring owns it, so it stays mapped while the ring
    ///   lives).
    ///
    /// A caller that cannot reap every completion (its ring failed) must leak that
    /// memory, and the ring, instead of freeing it.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller keeps everything `entry` refers to alive until its last
            // completion, as this function's contract requires.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                self.in_flight += 1;
                return Ok(());
            }
            // Full: let the kernel consume the queued entries, then retry.
            self.extra_enters += 1;
            let submitted = self.uring.submit().and_then(|_| {
                // Wake the polling thread first (submit sets IORING_ENTER_SQ_WAKEUP when
                // it went idle); waiting for space on an idle thread would hang.
                if self.sqpoll && self.uring.submission().is_full() {
                    self.uring.submitter().squeue_wait()
                } else {
                    Ok(0)
                }
            });
            match submitted {
                Ok(_) => {}
                // Too many completions pending: make room for them, keep them for the
                // caller's next reap, and submit again.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.stash_completions(),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves every completion in the completion queue to the backlog.
    fn stash_completions(&mut self) {
        self.backlog.extend(self.uring.completion());
    }

    /// The `io_uring_enter` calls [`Ring::push`] made since the last call.
    pub fn take_extra_enters(&mut self) -> u64 {
        std::mem::take(&mut self.extra_enters)
    }

    /// Operations pushed whose last completion has not been reaped yet: while it is
    /// above zero, the memory and fds of those operations are still the kernel's.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Submits everything queued and waits for at least `want` completions, in one
    /// `io_uring_enter`. Interruptions and a full completion queue are not errors: the
    /// caller reaps and comes back.
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        self.enter(want as u32, None)
    }

    /// Like [`Ring::submit_and_wait`], but returns after `timeout` at the latest.
    pub fn submit_and_wait_timeout(&mut self, want: usize, timeout: Duration) -> io::Result<()> {
        self.enter(want as u32, Some(timeout))
    }

    /// One `io_uring_enter`: submits what is queued and waits for `want` completions
    /// (or `timeout`), naming the ring by its registered index when there is one.
    fn enter(&mut self, want: u32, timeout: Option<Duration>) -> io::Result<()> {
        let (to_submit, cq_overflow, need_wakeup) = {
            let sq = self.uring.submission();
            (sq.len() as u32, sq.cq_overflow(), sq.need_wakeup())
        };
        let mut flags = 0;
        if want > 0 || cq_overflow {
            flags |= IORING_ENTER_GETEVENTS;
        }
        if self.sqpoll && need_wakeup {
            flags |= IORING_ENTER_SQ_WAKEUP;
        }
        let fd = match self.ring_index {
            Some(index) => {
                flags |= IORING_ENTER_REGISTERED_RING;
                index as libc::c_int
            }
            None => self.uring.as_raw_fd(),
        };
        let ts;
        let arg;
        let (arg_ptr, arg_size) = match timeout {
            Some(t) => {
                ts = KernelTimespec { tv_sec: t.as_secs() as i64, tv_nsec: i64::from(t.subsec_nanos()) };
                arg = GeteventsArg {
                    sigmask: 0,
                    sigmask_sz: 8,
                    min_wait_usec: 0,
                    ts: &ts as *const KernelTimespec as u64,
                };
                flags |= IORING_ENTER_EXT_ARG;
                (&arg as *const GeteventsArg as *const libc::c_void, std::mem::size_of::<GeteventsArg>())
            }
            None => (ptr::null(), 0),
        };
        // SAFETY: io_uring_enter on this ring (its fd, or its index registered by this
        // thread: `Ring` is not `Send`, so the thread that registered is the one that
        // enters). With EXT_ARG the kernel reads one `io_uring_getevents_arg` and the
        // timespec it points to, both alive across the call; without it no argument.
        // The submissions it consumes were queued by `push`, whose callers keep what
        // they name alive.
        let entered = unsafe { libc::syscall(libc::SYS_io_uring_enter, fd, to_submit, want, flags, arg_ptr, arg_size) };
        if entered < 0 {
            let e = io::Error::last_os_error();
            if !transient(&e) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Moves up to `max` completions into `out` (cleared first): the backlog first,
    /// then the completion queue, in the order the kernel posted them.
    #[inline]
    pub fn reap(&mut self, out: &mut Vec<Completion>, max: usize) {
        out.clear();
        while !self.backlog.is_empty() && out.len() < max {
            let Some(cqe) = self.backlog.pop_front() else { break };
            out.push(Completion::new(&cqe, &mut self.in_flight));
        }
        let room = max - out.len();
        if room > 0 {
            let in_flight = &mut self.in_flight;
            out.extend(self.uring.completion().take(room).map(|cqe| Completion::new(&cqe, in_flight)));
        }
    }

    /// True when completions wait to be reaped: in the backlog, in the completion
    /// queue, or kept by the kernel after an overflow.
    pub fn completions_waiting(&mut self) -> bool {
        !self.backlog.is_empty() || !self.uring.completion().is_empty() || self.cq_overflowed()
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

    /// Maps `count` (a power of two, at most 32768) buffers of `size` bytes, registers
    /// them with this ring as its buffer group, and gives them all to the kernel. The
    /// ring owns them from now on. A ring has one group at most: a completion names its
    /// buffer by id only, so with two groups a [`BufId`] could be given back to the
    /// wrong one.
    ///
    /// `mode` says how the kernel consumes the buffers and so how completions are read:
    /// see [`BufMode`]. Incremental consumption needs Linux 6.12 (`EINVAL` before).
    pub fn add_buf_ring(&mut self, count: u16, size: u32, mode: BufMode) -> io::Result<BufGroup> {
        if !self.buf_rings.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a ring has one buffer group at most"));
        }
        let bgid = 0;
        let bufs = BufRing::new(count, size, mode)?;
        let flags = if mode.incremental { IOU_PBUF_RING_INC } else { 0 };
        // SAFETY: `bufs.entries` is the page-aligned mapping of `count` entries, stored
        // below in `self.buf_rings`, so it stays mapped until after the ring fd is
        // closed (see `Drop for Ring`).
        unsafe {
            self.uring.submitter().register_buf_ring_with_flags(bufs.entries.ptr as u64, count, bgid, flags)?;
        }
        bufs.publish();
        self.buf_rings.push(bufs);
        Ok(BufGroup(bgid))
    }

    /// The buffer ring of `group`.
    pub fn buffers(&mut self, group: BufGroup) -> &mut BufRing {
        &mut self.buf_rings[usize::from(group.0)]
    }
}

/// A buffer group registered on a [`Ring`] by [`Ring::add_buf_ring`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufGroup(u16);

impl BufGroup {
    /// The group id a receive selects from.
    pub fn id(self) -> u16 {
        self.0
    }
}

/// A provided buffer a completion handed to the engine. Neither `Clone` nor `Copy`:
/// the only way to end it is [`BufRing::consume`], which gives the buffer back to the
/// kernel, so one completion's buffer is given back once. Dropping it instead leaks
/// the buffer (the ring shrinks by one); debug builds panic to catch that.
#[must_use = "a provided buffer must go back to its ring with BufRing::consume"]
#[derive(Debug)]
pub struct BufId(u16);

impl BufId {
    fn into_raw(self) -> u16 {
        let bid = self.0;
        std::mem::forget(self);
        bid
    }
}

impl Drop for BufId {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            debug_assert!(false, "provided buffer {} dropped without going back to its ring", self.0);
        }
    }
}

/// One reaped completion. Not `Clone`: the provided buffer it may carry can be taken
/// once ([`Completion::take_buffer`]).
#[derive(Debug)]
pub struct Completion {
    user_data: u64,
    result: i32,
    flags: u32,
    buffer: Option<BufId>,
}

impl Completion {
    /// Counts the operation as finished in `in_flight` when this is its last completion.
    #[inline]
    fn new(cqe: &cqueue::Entry, in_flight: &mut usize) -> Completion {
        let flags = cqe.flags();
        if !cqueue::more(flags) {
            *in_flight -= 1;
        }
        Completion {
            user_data: cqe.user_data(),
            result: cqe.result(),
            flags,
            buffer: cqueue::buffer_select(flags).map(BufId),
        }
    }

    pub fn user_data(&self) -> u64 {
        self.user_data
    }

    pub fn result(&self) -> i32 {
        self.result
    }

    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// More completions of the same operation follow (a multishot still armed).
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer this completion carries, the first time only.
    pub fn take_buffer(&mut self) -> Option<BufId> {
        self.buffer.take()
    }
}

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
        // SAFETY: `ptr`/`len` are exactly what mmap returned, unmapped once. The owning
        // `BufRing` was either never registered (dropped by a failed `add_buf_ring`) or is
        // dropped by `Ring::drop` after the ring fd is closed with no operation in flight
        // (it leaks them otherwise), so the kernel no longer uses this memory.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// How the kernel consumes a buffer ring, and so how a receive completion is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufMode {
    /// `IOU_PBUF_RING_INC`: a receive takes only the bytes it needs from the head
    /// buffer; the next one continues where it stopped (`IORING_CQE_F_BUF_MORE` while
    /// the buffer is not used up).
    pub incremental: bool,
    /// Receive bundles: one completion's bytes may span several buffers, which follow
    /// the named one in ring order.
    pub bundles: bool,
}

impl BufMode {
    /// Completions are read by walking the ring from its head: where a completion's
    /// data starts, and which buffers follow, is known only from the order in which the
    /// kernel consumes the ring.
    fn walked(self) -> bool {
        self.incremental || self.bundles
    }
}

/// A receive completion's buffers did not match the ring as the engine tracks it: its
/// bytes cannot be placed, and the connection must go.
#[derive(Debug, PartialEq, Eq)]
pub struct Untracked;

/// A provided-buffer ring: `count` buffers of `size` bytes the kernel picks from
/// for multishot receives, owned by the [`Ring`] it is registered on. A buffer is the
/// engine's from the completion that names it (a [`BufId`]) until
/// [`BufRing::consume`] hands it back.
///
/// The kernel always takes buffers from the head of the ring, in ring order, under the
/// ring's lock; completions are reaped in the order it posted them. So, when
/// completions are walked ([`BufMode::walked`]), the engine's copy of the head (and,
/// with incremental consumption, of the bytes used in the head buffer) says where each
/// completion's bytes are; the buffer id a completion names is checked against it.
pub struct BufRing {
    /// `count` `io_uring_buf` entries; the tail overlays `resv` of entry 0.
    entries: Mapping,
    buffers: Mapping,
    count: u16,
    size: u32,
    /// Our copy of the tail; published to the kernel after each recycle.
    tail: u16,
    mode: BufMode,
    /// The buffer written at each ring position (walked mode).
    order: Box<[u16]>,
    /// The kernel's head, as the completions walked so far show it.
    head: u16,
    /// Bytes of the head buffer the kernel has used (incremental mode).
    used: u32,
}

impl BufRing {
    fn new(count: u16, size: u32, mode: BufMode) -> io::Result<BufRing> {
        if count == 0 || !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--uring-buffers {count} must be a power of two between 1 and 32768"),
            ));
        }
        if size == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "--uring-buffer-size must be above 0"));
        }
        // Zeroed by mmap, so every entry is initialized (BufRingEntry::tail needs that).
        let entries = Mapping::new(count as usize * std::mem::size_of::<types::BufRingEntry>(), true)?;
        let buffers = Mapping::new(count as usize * size as usize, true)?;
        let order = vec![0; if mode.walked() { count as usize } else { 0 }].into_boxed_slice();
        let mut ring_bufs = BufRing { entries, buffers, count, size, tail: 0, mode, order, head: 0, used: 0 };
        for bid in 0..count {
            ring_bufs.write_entry(bid);
        }
        Ok(ring_bufs)
    }

    fn base(&self) -> *mut types::BufRingEntry {
        self.entries.ptr.cast()
    }

    /// Writes the entry for `bid` at our tail and advances it (not yet published).
    fn write_entry(&mut self, bid: u16) {
        let idx = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `idx < count`, so the entry is inside the mapping, which is aligned
        // for `BufRingEntry`. The kernel reads an entry's addr/len/bid only between its
        // head and the published tail; this one is past the published tail (the ring
        // never holds more than `count` buffers and `bid` is not in it), so nothing
        // reads those fields concurrently. On entry 0 the reference also spans `resv`,
        // which is the ring's tail: the kernel may read it at any time, so it is never
        // written through this reference (the setters write addr/len/bid only) and only
        // `publish` writes it, atomically, after this reference is gone.
        let entry = unsafe { &mut *self.base().add(idx) };
        entry.set_addr(self.buffers.ptr.wrapping_add(bid as usize * self.size as usize) as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        if let Some(slot) = self.order.get_mut(idx) {
            *slot = bid;
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the written entries visible to the kernel.
    fn publish(&self) {
        // SAFETY: the base is the page-aligned first entry of the ring, initialized
        // (zeroed by mmap, then written), as `BufRingEntry::tail` requires. The tail is a
        // naturally aligned u16 the kernel reads with acquire ordering, and it is only
        // ever accessed atomically from this side.
        let tail = unsafe { &*types::BufRingEntry::tail(self.base()).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// `len` bytes of buffer `bid` from byte `from`.
    ///
    /// Only for a buffer the kernel has handed over by a completion and not been given
    /// back yet (or, incremental, the part a completion said it wrote), within the
    /// buffer.
    fn bytes(&self, bid: u16, from: u32, len: usize) -> &[u8] {
        debug_assert!(bid < self.count && from as usize + len <= self.size as usize);
        // SAFETY: `bid < count` and `from + len <= size` (callers cut `len` to the
        // buffer), so the range is inside the buffer mapping. The caller passes only
        // bytes a reaped completion says the kernel wrote: the kernel is done with them
        // and will not write them again until the buffer is recycled, which needs
        // `&mut self`, so not while this slice lives.
        unsafe {
            std::slice::from_raw_parts(self.buffers.ptr.add(bid as usize * self.size as usize + from as usize), len)
        }
    }

    /// Hands the `len` bytes a receive completion carries to `f`, in order (one call per
    /// buffer they span), and gives back to the kernel every buffer the completion
    /// finished. `first` is the buffer the completion names; `flags` its flags.
    /// A completion without data (`len` 0) delivers nothing.
    ///
    /// Errors when `first` is not a buffer of this ring or, walking, is not where the
    /// ring says the kernel's head is (the bytes cannot be placed).
    pub fn consume(&mut self, first: BufId, len: usize, flags: u32, mut f: impl FnMut(&[u8])) -> Result<(), Untracked> {
        let bid = first.into_raw();
        if bid >= self.count {
            return Err(Untracked);
        }
        if !self.mode.walked() {
            // One buffer per completion, used from its start and given back whole.
            if len > 0 {
                f(self.bytes(bid, 0, len.min(self.size as usize)));
            }
            self.write_entry(bid);
            self.publish();
            return Ok(());
        }
        if len == 0 {
            // Nothing was written. Incremental: the kernel did not move its head. Whole
            // buffers: it may have consumed this one; if it did, the next completion's
            // buffer shows it, and `catch_up` gives this one back then.
            return Ok(());
        }
        self.catch_up(bid)?;
        let mask = self.count - 1;
        let mut left = len;
        loop {
            let at = self.order[usize::from(self.head & mask)];
            let from = if self.mode.incremental { self.used } else { 0 };
            let take = left.min((self.size - from) as usize);
            f(self.bytes(at, from, take));
            left -= take;
            // A buffer the bytes go past is used up; the last one is kept by the kernel
            // if it said so (incremental), and is done otherwise.
            let done = !self.mode.incremental || left > 0 || flags & IORING_CQE_F_BUF_MORE == 0;
            if done {
                self.head = self.head.wrapping_add(1);
                self.used = 0;
                self.write_entry(at);
            } else {
                self.used += take as u32;
            }
            if left == 0 {
                break;
            }
            if !self.mode.bundles || self.head == self.tail {
                self.publish();
                return Err(Untracked);
            }
        }
        self.publish();
        Ok(())
    }

    /// Moves our head to the position of `bid`, the buffer the kernel's head is at:
    /// buffers before it were consumed by completions without data and are free.
    fn catch_up(&mut self, bid: u16) -> Result<(), Untracked> {
        let mask = self.count - 1;
        let queued = self.tail.wrapping_sub(self.head);
        let skip =
            (0..queued).find(|&k| self.order[usize::from(self.head.wrapping_add(k) & mask)] == bid).ok_or(Untracked)?;
        for _ in 0..skip {
            let at = self.order[usize::from(self.head & mask)];
            self.head = self.head.wrapping_add(1);
            self.used = 0;
            self.write_entry(at);
        }
        Ok(())
    }

    /// How many buffers the ring holds.
    pub fn count(&self) -> u16 {
        self.count
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
    /// The result of a zero-copy send whose notification has not come yet: the bytes
    /// are reported sent (and the segments released) only then.
    zc_result: Option<i32>,
}

/// A zero-copy send's notification result: the kernel copied the data after all (on
/// loopback it must: the receiver gets the pages).
pub const IORING_NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;
/// `zc_flags`: report in the notification whether the data was copied.
const IORING_SEND_ZC_REPORT_USAGE: u16 = 1 << 3;

impl SendHeader {
    /// An empty header.
    pub fn boxed() -> Box<SendHeader> {
        let empty = libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 };
        // SAFETY: msghdr is a plain C struct for which all-zero bytes are a valid
        // value (null pointers, zero lengths).
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        Box::new(SendHeader { msg, iov: [empty; MAX_IOV], total: 0, zc_result: None })
    }

    /// Points the header at the unsent segments of `out`, at most `max` bytes of them
    /// (the connection's share of the turn: it has one send in flight at most); returns
    /// how many bytes they hold.
    pub fn load(&mut self, out: &OutBuf, max: usize) -> usize {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let n = out.fill_max(&mut slices, max);
        let mut total = 0;
        for (iov, slice) in self.iov.iter_mut().zip(&slices[..n]) {
            iov.iov_base = slice.as_ptr() as *mut libc::c_void;
            iov.iov_len = slice.len();
            total += slice.len();
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = n as _;
        self.total = total;
        self.zc_result = None;
        total
    }

    /// Keeps a zero-copy send's result until its notification.
    pub fn set_zc_result(&mut self, res: i32) {
        self.zc_result = Some(res);
    }

    /// The result kept by [`SendHeader::set_zc_result`].
    pub fn zc_result(&self) -> Option<i32> {
        self.zc_result
    }

    /// Bytes offered by the last [`SendHeader::load`].
    pub fn total(&self) -> usize {
        self.total
    }

    /// The entry that sends what the header holds to `target` (MSG_NOSIGNAL: a closed
    /// peer is an error, not a SIGPIPE): a plain `send` when it is one segment and
    /// `plain_send` allows (the kernel then copies no `msghdr` and no iovec array), a
    /// `sendmsg` otherwise.
    ///
    /// With `zero_copy` it is `SEND_ZC`/`SENDMSG_ZC`: the kernel sends from the segments
    /// themselves and posts a second completion (`IORING_CQE_F_NOTIF`) once it no longer
    /// uses them; until then they must stay unchanged, so the caller reports the bytes
    /// sent only at that notification.
    pub fn entry(&self, target: Target, plain_send: bool, zero_copy: bool) -> squeue::Entry {
        use io_uring::opcode::{Send, SendMsg, SendMsgZc, SendZc};
        let nosignal = libc::MSG_NOSIGNAL;
        let usage = IORING_SEND_ZC_REPORT_USAGE;
        if plain_send && self.msg.msg_iovlen == 1 {
            let (buf, len) = (self.iov[0].iov_base as *const u8, self.iov[0].iov_len as u32);
            if zero_copy {
                return on_sock!(target, t => SendZc::new(t, buf, len).flags(nosignal).zc_flags(usage).build());
            }
            return on_sock!(target, t => Send::new(t, buf, len).flags(nosignal).build());
        }
        if zero_copy {
            return on_sock!(target, t => SendMsgZc::new(t, &self.msg).flags(nosignal as u32).ioprio(usage).build());
        }
        on_sock!(target, t => SendMsg::new(t, &self.msg).flags(nosignal as u32).build())
    }
}

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
    // SAFETY: getrlimit writes one `rlimit` into `limit`, which lives across the call.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (got == 0).then_some(limit.rlim_cur)
}

/// `SOCKET_URING_OP_SIOCINQ`: the unread bytes of a socket, as a completion's result.
pub const SOCKET_URING_OP_SIOCINQ: u32 = 0;

/// The probe's test of socket commands through the ring: on a loopback TCP connection
/// holding 4 unread bytes, `SOCKET_URING_OP_SIOCINQ` must answer 4.
pub fn check_unread_bytes_command(ring: &mut Ring) -> Result<(), String> {
    use io_uring::opcode;
    use std::net::{TcpListener, TcpStream};
    let pair = || -> io::Result<(TcpStream, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        Ok((client, server))
    };
    let (mut client, server) = pair().map_err(|e| format!("cannot open a loopback connection to test it: {e}"))?;
    client.write_all(b"ping").map_err(|e| format!("cannot write on a loopback connection: {e}"))?;
    // Wait until the bytes are there (peek blocks until then, 2 s at most).
    let _ = server.set_read_timeout(Some(Duration::from_secs(2)));
    let mut peeked = [0u8; 4];
    if !matches!(server.peek(&mut peeked), Ok(4)) {
        return Err("a loopback connection did not deliver 4 bytes".into());
    }
    let entry = opcode::UringCmd16::new(types::Fd(server.as_raw_fd()), SOCKET_URING_OP_SIOCINQ).build().user_data(7);
    // SAFETY: the command refers to no memory; `server` stays open until its completion
    // is reaped below, or is leaked with the ring if it never comes.
    unsafe { ring.push(&entry) }.map_err(|e| format!("cannot submit: {e}"))?;
    let server = ManuallyDrop::new(server);
    let give_up = Instant::now() + Duration::from_secs(2);
    let mut cqes = Vec::new();
    loop {
        if Instant::now() >= give_up {
            return Err("no completion for SOCKET_URING_OP_SIOCINQ within 2 s".into());
        }
        ring.submit_and_wait_timeout(1, Duration::from_millis(100)).map_err(|e| format!("io_uring_enter: {e}"))?;
        ring.reap(&mut cqes, 4);
        if let Some(cqe) = cqes.iter().find(|c| c.user_data() == 7) {
            let res = cqe.result();
            drop(ManuallyDrop::into_inner(server));
            return match res {
                4 => Ok(()),
                res if res < 0 => {
                    Err(format!("SOCKET_URING_OP_SIOCINQ failed: {}", io::Error::from_raw_os_error(-res)))
                }
                res => Err(format!("SOCKET_URING_OP_SIOCINQ answered {res} for 4 unread bytes")),
            };
        }
    }
}

/// The probe's functional test: receives "ping" through a multishot receive from
/// `group` on a socket pair. Returns the first completion's result (4 only if the
/// bytes were right) and flags. On failure, also says whether every operation
/// completed (if not, the caller must leak `ring`).
pub fn check_multishot_recv(ring: &mut Ring, group: BufGroup) -> Result<(i32, u32), (String, bool)> {
    let (a, mut b) = UnixStream::pair().map_err(|e| (format!("cannot create a socket pair: {e}"), true))?;
    // `a` is closed only once its receive has completed: on an unsettled failure it is
    // leaked with the ring, so the receive never names a closed (and reusable) number.
    let a = ManuallyDrop::new(a);
    let result = multishot_recv_ping(ring, group, &a, &mut b);
    if !matches!(result, Err((_, false))) {
        drop(ManuallyDrop::into_inner(a));
    }
    result
}

fn multishot_recv_ping(
    ring: &mut Ring,
    group: BufGroup,
    a: &UnixStream,
    b: &mut UnixStream,
) -> Result<(i32, u32), (String, bool)> {
    use io_uring::opcode;
    let recv = opcode::RecvMulti::new(types::Fd(a.as_raw_fd()), group.id()).build().user_data(1);
    // SAFETY: the receive names `a` and a group registered on (so owned by) `ring`.
    // This function returns before the receive's last completion only with an error
    // whose second field is false; then the caller leaks `a` and the ring, so neither
    // the socket nor the buffers go while the receive may use them.
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
        for cqe in &mut cqes {
            let buffer = cqe.take_buffer();
            let len = cqe.result().max(0) as usize;
            let mut right = None;
            if let Some(bid) = buffer {
                let mut got = Vec::new();
                let placed = ring.buffers(group).consume(bid, len, cqe.flags(), |bytes| got.extend_from_slice(bytes));
                right = Some(placed.is_ok() && got == b"ping");
            }
            if cqe.user_data() != 1 {
                cancel_done = true;
                continue;
            }
            if first.is_none() {
                let res = cqe.result();
                first = Some((if res == 4 && right != Some(true) { 0 } else { res }, cqe.flags()));
            }
            if !cqe.more() {
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
    first.ok_or_else(|| ("a multishot receive completed without a result".into(), true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::opcode;

    /// A ring, or `None` (with a note) where io_uring is unavailable and not required.
    fn ring(entries: u32) -> Option<Ring> {
        match Ring::new(entries, None, false) {
            Ok(ring) => Some(ring),
            Err(e) if std::env::var("DUET_REQUIRE_URING").as_deref() != Ok("1") => {
                eprintln!("io_uring unavailable here ({e}): skipped");
                None
            }
            Err(e) => panic!("DUET_REQUIRE_URING=1 but no ring: {e}"),
        }
    }

    /// One socket pair's multishot receive on a ring, read as the worker reads it.
    struct Receiver {
        local: UnixStream,
        peer: UnixStream,
        user_data: u64,
        armed: bool,
        got: Vec<u8>,
        /// The largest completion seen, and whether one said the buffer goes on.
        largest: usize,
        buf_more_seen: bool,
        eof: bool,
    }

    impl Receiver {
        fn new(user_data: u64) -> Receiver {
            let (local, peer) = UnixStream::pair().expect("socket pair");
            Receiver {
                local,
                peer,
                user_data,
                armed: false,
                got: Vec::new(),
                largest: 0,
                buf_more_seen: false,
                eof: false,
            }
        }

        fn arm(&mut self, ring: &mut Ring, group: BufGroup, bundles: bool) {
            let fd = types::Fd(self.local.as_raw_fd());
            let entry = if bundles {
                opcode::RecvMultiBundle::new(fd, group.id()).build()
            } else {
                opcode::RecvMulti::new(fd, group.id()).build()
            };
            // SAFETY: the receive writes only into `group`'s buffers, owned by `ring`;
            // `drain` reaps its last completion before the socket or the ring goes.
            unsafe { ring.push(&entry.user_data(self.user_data)) }.expect("push");
            self.armed = true;
        }
    }

    /// Reaps completions into `receivers` until each has `want[i]` bytes (or its EOF),
    /// re-arming a receive that ended (ENOBUFS) as the worker does.
    fn receive(ring: &mut Ring, group: BufGroup, mode: BufMode, receivers: &mut [Receiver], want: &[usize]) {
        let give_up = Instant::now() + Duration::from_secs(5);
        let mut cqes = Vec::new();
        while receivers.iter().zip(want).any(|(r, &w)| r.got.len() < w && !r.eof) {
            assert!(Instant::now() < give_up, "receiving timed out");
            for r in receivers.iter_mut().filter(|r| !r.armed && !r.eof) {
                r.arm(ring, group, mode.bundles);
            }
            ring.submit_and_wait_timeout(1, Duration::from_millis(100)).expect("enter");
            ring.reap(&mut cqes, 64);
            for cqe in &mut cqes {
                let r = receivers.iter_mut().find(|r| r.user_data == cqe.user_data()).expect("ours");
                let (res, flags) = (cqe.result(), cqe.flags());
                if !cqe.more() {
                    r.armed = false;
                }
                if let Some(bid) = cqe.take_buffer() {
                    let got = &mut r.got;
                    ring.buffers(group)
                        .consume(bid, res.max(0) as usize, flags, |b| got.extend_from_slice(b))
                        .expect("placed");
                }
                r.largest = r.largest.max(res.max(0) as usize);
                r.buf_more_seen |= flags & IORING_CQE_F_BUF_MORE != 0;
                if res == 0 {
                    r.eof = true;
                } else if res < 0 {
                    assert_eq!(-res, libc::ENOBUFS, "receive failed");
                }
            }
        }
    }

    /// Cancels what is armed and reaps until nothing is in flight.
    fn drain(ring: &mut Ring, group: BufGroup) {
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(999);
        // SAFETY: a cancellation refers to no memory and no fd.
        unsafe { ring.push(&cancel) }.expect("push");
        let mut cqes = Vec::new();
        while ring.in_flight() > 0 {
            ring.submit_and_wait_timeout(1, Duration::from_millis(100)).expect("enter");
            ring.reap(&mut cqes, 64);
            for cqe in &mut cqes {
                if let Some(bid) = cqe.take_buffer() {
                    let _ = ring.buffers(group).consume(bid, cqe.result().max(0) as usize, cqe.flags(), |_| ());
                }
            }
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Sends `writes` one at a time (each received before the next) and returns what the
    /// receive delivered, with the receiver's observations.
    fn stream_through(mode: BufMode, count: u16, size: u32, writes: &[usize]) -> Option<Receiver> {
        let mut ring = ring(64)?;
        let group = ring.add_buf_ring(count, size, mode).expect("buffer ring");
        let mut r = [Receiver::new(1)];
        let mut sent = Vec::new();
        for (i, &len) in writes.iter().enumerate() {
            let data = pattern(len, i as u8);
            r[0].peer.write_all(&data).expect("write");
            sent.extend_from_slice(&data);
            receive(&mut ring, group, mode, &mut r, &[sent.len()]);
        }
        drain(&mut ring, group);
        let [r] = r;
        assert_eq!(r.got, sent, "{mode:?}: the bytes arrive whole and in order");
        Some(r)
    }

    #[test]
    fn incremental_buffers_serve_many_small_receives_and_are_given_back() {
        let mode = BufMode { incremental: true, bundles: false };
        // 2 buffers of 16 bytes carry 200 bytes: each is reused many times.
        let Some(r) = stream_through(mode, 2, 16, &[5; 40]) else { return };
        assert!(r.buf_more_seen, "no completion left its buffer to the next one");
    }

    #[test]
    fn a_bundle_spans_several_buffers_in_ring_order() {
        for incremental in [false, true] {
            let mode = BufMode { incremental, bundles: true };
            // A write larger than a buffer, between small ones, and more than the whole
            // pool in all.
            let Some(r) = stream_through(mode, 4, 8, &[3, 20, 5, 30, 1, 7, 24]) else { return };
            assert!(r.largest > 8, "{mode:?}: no completion spanned two buffers (largest {})", r.largest);
        }
    }

    #[test]
    fn whole_buffers_are_used_once_each() {
        let Some(_) = stream_through(BufMode::default(), 4, 8, &[5, 8, 3, 8, 1]) else { return };
    }

    /// A receive that ends at EOF does not confuse where the next one's bytes are, in any
    /// mode: another connection's bytes still arrive whole.
    #[test]
    fn an_eof_between_receives_keeps_the_ring_in_step() {
        let modes = [(false, false), (true, false), (false, true), (true, true)];
        for mode in modes.map(|(incremental, bundles)| BufMode { incremental, bundles }) {
            let Some(mut ring) = ring(64) else { return };
            let group = ring.add_buf_ring(4, 16, mode).expect("buffer ring");
            let mut rs = [Receiver::new(1), Receiver::new(2)];
            let mut sent = Vec::new();
            for round in 0..6u8 {
                let data = pattern(11, round);
                rs[1].peer.write_all(&data).expect("write");
                sent.extend_from_slice(&data);
                if round == 2 {
                    rs[0].peer.write_all(b"bye").expect("write");
                    rs[0].peer.shutdown(std::net::Shutdown::Write).expect("shutdown");
                }
                let want = [if round >= 2 { 3 } else { 0 }, sent.len()];
                receive(&mut ring, group, mode, &mut rs, &want);
            }
            // Wait for the EOF too.
            while !rs[0].eof {
                receive(&mut ring, group, mode, &mut rs, &[usize::MAX, 0]);
            }
            drain(&mut ring, group);
            assert_eq!(rs[0].got, b"bye", "{mode:?}");
            assert_eq!(rs[1].got, sent, "{mode:?}");
        }
    }

    fn push_nop(ring: &mut Ring, user_data: u64) {
        let nop = opcode::Nop::new().build().user_data(user_data);
        // SAFETY: a no-op refers to no memory and no fd.
        unsafe { ring.push(&nop) }.expect("push");
    }

    fn reaped(ring: &mut Ring, max: usize) -> Vec<u64> {
        let mut out = Vec::new();
        ring.reap(&mut out, max);
        out.iter().map(Completion::user_data).collect()
    }

    /// A send offers at most the share it is given: a 4 MiB response goes out in
    /// share-sized sends, in order.
    #[test]
    fn a_send_offers_at_most_the_connections_share() {
        use duet_engine::MIN_WRITE_SHARE;
        const FULL_SHARE: usize = 256 * 1024;
        use duet_http::{Connection, Context, Limits, Site};
        use std::time::{Instant, SystemTime};
        let body: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let site = Site::builder().route("/big", "application/octet-stream", bytes::Bytes::from(body.clone())).build();
        let mut ctx = Context::new(std::sync::Arc::new(site), Limits::default(), Instant::now(), SystemTime::now());
        let mut conn = Connection::new(&ctx);
        conn.handle_input(&mut ctx, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut header = SendHeader::boxed();
        let mut sends = 0;
        let mut sent = Vec::new();
        while let Some(out) = conn.poll_output() {
            let share = if sends % 2 == 0 { FULL_SHARE } else { MIN_WRITE_SHARE };
            let total = header.load(out, share);
            assert!(total > 0 && total <= share, "send {sends} offers {total} bytes of a {share}-byte share");
            for iov in &header.iov[..header.msg.msg_iovlen] {
                // SAFETY: `load` pointed these iovecs at segments `out` holds unchanged
                // until `handle_sent` below; nothing is sent, only read here.
                sent.extend_from_slice(unsafe { std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len) });
            }
            conn.handle_sent(&mut ctx, total);
            sends += 1;
        }
        assert!(sends > 2 * (4 << 20) / (FULL_SHARE + MIN_WRITE_SHARE), "{sends} sends");
        assert!(sent.ends_with(&body), "the body arrives whole and in order");
    }

    /// A ring without the SQ index array, entered by its registered index, submits and
    /// completes like any other (and drops cleanly, unregistering the index).
    #[test]
    fn a_flat_registered_ring_submits_and_completes() {
        for (flat, registered) in [(true, true), (true, false), (false, true)] {
            let mut ring = match Ring::new(8, None, flat) {
                Ok(ring) => ring,
                Err(e) if std::env::var("DUET_REQUIRE_URING").as_deref() != Ok("1") => {
                    eprintln!("io_uring unavailable here ({e}): skipped");
                    return;
                }
                Err(e) => panic!("DUET_REQUIRE_URING=1 but no ring: {e}"),
            };
            assert_eq!(ring.flat_sq(), flat, "this kernel (6.6+) takes IORING_SETUP_NO_SQARRAY");
            if registered {
                ring.register_ring_fd().expect("IORING_REGISTER_RING_FDS");
                assert!(ring.ring_index.is_some());
            }
            for user_data in 1..=20 {
                push_nop(&mut ring, user_data);
            }
            ring.submit_and_wait(20).expect("enter");
            let mut got = reaped(&mut ring, 64);
            got.sort_unstable();
            assert_eq!(got, (1..=20).collect::<Vec<u64>>(), "flat {flat}, registered {registered}");
            ring.submit_and_wait_timeout(1, Duration::ZERO).expect("a zero timeout is not an error");
        }
    }

    #[test]
    fn a_ring_has_one_buffer_group_at_most() {
        let Some(mut ring) = ring(8) else { return };
        let group = ring.add_buf_ring(2, 64, BufMode::default()).expect("the first group");
        assert_eq!(ring.buffers(group).count(), 2);
        let err =
            ring.add_buf_ring(2, 64, BufMode::default()).expect_err("a second group would make buffer ids ambiguous");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn completions_stashed_to_make_room_are_reaped_first_in_order_and_once() {
        let Some(mut ring) = ring(8) else { return };
        for user_data in 1..=3 {
            push_nop(&mut ring, user_data);
        }
        ring.submit_and_wait(3).expect("enter");
        // What `push` does when the kernel answers EBUSY.
        ring.stash_completions();
        for user_data in 4..=5 {
            push_nop(&mut ring, user_data);
        }
        ring.submit_and_wait(2).expect("enter");
        assert_eq!(ring.in_flight(), 5);
        assert_eq!(reaped(&mut ring, 2), [1, 2]);
        assert_eq!(reaped(&mut ring, 16), [3, 4, 5]);
        assert_eq!(reaped(&mut ring, 16), [0u64; 0]);
        assert_eq!(ring.in_flight(), 0);
    }

    #[test]
    fn a_full_submission_queue_is_submitted_and_nothing_is_lost() {
        let Some(mut ring) = ring(8) else { return };
        let (sq, cq) = ring.sizes();
        let total = u64::from(sq) * 3;
        assert!(total <= u64::from(cq));
        for user_data in 0..total {
            push_nop(&mut ring, user_data);
        }
        assert!(ring.take_extra_enters() >= 2, "pushing 3x the queue never submitted");
        ring.submit_and_wait(total as usize).expect("enter");
        let mut got = reaped(&mut ring, cq as usize);
        got.sort_unstable();
        assert_eq!(got, (0..total).collect::<Vec<_>>());
        assert_eq!(ring.in_flight(), 0);
    }
}
