//! One worker: the shared [`WorkerCore`] (context, counters, connections, deadlines,
//! the listener and its accept policy, the drain, the over-budget queue, publishing and
//! the access log) plus a ring and what its operations need.
//!
//! Each loop turn is one `io_uring_enter` that submits what the previous turn queued
//! and waits for at least one completion; then the clock is read once, every
//! completion is dispatched ([`complete`]), due deadlines are handled, and every
//! connection touched in the turn is driven (next send, shutdown, close, receive re-arm,
//! deadline). The sends a turn starts are cut to the connections' shares of the turn's
//! budget (the kernel performs them in the next `io_uring_enter`, so that is what keeps
//! that call short): a connection with more to send gets its next share when its send
//! completes, and one that gets no share (the turn's budget is spent and its output is
//! not small) waits in the core's over-budget queue, served first in the next turn.
//!
//! What an operation names is owned so that it cannot be freed before the operation's
//! last completion is reaped:
//! - a connection's operations all go through [`ConnIo::submit`] (in `conn`), which
//!   builds each entry from what the connection owns and counts it: its socket, send
//!   header and file chunk stay there until that count is back to zero; only then does
//!   [`Worker::close`] drop them (closing the socket);
//! - the loop's own operations name memory their owners box and keep: the wake read's
//!   buffer ([`WakeRead`]), the timeout's timespecs (`timeout::LoopTimer`), the listener
//!   (the core's, armed on by `accept::Acceptor`), one operation at a time each;
//! - the worker outlives every operation, however `run` ends (return, error or a panic
//!   unwinding): it lives in a [`Guard`] whose `Drop` cancels and reaps them all
//!   ([`Worker::teardown`]) and frees the worker only if that settled the ring; if it
//!   did not, the worker (ring and memory) is leaked.

mod accept;
mod complete;
mod conn;
mod file;
mod mapped;
mod sock;
mod timeout;
mod token;
mod zerocopy;

use crate::sys::{BufGroup, BufMode, Completion, Ring, SendHeader};
use crate::{Feature, Features, UringOptions};
use accept::Acceptor;
use conn::{Conn, ConnIo, ConnOp, Installed, Life, Recv};
use duet_engine::{
    socket, syscalls, ConnId, ShutdownState, Slab, Stats, Waker, WorkerCore, WorkerSetup, WriteLimits, TICK,
};
use file::FileChunk;
use io_uring::{opcode, types};
use sock::Sock;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};
use timeout::LoopTimer;
use token::{Op, Token};
use tracing::{debug, info, warn};

/// Most completions handled per reap (they are copied out of the ring first).
const REAP_BATCH: usize = 512;
/// Most reaps per loop turn, so connections are driven and submissions go out even
/// if completions keep arriving (they cannot with DEFER_TASKRUN, but can without).
const REAPS_PER_TURN: usize = 8;
/// Bytes the sends started in one turn offer: 1 MiB to one connection at most, 4 MiB
/// in all at full shares. A turn of this loop costs more than an `epoll_wait` (it reaps
/// and re-arms every operation that completed, and each share of a connection is one
/// send and one completion), so its shares are larger than epoll's: a 1 MiB body still
/// leaves in one send, and the cost of the turns is not felt by large transfers, while
/// a turn stays at a few milliseconds under a crowd of slow readers of large bodies.
const WRITE_LIMITS: WriteLimits = WriteLimits::new(1024 * 1024, 4 * 1024 * 1024);
/// The limits when file bodies go by `sendfile` (or splices): still 1 MiB to one
/// connection, but 2 MiB in all. `sendfile` runs in the loop thread, like epoll's, so a
/// turn's file bytes are the turn's own time, not the next `io_uring_enter`'s; and
/// with no copy to pay, a slow reader's socket takes a whole share at once (the kernel
/// charges the socket the pages' length only), so 4 MiB a turn would fill sixteen slow
/// readers' sockets before a fresh client's request, arrived after theirs, is read.
const SENDFILE_WRITE_LIMITS: WriteLimits = WriteLimits::new(1024 * 1024, 2 * 1024 * 1024);
/// Send headers kept for reuse; more are freed (like the output buffer pool).
const HEADER_POOL_MAX: usize = 512;
/// How long teardown waits for the ring to give back every completion before it gives
/// up and leaks the worker.
const TEARDOWN_WAIT: Duration = Duration::from_secs(5);

