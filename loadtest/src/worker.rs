//! One load thread: an edge-triggered epoll loop over its share of the connections.
//!
//! Each connection is registered once for IN|OUT|RDHUP with EPOLLET. A response that
//! completes a batch triggers the next write right away from the read handler, so a
//! closed-loop request costs one read and one write (wrk also re-arms EPOLLOUT through
//! epoll_ctl twice per request). Requests are pre-rendered: `depth` copies back to back,
//! written with one send.

use crate::framer::{FrameError, Framer, Progress};
use crate::paths::{PathOrder, Picker};
use crate::stats::Stats;
use crate::sys::{self, Epoll, Event};
use socket2::{Domain, Protocol, Socket, Type};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Bytes read per read call; also the threshold for "the socket is drained".
const READ_BUF: usize = 64 * 1024;
/// How often connection deadlines and reconnect backoffs are checked.
const SCAN_EVERY: Duration = Duration::from_millis(10);
/// How often the load phase looks at the idle connections' deadlines: they are parked,
/// and walking tens of thousands of them every SCAN_EVERY (one cache miss each) was most
/// of a load CPU at 100,000 connections.
const IDLE_SCAN_EVERY: Duration = Duration::from_secs(1);
/// Wait before reconnecting after a failed connect.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(10);
/// wrk samples each thread's request rate this often.
const RATE_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Read-only description of the load, shared by all threads.
#[derive(Debug)]
pub(crate) struct Plan {
    pub addr: SocketAddr,
    /// `depth` copies of the request, back to back.
    pub batch: Vec<u8>,
    pub request_len: usize,
    pub depth: usize,
    pub head_request: bool,
    /// With paths: each path's request (`batch` is then unused); empty without.
    pub by_path: Vec<Vec<u8>>,
    pub path_order: PathOrder,
    /// Off: one request per connection (see [`crate::Config::keepalive`]).
    pub keepalive: bool,
    pub timeout: Duration,
    /// Open loop: the interval between the intended send times of one connection.
    pub interval: Option<Duration>,
    pub total_connections: usize,
    /// Abort the run at the first lost connection (see [`crate::Config::stop_on_loss`]).
    pub stop_on_loss: bool,
    /// Source addresses, used round-robin by global connection index (empty: the kernel's).
    pub sources: Vec<IpAddr>,
    /// `-n`: tickets a thread takes from [`Shared::tickets`] at a time.
    pub ticket_chunk: u64,
}

/// The run's time line, fixed once every thread has set up its idle connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Times {
    pub start: Instant,
    pub measure_start: Instant,
    pub end: Instant,
}

/// Live counters the main thread reads for the progress bar.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
}

pub(crate) struct Shared {
    pub plan: Plan,
    /// `-n`: requests (and failed connects) of the measured window not yet claimed by a
    /// thread. `None`: the window is timed instead.
    pub tickets: Option<AtomicU64>,
    /// Each load thread sends its index here when it leaves the load.
    pub finished: Sender<usize>,
    pub times: OnceLock<Times>,
    /// Every load thread and the main thread: idle connections are set up.
    pub ready: Barrier,
    /// The times are set; go.
    pub go: Barrier,
    pub abort: AtomicBool,
    pub fatal: Mutex<Option<String>>,
    pub live: Vec<Live>,
}

impl Shared {
    pub fn fail(&self, msg: String) {
        if let Ok(mut slot) = self.fatal.lock() {
            slot.get_or_insert(msg);
        }
        self.abort.store(true, Ordering::Relaxed);
    }
}

/// One thread's share.
pub(crate) struct Share {
    pub thread: usize,
    /// Global index of the first active connection (staggers open-loop schedules).
    pub first_active: usize,
    /// Global index of the first idle connection (all active ones come first).
    pub first_idle: usize,
    pub active: usize,
    pub idle: usize,
}

