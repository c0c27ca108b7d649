//! One worker: a ring, its listener, and the connections it accepted.
//!
//! Each loop turn is one `io_uring_enter` that submits what the previous turn queued
//! and waits for at least one completion; then the clock is read once, every
//! completion is dispatched, due deadlines are handled, and every connection touched
//! in the turn is settled (next send, shutdown, close, receive re-arm, deadline).

use crate::sys::{self, BufRing, Ring, SendHeader};
use crate::UringOptions;
use duet_engine::{Publisher, ShutdownState, Stats, TimerWheel, WorkerSetup};
use duet_http::{Connection, Context};
use io_uring::{cqueue, opcode, squeue, types};
use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, info, warn};

/// What a completion is for; the top byte of its user_data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
    /// A cancellation issued for one connection (counted in its slot).
    Cancel = 4,
    Wake = 5,
    Timer = 6,
    TimerUpdate = 7,
    /// A cancellation not tied to a connection (the accept, or everything at exit).
    Global = 8,
    /// A read of a streamed file into the connection's chunk buffer.
    FileRead = 9,
    /// The send of that chunk.
    FileSend = 10,
}

const GEN_MASK: u32 = 0x00FF_FFFF;

/// user_data: op (8 bits) | generation (24 bits) | slot (32 bits). A completion whose
/// generation differs from its slot's belongs to a connection that is gone.
fn token(op: Op, slot: u32, gen: u32) -> u64 {
    ((op as u64) << 56) | (((gen & GEN_MASK) as u64) << 32) | slot as u64
}

fn decode(user_data: u64) -> (Option<Op>, u32, u32) {
    let op = match (user_data >> 56) as u8 {
        1 => Some(Op::Accept),
        2 => Some(Op::Recv),
        3 => Some(Op::Send),
        4 => Some(Op::Cancel),
        5 => Some(Op::Wake),
        6 => Some(Op::Timer),
        7 => Some(Op::TimerUpdate),
        8 => Some(Op::Global),
        9 => Some(Op::FileRead),
        10 => Some(Op::FileSend),
        _ => None,
    };
    (op, user_data as u32, ((user_data >> 32) as u32) & GEN_MASK)
}

/// Resolution of the deadline wheel; a deadline fires at most this late.
const TICK: Duration = Duration::from_millis(100);
/// Wheel key for "retry accepting" after running out of file descriptors.
const ACCEPT_RETRY: (u32, u32) = (u32::MAX, 0);
/// Most completions handled per reap (they are copied out of the ring first).
const REAP_BATCH: usize = 512;
/// Most reaps per loop turn, so connections are settled and submissions go out even
/// if completions keep arriving (they cannot with DEFER_TASKRUN, but can without).
const REAPS_PER_TURN: usize = 8;
/// Pending connections dropped per EMFILE completion.
const EMFILE_DROP_BATCH: usize = 64;
/// Send headers kept for reuse; more are freed (like the output buffer pool).
const HEADER_POOL_MAX: usize = 512;
/// Bytes of a streamed file read and sent per round: one chunk buffer per connection
/// that is streaming a file, none otherwise.
const FILE_CHUNK: usize = 128 * 1024;
/// Chunk buffers kept for reuse.
const CHUNK_POOL_MAX: usize = 16;

/// A streamed file travels through the ring in chunks: read the file at the segment's
/// offset into `buf`, send `buf[sent..filled]`, report the bytes with `handle_sent`,
/// repeat. `busy` while the read or the send is in flight (then `buf` must not move
/// or be freed; it is boxed in the slot until the completion).
struct FileChunk {
    buf: Box<[u8]>,
    filled: usize,
    sent: usize,
    busy: bool,
}

impl FileChunk {
    fn boxed() -> Box<FileChunk> {
        Box::new(FileChunk { buf: vec![0u8; FILE_CHUNK].into_boxed_slice(), filled: 0, sent: 0, busy: false })
    }
}