/// The turn's write limits for the file-body path `features` choose.
fn write_limits(features: Features) -> WriteLimits {
    // A send from a file mapping copies like a send from memory: the ring's limits.
    let copied = features.has(Feature::Mmap) && !features.has(Feature::MmapZc) && !features.has(Feature::Splice);
    if !copied && [Feature::Sendfile, Feature::Splice, Feature::MmapZc].iter().any(|f| features.has(*f)) {
        SENDFILE_WRITE_LIMITS
    } else {
        WRITE_LIMITS
    }
}

/// The live connection `id`, with one operation fewer in flight if this completion was
/// its last (`more` false). `None` for a connection that is gone (which cannot happen
/// while operations are counted per connection).
fn conn_entry(conns: &mut Slab<Conn>, id: ConnId, more: bool) -> Option<&mut Conn> {
    let e = conns.get_mut(id)?;
    if !more {
        e.io.op_done();
    }
    Some(e)
}

/// Runs one worker until shutdown, with the optional features `features` (probed:
/// the kernel has them); returns its counters.
pub fn run(setup: WorkerSetup, uring: &UringOptions, features: Features) -> io::Result<Stats> {
    let worker = Worker::new(setup, uring, features)?;
    let mut guard = Guard { worker: ManuallyDrop::new(worker) };
    let result = guard.worker.serve();
    let stats = guard.finish();
    result.map(|()| stats)
}

/// The wake read: one read of the core's waker (an eventfd) in flight, into a buffer
/// of its own.
struct WakeRead {
    /// Where the read puts the eventfd's count; never read by Rust.
    buf: Box<u64>,
    armed: bool,
}

impl WakeRead {
    /// Arms the read of `waker` unless it is armed.
    fn arm(&mut self, ring: &mut Ring, waker: &Waker) -> io::Result<()> {
        if self.armed {
            return Ok(());
        }
        let entry = opcode::Read::new(types::Fd(waker.as_fd().as_raw_fd()), (&mut *self.buf as *mut u64).cast(), 8)
            .build()
            .user_data(Token::of_loop(Op::Wake).user_data());
        // SAFETY: the read writes 8 bytes into the boxed `buf`, which stays put and is
        // not read by Rust; `armed` keeps it to one read at a time, and the worker owning
        // it outlives the read (its guard reaps it, or leaks the worker). The eventfd is
        // held by the worker's core (and the shutdown's waker closure) until then.
        unsafe { ring.push(&entry) }?;
        self.armed = true;
        Ok(())
    }
}

/// How a teardown went: what was in flight when it began, and whether the ring then
/// gave back every completion (if not, the worker is leaked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Teardown {
    /// Operations whose last completion had not been reaped when teardown began.
    pub(crate) in_flight: usize,
    /// Every one of them was reaped: nothing the worker owns is the kernel's any more.
    pub(crate) settled: bool,
}

/// Owns the worker while its ring may have operations in flight. However the worker's
/// use ends (`finish`, an error, or a panic unwinding through `run`), the guard's
/// `Drop` tears down first ([`Worker::teardown`]: cancel everything, reap with a bounded
/// wait) and frees the worker only if that settled the ring; otherwise it leaks the
/// whole worker, so no memory, fd or buffer an operation names is ever freed while the
/// kernel may use it. (A second panic during that teardown aborts the process: never a
/// use-after-free.)
struct Guard {
    worker: ManuallyDrop<Worker>,
}

impl Guard {
    /// The loop has ended: tears down, then finishes the core (the access log's last
    /// lines, the counters). Dropping the guard then frees or leaks the worker.
    fn finish(mut self) -> Stats {
        let worker = &mut *self.worker;
        worker.teardown();
        if worker.zc_sends > 0 {
            info!(
                "worker {}: {} zero-copy sends, {} of them copied by the kernel after all",
                worker.core.index, worker.zc_sends, worker.zc_copied
            );
        }
        worker.core.finish()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let teardown = self.worker.teardown();
        #[cfg(test)]
        fault::report(&self.worker, teardown);
        if teardown.settled {
            // SAFETY: dropped once, here, and never used again; every completion has
            // been reaped (`settled`), so nothing the worker owns is the kernel's.
            unsafe { ManuallyDrop::drop(&mut self.worker) };
        } else {
            warn!(
                "worker {}: the ring did not return every completion ({} operations in flight); leaking its memory",
                self.worker.core.index,
                self.worker.ring.in_flight()
            );
        }
    }
}

