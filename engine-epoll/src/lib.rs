//! duet-engine-epoll: an edge-triggered epoll readiness loop, one per thread.
//!
//! Each worker owns a SO_REUSEPORT listener, an epoll instance, an eventfd for
//! shutdown, a slab of connections and a timer wheel. A connection is registered once
//! (`EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET`) and its readiness is remembered in its slot:
//! reads go until EAGAIN within a per-wakeup budget (a flooding socket is requeued, not
//! allowed to starve the others), and all queued output leaves in one `sendmsg` per
//! flush. Bodies streamed from disk go out with `sendfile` from the shared descriptor,
//! a bounded chunk per call and a bounded amount per wakeup, and only as fast as the
//! socket takes them: nothing of a file is ever buffered in user space. Reads land in one per-thread buffer; an idle keep-alive connection holds no
//! buffer at all. The HTTP work is `duet_http::Connection`'s; this crate only moves
//! bytes and keeps time. All `unsafe` is in [`sys`].

mod sys;

use duet_http::{
    run_workers, Connection, Context, Report, ServeConfig, Shutdown, ShutdownState, Site, Stats, TimerWheel,
};
use std::io::{self, IoSlice};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use sys::Fd;
use tracing::{debug, info, warn};

const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_WAKER: u64 = u64::MAX - 1;
/// Size of the per-thread read buffer.
const READ_BUF: usize = 64 * 1024;
/// Reads per connection per wakeup before it is requeued behind the others.
const READ_BUDGET: usize = 8;
/// Most segments in one sendmsg.
const MAX_IOV: usize = 16;
/// Most file bytes in one sendfile call.
const SENDFILE_CHUNK: usize = 1024 * 1024;
/// File bytes sent to one connection per wakeup before it is requeued behind the others
/// (a fast reader of a large file must not starve the rest of the loop).
const SENDFILE_BUDGET: usize = 4 * SENDFILE_CHUNK;
/// Events taken per epoll_wait.
const MAX_EVENTS: usize = 512;

/// Serves until `shutdown` (see the engine contract in `duet_http`).
pub fn serve(config: ServeConfig, site: Arc<Site>, shutdown: Shutdown) -> io::Result<Report> {
    let ServeConfig { listeners, pin, limits, drain_timeout, metrics, .. } = config;
    let cores = if pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let sd = shutdown.clone();
    run_workers("epoll", listeners, &shutdown, move |i, listener| {
        if pin {
            match cores.get(i % cores.len().max(1)) {
                Some(core) if core_affinity::set_for_current(*core) => debug!("worker {i} pinned to CPU {}", core.id),
                _ => warn!("worker {i}: could not pin to a CPU"),
            }
        }
        let mut ctx = Context::new(Arc::clone(&site), limits.clone(), Instant::now(), SystemTime::now());
        ctx.attach_metrics(metrics.clone(), i);
        Worker::new(listener, ctx, sd.clone(), drain_timeout)?.run()
    })
}

/// One live connection.
struct Live {
    fd: RawFd,
    conn: Connection,
    readable: bool,
    writable: bool,
    /// The peer's FIN was reported (EPOLLRDHUP/HUP): read until EOF even after a short
    /// read, because no further edge will come.
    hup: bool,
    /// The wheel tick this connection is armed for, if any.
    armed: Option<u64>,
}

struct Slot {
    generation: u32,
    live: Option<Live>,
}

fn token(index: usize, generation: u32) -> u64 {
    ((generation as u64) << 32) | index as u64
}

struct Worker {
    epoll: Fd,
    listener: Option<TcpListener>,
    waker: Arc<Fd>,
    spare: Option<Fd>,
    emfile_logged: bool,
    ctx: Context,
    shutdown: Shutdown,
    drain_timeout: Duration,
    drain_deadline: Option<Instant>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
    wheel: TimerWheel<(u32, u32, u64)>,
    due: Vec<(u32, u32, u64)>,
    /// Connections that used up their read budget and still have input.
    requeued: Vec<(usize, u32)>,
    read_buf: Box<[u8]>,
}