/// One connection's slot. Kept small: an idle keep-alive connection costs this plus
/// its `Connection`, and no buffer.
struct Slot {
    conn: Option<Connection>,
    /// The header of the send in flight, if any.
    send: Option<Box<SendHeader>>,
    /// The chunk buffer of a file being streamed, if any.
    stream: Option<Box<FileChunk>>,
    /// Wheel tick armed for this connection (`u64::MAX`: none).
    timer_tick: u64,
    fd: RawFd,
    gen: u32,
    /// Operations whose last completion is still to come.
    ops: u8,
    recv_armed: bool,
    recv_cancelled: bool,
    shut_wr: bool,
    /// Cancellation issued; the fd closes when `ops` reaches 0.
    closing: bool,
    /// A socket error: drop the connection whatever its state.
    dead: bool,
    /// Queued for settling at the end of this turn.
    dirty: bool,
    /// Its receive ended with ENOBUFS; it waits in `Worker::starved` for its turn to
    /// re-arm, so a crowd of senders does not spin on an empty buffer ring.
    starved: bool,
}

impl Slot {
    fn vacant() -> Slot {
        Slot {
            conn: None,
            send: None,
            stream: None,
            timer_tick: u64::MAX,
            fd: -1,
            gen: 0,
            ops: 0,
            recv_armed: false,
            recv_cancelled: false,
            shut_wr: false,
            closing: false,
            dead: false,
            dirty: false,
            starved: false,
        }
    }
}

/// Runs one worker until shutdown; returns its counters.
pub fn run(setup: WorkerSetup, uring: &UringOptions) -> io::Result<Stats> {
    let WorkerSetup { index, listener, ctx, shutdown, drain, publisher } = setup;
    let drain_timeout = drain.timeout();
    let ring = Ring::new(uring.ring_entries, uring.sqpoll_idle_ms)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create the io_uring of worker {index}: {e}")))?;
    let bufs = BufRing::new(&ring, uring.buf_count, uring.buf_size, 0)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot register the receive buffer ring: {e}")))?;
    let (sq, cq) = ring.sizes();
    let msg = format!(
        "io_uring worker {index}: {} ring, {sq} SQ / {cq} CQ entries, {} x {} B receive buffers{}",
        ring.mode(),
        uring.buf_count,
        uring.buf_size,
        uring.sqpoll_idle_ms.map_or(String::new(), |ms| format!(", SQPOLL idle {ms} ms")),
    );
    if index == 0 {
        info!("{msg}");
    } else {
        debug!("{msg}");
    }

    let wake_fd = Arc::new(sys::eventfd()?);
    {
        // The closure keeps the eventfd open for as long as the Shutdown lives, so a
        // late wake can never write to a reused fd number.
        let wake_fd = Arc::clone(&wake_fd);
        shutdown.register_waker(move || sys::eventfd_signal(&wake_fd));
    }

    let now = Instant::now();
    let mut worker = Worker {
        ring,
        bufs,
        ctx,
        stats: Stats::default(),
        publisher,
        slots: Vec::new(),
        free: Vec::new(),
        dirty: Vec::new(),
        starved: std::collections::VecDeque::new(),
        live: 0,
        wheel: TimerWheel::new(now, TICK, 1024),
        due: Vec::new(),
        cqes: Vec::with_capacity(REAP_BATCH),
        headers: Vec::new(),
        chunks: Vec::new(),
        listener: Some(listener),
        accepting: true,
        accept_armed: false,
        accept_paused: false,
        accept_retry_at: None,
        spare: File::open("/dev/null").ok(),
        emfile_logged: false,
        wake_fd,
        wake_buf: Box::new(0),
        wake_armed: false,
        timer_at: None,
        timer_ts: Box::new(types::Timespec::new()),
        timer_update_ts: Box::new(types::Timespec::new()),
        timer_update_inflight: false,
        wake_hint: None,
        drain_deadline: None,
        inflight: 0,
        stopping: false,
        overflow_logged: false,
        shutdown,
        drain_timeout,
    };
    let result = worker.serve();
    let clean = worker.teardown();
    let mut stats = worker.stats.clone();
    stats.set_http(&worker.ctx.stats);
    if !clean {
        warn!("worker {index}: the ring did not return every completion; leaking its buffers");
        std::mem::forget(worker);
    }
    result.map(|()| stats)
}