pub(crate) struct Outcome {
    pub stats: Stats,
    /// Idle connections still open and answered at the end.
    pub idle_held: usize,
    /// Connections lost over the whole run, set-up included (never reset).
    pub lost: u64,
}

/// A request sent and not yet answered.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// When it was meant to go: its actual send time in closed loop, its slot in the
    /// schedule in open loop. Latency counts from here.
    intended: Instant,
    /// When it was written (the uncorrected latency counts from here).
    actual: Instant,
    /// Whether its answer is measured: false for a request sent during the warm-up
    /// under `-n`, which holds no ticket.
    measured: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Active,
    /// One request, then held open and silent.
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        retry_at: Instant,
    },
    Connecting {
        since: Instant,
    },
    Open,
    /// An idle connection whose one response has arrived.
    Parked,
}

struct Conn {
    /// Index among all the run's connections (every thread's).
    global: usize,
    socket: Option<Socket>,
    generation: u32,
    kind: Kind,
    state: State,
    framer: Framer,
    /// Each request awaiting its response, in order.
    sent: VecDeque<Sent>,
    /// With paths: the requests of the last write, copied from `Plan::by_path`.
    out: Vec<u8>,
    /// Connected, and no request sent on it yet (counted in `Stats::connects` with its first).
    unused: bool,
    /// Unsent part of the last write, as a range of `Plan::batch` (or of `out`).
    write_from: usize,
    write_to: usize,
    /// Last time bytes moved; the timeout counts from here.
    last_progress: Instant,
    /// Open loop: intended send time of the next request.
    next_due: Instant,
    /// Open loop: the time this connection is in `Worker::due` for, if it is.
    queued_for: Option<Instant>,
}

struct Worker<'a> {
    shared: &'a Shared,
    plan: &'a Plan,
    epoll: Epoll,
    conns: Vec<Conn>,
    stats: Stats,
    /// Connections the server closed, reset or refused, or that failed to connect, since
    /// the thread started (unlike `stats`, never reset at the measured window).
    lost: u64,
    buf: Vec<u8>,
    /// Status codes of the responses the last read completed, in order.
    statuses: Vec<u16>,
    /// The measured window is open.
    measuring: bool,
    /// `-n`: tickets this thread has claimed and not used yet.
    tickets: u64,
    /// With paths: which one each request takes.
    picker: Picker,
    /// The load phase has begun: active connections opened during the set-up send
    /// nothing before it.
    loading: bool,
    /// Open loop: the active connections waiting for their next intended send time,
    /// earliest first, so a wake-up looks at the due ones only (not at every connection).
    due: BinaryHeap<Reverse<(Instant, usize)>>,
}