impl Worker {
    fn new(listener: TcpListener, ctx: Context, shutdown: Shutdown, drain_timeout: Duration) -> io::Result<Self> {
        let epoll = sys::epoll_create()?;
        let waker = Arc::new(sys::eventfd()?);
        sys::epoll_add(epoll.0, listener.as_raw_fd(), libc::EPOLLIN as u32 | libc::EPOLLET as u32, TOKEN_LISTENER)?;
        sys::epoll_add(epoll.0, waker.0, libc::EPOLLIN as u32 | libc::EPOLLET as u32, TOKEN_WAKER)?;
        let w = Arc::clone(&waker);
        shutdown.register_waker(move || sys::eventfd_signal(w.0));
        let now = ctx.now();
        Ok(Worker {
            epoll,
            listener: Some(listener),
            waker,
            spare: sys::open_spare().ok(),
            emfile_logged: false,
            ctx,
            shutdown,
            drain_timeout,
            drain_deadline: None,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            wheel: TimerWheel::with_defaults(now),
            due: Vec::new(),
            requeued: Vec::new(),
            read_buf: vec![0u8; READ_BUF].into_boxed_slice(),
        })
    }

    fn run(mut self) -> io::Result<Stats> {
        let mut events = vec![sys::empty_event(); MAX_EVENTS];
        // The state may have changed before the waker was registered.
        self.check_shutdown();
        loop {
            match self.shutdown.state() {
                ShutdownState::Immediate => break,
                ShutdownState::Graceful if self.live == 0 => break,
                ShutdownState::Graceful if self.drain_deadline.is_some_and(|d| self.ctx.now() >= d) => {
                    info!("drain deadline passed with {} connections open; closing them", self.live);
                    break;
                }
                _ => {}
            }
            let timeout = self.poll_timeout();
            self.ctx.publish_stats();
            let n = sys::epoll_wait(self.epoll.0, &mut events, timeout)?;
            self.ctx.stats.wakeups += 1;
            self.ctx.stats.syscalls += 1;
            self.ctx.stats.events += n as u64;
            self.ctx.set_time(Instant::now(), SystemTime::now());
            for ev in &events[..n] {
                let flags = sys::event_flags(ev);
                match sys::event_token(ev) {
                    TOKEN_LISTENER => self.accept_all(),
                    TOKEN_WAKER => {
                        self.ctx.stats.syscalls += 1;
                        sys::eventfd_drain(self.waker.0);
                        self.check_shutdown();
                    }
                    t => self.on_event(t, flags),
                }
            }
            let requeued = std::mem::take(&mut self.requeued);
            for (index, generation) in requeued {
                if self.slots.get(index).is_some_and(|s| s.generation == generation && s.live.is_some()) {
                    self.drive(index);
                }
            }
            self.expire_timers();
        }
        self.close_all();
        Ok(std::mem::take(&mut self.ctx.stats))
    }

    fn poll_timeout(&mut self) -> i32 {
        if !self.requeued.is_empty() {
            return 0;
        }
        let next = [self.wheel.next_expiry(), self.drain_deadline].into_iter().flatten().min();
        match next {
            None => -1,
            Some(at) => {
                let now = Instant::now();
                let ms = at.saturating_duration_since(now).as_nanos().div_ceil(1_000_000);
                ms.min(i32::MAX as u128) as i32
            }
        }
    }

    fn check_shutdown(&mut self) {
        if self.shutdown.state() == ShutdownState::Running || self.drain_deadline.is_some() {
            return;
        }
        self.ctx.set_time(Instant::now(), SystemTime::now());
        self.drain_deadline = Some(self.ctx.now() + self.drain_timeout);
        if let Some(listener) = self.listener.take() {
            self.ctx.stats.syscalls += 2; // epoll_ctl, close
            let _ = sys::epoll_del(self.epoll.0, listener.as_raw_fd());
            drop(listener);
        }
        for index in 0..self.slots.len() {
            if let Some(live) = self.slots[index].live.as_mut() {
                live.conn.begin_shutdown(&mut self.ctx);
                self.drive(index);
            }
        }
    }