struct Worker {
    // The ring is declared (so dropped) before the memory its operations use.
    ring: Ring,
    bufs: BufRing,
    ctx: Context,
    stats: Stats,
    publisher: Publisher,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots to settle at the end of the turn.
    dirty: Vec<u32>,
    /// Connections whose receive ran out of buffers, oldest first (slot, generation).
    starved: std::collections::VecDeque<(u32, u32)>,
    /// Slots holding a connection (closing ones included).
    live: usize,
    wheel: TimerWheel<(u32, u32)>,
    due: Vec<(u32, u32)>,
    cqes: Vec<cqueue::Entry>,
    /// Send headers not in use (one per concurrent send, reused: no allocation per
    /// request). Boxed: a header moves into a slot while the kernel reads it.
    #[allow(clippy::vec_box)]
    headers: Vec<Box<SendHeader>>,
    /// File chunk buffers not in use; boxed because a slot holds one by pointer (an idle
    /// slot stays small) and they move between the two.
    #[allow(clippy::vec_box)]
    chunks: Vec<Box<FileChunk>>,
    /// Closed (so the kernel refuses new connections) once draining has stopped the accept.
    listener: Option<TcpListener>,
    accepting: bool,
    accept_armed: bool,
    /// Out of fds with no spare to trade: wait for a close or the retry time.
    accept_paused: bool,
    accept_retry_at: Option<Instant>,
    /// A spare fd closed to make room for accept-and-close on EMFILE.
    spare: Option<File>,
    emfile_logged: bool,
    wake_fd: Arc<OwnedFd>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// When the one timeout in flight fires (`None`: no timeout in flight).
    timer_at: Option<Instant>,
    timer_ts: Box<types::Timespec>,
    timer_update_ts: Box<types::Timespec>,
    timer_update_inflight: bool,
    /// The earliest wake-up asked for since the timeout was last armed.
    wake_hint: Option<Instant>,
    drain_deadline: Option<Instant>,
    /// Operations (of any kind) whose last completion is still to come.
    inflight: usize,
    /// Tearing down: completions are only accounted, nothing is re-armed.
    stopping: bool,
    overflow_logged: bool,
    shutdown: duet_engine::Shutdown,
    drain_timeout: Duration,
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Queues `entry` on `ring` and counts it in `inflight`: the one place this crate
/// pushes a submission.
///
/// Callers pass only entries built in this module, which refer to memory and fds kept
/// as [`Ring::push`] requires: a connection's boxed send header and the segments its
/// `Connection` holds unchanged, and its boxed file chunk buffer and the streamed file
/// its `Connection` holds open (all live until the slot's `ops` count reaches zero,
/// and only then is the fd closed), the worker's boxed timespecs and wake buffer (one
/// operation each at a time, and the worker outlives its operations or is leaked), the
/// worker's listener and eventfd (open until the worker is gone), and the worker's
/// buffer ring for receives.
fn queue(ring: &mut Ring, inflight: &mut usize, entry: &squeue::Entry) -> io::Result<()> {
    // SAFETY: every entry built in this module refers only to memory and fds that
    // outlive the operation's last completion, as listed above.
    unsafe { ring.push(entry) }?;
    *inflight += 1;
    Ok(())
}

impl Worker {
    /// Queues `entry`, counting it as in flight (see [`queue`]).
    fn submit(&mut self, entry: squeue::Entry) -> io::Result<()> {
        queue(&mut self.ring, &mut self.inflight, &entry)
    }

    fn serve(&mut self) -> io::Result<()> {
        loop {
            match self.shutdown.state() {
                ShutdownState::Immediate => return Ok(()),
                ShutdownState::Graceful if self.drain_deadline.is_none() => self.begin_drain()?,
                _ => {}
            }
            self.settle_dirty()?;
            if let Some(deadline) = self.drain_deadline {
                if self.live == 0 || self.ctx.now() >= deadline {
                    if self.live > 0 {
                        info!("drain timeout: closing {} connections still open", self.live);
                    }
                    return Ok(());
                }
            }
            self.arm_loop_ops()?;
            self.publisher.publish(&self.stats, &self.ctx.stats);
            self.ring.submit_and_wait(1)?;
            self.stats.wakeups += 1;
            self.stats.syscalls += 1 + self.ring.take_extra_enters();
            self.ctx.set_time(Instant::now(), SystemTime::now());
            self.reap_all()?;
            self.expire_deadlines();
        }
    }

