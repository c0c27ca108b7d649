//! One worker: a ring, its listener, and the connections it accepted.
//!
//! Each loop turn is one `io_uring_enter` that submits what the previous turn queued
//! and waits for at least one completion; then the clock is read once, every
//! completion is dispatched ([`complete`]), due deadlines are handled, and every
//! connection touched in the turn is driven (next send, shutdown, close, receive re-arm,
//! deadline). The sends a turn starts are cut to the connections' shares of its
//! [`TurnBudget`] (the kernel performs them in the next `io_uring_enter`, so that is
//! what keeps that call short): a connection with more to send gets its next share when
//! its send completes, and one that gets no share (the turn's budget is spent and its
//! output is not small) waits in `Worker::waiting`, served first in the next turn.
//!
//! Every operation is submitted with `Ring::push` at the place that builds it, with its
//! own `// SAFETY:` saying why what it names outlives its last completion. The rules
//! those comments rely on:
//! - a connection's socket (`Slot::sock`), send header and file chunk stay in its slot
//!   until `ops` (its operations whose last completion is still to come) is back to
//!   zero; only then does [`Worker::close`] drop them (closing the socket);
//! - the worker's own buffers (timespecs, wake buffer) are boxed and carry one
//!   operation at a time;
//! - the worker outlives its operations: [`Worker::teardown`] cancels and reaps them
//!   all, and if it cannot, the worker (ring and memory) is leaked.

mod accept;
mod complete;
mod file;
mod sock;
mod timeout;
mod token;

use crate::sys::{BufGroup, BufMode, Completion, Ring, SendHeader, SOCKET_URING_OP_SIOCINQ};
use crate::{Feature, Features, UringOptions};
use duet_engine::AccessLogWriter;
use duet_engine::{
    socket, AcceptPolicy, Armed, ConnId, Deadlines, Drain, Expired, Publisher, Shutdown, ShutdownState, Slab, Stats,
    TurnBudget, Waker, WorkerSetup, WriteLimits, TICK,
};
use duet_http::{Connection, Context};
use file::FileChunk;
use io_uring::{opcode, types};
use sock::{on_sock, Sock, Target};
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use token::{loop_token, token, Op};
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
/// Send headers kept for reuse; more are freed (like the output buffer pool).
const HEADER_POOL_MAX: usize = 512;

/// One connection's slot. Kept small: an idle keep-alive connection costs this plus
/// its `Connection`, and no buffer.
struct Slot {
    conn: Connection,
    /// The header of the send in flight, if any.
    send: Option<Box<SendHeader>>,
    /// The chunk buffer of a file being streamed, if any.
    stream: Option<Box<FileChunk>>,
    /// Its live deadline entry.
    armed: Armed,
    /// The connection's socket. Only [`Worker::close`] closes it, once `ops` is zero:
    /// every completion of every operation naming it has been reaped, so the kernel
    /// never acts on a reused fd number or table slot.
    sock: Sock,
    /// Operations whose last completion is still to come.
    ops: u8,
    /// An unread-bytes check through the ring is in flight (direct descriptors).
    input_check: bool,
    recv_armed: bool,
    recv_cancelled: bool,
    shut_wr: bool,
    /// Cancellation issued; the fd closes when `ops` reaches 0.
    closing: bool,
    /// A socket error: drop the connection whatever its state.
    dead: bool,
    /// Queued for driving at the end of this turn.
    dirty: bool,
    /// Its receive ended with ENOBUFS; it waits in `Worker::starved` for its turn to
    /// re-arm, so a crowd of senders does not spin on an empty buffer ring.
    starved: bool,
    /// Its output got no share of a turn's budget; it waits in `Worker::waiting`.
    waiting: bool,
}

impl Slot {
    fn new(conn: Connection, sock: Sock) -> Slot {
        Slot {
            conn,
            send: None,
            stream: None,
            armed: Armed::default(),
            sock,
            ops: 0,
            input_check: false,
            recv_armed: false,
            recv_cancelled: false,
            shut_wr: false,
            closing: false,
            dead: false,
            dirty: false,
            starved: false,
            waiting: false,
        }
    }

    /// Queues this slot (connection `id`) on `dirty` once per turn.
    #[inline]
    fn mark_dirty(&mut self, id: ConnId, dirty: &mut Vec<ConnId>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push(id);
        }
    }

    /// What an entry names to reach the socket.
    fn target(&self) -> Target {
        self.sock.target()
    }
}

