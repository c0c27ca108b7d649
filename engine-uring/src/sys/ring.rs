//! The ring: setup with fallbacks, submission ([`Ring::push`], the one `unsafe fn`
//! every submission goes through), `io_uring_enter`, and reaping [`Completion`]s while
//! counting the operations still in flight.

use super::buf_ring::{BufGroup, BufId, BufMode, BufRing, IOU_PBUF_RING_INC};
use duet_engine::syscalls;
use io_uring::{cqueue, squeue, IoUring};
use std::collections::VecDeque;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::ptr;
use std::time::Duration;

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
            syscalls::count(1);
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
        // Its close (the crate's unmapping of the queues is not counted).
        syscalls::count(1);
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
            // io_uring_setup (the crate then maps the queues: not counted, once per ring).
            syscalls::count(1);
            match builder.build(entries) {
                Ok(uring) => {
                    return Ok(Ring {
                        uring: ManuallyDrop::new(uring),
                        buf_rings: Vec::new(),
                        backlog: VecDeque::new(),
                        in_flight: 0,
                        mode,
                        sqpoll: sqpoll_idle_ms.is_some(),
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
        syscalls::count(1);
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
        syscalls::count(1);
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
            syscalls::count(1);
            let submitted = self.uring.submit().and_then(|_| {
                // Wake the polling thread first (submit sets IORING_ENTER_SQ_WAKEUP when
                // it went idle); waiting for space on an idle thread would hang.
                if self.sqpoll && self.uring.submission().is_full() {
                    syscalls::count(1);
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
        syscalls::count(1);
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
        syscalls::count(1);
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
        syscalls::count(1);
        // SAFETY: `bufs.entries` is the page-aligned mapping of `count` entries, stored
        // below in `self.buf_rings`, so it stays mapped until after the ring fd is
        // closed (see `Drop for Ring`).
        unsafe {
            self.uring.submitter().register_buf_ring_with_flags(bufs.entries_addr(), count, bgid, flags)?;
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

#[cfg(test)]
mod tests {
    use super::super::test_ring::ring;
    use super::*;
    use io_uring::opcode;

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

    /// A ring without the SQ index array, entered by its registered index, submits and
    /// completes like any other (and drops cleanly, unregistering the index).
    #[test]
    fn a_flat_registered_ring_submits_and_completes() {
        for (flat, registered) in [(true, true), (true, false), (false, true)] {
            let Some(mut ring) = crate::sys::test_ring::ring_with(8, flat) else { return };
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
        let made = syscalls::made();
        for user_data in 0..total {
            push_nop(&mut ring, user_data);
        }
        assert!(syscalls::made() - made >= 2, "pushing 3x the queue never submitted");
        ring.submit_and_wait(total as usize).expect("enter");
        let mut got = reaped(&mut ring, cq as usize);
        got.sort_unstable();
        assert_eq!(got, (0..total).collect::<Vec<_>>());
        assert_eq!(ring.in_flight(), 0);
    }
}