    /// Re-arms the accept, the wake read and the one timeout as needed.
    fn arm_loop_ops(&mut self) -> io::Result<()> {
        if let Some(listener) =
            self.listener.as_ref().filter(|_| self.accepting && !self.accept_armed && !self.accept_paused)
        {
            let entry = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build()
                .user_data(token(Op::Accept, 0, 0));
            self.submit(entry)?;
            self.accept_armed = true;
        }
        if !self.wake_armed {
            let entry =
                opcode::Read::new(types::Fd(self.wake_fd.as_raw_fd()), (&mut *self.wake_buf as *mut u64).cast(), 8)
                    .build()
                    .user_data(token(Op::Wake, 0, 0));
            self.submit(entry)?;
            self.wake_armed = true;
        }
        self.arm_timer()
    }

    /// Keeps exactly one timeout in flight for the loop's next deadline.
    fn arm_timer(&mut self) -> io::Result<()> {
        let now = Instant::now();
        match self.timer_at {
            None => {
                self.wake_hint = None;
                let next = earliest(earliest(self.wheel.next_expiry(), self.drain_deadline), self.accept_retry_at);
                if let Some(at) = next {
                    *self.timer_ts =
                        types::Timespec::from(at.saturating_duration_since(now).max(Duration::from_millis(1)));
                    let entry = opcode::Timeout::new(&*self.timer_ts).build().user_data(token(Op::Timer, 0, 0));
                    self.submit(entry)?;
                    self.timer_at = Some(at);
                }
            }
            Some(armed) => {
                let Some(hint) = self.wake_hint else { return Ok(()) };
                if hint + TICK / 2 >= armed {
                    self.wake_hint = None;
                } else if !self.timer_update_inflight {
                    self.wake_hint = None;
                    *self.timer_update_ts =
                        types::Timespec::from(hint.saturating_duration_since(now).max(Duration::from_millis(1)));
                    let entry = opcode::TimeoutUpdate::new(token(Op::Timer, 0, 0), &*self.timer_update_ts)
                        .build()
                        .user_data(token(Op::TimerUpdate, 0, 0));
                    self.submit(entry)?;
                    self.timer_update_inflight = true;
                    self.timer_at = Some(hint);
                }
            }
        }
        Ok(())
    }

    fn note_wake(&mut self, at: Instant) {
        self.wake_hint = earliest(self.wake_hint, Some(at));
    }

    fn reap_all(&mut self) -> io::Result<()> {
        if !self.overflow_logged && self.ring.cq_overflowed() {
            self.overflow_logged = true;
            warn!("io_uring completion queue overflowed (completions are kept by the kernel); raise --uring-entries");
        }
        let mut cqes = std::mem::take(&mut self.cqes);
        let mut result = Ok(());
        for _ in 0..REAPS_PER_TURN {
            self.ring.reap(&mut cqes, REAP_BATCH);
            if cqes.is_empty() {
                break;
            }
            self.stats.events += cqes.len() as u64;
            result = cqes.iter().try_for_each(|cqe| self.complete(cqe));
            if result.is_err() {
                break;
            }
        }
        self.cqes = cqes;
        result
    }

    fn complete(&mut self, cqe: &cqueue::Entry) -> io::Result<()> {
        let more = cqueue::more(cqe.flags());
        if !more {
            self.inflight -= 1;
        }
        let (op, slot, gen) = decode(cqe.user_data());
        tracing::trace!(?op, slot, gen, res = cqe.result(), flags = cqe.flags(), "cqe");
        match op {
            Some(Op::Accept) => self.on_accept(cqe.result(), more)?,
            Some(Op::Wake) => self.wake_armed = false,
            Some(Op::Timer) => self.timer_at = None,
            Some(Op::TimerUpdate) => self.timer_update_inflight = false,
            Some(Op::Global) | None => {}
            Some(op @ (Op::Recv | Op::Send | Op::Cancel | Op::FileRead | Op::FileSend)) => {
                self.on_conn_op(op, slot, gen, cqe, more)
            }
        }
        Ok(())
    }