/// Arms `s` (connection `id`) to time out at `deadline` unless an earlier deadline is
/// armed; a new entry may move the loop timeout earlier (`wake_hint`).
#[inline]
fn arm_deadline(
    deadlines: &mut Deadlines,
    wake_hint: &mut Option<Instant>,
    s: &mut Slot,
    id: ConnId,
    deadline: Instant,
) {
    if deadlines.arm(&mut s.armed, id, deadline) {
        let at = deadline + TICK;
        *wake_hint = Some(wake_hint.map_or(at, |hint| hint.min(at)));
    }
}

/// The live slot of connection `id`, with one operation fewer in flight if this
/// completion was its last (`more` false). `None` for a connection that is gone (which
/// cannot happen while operations are counted per slot).
fn conn_slot(slots: &mut Slab<Slot>, id: ConnId, more: bool) -> Option<&mut Slot> {
    let s = slots.get_mut(id)?;
    if !more {
        s.ops -= 1;
    }
    Some(s)
}

/// Runs one worker until shutdown, with the optional features `features` (probed:
/// the kernel has them); returns its counters.
pub fn run(setup: WorkerSetup, uring: &UringOptions, features: Features) -> io::Result<Stats> {
    let WorkerSetup { index, listener, mut ctx, shutdown, drain, publisher, access_log } = setup;
    let failed = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("worker {index}: {what}: {e}"));
    let mut ring = Ring::new(uring.ring_entries, uring.sqpoll_idle_ms, features.has(Feature::FlatSq))
        .map_err(|e| failed("cannot create its io_uring", e))?;
    if features.has(Feature::RingFd) {
        ring.register_ring_fd().map_err(|e| failed("cannot register its ring fd", e))?;
    }
    let direct = features.has(Feature::Direct);
    if direct {
        ring.register_files_sparse(sock::direct_slots()).map_err(|e| failed("cannot register its file table", e))?;
    }
    let mode = BufMode { incremental: features.has(Feature::Incremental), bundles: features.has(Feature::Bundle) };
    let (buf_count, buf_size) = uring.recv_pool(mode.incremental);
    let buf_group = ring
        .add_buf_ring(buf_count, buf_size, mode)
        .map_err(|e| failed("cannot register the receive buffer ring", e))?;
    // Accepted sockets inherit TCP_NODELAY from the listener (contract rule 3): no
    // setsockopt per connection, and none is possible on a direct descriptor.
    socket::set_nodelay(listener.as_fd()).map_err(|e| failed("cannot set TCP_NODELAY on the listener", e))?;
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
    let waker = Arc::new(Waker::blocking()?);
    {
        // The closure keeps the eventfd open for as long as the Shutdown lives, so a
        // late wake can never write to a reused fd number.
        let waker = Arc::clone(&waker);
        shutdown.register_waker(move || waker.wake());
    }
    // The site may have been replaced before the waker was registered (the state is
    // checked at the top of the loop).
    ctx.set_time(Instant::now(), SystemTime::now());

    let now = ctx.now();
    let mut worker = Worker {
        ring,
        features,
        zc_threshold: uring.zc_threshold,
        zc_sends: 0,
        zc_copied: 0,
        buf_group,
        ctx,
        stats: Stats::default(),
        publisher,
        access_log,
        slots: Slab::new(),
        dirty: Vec::new(),
        starved: std::collections::VecDeque::new(),
        recheck: Vec::new(),
        waiting: std::collections::VecDeque::new(),
        deadlines: Deadlines::new(now),
        due: Vec::new(),
        cqes: Vec::with_capacity(REAP_BATCH),
        headers: Vec::new(),
        chunks: Vec::new(),
        budget: TurnBudget::new(WRITE_LIMITS),
        listener: Some(listener),
        accept_armed: false,
        accept_waiting: false,
        accept: AcceptPolicy::new(),
        waker,
        wake_buf: Box::new(0),
        wake_armed: false,
        timer_at: None,
        timer_ts: Box::new(types::Timespec::new()),
        timer_update_ts: Box::new(types::Timespec::new()),
        timer_update_inflight: false,
        wake_hint: None,
        drain,
        stopping: false,
        overflow_logged: false,
        shutdown,
    };
    let result = worker.serve();
    let clean = worker.teardown();
    // Every line of an answered request, however the loop ended.
    worker.access_log.finish(&mut worker.ctx);
    if worker.zc_sends > 0 {
        info!(
            "worker {index}: {} zero-copy sends, {} of them copied by the kernel after all",
            worker.zc_sends, worker.zc_copied
        );
    }
    let mut stats = worker.stats.clone();
    stats.set_http(&worker.ctx.stats);
    if !clean {
        warn!("worker {index}: the ring did not return every completion; leaking its buffers");
        std::mem::forget(worker);
    }
    result.map(|()| stats)
}