/// The worker core plus the ring and its I/O state.
struct Worker {
    core: WorkerCore<ConnIo>,
    /// Owns the receive buffers; on drop it closes the ring before it unmaps them.
    ring: Ring,
    /// The optional features in use.
    features: Features,
    /// Sends of at least this many bytes are zero-copy (with [`Feature::ZeroCopy`]).
    zc_threshold: usize,
    /// Zero-copy sends notified, and how many of them the kernel copied anyway.
    zc_sends: u64,
    zc_copied: u64,
    /// The receive buffers' group on `ring`.
    buf_group: BufGroup,
    /// Connections to drive at the end of the turn.
    dirty: Vec<ConnId>,
    /// Connections whose receive ran out of buffers, oldest first.
    starved: std::collections::VecDeque<ConnId>,
    /// Draining connections to check for pending input again next turn (completions
    /// were waiting when they were checked).
    recheck: Vec<ConnId>,
    cqes: Vec<Completion>,
    /// Send headers not in use (one per concurrent send, reused: no allocation per
    /// request). Boxed: a header moves into a connection while the kernel reads it.
    #[allow(clippy::vec_box)]
    headers: Vec<Box<SendHeader>>,
    /// File chunk buffers not in use; boxed because a connection holds one by pointer
    /// (an idle connection stays small) and they move between the two.
    #[allow(clippy::vec_box)]
    chunks: Vec<Box<FileChunk>>,
    /// The multishot accept and the listener poll.
    accept: Acceptor,
    wake: WakeRead,
    timer: LoopTimer,
    /// Tearing down: completions are only accounted, nothing is re-armed.
    stopping: bool,
    /// The teardown done, if it is.
    torn_down: Option<Teardown>,
    overflow_logged: bool,
    /// `sendfile` refused a file body here (`zerocopy`): files go through the chunk
    /// buffer from then on.
    sendfile_refused: bool,
    /// A file could not be mapped here (`mapped`): file bodies take the next path.
    mmap_refused: bool,
    /// The file mappings sends are made from (`mapped`).
    maps: mapped::MapCache,
    #[cfg(test)]
    fault: Option<std::sync::Arc<fault::Fault>>,
}