    fn on_conn_op(&mut self, op: Op, slot: u32, gen: u32, cqe: &cqueue::Entry, more: bool) {
        let Some(s) = self.slots.get_mut(slot as usize).filter(|s| s.gen & GEN_MASK == gen && s.conn.is_some()) else {
            // Cannot happen while ops are counted per slot, but a buffer must never
            // be lost.
            self.bufs.consume(cqe, |_| ());
            return;
        };
        if !more {
            s.ops -= 1;
        }
        let res = cqe.result();
        match op {
            Op::Recv => {
                if !more {
                    s.recv_armed = false;
                    s.recv_cancelled = false;
                }
                let conn = s.conn.as_mut().expect("checked above");
                if res > 0 {
                    let live = !s.closing && !s.dead && !self.stopping;
                    let ctx = &mut self.ctx;
                    self.stats.bytes_read += res as u64;
                    let consumed = self.bufs.consume(cqe, |bytes| {
                        if live {
                            conn.handle_input(ctx, bytes);
                        }
                    });
                    if consumed.is_none() {
                        s.dead = true;
                    }
                } else {
                    if io_uring::cqueue::buffer_select(cqe.flags()).is_some() {
                        // A buffer picked for a completion that carries no data still
                        // goes back to the ring (current kernels recycle it themselves).
                        self.bufs.consume(cqe, |_| ());
                    }
                    if res == -libc::ENOBUFS {
                        self.stats.enobufs += 1;
                        if !more && !s.starved {
                            s.starved = true;
                            self.starved.push_back((slot, gen));
                        }
                    }
                    if res == 0 {
                        if !s.closing && !self.stopping {
                            conn.handle_eof(&mut self.ctx);
                        }
                    } else if res != -libc::ENOBUFS && res != -libc::ECANCELED {
                        // A socket error: reset by peer, timed out, ... Drop it.
                        s.dead = true;
                    }
                }
                // ENOBUFS: all buffers were taken this turn; they are back by the
                // time the re-armed receive is submitted. It never drops a connection.
            }
            Op::Send => {
                let mut offered = 0;
                if let Some(header) = s.send.take() {
                    offered = header.total();
                    if self.headers.len() < HEADER_POOL_MAX {
                        self.headers.push(header);
                    }
                }
                if res > 0 {
                    self.stats.bytes_written += res as u64;
                    if (res as usize) < offered {
                        self.stats.partial_writes += 1;
                    }
                    if !s.closing && !s.dead && !self.stopping {
                        let conn = s.conn.as_mut().expect("checked above");
                        conn.handle_sent(&mut self.ctx, res as usize);
                    }
                } else if res != -libc::ECANCELED {
                    s.dead = true; // EPIPE, ECONNRESET, ... (or nothing sent)
                }
            }
            Op::FileRead => {
                if let Some(chunk) = s.stream.as_mut() {
                    chunk.busy = false;
                    if res > 0 {
                        chunk.filled = res as usize;
                        chunk.sent = 0;
                    } else {
                        // The file shrank under us (0) or cannot be read: the promised
                        // length cannot be sent, so the connection must go.
                        s.dead = true;
                    }
                }
            }
            Op::FileSend => {
                if let Some(chunk) = s.stream.as_mut() {
                    chunk.busy = false;
                    if res > 0 {
                        self.stats.bytes_written += res as u64;
                        if chunk.sent + (res as usize) < chunk.filled {
                            self.stats.partial_writes += 1;
                        }
                        chunk.sent += res as usize;
                        if !s.closing && !s.dead && !self.stopping {
                            let conn = s.conn.as_mut().expect("checked above");
                            conn.handle_sent(&mut self.ctx, res as usize);
                        }
                    } else if res != -libc::ECANCELED {
                        s.dead = true;
                    }
                }
            }
            _ => {}
        }
        if self.stopping {
            return;
        }
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(slot);
        }
    }