struct Worker {
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
    ctx: Context,
    stats: Stats,
    publisher: Publisher,
    access_log: AccessLogWriter,
    /// Every connection, closing ones included (until their last completion).
    slots: Slab<Slot>,
    /// Connections to drive at the end of the turn.
    dirty: Vec<ConnId>,
    /// Connections whose receive ran out of buffers, oldest first.
    starved: std::collections::VecDeque<ConnId>,
    /// Draining connections to check for pending input again next turn (completions
    /// were waiting when they were checked).
    recheck: Vec<ConnId>,
    /// Connections whose output got no share of a turn's budget, oldest first: each turn
    /// drives them first, while its budget lasts.
    waiting: std::collections::VecDeque<ConnId>,
    deadlines: Deadlines,
    due: Vec<Expired>,
    cqes: Vec<Completion>,
    /// Send headers not in use (one per concurrent send, reused: no allocation per
    /// request). Boxed: a header moves into a slot while the kernel reads it.
    #[allow(clippy::vec_box)]
    headers: Vec<Box<SendHeader>>,
    /// File chunk buffers not in use; boxed because a slot holds one by pointer (an idle
    /// slot stays small) and they move between the two.
    #[allow(clippy::vec_box)]
    chunks: Vec<Box<FileChunk>>,
    /// What the sends started in this turn offer.
    budget: TurnBudget,
    /// Closed (so the kernel refuses new connections) once draining has stopped the
    /// accept; never while an accept naming it is armed.
    listener: Option<TcpListener>,
    accept_armed: bool,
    /// A poll on the listener is in flight: accept again only once it is readable.
    accept_waiting: bool,
    accept: AcceptPolicy,
    waker: Arc<Waker>,
    /// Where the wake read puts the eventfd's count; one read at a time.
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// When the one timeout in flight fires (`None`: no timeout in flight).
    timer_at: Option<Instant>,
    timer_ts: Box<types::Timespec>,
    timer_update_ts: Box<types::Timespec>,
    timer_update_inflight: bool,
    /// The earliest wake-up asked for since the timeout was last armed.
    wake_hint: Option<Instant>,
    drain: Drain,
    /// Tearing down: completions are only accounted, nothing is re-armed.
    stopping: bool,
    overflow_logged: bool,
    shutdown: Shutdown,
}

impl Worker {
    fn serve(&mut self) -> io::Result<()> {
        loop {
            let state = self.shutdown.state();
            match state {
                ShutdownState::Immediate => return Ok(()),
                ShutdownState::Graceful => self.begin_drain()?,
                ShutdownState::Running => {}
            }
            self.budget.start_turn();
            self.drive_dirty()?;
            if self.drain.should_stop(state, self.slots.len(), self.ctx.now()) {
                return Ok(());
            }
            self.arm_loop_ops()?;
            self.publisher.publish(&self.stats, &self.ctx.stats);
            self.access_log.turn_end(&mut self.ctx);
            if self.waiting.is_empty() {
                self.ring.submit_and_wait(1)?;
            } else {
                // Output waits for the next turn: reap what is there, but do not block.
                self.ring.submit_and_wait_timeout(1, Duration::ZERO)?;
            }
            self.stats.wakeups += 1;
            self.stats.syscalls += 1 + self.ring.take_extra_enters();
            self.ctx.set_time(Instant::now(), SystemTime::now());
            self.reap_all();
            self.expire_deadlines();
        }
    }

    /// Re-arms the accept, the wake read and the one timeout as needed.
    fn arm_loop_ops(&mut self) -> io::Result<()> {
        self.arm_accept()?;
        if !self.wake_armed {
            let entry =
                opcode::Read::new(types::Fd(self.waker.as_raw_fd()), (&mut *self.wake_buf as *mut u64).cast(), 8)
                    .build()
                    .user_data(loop_token(Op::Wake));
            // SAFETY: the read writes 8 bytes into the boxed `wake_buf`, which stays put
            // and is not read by Rust; `wake_armed` keeps it to one read at a time, and
            // the worker outlives the read (teardown reaps it, or the worker leaks). The
            // eventfd is held by the worker's `Arc<Waker>` until then.
            unsafe { self.ring.push(&entry) }?;
            self.wake_armed = true;
        }
        self.arm_loop_timeout()
    }