pub(crate) fn run(shared: Arc<Shared>, share: Share) -> Outcome {
    let plan = &shared.plan;
    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            shared.fail(format!("cannot create an epoll instance: {e}"));
            shared.ready.wait();
            shared.go.wait();
            return Outcome { stats: Stats::new(), idle_held: 0, lost: 0 };
        }
    };
    let now = Instant::now();
    let conns = (0..share.active + share.idle)
        .map(|i| Conn {
            global: if i < share.active { share.first_active + i } else { share.first_idle + (i - share.active) },
            socket: None,
            generation: 0,
            kind: if i < share.active { Kind::Active } else { Kind::Idle },
            // Active connections open in phase 2, explicitly; idle ones right away.
            state: State::Closed { retry_at: now + Duration::from_secs(86_400 * 365) },
            framer: Framer::new(plan.head_request),
            sent: VecDeque::with_capacity(plan.depth),
            out: Vec::new(),
            unused: false,
            write_from: 0,
            write_to: 0,
            last_progress: now,
            next_due: now,
            queued_for: None,
        })
        .collect();
    let mut w = Worker {
        shared: &shared,
        plan,
        epoll,
        conns,
        stats: Stats::new(),
        lost: 0,
        buf: vec![0; READ_BUF],
        statuses: Vec::with_capacity(plan.depth),
        measuring: false,
        tickets: 0,
        picker: Picker::new(plan.path_order, plan.by_path.len(), share.thread),
        due: BinaryHeap::new(),
        loading: false,
    };
    let mut events: Vec<Event> = Vec::with_capacity(1024);

    // Phase 1: open the idle connections and let each make its one request. With idle
    // connections the active ones (kept alive) are opened next, still in the set-up,
    // silent until the load starts: opening thousands of them at the start of the load
    // would overflow the accept queue and put seconds of SYN retransmits into the first
    // requests. They are opened last so that they stay silent as briefly as can be (a
    // server may close a connection that sends nothing for long: `--header-timeout`).
    let open_active = share.idle > 0 && plan.keepalive;
    if share.idle > 0 {
        let setup_time = plan.timeout.max(Duration::from_secs(10));
        let mut setup_deadline = now + setup_time;
        for i in share.active..w.conns.len() {
            w.connect(i, now);
        }
        let mut active_opening = !open_active;
        let mut next_scan = now;
        loop {
            let now = Instant::now();
            let parked = w.conns[share.active..].iter().filter(|c| c.state == State::Parked).count();
            if !active_opening && (parked == share.idle || now >= setup_deadline) {
                for i in 0..share.active {
                    w.connect(i, now);
                }
                active_opening = true;
                setup_deadline = now + setup_time;
            }
            let opened = !open_active || w.conns[..share.active].iter().all(|c| c.state == State::Open);
            if (parked == share.idle && opened) || now >= setup_deadline || shared.abort.load(Ordering::Relaxed) {
                break;
            }
            if now >= next_scan {
                w.scan(0..w.conns.len(), now);
                next_scan = now + SCAN_EVERY;
            }
            if let Err(e) = w.epoll.wait(&mut events, Some(SCAN_EVERY)) {
                shared.fail(format!("epoll_wait failed: {e}"));
                break;
            }
            w.dispatch(&events);
        }
    }
    shared.ready.wait();
    shared.go.wait();
    let Some(&times) = shared.times.get() else {
        let _ = shared.finished.send(share.thread);
        return Outcome { stats: w.stats, idle_held: 0, lost: w.lost };
    };

    // Phase 2: the load.
    w.stats.reset();
    let start = Instant::now();
    if let Some(interval) = plan.interval {
        // Stagger the schedules so connections do not all fire together.
        let total = plan.total_connections.max(1) as u32;
        for (k, c) in w.conns[..share.active].iter_mut().enumerate() {
            let slot = (share.first_active + k) as u32;
            c.next_due = times.start + interval * slot / total;
        }
    }
    w.loading = true;
    for i in 0..share.active {
        match w.conns[i].state {
            State::Open => w.refill(i, start),
            State::Connecting { .. } => {}
            _ => w.connect(i, start),
        }
    }
    let live = &shared.live[share.thread];
    let mut next_scan = start;
    let mut next_idle_scan = start;
    let mut next_sample = times.measure_start + RATE_SAMPLE_EVERY;
    let mut sampled_requests = 0u64;
    loop {
        let now = Instant::now();
        if now >= times.end || shared.abort.load(Ordering::Relaxed) || w.count_done(share.active) {
            break;
        }
        if !w.measuring && now >= times.measure_start {
            w.stats.reset();
            w.measuring = true;
            sampled_requests = 0;
            next_sample = now + RATE_SAMPLE_EVERY;
        }
        if w.measuring && now >= next_sample {
            let late = now - (next_sample - RATE_SAMPLE_EVERY);
            let done = w.stats.requests - sampled_requests;
            w.stats.rate_samples.push(done as f64 / late.as_secs_f64());
            sampled_requests = w.stats.requests;
            next_sample = now + RATE_SAMPLE_EVERY;
        }
        if now >= next_scan {
            w.scan(0..share.active, now);
            next_scan = now + SCAN_EVERY;
        }
        if now >= next_idle_scan {
            w.scan(share.active..w.conns.len(), now);
            next_idle_scan = now + IDLE_SCAN_EVERY;
        }
        let mut wake = next_scan.min(times.end);
        if !w.measuring {
            wake = wake.min(times.measure_start);
        }
        if plan.interval.is_some() {
            wake = wake.min(w.send_due(now));
        }
        if let Err(e) = w.epoll.wait(&mut events, Some(wake.saturating_duration_since(now))) {
            shared.fail(format!("epoll_wait failed: {e}"));
            break;
        }
        w.dispatch(&events);
        live.requests.store(w.stats.requests, Ordering::Relaxed);
        live.errors.store(w.stats.errors.socket_total() + w.stats.errors.status, Ordering::Relaxed);
    }
    // A window shorter than one sample (a small -n) still gets its Req/Sec figure.
    let sampled_since = next_sample - RATE_SAMPLE_EVERY;
    if w.measuring && w.stats.rate_samples.is_empty() && w.stats.requests > 0 {
        let window = Instant::now().saturating_duration_since(sampled_since).as_secs_f64().max(1e-6);
        w.stats.rate_samples.push(w.stats.requests as f64 / window);
    }
    let _ = shared.finished.send(share.thread);
    let idle_held = w.conns[share.active..].iter().filter(|c| c.state == State::Parked).count();
    Outcome { stats: w.stats, idle_held, lost: w.lost }
}