    fn on_accept(&mut self, res: i32, more: bool) -> io::Result<()> {
        if !more {
            self.accept_armed = false;
            if !self.accepting {
                // Draining: the accept is gone for good, so stop the kernel queueing
                // connections nobody will take (they are refused instead).
                self.listener = None;
            }
        }
        if res >= 0 {
            let fd = res;
            self.stats.syscalls += 1;
            if !self.accepting || self.stopping {
                sys::close(fd);
                return Ok(());
            }
            sys::set_nodelay(fd);
            let idx = match self.free.pop() {
                Some(idx) => idx,
                None => {
                    self.slots.push(Slot::vacant());
                    (self.slots.len() - 1) as u32
                }
            };
            let s = &mut self.slots[idx as usize];
            s.conn = Some(Connection::new(&self.ctx));
            s.fd = fd;
            s.dirty = true;
            self.dirty.push(idx);
            self.live += 1;
            self.stats.accepted += 1;
            return Ok(());
        }
        match -res {
            libc::ECANCELED => {}
            libc::EMFILE | libc::ENFILE => self.out_of_fds(res),
            // The peer gave up, or a signal: nothing wrong with the listener.
            libc::ECONNABORTED
            | libc::EINTR
            | libc::EAGAIN
            | libc::EPROTO
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH => {}
            _ => {
                warn!("accept failed: {}; retrying in {} ms", io::Error::from_raw_os_error(-res), TICK.as_millis());
                self.pause_accept();
            }
        }
        Ok(())
    }

    /// EMFILE/ENFILE: trade the spare fd for accept-and-close of pending connections
    /// (clients get a close instead of hanging), or pause until something closes.
    fn out_of_fds(&mut self, res: i32) {
        if !self.emfile_logged {
            self.emfile_logged = true;
            warn!(
                "out of file descriptors ({}): closing new connections until some close (raise `ulimit -n`)",
                io::Error::from_raw_os_error(-res)
            );
        }
        match self.spare.take() {
            Some(spare) => {
                drop(spare);
                self.stats.syscalls += 2; // close and reopen the spare
                let Some(listener) = self.listener.as_ref().map(|l| l.as_raw_fd()) else { return };
                for _ in 0..EMFILE_DROP_BATCH {
                    self.stats.syscalls += 1;
                    if !sys::accept_and_close(listener) {
                        break;
                    }
                    self.stats.syscalls += 1;
                }
                self.spare = File::open("/dev/null").ok();
                if self.spare.is_none() {
                    self.pause_accept();
                }
            }
            None => {
                self.spare = File::open("/dev/null").ok();
                self.pause_accept();
            }
        }
    }

    fn pause_accept(&mut self) {
        self.accept_paused = true;
        let at = self.ctx.now() + TICK;
        self.accept_retry_at = Some(at);
        self.wheel.arm(at, ACCEPT_RETRY);
        self.note_wake(at);
    }

    fn resume_accept(&mut self) {
        self.accept_paused = false;
        self.accept_retry_at = None;
    }