    fn reap_all(&mut self) {
        if !self.overflow_logged && self.ring.cq_overflowed() {
            self.overflow_logged = true;
            warn!("io_uring completion queue overflowed (completions are kept by the kernel); raise --uring-entries");
        }
        let mut cqes = std::mem::take(&mut self.cqes);
        for _ in 0..REAPS_PER_TURN {
            self.ring.reap(&mut cqes, REAP_BATCH);
            if cqes.is_empty() {
                break;
            }
            self.stats.events += cqes.len() as u64;
            for cqe in &mut cqes {
                self.complete(cqe);
            }
        }
        self.cqes = cqes;
    }

    /// Queues connection `id` for [`Worker::drive`] at the end of the turn.
    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(s) = self.slots.get_mut(id) {
            s.mark_dirty(id, &mut self.dirty);
        }
    }

    /// Stops accepting and asks every connection to finish.
    fn begin_drain(&mut self) -> io::Result<()> {
        if !self.drain.begin(self.ctx.now()) {
            return Ok(());
        }
        if let Some(deadline) = self.drain.deadline() {
            self.note_wake(deadline);
        }
        self.stop_accepting()?;
        for id in self.slots.ids() {
            let Some(s) = self.slots.get_mut(id).filter(|s| !s.closing) else { continue };
            s.conn.begin_shutdown(&mut self.ctx);
            self.mark_dirty(id);
        }
        Ok(())
    }

    fn expire_deadlines(&mut self) {
        let now = self.ctx.now();
        // A paused accept whose retry time came is armed again by `arm_loop_ops`.
        let _ = self.accept.retry_due(now);
        let mut due = std::mem::take(&mut self.due);
        self.deadlines.expire(now, &mut due);
        for expired in due.drain(..) {
            let Some(s) = self.slots.get_mut(expired.id) else { continue };
            if s.closing || !s.armed.fire(expired.tick) {
                continue; // closing, or superseded by an earlier arming
            }
            s.conn.handle_timeout(&mut self.ctx);
            self.mark_dirty(expired.id);
        }
        self.due = due;
    }

    /// Lets the oldest starved connections re-arm their receive: as many per turn as
    /// half the ring's buffers, which are all back in the ring by the next turn.
    fn wake_starved(&mut self) {
        let budget = (self.ring.buffers(self.buf_group).count() as usize / 2).max(1);
        for _ in 0..budget {
            let Some(id) = self.starved.pop_front() else { break };
            let Some(s) = self.slots.get_mut(id).filter(|s| s.starved) else { continue };
            s.starved = false;
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
        for _ in 0..self.waiting.len() {
            let Some(id) = self.waiting.pop_front() else { break };
            let Some(s) = self.slots.get_mut(id).filter(|s| s.waiting) else { continue };
            s.waiting = false;
            self.drive(id)?;
            if self.budget.is_spent() {
                break;
            }
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
        let Some(s) = self.slots.get_mut(id) else { return Ok(()) };
        s.dirty = false;
        if s.closing {
            if s.ops == 0 {
                self.close(id);
            }
            return Ok(());
        }
        if !s.dead {
            self.drive_output(id)?;
            self.check_pending_input(id)?;
        }
        let Some(s) = self.slots.get_mut(id) else { return Ok(()) };
        let target = s.target();
        if s.dead || s.conn.is_closed() {
            s.closing = true;
            if s.ops == 0 {
                self.close(id);
            } else {
                s.ops += 1;
                let cancel = on_sock!(target, t => types::CancelBuilder::fd(t).all());
                let entry = opcode::AsyncCancel2::new(cancel).build().user_data(token(Op::Cancel, id));
                // SAFETY: a cancellation refers to no memory. It names the connection's
                // socket, which stays open: the cancellation is counted in `ops`, and the
                // socket closes only once `ops` is back to zero.
                unsafe { self.ring.push(&entry) }?;
            }
            return Ok(());
        }
        if s.conn.wants_read() {
            if !s.recv_armed && !s.starved {
                s.recv_armed = true;
                s.ops += 1;
                let group = self.buf_group.id();
                let entry = if self.features.has(Feature::Bundle) {
                    on_sock!(target, t => opcode::RecvMultiBundle::new(t, group).build())
                } else {
                    on_sock!(target, t => opcode::RecvMulti::new(t, group).build())
                };
                let entry = entry.user_data(token(Op::Recv, id));
                // SAFETY: the receive writes only into buffers of `buf_group`, which
                // `self.ring` owns (mapped for as long as the ring exists). It names the
                // connection's socket, kept open until `ops` (counting this receive) is
                // back to zero.
                unsafe { self.ring.push(&entry) }?;
            }
        } else if s.recv_armed && !s.recv_cancelled {
            // Backpressure: stop the multishot receive; re-armed once output drains.
            s.recv_cancelled = true;
            s.ops += 1;
            let entry = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(token(Op::Recv, id)))
                .build()
                .user_data(token(Op::Cancel, id));
            // SAFETY: a cancellation by user_data refers to no memory and no fd.
            unsafe { self.ring.push(&entry) }?;
        }
        if let Some((_, deadline)) = s.conn.poll_timeout() {
            arm_deadline(&mut self.deadlines, &mut self.wake_hint, s, id, deadline);
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
        let Some(s) = self.slots.get_mut(id) else { return Ok(()) };
        if !s.conn.wants_input_check() {
            return Ok(());
        }
        let fd = match &s.sock {
            Sock::Fd(fd) => fd.as_fd(),
            Sock::Direct(slot) => {
                // No fd to ask: ask through the ring, after the receives it has done.
                if !s.input_check {
                    s.input_check = true;
                    s.ops += 1;
                    let entry = opcode::UringCmd16::new(types::Fixed(*slot), SOCKET_URING_OP_SIOCINQ)
                        .build()
                        .user_data(token(Op::InputCheck, id));
                    // SAFETY: the command refers to no memory. It names the connection's
                    // table slot, which stays open until `ops` (counting this command)
                    // is back to zero.
                    unsafe { self.ring.push(&entry) }?;
                }
                return Ok(());
            }
        };
        self.stats.syscalls += 1;
        match socket::unread_bytes(fd) {
            Ok(0) => {}
            // Bytes wait in the socket: the receive brings them and drives it again (a
            // starved receive is re-armed in its turn).
            Ok(_) => return Ok(()),
            Err(_) => {
                s.dead = true;
                return Ok(());
            }
        }
        if self.ring.completions_waiting() {
            self.recheck.push(id);
            return Ok(());
        }
        s.conn.handle_no_pending_input(&mut self.ctx);
        self.drive_output(id)
    }

    /// Starts the next send of connection `id` if none is in flight: the rest of a
    /// file chunk, the next file chunk, or the in-memory segments; or shuts down the
    /// write side once everything is sent and the connection must close.
    fn drive_output(&mut self, id: ConnId) -> io::Result<()> {
        loop {
            let Some(s) = self.slots.get_mut(id) else { return Ok(()) };
            if s.send.is_some() || s.stream.as_ref().is_some_and(|c| c.busy) {
                return Ok(());
            }
            // Whatever is sent next, it is at most the connection's share of the turn.
            let share = self.budget.share(s.conn.output_len());
            if share == 0 {
                if !s.waiting {
                    s.waiting = true;
                    self.waiting.push_back(id);
                }
                return Ok(());
            }
            if s.stream.as_ref().is_some_and(|c| c.sent < c.filled) {
                return self.send_chunk(id, share);
            }
            if let Some((file, offset, left)) = s.conn.poll_output().and_then(|out| out.front_file()) {
                let file = file.as_raw_fd();
                return self.read_chunk(id, file, offset, left);
            }
            if let Some(out) = s.conn.poll_output() {
                if let Some(chunk) = s.stream.take() {
                    // Done with files for now: give the chunk buffer back.
                    file::recycle(&mut self.chunks, chunk);
                }
                let mut header = self.headers.pop().unwrap_or_else(SendHeader::boxed);
                let total = header.load(out, share);
                self.budget.spend(total);
                let zero_copy = self.features.has(Feature::ZeroCopy) && total >= self.zc_threshold;
                let entry = header
                    .entry(s.target(), self.features.has(Feature::Send), zero_copy)
                    .user_data(token(Op::Send, id));
                s.send = Some(header);
                s.ops += 1;
                // SAFETY: the `msghdr` and `iovec`s are in the boxed header, which stays
                // in the slot until this send's last completion (`on_send` takes it; for
                // a zero-copy send that is its notification, after which the kernel no
                // longer reads the segments). The segments they point to are held
                // unchanged by `conn` until `handle_sent` (contract rule 5: Output),
                // called only from that last completion, or until it is dropped, which
                // `close` does only at `ops == 0`. The socket stays open until `ops`
                // (counting this send) is back to zero.
                unsafe { self.ring.push(&entry) }?;
                return Ok(());
            }
            if s.conn.should_close_after_flush() && !s.shut_wr {
                s.shut_wr = true;
                match &s.sock {
                    Sock::Fd(fd) => {
                        self.stats.syscalls += 1;
                        let _ = socket::shutdown_write(fd.as_fd());
                    }
                    Sock::Direct(slot) => {
                        s.ops += 1;
                        let entry = opcode::Shutdown::new(types::Fixed(*slot), libc::SHUT_WR)
                            .build()
                            .user_data(token(Op::Shutdown, id));
                        // SAFETY: a shutdown refers to no memory. It names the
                        // connection's table slot, open until `ops` (counting it) is
                        // back to zero. Sends complete before this is queued (one at a
                        // time, and none in flight here), so the FIN follows them.
                        unsafe { self.ring.push(&entry) }?;
                    }
                }
                s.conn.handle_write_shutdown(&mut self.ctx);
                continue;
            }
            return Ok(());
        }
    }

    /// Closes the socket of a connection with no operation left and frees its slot.
    fn close(&mut self, id: ConnId) {
        // Every push site relies on this: never close while an operation names the socket.
        if !matches!(self.slots.get(id), Some(s) if s.ops == 0) {
            debug_assert!(self.slots.get(id).is_none(), "close with operations in flight");
            return;
        }
        let Some(s) = self.slots.remove(id) else { return };
        // Closes the socket: `ops` is zero, so no operation names it any more.
        match s.sock {
            Sock::Fd(fd) => {
                drop(fd);
                self.stats.syscalls += 1;
            }
            // Tearing down, the ring's file table closes it with the ring.
            Sock::Direct(_) if self.stopping => {}
            Sock::Direct(slot) => {
                let entry = opcode::Close::new(types::Fixed(slot)).build().user_data(loop_token(Op::CloseDirect));
                // SAFETY: a close refers to no memory; no operation names the slot any
                // more (`ops` is zero) and the connection is gone, so nothing names it
                // until the kernel frees it for a later accept. Should the push fail,
                // the slot stays taken until the ring goes: a slot lost, never reused
                // early.
                let _ = unsafe { self.ring.push(&entry) };
            }
        }
        if let Some(header) = s.send {
            if self.headers.len() < HEADER_POOL_MAX {
                self.headers.push(header);
            }
        }
        if let Some(chunk) = s.stream {
            file::recycle(&mut self.chunks, chunk);
        }
        self.stats.closed += 1;
        self.fd_freed();
    }

    /// Cancels everything, reaps every completion, closes every socket. Returns false
    /// if the ring did not give back every completion in time (the caller then leaks
    /// the memory operations may still use).
    fn teardown(&mut self) -> bool {
        self.stopping = true;
        self.dirty.clear();
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(loop_token(Op::Global));
        // SAFETY: a cancellation refers to no memory and no fd.
        if unsafe { self.ring.push(&cancel) }.is_err() {
            return false;
        }
        let give_up = Instant::now() + Duration::from_secs(5);
        while self.ring.in_flight() > 0 {
            if Instant::now() >= give_up {
                return false;
            }
            self.stats.wakeups += 1;
            self.stats.syscalls += 1;
            if self.ring.submit_and_wait_timeout(1, Duration::from_millis(100)).is_err() {
                return false;
            }
            self.reap_all();
        }
        for id in self.slots.ids() {
            if let Some(s) = self.slots.get_mut(id) {
                // Every completion has been reaped (`in_flight` is zero).
                s.ops = 0;
            }
            self.close(id);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_slot_stays_small() {
        // 160 until the socket became a process fd or a direct descriptor (8 bytes
        // with its tag, not 4).
        let size = std::mem::size_of::<Slot>();
        assert!(size <= 168, "Slot is {size} bytes");
    }
}