fn token(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

impl Worker<'_> {
    /// `-n`: takes up to `want` tickets, first from this thread's claim, then in chunks
    /// from the shared pool. Without `-n` (and during the warm-up) every request may go.
    fn take_tickets(&mut self, want: usize) -> usize {
        let Some(pool) = self.shared.tickets.as_ref().filter(|_| self.measuring) else { return want };
        let want = want as u64;
        if self.tickets < want {
            let chunk = self.plan.ticket_chunk.max(want - self.tickets);
            let got = match pool.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                if left == 0 {
                    None
                } else {
                    Some(left - left.min(chunk))
                }
            }) {
                Ok(left) => left.min(chunk),
                Err(_) => 0,
            };
            self.tickets += got;
        }
        let granted = self.tickets.min(want);
        self.tickets -= granted;
        granted as usize
    }

    /// Whether a request may still be sent: always without `-n`; under it, while a
    /// ticket is left.
    fn may_send(&self) -> bool {
        match self.shared.tickets.as_ref() {
            Some(pool) if self.measuring => self.tickets > 0 || pool.load(Ordering::Relaxed) > 0,
            _ => true,
        }
    }

    /// `-n`: every ticket is used and no measured request is in flight.
    fn count_done(&self, active: usize) -> bool {
        let Some(pool) = self.shared.tickets.as_ref() else { return false };
        self.measuring
            && self.tickets == 0
            && pool.load(Ordering::Relaxed) == 0
            && self.conns[..active].iter().all(|c| c.sent.is_empty())
    }

    /// A connect failed: under `-n` that attempt uses a ticket, as ab and oha count it,
    /// so a server that went away cannot keep the run going for ever.
    fn connect_failed(&mut self, i: usize) {
        self.stats.errors.connect += 1;
        if self.conns[i].kind == Kind::Active {
            self.take_tickets(1);
        }
        self.lose();
    }

    fn dispatch(&mut self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        for ev in events {
            // Per event, not per wakeup: a long batch would otherwise inflate latencies.
            let now = Instant::now();
            let (data, flags) = (ev.u64, ev.events);
            let index = (data & 0xffff_ffff) as usize;
            match self.conns.get(index) {
                Some(c) if c.generation == (data >> 32) as u32 && c.socket.is_some() => {}
                _ => continue, // an event for a connection since closed
            }
            self.handle(index, flags, now);
        }
    }

    fn handle(&mut self, i: usize, flags: u32, now: Instant) {
        if let State::Connecting { .. } = self.conns[i].state {
            if flags & (sys::OUT | sys::ERR | sys::HUP) == 0 {
                return;
            }
            let failed = flags & (sys::ERR | sys::HUP) != 0
                || !matches!(self.conns[i].socket.as_ref().map(Socket::take_error), Some(Ok(None)));
            if failed {
                self.connect_failed(i);
                self.close(i, now + RECONNECT_BACKOFF);
                return;
            }
            let c = &mut self.conns[i];
            c.state = State::Open;
            c.last_progress = now;
            c.unused = true;
            self.refill(i, now);
            return;
        }
        if flags & (sys::IN | sys::RDHUP | sys::HUP | sys::ERR) != 0 && !self.read(i, flags, now) {
            return;
        }
        if flags & sys::OUT != 0 && self.conns[i].write_to > 0 {
            self.flush(i, now);
            if self.conns[i].write_to == 0 && self.conns[i].kind == Kind::Active {
                self.refill(i, now);
            }
        }
    }

    /// Reads until drained; false if the connection was closed.
    fn read(&mut self, i: usize, flags: u32, now: Instant) -> bool {
        let hangup = flags & (sys::RDHUP | sys::HUP | sys::ERR) != 0;
        loop {
            let c = &mut self.conns[i];
            let Some(socket) = c.socket.as_ref() else { return false };
            match (&*socket).read(&mut self.buf) {
                Ok(0) => {
                    let statuses = &mut self.statuses;
                    statuses.clear();
                    match c.framer.handle_eof_with(&mut |s| statuses.push(s)) {
                        Some(p) => self.complete(i, p, now),
                        None if !c.sent.is_empty() || !c.framer.is_idle() => self.stats.errors.read += 1,
                        None => {}
                    }
                    self.stats.reconnects += 1;
                    self.lose();
                    self.reconnect(i, now);
                    return false;
                }
                Ok(n) => {
                    self.stats.bytes_read += n as u64;
                    c.last_progress = now;
                    let statuses = &mut self.statuses;
                    statuses.clear();
                    let progress = match c.framer.feed_with(&self.buf[..n], &mut |s| statuses.push(s)) {
                        Ok(p) => p,
                        Err(e) => {
                            self.garbage(e);
                            self.close(i, now + Duration::from_secs(3600));
                            return false;
                        }
                    };
                    self.complete(i, progress, now);
                    let c = &self.conns[i];
                    if !self.plan.keepalive && c.kind == Kind::Active && c.sent.is_empty() && progress.complete > 0 {
                        // Answered: the next request goes on a new connection, whether or
                        // not the server closed this one. A close asked for is no loss.
                        if self.may_send() {
                            self.reconnect(i, now);
                        } else {
                            // `-n` is used up: no connection for a request never sent.
                            self.close(i, now + Duration::from_secs(86_400 * 365));
                        }
                        return false;
                    }
                    if progress.close {
                        self.stats.reconnects += 1;
                        self.lose();
                        self.reconnect(i, now);
                        return false;
                    }
                    // A short read drained the socket: with EPOLLET, more data raises a
                    // new edge. After a hangup, read on to see the EOF.
                    if n < self.buf.len() && !hangup {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.stats.errors.read += 1;
                    self.lose();
                    self.reconnect(i, now);
                    return false;
                }
            }
        }
        self.refill(i, now);
        true
    }

    fn refill(&mut self, i: usize, now: Instant) {
        if !self.loading && self.conns[i].kind == Kind::Active {
            return;
        }
        if self.plan.interval.is_none() || self.conns[i].kind == Kind::Idle {
            self.send(i, now);
        } else {
            self.send_open_loop(i, now);
        }
    }

    fn garbage(&self, e: FrameError) {
        self.shared.fail(format!("invalid HTTP response from {}: {e}", self.plan.addr));
    }

    /// Records the responses `p` completed.
    fn complete(&mut self, i: usize, p: Progress, now: Instant) {
        let c = &mut self.conns[i];
        let open_loop = self.plan.interval.is_some();
        for &status in &self.statuses {
            // A response nobody asked for (say a 408 on an idle connection) has no latency.
            let Some(sent) = c.sent.pop_front() else { continue };
            if !sent.measured {
                continue;
            }
            self.stats.record_us(now.saturating_duration_since(sent.intended).as_micros() as u64);
            if open_loop {
                self.stats.record_uncorrected_us(now.saturating_duration_since(sent.actual).as_micros() as u64);
            }
            self.stats.requests += 1;
            self.stats.status.record(status);
            if !(200..400).contains(&status) {
                self.stats.errors.status += 1;
            }
        }
        if c.kind == Kind::Idle && c.sent.is_empty() && p.complete > 0 && !p.close {
            c.state = State::Parked;
        }
    }

    /// Closed loop (and idle connections): send the next batch once the last is answered.
    fn send(&mut self, i: usize, now: Instant) {
        let c = &self.conns[i];
        if c.state != State::Open || !c.sent.is_empty() || c.write_to > 0 {
            return;
        }
        let idle = c.kind == Kind::Idle;
        let n = if idle { 1 } else { self.take_tickets(self.plan.depth) };
        if n == 0 {
            return;
        }
        // Under -n only the requests holding a ticket count: not the warm-up's, and not
        // the one an idle connection makes when it reconnects.
        let measured = self.shared.tickets.is_none() || (self.measuring && !idle);
        let c = &mut self.conns[i];
        for _ in 0..n {
            c.sent.push_back(Sent { intended: now, actual: now, measured });
        }
        self.queue(i, n);
        self.flush(i, now);
    }

    /// Open loop: send every request whose intended time has come, up to `depth` in flight.
    fn send_open_loop(&mut self, i: usize, now: Instant) {
        let Some(interval) = self.plan.interval else { return };
        let c = &self.conns[i];
        if c.state != State::Open || c.write_to > 0 || c.sent.len() >= self.plan.depth {
            return;
        }
        if c.next_due > now {
            self.wait_until_due(i);
            return;
        }
        let mut due = 0;
        let mut at = c.next_due;
        while c.sent.len() + due < self.plan.depth && at <= now {
            at += interval;
            due += 1;
        }
        let n = self.take_tickets(due);
        let measured = self.measuring || self.shared.tickets.is_none();
        let c = &mut self.conns[i];
        for _ in 0..n {
            c.sent.push_back(Sent { intended: c.next_due, actual: now, measured });
            c.next_due += interval;
        }
        if n > 0 {
            self.queue(i, n);
            self.flush(i, now);
        }
        let c = &self.conns[i];
        if c.state == State::Open && c.write_to == 0 && c.sent.len() < self.plan.depth && self.may_send() {
            self.wait_until_due(i);
        }
    }

    /// Open loop: puts connection `i`, which could send, in `due` for its next intended
    /// time (once: a later call for the same time adds nothing).
    fn wait_until_due(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.queued_for != Some(c.next_due) {
            c.queued_for = Some(c.next_due);
            self.due.push(Reverse((c.next_due, i)));
        }
    }

    /// Open loop: sends what is due (the connections in `due` whose time has come; one
    /// that cannot send now is sent to again when its answer or its connection comes);
    /// returns when the next one is due.
    fn send_due(&mut self, now: Instant) -> Instant {
        while let Some(&Reverse((at, i))) = self.due.peek() {
            if at > now {
                return at.min(now + SCAN_EVERY);
            }
            self.due.pop();
            if self.conns[i].queued_for != Some(at) {
                continue; // queued again for another time since
            }
            self.conns[i].queued_for = None;
            self.send_open_loop(i, now);
            if !self.may_send() {
                // `-n`: the schedule ends here; waking at a past slot would spin.
                break;
            }
        }
        now + SCAN_EVERY
    }

    /// Makes the next `n` requests connection `i`'s pending write: `n` copies of the one
    /// request, already back to back in `Plan::batch`, or with paths `n` picked requests
    /// copied into the connection's own buffer.
    fn queue(&mut self, i: usize, n: usize) {
        let plan = self.plan;
        let c = &mut self.conns[i];
        if std::mem::take(&mut c.unused) {
            self.stats.connects += 1;
        }
        c.write_from = 0;
        if plan.by_path.is_empty() {
            c.write_to = n * plan.request_len;
            return;
        }
        c.out.clear();
        for _ in 0..n {
            c.out.extend_from_slice(&plan.by_path[self.picker.next()]);
        }
        c.write_to = c.out.len();
    }

    /// Writes the pending range; on a short write the rest waits for EPOLLOUT.
    fn flush(&mut self, i: usize, now: Instant) {
        let plan = self.plan;
        let Conn { socket, out, write_from, write_to, last_progress, .. } = &mut self.conns[i];
        let Some(socket) = socket.as_ref() else { return };
        let pending: &[u8] = if plan.by_path.is_empty() { &plan.batch } else { out };
        while *write_from < *write_to {
            match socket.send(&pending[*write_from..*write_to]) {
                Ok(n) => {
                    *write_from += n;
                    *last_progress = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.stats.errors.write += 1;
                    self.lose();
                    self.reconnect(i, now);
                    return;
                }
            }
        }
        *write_from = 0;
        *write_to = 0;
    }

    /// Deadlines and backoffs of the connections in `range`.
    fn scan(&mut self, range: std::ops::Range<usize>, now: Instant) {
        for i in range {
            let c = &self.conns[i];
            match c.state {
                State::Closed { retry_at } if now >= retry_at => self.connect(i, now),
                State::Connecting { since } if now - since >= self.plan.timeout => {
                    self.connect_failed(i);
                    self.close(i, now);
                    self.connect(i, now);
                }
                State::Open if !c.sent.is_empty() && now - c.last_progress >= self.plan.timeout => {
                    self.stats.errors.timeout += c.sent.len() as u64;
                    self.reconnect(i, now);
                }
                _ => {}
            }
        }
    }

    /// A connection was lost: the server closed, reset or refused it, or it could not
    /// connect. With `stop_on_loss` the whole run stops here.
    fn lose(&mut self) {
        self.lost += 1;
        if self.plan.stop_on_loss {
            self.shared.abort.store(true, Ordering::Relaxed);
        }
    }

    fn close(&mut self, i: usize, retry_at: Instant) {
        let c = &mut self.conns[i];
        c.socket = None; // closing the fd also removes it from the epoll set
        c.generation = c.generation.wrapping_add(1);
        c.state = State::Closed { retry_at };
        c.framer.reset();
        c.sent.clear();
        c.write_from = 0;
        c.write_to = 0;
    }

    fn reconnect(&mut self, i: usize, now: Instant) {
        self.close(i, now);
        self.connect(i, now);
    }

    fn connect(&mut self, i: usize, now: Instant) {
        match self.open_socket(i) {
            Ok(socket) => {
                let c = &mut self.conns[i];
                c.socket = Some(socket);
                c.state = State::Connecting { since: now };
                c.last_progress = now;
            }
            Err(_) => {
                self.connect_failed(i);
                self.close(i, now + RECONNECT_BACKOFF);
            }
        }
    }

    fn open_socket(&mut self, i: usize) -> io::Result<Socket> {
        let addr = self.plan.addr;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
        socket.set_nodelay(true)?;
        use std::os::fd::AsRawFd;
        if !self.plan.sources.is_empty() {
            let source = self.plan.sources[self.conns[i].global % self.plan.sources.len()];
            sys::bind_address_no_port(socket.as_raw_fd())?;
            socket.bind(&SocketAddr::new(source, 0).into())?;
        }
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let generation = self.conns[i].generation;
        self.epoll.add(socket.as_raw_fd(), sys::IN | sys::OUT | sys::RDHUP | sys::ET, token(i, generation))?;
        Ok(socket)
    }
}