    /// Stops accepting and asks every connection to finish.
    fn begin_drain(&mut self) -> io::Result<()> {
        let deadline = self.ctx.now() + self.drain_timeout;
        self.drain_deadline = Some(deadline);
        self.note_wake(deadline);
        self.accepting = false;
        if !self.accept_armed {
            self.listener = None;
        } else {
            let entry = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(token(Op::Accept, 0, 0)))
                .build()
                .user_data(token(Op::Global, 0, 0));
            self.submit(entry)?;
        }
        for idx in 0..self.slots.len() {
            let s = &mut self.slots[idx];
            let Some(conn) = s.conn.as_mut() else { continue };
            if s.closing {
                continue;
            }
            conn.begin_shutdown(&mut self.ctx);
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(idx as u32);
            }
        }
        Ok(())
    }

    fn expire_deadlines(&mut self) {
        let now = self.ctx.now();
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        self.wheel.expire(now, &mut due);
        if due.is_empty() {
            self.due = due;
            return;
        }
        // Every tick before this one has fired.
        let fired_before = self.wheel.tick_for(now);
        for &(idx, gen) in &due {
            if (idx, gen) == ACCEPT_RETRY {
                if self.accept_retry_at.is_some_and(|at| at <= now) {
                    self.resume_accept();
                }
                continue;
            }
            let Some(s) = self.slots.get_mut(idx as usize) else { continue };
            if s.gen != gen || s.closing {
                continue;
            }
            let Some(conn) = s.conn.as_mut() else { continue };
            if s.timer_tick < fired_before {
                s.timer_tick = u64::MAX;
            }
            conn.handle_timeout(&mut self.ctx);
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(idx);
            }
        }
        self.due = due;
    }

    /// Lets the oldest starved connections re-arm their receive: as many per turn as
    /// half the ring's buffers, which are all back in the ring by the next turn.
    fn wake_starved(&mut self) {
        let budget = (self.bufs.count() as usize / 2).max(1);
        for _ in 0..budget {
            let Some((idx, gen)) = self.starved.pop_front() else { break };
            let Some(s) = self.slots.get_mut(idx as usize).filter(|s| s.gen == gen && s.starved) else { continue };
            s.starved = false;
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    fn settle_dirty(&mut self) -> io::Result<()> {
        self.wake_starved();
        let mut i = 0;
        // Settling never adds to `dirty`, but index to be safe.
        while i < self.dirty.len() {
            let idx = self.dirty[i];
            self.settle(idx)?;
            i += 1;
        }
        self.dirty.clear();
        Ok(())
    }

    /// Brings one connection's operations in line with its state: next send,
    /// write-side shutdown, close, receive re-arm or cancel, deadline.
    fn settle(&mut self, idx: u32) -> io::Result<()> {
        let s = &mut self.slots[idx as usize];
        s.dirty = false;
        let fd = s.fd;
        let gen = s.gen;
        let Some(conn) = s.conn.as_mut() else { return Ok(()) };
        if s.closing {
            if s.ops == 0 {
                self.release(idx);
            }
            return Ok(());
        }
        if !s.dead {
            while s.send.is_none() && !s.stream.as_ref().is_some_and(|c| c.busy) {
                if let Some(chunk) = s.stream.as_mut().filter(|c| c.sent < c.filled) {
                    // The rest of a file chunk read earlier.
                    let rest = &mut chunk.buf[chunk.sent..chunk.filled];
                    let entry = opcode::Send::new(types::Fd(fd), rest.as_mut_ptr(), rest.len() as u32)
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(token(Op::FileSend, idx, gen));
                    chunk.busy = true;
                    s.ops += 1;
                    // The chunk is boxed in the slot and not touched until this
                    // completion; `ops` keeps the slot and fd alive until then.
                    queue(&mut self.ring, &mut self.inflight, &entry)?;
                } else if let Some((file, offset, left)) = conn.poll_output().and_then(|out| out.front_file()) {
                    let chunk = s.stream.get_or_insert_with(|| self.chunks.pop().unwrap_or_else(FileChunk::boxed));
                    let len = left.min(chunk.buf.len());
                    let entry = opcode::Read::new(types::Fd(file.as_raw_fd()), chunk.buf.as_mut_ptr(), len as u32)
                        .offset(offset)
                        .build()
                        .user_data(token(Op::FileRead, idx, gen));
                    chunk.busy = true;
                    chunk.filled = 0;
                    chunk.sent = 0;
                    s.ops += 1;
                    // The file stays open while `conn` holds its segment (until the
                    // bytes are reported sent); the chunk as for the send above.
                    queue(&mut self.ring, &mut self.inflight, &entry)?;
                } else if let Some(out) = conn.poll_output() {
                    if let Some(chunk) = s.stream.take() {
                        // Done with files for now: give the chunk buffer back.
                        if self.chunks.len() < CHUNK_POOL_MAX {
                            self.chunks.push(chunk);
                        }
                    }
                    let mut header = self.headers.pop().unwrap_or_else(SendHeader::boxed);
                    header.load(out);
                    let entry = header.entry(fd).user_data(token(Op::Send, idx, gen));
                    s.send = Some(header);
                    s.ops += 1;
                    // The header is boxed in the slot and `conn` keeps the segments
                    // unchanged until `handle_sent` (contract rule 4); `ops` keeps the
                    // slot (and fd) alive until the send's completion.
                    queue(&mut self.ring, &mut self.inflight, &entry)?;
                } else if conn.should_close_after_flush() && !s.shut_wr {
                    s.shut_wr = true;
                    self.stats.syscalls += 1;
                    sys::shutdown_write(fd);
                    conn.handle_write_shutdown(&mut self.ctx);
                    continue;
                }
                break;
            }
        }
        if s.dead || conn.is_closed() {
            s.closing = true;
            if s.ops == 0 {
                self.release(idx);
            } else {
                s.ops += 1;
                let entry = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
                    .build()
                    .user_data(token(Op::Cancel, idx, gen));
                self.submit(entry)?;
            }
            return Ok(());
        }
        if conn.wants_read() {
            if !s.recv_armed && !s.starved {
                s.recv_armed = true;
                s.ops += 1;
                let entry = opcode::RecvMulti::new(types::Fd(fd), self.bufs.bgid()).build().user_data(token(
                    Op::Recv,
                    idx,
                    gen,
                ));
                self.submit(entry)?;
            }
        } else if s.recv_armed && !s.recv_cancelled {
            // Backpressure: stop the multishot receive; re-armed once output drains.
            s.recv_cancelled = true;
            s.ops += 1;
            let entry = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(token(Op::Recv, idx, gen)))
                .build()
                .user_data(token(Op::Cancel, idx, gen));
            self.submit(entry)?;
        }
        let s = &mut self.slots[idx as usize];
        let conn = s.conn.as_ref().expect("checked above");
        if let Some((_, deadline)) = conn.poll_timeout() {
            let tick = self.wheel.tick_for(deadline);
            if tick < s.timer_tick {
                s.timer_tick = self.wheel.arm(deadline, (idx, gen));
                self.note_wake(deadline + TICK);
            }
        }
        Ok(())
    }

    /// Closes the fd of a connection with no operation left and frees its slot.
    fn release(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        debug_assert_eq!(s.ops, 0);
        sys::close(s.fd);
        self.stats.syscalls += 1;
        if let Some(header) = s.send.take() {
            if self.headers.len() < HEADER_POOL_MAX {
                self.headers.push(header);
            }
        }
        if let Some(chunk) = s.stream.take() {
            if self.chunks.len() < CHUNK_POOL_MAX {
                self.chunks.push(chunk);
            }
        }
        let gen = (s.gen + 1) & GEN_MASK;
        *s = Slot::vacant();
        s.gen = gen;
        self.free.push(idx);
        self.live -= 1;
        self.stats.closed += 1;
        if self.accept_paused {
            self.resume_accept(); // an fd was freed
        }
    }

    /// Cancels everything, reaps every completion, closes every socket. Returns false
    /// if the ring did not give back every completion in time (the caller then leaks
    /// the memory operations may still use).
    fn teardown(&mut self) -> bool {
        self.stopping = true;
        self.dirty.clear();
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(token(Op::Global, 0, 0));
        if self.submit(cancel).is_err() {
            return false;
        }
        let give_up = Instant::now() + Duration::from_secs(5);
        while self.inflight > 0 {
            if Instant::now() >= give_up {
                return false;
            }
            self.stats.wakeups += 1;
            self.stats.syscalls += 1;
            if self.ring.submit_and_wait_timeout(1, Duration::from_millis(100)).is_err() {
                return false;
            }
            if self.reap_all().is_err() {
                return false;
            }
        }
        for idx in 0..self.slots.len() {
            if self.slots[idx].conn.is_some() {
                self.slots[idx].ops = 0;
                self.release(idx as u32);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_op_slot_and_generation() {
        for op in [Op::Accept, Op::Recv, Op::Send, Op::Cancel, Op::Wake, Op::Timer, Op::TimerUpdate, Op::Global] {
            for (slot, gen) in [(0, 0), (1, 7), (u32::MAX, GEN_MASK), (123_456, 0x12_3456)] {
                assert_eq!(decode(token(op, slot, gen)), (Some(op), slot, gen));
            }
        }
        // A generation wraps within its 24 bits.
        assert_eq!(decode(token(Op::Recv, 5, GEN_MASK + 1)), (Some(Op::Recv), 5, 0));
        assert_eq!(decode(0).0, None);
    }

    #[test]
    fn idle_slot_stays_small() {
        let size = std::mem::size_of::<Slot>();
        assert!(size <= 160, "Slot is {size} bytes");
    }
}