impl Worker {
    /// Sets up the ring, its buffers and file table, and the core.
    fn new(setup: WorkerSetup, uring: &UringOptions, features: Features) -> io::Result<Worker> {
        let index = setup.index;
        let failed = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("worker {index}: {what}: {e}"));
        let mut ring = Ring::new(uring.ring_entries, uring.sqpoll_idle_ms, features.has(Feature::FlatSq))
            .map_err(|e| failed("cannot create its io_uring", e))?;
        if features.has(Feature::RingFd) {
            ring.register_ring_fd().map_err(|e| failed("cannot register its ring fd", e))?;
        }
        let direct = features.has(Feature::Direct);
        if direct {
            ring.register_files_sparse(sock::direct_slots())
                .map_err(|e| failed("cannot register its file table", e))?;
        }
        let mode = BufMode { incremental: features.has(Feature::Incremental), bundles: features.has(Feature::Bundle) };
        let (buf_count, buf_size) = uring.recv_pool(mode.incremental);
        let buf_group = ring
            .add_buf_ring(buf_count, buf_size, mode)
            .map_err(|e| failed("cannot register the receive buffer ring", e))?;
        // Accepted sockets inherit TCP_NODELAY from the listener (contract rule 3): no
        // setsockopt per connection, and none is possible on a direct descriptor.
        socket::set_nodelay(setup.listener.as_fd()).map_err(|e| failed("cannot set TCP_NODELAY on the listener", e))?;
        let (sq, cq) = ring.sizes();
        let msg = format!(
            "io_uring worker {index}: {} ring, {sq} SQ / {cq} CQ entries, {buf_count} x {buf_size} B receive buffers{}{}",
            ring.mode(),
            if mode.incremental { " (incremental)" } else { "" },
            uring.sqpoll_idle_ms.map_or(String::new(), |ms| format!(", SQPOLL idle {ms} ms")),
        );
        if index == 0 {
            info!("{msg}");
        } else {
            debug!("{msg}");
        }
        // Blocking, so the ring's read on it waits for a wake instead of failing EAGAIN.
        let waker = Waker::blocking()?;
        Ok(Worker {
            core: WorkerCore::new(setup, waker, write_limits(features)),
            ring,
            features,
            zc_threshold: uring.zc_threshold,
            zc_sends: 0,
            zc_copied: 0,
            buf_group,
            dirty: Vec::new(),
            starved: std::collections::VecDeque::new(),
            recheck: Vec::new(),
            cqes: Vec::with_capacity(REAP_BATCH),
            headers: Vec::new(),
            chunks: Vec::new(),
            accept: Acceptor::new(direct),
            wake: WakeRead { buf: Box::new(0), armed: false },
            timer: LoopTimer::new(),
            stopping: false,
            torn_down: None,
            overflow_logged: false,
            sendfile_refused: false,
            mmap_refused: false,
            maps: mapped::MapCache::default(),
            #[cfg(test)]
            fault: uring.fault.clone(),
        })
    }

    fn serve(&mut self) -> io::Result<()> {
        loop {
            #[cfg(test)]
            self.fault_point();
            if self.core.state() == ShutdownState::Immediate {
                return Ok(());
            }
            self.begin_drain()?;
            self.drive_dirty()?;
            if self.core.should_stop() {
                return Ok(());
            }
            self.arm_loop_ops()?;
            self.core.before_wait();
            if self.core.has_waiting() {
                // Output waits for the next turn: reap what is there, but do not block.
                self.ring.submit_and_wait_timeout(1, Duration::ZERO)?;
            } else {
                self.ring.submit_and_wait(1)?;
            }
            self.core.after_wait();
            self.reap_all();
            self.expire_deadlines();
        }
    }

    /// Re-arms the accept, the wake read and the one timeout as needed.
    fn arm_loop_ops(&mut self) -> io::Result<()> {
        self.accept.arm(&mut self.ring, &self.core)?;
        self.wake.arm(&mut self.ring, self.core.waker())?;
        let core = &mut self.core;
        self.timer.arm(&mut self.ring, || core.next_wake())
    }

    fn reap_all(&mut self) {
        if !self.overflow_logged && self.ring.cq_overflowed() {
            self.overflow_logged = true;
            warn!(
                "io_uring completion queue overflowed (completions are kept by the kernel); a larger ring (more \
                 submission queue entries) avoids it"
            );
        }
        let mut cqes = std::mem::take(&mut self.cqes);
        for _ in 0..REAPS_PER_TURN {
            self.ring.reap(&mut cqes, REAP_BATCH);
            if cqes.is_empty() {
                break;
            }
            self.core.stats.events += cqes.len() as u64;
            for cqe in &mut cqes {
                self.complete(cqe);
            }
        }
        self.cqes = cqes;
    }

    /// Queues connection `id` for [`Worker::drive`] at the end of the turn.
    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(e) = self.core.conns.get_mut(id) {
            e.io.mark_dirty(id, &mut self.dirty);
        }
    }

    /// On a graceful shutdown (once): every connection is asked to finish (the core),
    /// the accept stops, the listener closes once nothing names it, and every
    /// connection is driven.
    fn begin_drain(&mut self) -> io::Result<()> {
        if !self.core.begin_drain() {
            return Ok(());
        }
        if let Some(deadline) = self.core.drain.deadline() {
            self.timer.note_wake(deadline);
        }
        self.stop_accepting()?;
        for id in self.core.conns.ids() {
            self.mark_dirty(id);
        }
        Ok(())
    }

    fn expire_deadlines(&mut self) {
        // A paused accept that may go again is armed by `arm_loop_ops`.
        let _ = self.core.accept_due();
        self.core.expire_deadlines();
        while let Some(id) = self.core.next_expired() {
            self.mark_dirty(id);
        }
    }

    /// Lets the oldest starved connections re-arm their receive: as many per turn as
    /// half the ring's buffers, which are all back in the ring by the next turn.
    fn wake_starved(&mut self) {
        let budget = (self.ring.buffers(self.buf_group).count() as usize / 2).max(1);
        for _ in 0..budget {
            let Some(id) = self.starved.pop_front() else { break };
            let Some(e) = self.core.conns.get_mut(id).filter(|e| e.io.recv == Recv::Starved) else { continue };
            e.io.recv = Recv::Off;
            self.mark_dirty(id);
        }
    }

    fn drive_dirty(&mut self) -> io::Result<()> {
        self.wake_starved();
        for id in std::mem::take(&mut self.recheck) {
            self.mark_dirty(id);
        }
        // Output that got no share in an earlier turn goes first, oldest first, while
        // this turn's budget lasts (at least one: the queue always moves).
        let mut turn = self.core.waiting_turn();
        while let Some(id) = self.core.next_waiting(&mut turn) {
            self.drive(id)?;
        }
        let mut i = 0;
        // Driving never adds to `dirty`, but index to be safe.
        while i < self.dirty.len() {
            let id = self.dirty[i];
            self.drive(id)?;
            i += 1;
        }
        self.dirty.clear();
        Ok(())
    }

    /// Brings one connection's operations in line with its state: next send,
    /// write-side shutdown, close, receive re-arm or cancel, deadline.
    fn drive(&mut self, id: ConnId) -> io::Result<()> {
        let Some(e) = self.core.conns.get_mut(id) else { return Ok(()) };
        e.io.dirty = false;
        if e.io.life == Life::Closing {
            if e.io.settled() {
                self.close(id);
            }
            return Ok(());
        }
        if e.io.life != Life::Dead {
            self.drive_output(id)?;
            self.check_pending_input(id)?;
        }
        let Some(e) = self.core.conns.get_mut(id) else { return Ok(()) };
        if e.io.life == Life::Dead || e.conn.is_closed() {
            e.io.life = Life::Closing;
            if e.io.settled() {
                self.close(id);
            } else {
                e.io.submit(&mut self.ring, id, ConnOp::CancelAll)?;
            }
            return Ok(());
        }
        if e.conn.wants_read() {
            if e.io.recv == Recv::Off {
                let op = ConnOp::Recv { group: self.buf_group, bundle: self.features.has(Feature::Bundle) };
                e.io.submit(&mut self.ring, id, op)?;
                e.io.recv = Recv::Armed;
            }
        } else if e.io.recv == Recv::Armed {
            // Backpressure: stop the multishot receive; re-armed once output drains.
            e.io.submit(&mut self.ring, id, ConnOp::CancelRecv)?;
            e.io.recv = Recv::Cancelling;
        }
        if let Some(at) = self.core.arm_deadline(id) {
            self.timer.note_wake(at + TICK);
        }
        Ok(())
    }

    /// Draining with nothing in progress: connection `id` closes (half-close, then
    /// linger) unless the peer sent more. More is either still in the socket (the
    /// receive will bring it, and it is answered) or already received and waiting in
    /// the completion queue. The socket is asked first, the queue second: a receive
    /// takes bytes out of the socket and posts their completion within one kernel
    /// entry of this thread (inside `io_uring_enter` with DEFER_TASKRUN, as task work
    /// on the way back to user space otherwise), so bytes the socket no longer shows
    /// are in the queue by the time it is looked at. (With `--sqpoll` a kernel thread
    /// receives, and a check can fall between its read and its completion.) While the
    /// queue is not empty the check waits for the next turn (`recheck`).
    fn check_pending_input(&mut self, id: ConnId) -> io::Result<()> {
        let Some(e) = self.core.conns.get_mut(id) else { return Ok(()) };
        if !e.conn.wants_input_check() {
            return Ok(());
        }
        let fd = match &e.io.sock {
            Sock::Fd(fd) => fd.as_fd(),
            Sock::Direct(_) => {
                // No fd to ask: ask through the ring, after the receives it has done.
                if !e.io.input_check {
                    e.io.submit(&mut self.ring, id, ConnOp::InputCheck)?;
                    e.io.input_check = true;
                }
                return Ok(());
            }
        };
        match socket::unread_bytes(fd) {
            Ok(0) => {}
            // Bytes wait in the socket: the receive brings them and drives it again (a
            // starved receive is re-armed in its turn).
            Ok(_) => return Ok(()),
            Err(_) => {
                e.io.fail();
                return Ok(());
            }
        }
        if self.ring.completions_waiting() {
            self.recheck.push(id);
            return Ok(());
        }
        e.conn.handle_no_pending_input(&mut self.core.ctx);
        self.drive_output(id)
    }

    /// Starts the next send of connection `id` if none is in flight: the rest of a
    /// file chunk, the next file chunk (or its `sendfile` or splices, see `zerocopy`),
    /// or the in-memory segments; or shuts down the write side once everything is sent
    /// and the connection must close.
    fn drive_output(&mut self, id: ConnId) -> io::Result<()> {
        let mut path = self.file_path();
        loop {
            let Some(e) = self.core.conns.get_mut(id) else { return Ok(()) };
            if e.io.output_busy() {
                return Ok(());
            }
            // Whatever is sent next, it is at most the connection's share of the turn.
            let share = self.core.budget.share(e.conn.output_len());
            if share == 0 {
                self.core.wait_for_share(id);
                return Ok(());
            }
            if e.io.stream.as_ref().is_some_and(|c| c.sent < c.filled) {
                return self.send_chunk(id, share);
            }
            if let zerocopy::FilePath::Mmap { zero_copy } = path {
                match self.mapped_send(id, share, zero_copy)? {
                    mapped::MapStep::Sent => return Ok(()),
                    mapped::MapStep::NoFile => {}
                    mapped::MapStep::Refused => {
                        path = self.file_path();
                        continue;
                    }
                }
            }
            let Some(e) = self.core.conns.get_mut(id) else { return Ok(()) };
            let splicing = e.io.stream.as_ref().is_some_and(|c| c.in_pipe > 0);
            if let Some((file, offset, left)) = e.conn.poll_output().and_then(|out| out.front_file()) {
                let file = file.as_raw_fd();
                // The chunk buffer serves the body when the path's own means fail for
                // it (no process fd, no pipe, refused by the kernel).
                let step = match path {
                    zerocopy::FilePath::Sendfile => self.sendfile_out(id, share)?,
                    zerocopy::FilePath::Splice => self.splice_out(id, share)?,
                    zerocopy::FilePath::Read | zerocopy::FilePath::Mmap { .. } => zerocopy::Step::Fallback,
                };
                match step {
                    zerocopy::Step::Again => continue,
                    zerocopy::Step::Stop => return Ok(()),
                    zerocopy::Step::Fallback => {}
                }
                if self.core.conns.get(id).is_some_and(|e| e.io.stream.as_ref().is_some_and(|c| c.has_pipe())) {
                    // Fell back from splices with nothing in the pipe: a buffer instead.
                    if let Some(chunk) = self.core.conns.get_mut(id).and_then(|e| e.io.stream.take()) {
                        file::recycle(&mut self.chunks, chunk);
                    }
                }
                return self.read_chunk(id, file, offset, left);
            }
            if splicing {
                // Cannot happen (bytes in the pipe are the front file's), but never
                // send past them.
                return Ok(());
            }
            if path == zerocopy::FilePath::Sendfile {
                match self.send_head_now(id, share)? {
                    Some(zerocopy::Step::Again) => continue,
                    Some(_) => return Ok(()),
                    None => {}
                }
            }
            let Some(e) = self.core.conns.get_mut(id) else { return Ok(()) };
            if let Some(out) = e.conn.poll_output() {
                if let Some(chunk) = e.io.stream.take() {
                    // Done with files for now: give the chunk buffer back.
                    file::recycle(&mut self.chunks, chunk);
                }
                let mut header = self.headers.pop().unwrap_or_else(SendHeader::boxed);
                let total = header.load(out, share);
                self.core.budget.spend(total);
                let plain = self.features.has(Feature::Send);
                let zero_copy = self.features.has(Feature::ZeroCopy) && total >= self.zc_threshold;
                return e.io.submit(&mut self.ring, id, ConnOp::Send { header, plain, zero_copy });
            }
            if e.conn.should_close_after_flush() && e.io.life == Life::Open {
                e.io.life = Life::WriteShut;
                match &e.io.sock {
                    Sock::Fd(fd) => {
                        let _ = socket::shutdown_write(fd.as_fd());
                    }
                    Sock::Direct(_) => e.io.submit(&mut self.ring, id, ConnOp::ShutdownWrite)?,
                }
                e.conn.handle_write_shutdown(&mut self.core.ctx);
                continue;
            }
            if e.conn.output_len() == 0 {
                // All sent: an idle connection keeps no chunk buffer or pipe.
                if let Some(chunk) = e.io.stream.take() {
                    file::recycle(&mut self.chunks, chunk);
                }
            }
            return Ok(());
        }
    }

    /// Closes the socket of a connection with no operation left and takes it out (the
    /// core counts it and tells the accept policy a descriptor is free).
    fn close(&mut self, id: ConnId) {
        // Every submission relies on this: never close while an operation names the socket.
        if !matches!(self.core.conns.get(id), Some(e) if e.io.settled()) {
            debug_assert!(self.core.conns.get(id).is_none(), "close with operations in flight");
            return;
        }
        let (ring, headers, chunks, stopping) = (&mut self.ring, &mut self.headers, &mut self.chunks, self.stopping);
        self.core.close(id, |io| {
            // Closes the socket: no operation names it any more.
            match io.sock {
                Sock::Fd(fd) => syscalls::close(fd),
                // Tearing down, the ring's file table closes it with the ring.
                Sock::Direct(_) if stopping => {}
                Sock::Direct(slot) => {
                    let entry = opcode::Close::new(types::Fixed(slot))
                        .build()
                        .user_data(Token::of_loop(Op::CloseDirect).user_data());
                    // SAFETY: a close refers to no memory; no operation names the slot
                    // any more (`settled`) and the connection is gone, so nothing names
                    // it until the kernel frees it for a later accept. Should the push
                    // fail, the slot stays taken until the ring goes: a slot lost, never
                    // reused early.
                    let _ = unsafe { ring.push(&entry) };
                }
            }
            if let Installed::Fd(fd) = io.installed {
                syscalls::close(fd);
            }
            if let Some(mut header) = io.send {
                header.release();
                if headers.len() < HEADER_POOL_MAX {
                    headers.push(header);
                }
            }
            if let Some(chunk) = io.stream {
                file::recycle(chunks, chunk);
            }
        });
    }

    /// Cancels everything, reaps every completion (waiting [`TEARDOWN_WAIT`] at most),
    /// closes every socket. Done once; later calls return the first one's outcome.
    fn teardown(&mut self) -> Teardown {
        if let Some(done) = self.torn_down {
            return done;
        }
        let in_flight = self.ring.in_flight();
        let settled = self.cancel_and_reap();
        if settled {
            for id in self.core.conns.ids() {
                if let Some(e) = self.core.conns.get_mut(id) {
                    e.io.ring_settled();
                }
                self.close(id);
            }
        }
        let done = Teardown { in_flight, settled };
        self.torn_down = Some(done);
        done
    }

    /// Cancels every operation and reaps until none is in flight; false if the ring
    /// failed or did not give every completion back in time.
    fn cancel_and_reap(&mut self) -> bool {
        self.stopping = true;
        self.dirty.clear();
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(Token::of_loop(Op::Global).user_data());
        // SAFETY: a cancellation refers to no memory and no fd.
        if unsafe { self.ring.push(&cancel) }.is_err() {
            return false;
        }
        let give_up = Instant::now() + TEARDOWN_WAIT;
        while self.ring.in_flight() > 0 {
            if Instant::now() >= give_up {
                return false;
            }
            self.core.stats.wakeups += 1;
            if self.ring.submit_and_wait_timeout(1, Duration::from_millis(100)).is_err() {
                return false;
            }
            self.reap_all();
        }
        true
    }
}

#[cfg(test)]
pub(crate) mod fault;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_slot_stays_small() {
        // 160 until the socket became a process fd or a direct descriptor (8 bytes
        // with its tag, not 4); 168 until file bodies went by `sendfile` (the process
        // fd installed for a direct descriptor, and the writability poll's flag). A
        // connection's entry: the core's part and `ConnIo`.
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 176, "a connection's entry is {size} bytes");
    }
}