    fn accept_all(&mut self) {
        let Some(listener) = self.listener.as_ref() else { return };
        let lfd = listener.as_raw_fd();
        loop {
            self.ctx.stats.syscalls += 1;
            match sys::accept(lfd) {
                Ok(fd) => self.register(fd),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return,
                    Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => continue,
                    Some(libc::EMFILE | libc::ENFILE) => {
                        if !self.shed_one(lfd) {
                            return;
                        }
                    }
                    _ => {
                        warn!("accept failed: {e}");
                        return;
                    }
                },
            }
        }
    }

    /// Out of descriptors: give back the spare, accept one connection and close it at
    /// once (the client sees a close rather than a hang), then take the spare again.
    /// Returns whether a connection was shed (so accepting may continue).
    fn shed_one(&mut self, lfd: RawFd) -> bool {
        if !self.emfile_logged {
            warn!("out of file descriptors: closing new connections until some close (raise ulimit -n)");
            self.emfile_logged = true;
        }
        let Some(spare) = self.spare.take() else { return false };
        drop(spare);
        self.ctx.stats.syscalls += 3; // close the spare, accept4, open the spare
        let shed = match sys::accept(lfd) {
            Ok(fd) => {
                self.ctx.stats.syscalls += 1;
                sys::close(fd);
                true
            }
            Err(_) => false,
        };
        self.spare = sys::open_spare().ok();
        shed
    }

    fn register(&mut self, fd: RawFd) {
        self.ctx.stats.syscalls += 2; // setsockopt, epoll_ctl
        let _ = sys::set_nodelay(fd);
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { generation: 0, live: None });
                self.slots.len() - 1
            }
        };
        let generation = self.slots[index].generation;
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        if let Err(e) = sys::epoll_add(self.epoll.0, fd, events, token(index, generation)) {
            warn!("cannot register a connection: {e}");
            self.ctx.stats.syscalls += 1;
            sys::close(fd);
            self.free.push(index);
            return;
        }
        let mut conn = Connection::new(&self.ctx);
        if self.drain_deadline.is_some() {
            conn.begin_shutdown(&mut self.ctx);
        }
        self.slots[index].live = Some(Live { fd, conn, readable: false, writable: true, hup: false, armed: None });
        self.live += 1;
        self.ctx.stats.accepted += 1;
        self.arm_timer(index);
    }

    fn on_event(&mut self, token: u64, flags: u32) {
        let index = (token & 0xffff_ffff) as usize;
        let generation = (token >> 32) as u32;
        let Some(slot) = self.slots.get_mut(index) else { return };
        if slot.generation != generation {
            return;
        }
        let Some(live) = slot.live.as_mut() else { return };
        if flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
            live.readable = true;
        }
        if flags & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
            live.hup = true;
        }
        if flags & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
            live.writable = true;
        }
        self.drive(index);
    }

    /// Reads, lets the connection work, writes, and closes when it says so.
    fn drive(&mut self, index: usize) {
        let generation = self.slots[index].generation;
        let Some(live) = self.slots[index].live.as_mut() else { return };
        let ctx = &mut self.ctx;
        let mut reads = 0;
        let mut file_sent = 0;
        let mut requeue = false;
        let mut failed = false;
        loop {
            while live.readable && live.conn.wants_read() {
                if reads == READ_BUDGET {
                    requeue = true;
                    break;
                }
                reads += 1;
                ctx.stats.syscalls += 1;
                match sys::read(live.fd, &mut self.read_buf) {
                    Ok(0) => {
                        live.readable = false;
                        live.conn.handle_eof(ctx);
                    }
                    Ok(n) => {
                        // A short read drained the socket; the next edge reports more
                        // (unless the FIN already came: then read on to the EOF).
                        if n < self.read_buf.len() && !live.hup {
                            live.readable = false;
                        }
                        ctx.stats.bytes_read += n as u64;
                        live.conn.handle_input(ctx, &self.read_buf[..n]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => live.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                break;
            }
            let mut progressed = false;
            while live.writable {
                let Some(out) = live.conn.poll_output() else { break };
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let count = out.fill(&mut iov);
                let (result, want, from_file) = if count == 0 {
                    // A body streamed from disk is at the front of the output.
                    let Some((file, offset, left)) = out.front_file() else { break };
                    if file_sent >= SENDFILE_BUDGET {
                        requeue = true;
                        break;
                    }
                    let want = left.min(SENDFILE_CHUNK);
                    (sys::sendfile(live.fd, file.as_raw_fd(), offset, want), want, true)
                } else {
                    let want = iov[..count].iter().map(|s| s.len()).sum();
                    (sys::sendv(live.fd, &iov[..count]), want, false)
                };
                ctx.stats.syscalls += 1;
                match result {
                    // The file ended early (it shrank): the response cannot be completed.
                    Ok(0) if from_file => {
                        debug!("a streamed file ended early; dropping the connection");
                        failed = true;
                        break;
                    }
                    Ok(n) => {
                        if n < want {
                            live.writable = false;
                            ctx.stats.partial_writes += 1;
                        }
                        if from_file {
                            file_sent += n;
                        }
                        ctx.stats.bytes_written += n as u64;
                        live.conn.handle_sent(ctx, n);
                        progressed = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => live.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                break;
            }
            if live.conn.should_close_after_flush() {
                ctx.stats.syscalls += 1;
                sys::shutdown_write(live.fd);
                live.conn.handle_write_shutdown(ctx);
                continue; // lingering reads what is left
            }
            // Sending may have released backpressure on input still in the socket.
            if !(progressed && live.readable && live.conn.wants_read() && reads < READ_BUDGET) {
                break;
            }
        }
        if failed || live.conn.is_closed() {
            self.close(index);
        } else {
            if requeue {
                self.requeued.push((index, generation));
            }
            self.arm_timer(index);
        }
    }

    fn arm_timer(&mut self, index: usize) {
        let generation = self.slots[index].generation;
        let Some(live) = self.slots[index].live.as_mut() else { return };
        let Some(deadline) = live.conn.deadline(self.ctx.limits()) else { return };
        let tick = self.wheel.tick_for(deadline);
        if live.armed.is_none_or(|armed| tick < armed) {
            live.armed = Some(self.wheel.arm(deadline, (index as u32, generation, tick)));
        }
    }

    fn expire_timers(&mut self) {
        self.wheel.expire(self.ctx.now(), &mut self.due);
        let due = std::mem::take(&mut self.due);
        for &(index, generation, tick) in &due {
            let index = index as usize;
            let Some(slot) = self.slots.get_mut(index) else { continue };
            if slot.generation != generation {
                continue;
            }
            let Some(live) = slot.live.as_mut() else { continue };
            if live.armed != Some(tick) {
                continue; // superseded by an earlier arming
            }
            live.armed = None;
            live.conn.handle_timeout(&mut self.ctx);
            if live.conn.is_closed() {
                self.close(index);
            } else {
                self.drive(index);
            }
        }
        self.due = due;
        self.due.clear();
    }

    fn close(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if let Some(live) = slot.live.take() {
            // Closing the only descriptor also removes it from the epoll set.
            sys::close(live.fd);
            self.ctx.stats.syscalls += 1;
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(index);
            self.live -= 1;
            self.ctx.stats.closed += 1;
        }
    }

    fn close_all(&mut self) {
        for index in 0..self.slots.len() {
            self.close(index);
        }
    }
}
