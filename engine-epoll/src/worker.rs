//! One worker: an epoll instance, its listener, and the connections it accepted.
//!
//! Each loop turn is one `epoll_wait`; then the clock is read once, the connections
//! that used up their budget in earlier turns get their next share (oldest first, while
//! the turn's write budget lasts), every event is dispatched (`accept` for the
//! listener, `drive` for a connection), a paused accept retries, and due deadlines are
//! handled. A connection is driven at most once per turn: it is read at most
//! `READ_BUDGET` times and sent at most its share of the turn's [`TurnBudget`], however
//! much it has to send or receive, so a turn stays short and the listener and every
//! connection are served in every turn.

use crate::selector::{Epoll, Interest, Ready, Selector};
use crate::sys;
use duet_engine::{
    next_wake, socket, AcceptPolicy, AccessLogWriter, Armed, ConnId, Deadlines, Drain, Expired, Next, Publisher,
    ShutdownState, Slab, Stats, TurnBudget, Waker, WorkerSetup, WriteLimits,
};
use duet_http::{Connection, Context};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Instant, SystemTime};
use tracing::{debug, info, warn};

/// Tokens of the two descriptors that are not connections. A connection's token is its
/// [`ConnId::token`], whose top byte is zero, so they never collide.
const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_WAKER: u64 = u64::MAX - 1;
/// Size of the per-thread read buffer.
const READ_BUF: usize = 64 * 1024;
/// Reads per connection per wakeup before it is requeued behind the others.
const READ_BUDGET: usize = 8;
/// Most segments in one sendmsg.
const MAX_IOV: usize = 16;
/// Bytes sent per turn: 256 KiB to one connection at most, 1 MiB in all at full shares.
/// A turn costs this loop one `epoll_wait`, so a large transfer cut into 256 KiB shares
/// costs nothing measurable, and small shares keep a turn to a millisecond or two even
/// under a crowd of slow readers of large files.
const WRITE_LIMITS: WriteLimits = WriteLimits::new(256 * 1024, 1024 * 1024);
/// One live connection.
struct Live {
    fd: OwnedFd,
    conn: Connection,
    readable: bool,
    writable: bool,
    /// The peer's FIN was reported (EPOLLRDHUP/HUP): read until EOF even after a short
    /// read, because no further edge will come.
    hup: bool,
    /// In `Worker::requeued`: it used up its budget and waits for its next share (an
    /// event for it meanwhile only records the readiness).
    queued: bool,
    /// What a level-triggered selector watches it for (unused by edge-triggered ones).
    interest: Interest,
    armed: Armed,
}

pub(crate) struct Worker<S: Selector = Epoll> {
    selector: S,
    /// Dropped (closed) when draining begins, so the kernel refuses new connections.
    listener: Option<TcpListener>,
    waker: std::sync::Arc<Waker>,
    accept: AcceptPolicy,
    /// A descriptor was freed while accepting was paused: accept again this turn.
    accept_resume: bool,
    /// Whether a level-triggered selector watches the listener (not while accepting
    /// is paused: it would report the waiting connections at every wait).
    listener_watched: bool,
    /// Connections refused since the last one the selector could watch (select's
    /// FD_SETSIZE): one log line per episode, not one per connection.
    refusing: u64,
    ctx: Context,
    stats: Stats,
    publisher: Publisher,
    access_log: AccessLogWriter,
    shutdown: duet_engine::Shutdown,
    drain: Drain,
    conns: Slab<Live>,
    deadlines: Deadlines,
    due: Vec<Expired>,
    /// Connections that used up their read or write budget and still have work, oldest
    /// first: each turn drives them before its events, while the turn's budget lasts.
    requeued: VecDeque<ConnId>,
    /// What this turn has sent.
    budget: TurnBudget,
    read_buf: Box<[u8]>,
}

impl<S: Selector> Worker<S> {
    pub(crate) fn new(setup: WorkerSetup) -> io::Result<Worker<S>> {
        let WorkerSetup { listener, ctx, shutdown, drain, publisher, access_log, .. } = setup;
        let mut selector = S::new()?;
        let waker = std::sync::Arc::new(Waker::nonblocking()?);
        selector.add(listener.as_fd(), TOKEN_LISTENER, Interest::READ, false)?;
        selector.add(waker.as_fd(), TOKEN_WAKER, Interest::READ, false)?;
        let w = std::sync::Arc::clone(&waker);
        shutdown.register_waker(move || w.wake());
        let now = ctx.now();
        Ok(Worker {
            selector,
            listener: Some(listener),
            waker,
            accept: AcceptPolicy::new(),
            accept_resume: false,
            listener_watched: true,
            refusing: 0,
            ctx,
            stats: Stats::default(),
            publisher,
            access_log,
            shutdown,
            drain,
            conns: Slab::new(),
            deadlines: Deadlines::new(now),
            due: Vec::new(),
            requeued: VecDeque::new(),
            budget: TurnBudget::new(WRITE_LIMITS),
            read_buf: vec![0u8; READ_BUF].into_boxed_slice(),
        })
    }

    pub(crate) fn run(mut self) -> io::Result<Stats> {
        // The state may have changed, and the site been replaced, before the waker was
        // registered.
        self.ctx.set_time(Instant::now(), SystemTime::now());
        self.begin_drain();
        let result = loop {
            if self.drain.should_stop(self.shutdown.state(), self.conns.len(), self.ctx.now()) {
                break Ok(());
            }
            let timeout = self.poll_timeout();
            self.publisher.publish(&self.stats, &self.ctx.stats);
            self.access_log.turn_end(&mut self.ctx);
            if let Err(e) = self.turn(timeout) {
                break Err(e);
            }
        };
        self.close_all();
        self.access_log.finish(&mut self.ctx);
        self.stats.set_http(&self.ctx.stats);
        result.map(|()| self.stats)
    }

    /// One loop turn: waits up to `timeout` ms for events and handles them.
    fn turn(&mut self, timeout: i32) -> io::Result<()> {
        let n = self.selector.wait(timeout)?;
        self.stats.wakeups += 1;
        self.stats.syscalls += 1;
        self.stats.events += n as u64;
        self.ctx.set_time(Instant::now(), SystemTime::now());
        self.budget.start_turn();
        // Those that used up their budget in earlier turns, oldest first (the ones this
        // turn requeues go behind them), at least one: the queue always moves.
        for _ in 0..self.requeued.len() {
            let Some(id) = self.requeued.pop_front() else { break };
            if let Some(live) = self.conns.get_mut(id) {
                live.queued = false;
                self.drive(id);
            }
            if self.budget.is_spent() {
                break;
            }
        }
        for i in 0..n {
            let (token, ready) = self.selector.event(i);
            match token {
                TOKEN_LISTENER => self.accept(),
                TOKEN_WAKER => {
                    self.stats.syscalls += 1;
                    self.waker.drain();
                    self.begin_drain();
                }
                token => self.on_event(ConnId::from_token(token), ready),
            }
        }
        if std::mem::take(&mut self.accept_resume) || self.accept.retry_due(self.ctx.now()) {
            self.accept();
        }
        self.expire_deadlines();
        if !S::EDGE {
            self.watch_listener(!self.accept.is_paused());
        }
        Ok(())
    }

    /// Level-triggered: watches the listener only while accepting is not paused.
    fn watch_listener(&mut self, want: bool) {
        let Some(listener) = &self.listener else { return };
        if want == self.listener_watched {
            return;
        }
        let (old, new) = if want { (Interest::NONE, Interest::READ) } else { (Interest::READ, Interest::NONE) };
        let result = self.selector.modify(listener.as_fd(), TOKEN_LISTENER, old, new);
        self.count_ctl();
        match result {
            Ok(()) => self.listener_watched = want,
            Err(e) => warn!("cannot change what the listener is watched for: {e}"),
        }
    }

    /// Counts one change of a registration.
    fn count_ctl(&mut self) {
        self.stats.interest_changes += 1;
        if S::CTL_IS_SYSCALL {
            self.stats.syscalls += 1;
        }
    }

    /// How long epoll_wait may block: until the next deadline, the drain deadline or
    /// the accept retry; not at all when requeued connections have work.
    fn poll_timeout(&mut self) -> i32 {
        if !self.requeued.is_empty() || self.accept_resume {
            return 0;
        }
        match next_wake(&mut self.deadlines, &self.drain, &self.accept) {
            None => -1,
            Some(at) => {
                let ms = at.saturating_duration_since(Instant::now()).as_nanos().div_ceil(1_000_000);
                ms.min(i32::MAX as u128) as i32
            }
        }
    }

    /// On a graceful shutdown (once): take in what the listener holds, close it, and
    /// ask every connection to finish.
    fn begin_drain(&mut self) {
        if self.shutdown.state() == ShutdownState::Running {
            return;
        }
        self.ctx.set_time(Instant::now(), SystemTime::now());
        if !self.drain.begin(self.ctx.now()) {
            return;
        }
        if let Some(listener) = self.listener.take() {
            // The kernel already accepted these and their clients may have sent
            // requests: take them in (draining from the start) rather than let the
            // close of the listener reset them.
            self.accept_from(&listener);
            // Out of the selector before it closes (an unwatched listener is out of an
            // epoll set already; poll and select still hold its entry).
            self.stats.syscalls += 1; // the close
            if self.listener_watched || !S::CLOSE_REMOVES {
                self.count_ctl();
                let _ = self.selector.remove(listener.as_fd());
            }
        }
        for id in self.conns.ids() {
            if let Some(live) = self.conns.get_mut(id) {
                live.conn.begin_shutdown(&mut self.ctx);
                self.drive(id);
            }
        }
    }

    /// Accepts until the listener is drained, doing what the accept policy says on
    /// each failure.
    fn accept(&mut self) {
        if self.accept.is_paused() {
            return;
        }
        // Out of the worker while it accepts, so registering can borrow the rest.
        let Some(listener) = self.listener.take() else { return };
        self.accept_from(&listener);
        self.listener = Some(listener);
    }

    fn accept_from(&mut self, listener: &TcpListener) {
        loop {
            self.stats.syscalls += 1;
            let errno = match socket::accept(listener.as_fd()) {
                Ok(fd) => {
                    self.accept.on_accepted();
                    self.register(fd);
                    continue;
                }
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
            };
            let next = match self.accept.on_error(errno, self.ctx.now()) {
                Next::Shed => self.accept.shed(listener.as_fd(), self.ctx.now()),
                next => next,
            };
            match next {
                Next::Again => {}
                // Wait: the next edge of the listener comes with the next connection.
                // Pause: the loop retries at the policy's time or when a close frees
                // a descriptor.
                Next::Wait | Next::Pause | Next::Shed => return,
            }
        }
    }

    fn register(&mut self, fd: OwnedFd) {
        if !S::can_watch(fd.as_raw_fd()) {
            self.refuse(fd);
            return;
        }
        if self.refusing > 0 {
            info!("{}: watching new connections again (refused {})", S::NAME, self.refusing);
            self.refusing = 0;
        }
        self.stats.syscalls += 1; // setsockopt
        let _ = socket::set_nodelay(fd.as_fd());
        let id = self.conns.next_id();
        if S::CTL_IS_SYSCALL {
            self.stats.syscalls += 1;
        }
        if let Err(e) = self.selector.add(fd.as_fd(), id.token(), Interest::READ, true) {
            warn!("cannot register a connection: {e}");
            self.stats.syscalls += 1; // the close as `fd` drops
            return;
        }
        let conn = duet_engine::accepted(&mut self.ctx, Some(fd.as_fd()), &self.drain);
        let live = Live {
            fd,
            conn,
            readable: false,
            writable: true,
            hup: false,
            queued: false,
            interest: Interest::READ,
            armed: Armed::default(),
        };
        let inserted = self.conns.insert(live);
        debug_assert_eq!(inserted, id);
        self.stats.accepted += 1;
        self.arm_deadline(id);
    }

    /// Closes a connection the selector cannot watch (select: its descriptor is at or
    /// above FD_SETSIZE), counts it, and says so once per episode.
    fn refuse(&mut self, fd: OwnedFd) {
        if self.refusing == 0 {
            warn!(
                "{} cannot watch descriptor {} >= FD_SETSIZE ({}); use poll or epoll",
                S::NAME,
                fd.as_raw_fd(),
                sys::FD_SETSIZE
            );
        }
        self.refusing += 1;
        self.stats.refused += 1;
        self.stats.syscalls += 1; // the close as `fd` drops
        drop(fd);
    }

    fn on_event(&mut self, id: ConnId, ready: Ready) {
        let Some(live) = self.conns.get_mut(id) else { return };
        live.readable |= ready.readable;
        live.hup |= ready.hup;
        live.writable |= ready.writable;
        if !live.queued {
            self.drive(id);
        }
    }

    /// Reads, lets the connection work, writes, and closes when it says so. At most
    /// `READ_BUDGET` reads and the turn's share of bytes written; a connection with
    /// more to do is queued for its next share.
    fn drive(&mut self, id: ConnId) {
        let Some(live) = self.conns.get_mut(id) else { return };
        let ctx = &mut self.ctx;
        let stats = &mut self.stats;
        let mut reads = 0;
        // Asked once there is output: how much the turn may still send it.
        let mut share = None;
        let mut written = 0;
        let mut requeue = false;
        let mut failed = false;
        // Draining: whether this drive already read once more before closing.
        let mut probed = false;
        loop {
            while live.readable && live.conn.wants_read() {
                if reads == READ_BUDGET {
                    requeue = true;
                    break;
                }
                reads += 1;
                stats.syscalls += 1;
                match sys::read(live.fd.as_fd(), &mut self.read_buf) {
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
                        stats.bytes_read += n as u64;
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
                let pending = live.conn.output_len();
                if pending == 0 {
                    break;
                }
                let allowed = *share.get_or_insert_with(|| self.budget.share(pending)) - written;
                if allowed == 0 {
                    requeue = true;
                    break;
                }
                let Some(out) = live.conn.poll_output() else { break };
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let count = out.fill_max(&mut iov, allowed);
                let (result, want, from_file) = if count == 0 {
                    // A body streamed from disk is at the front of the output.
                    let Some((file, offset, left)) = out.front_file() else { break };
                    let want = left.min(allowed);
                    (sys::sendfile(live.fd.as_fd(), file.as_fd(), offset, want), want, true)
                } else {
                    let want = iov[..count].iter().map(|s| s.len()).sum();
                    (sys::sendv(live.fd.as_fd(), &iov[..count]), want, false)
                };
                stats.syscalls += 1;
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
                            stats.partial_writes += 1;
                        }
                        written += n;
                        stats.bytes_written += n as u64;
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
                stats.syscalls += 1;
                let _ = socket::shutdown_write(live.fd.as_fd());
                live.conn.handle_write_shutdown(ctx);
                continue; // lingering reads what is left
            }
            // Draining with nothing in progress: close unless the peer sent more. Read
            // once more first, whatever `readable` says: bytes may have come since the
            // last edge was handled (its event still on the way), and they are answered.
            if live.conn.wants_input_check() {
                if !probed {
                    probed = true;
                    live.readable = true;
                    continue;
                }
                if !live.readable {
                    live.conn.handle_no_pending_input(ctx);
                    continue; // half-close and linger
                }
            }
            // Sending may have released backpressure on input still in the socket.
            if !(progressed && live.readable && live.conn.wants_read() && reads < READ_BUDGET) {
                break;
            }
        }
        self.budget.spend(written);
        if failed || live.conn.is_closed() {
            self.close(id);
        } else {
            // (A deadline or the drain may drive a connection that is already queued.)
            if requeue && !live.queued {
                live.queued = true;
                self.requeued.push_back(id);
            }
            if !S::EDGE {
                self.follow_need(id);
            }
            self.arm_deadline(id);
        }
    }

    /// Level-triggered: watches the connection for input only while it wants input, and
    /// for room to write only while output waits that the socket did not take.
    fn follow_need(&mut self, id: ConnId) {
        let Some(live) = self.conns.get_mut(id) else { return };
        let need = Interest { read: live.conn.wants_read(), write: !live.writable && live.conn.output_len() > 0 };
        if need == live.interest {
            return;
        }
        let old = std::mem::replace(&mut live.interest, need);
        if let Err(e) = self.selector.modify(live.fd.as_fd(), id.token(), old, need) {
            warn!("cannot change what a connection is watched for: {e}");
            // Not watched as it needs: it would hang, so it goes.
            self.count_ctl();
            self.close(id);
            return;
        }
        self.count_ctl();
    }

    fn arm_deadline(&mut self, id: ConnId) {
        let Some(live) = self.conns.get_mut(id) else { return };
        if let Some(at) = live.conn.poll_timeout().map(|(_, at)| at) {
            self.deadlines.arm(&mut live.armed, id, at);
        }
    }

    fn expire_deadlines(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.deadlines.expire(self.ctx.now(), &mut due);
        for expired in due.drain(..) {
            let Some(live) = self.conns.get_mut(expired.id) else { continue };
            if !live.armed.fire(expired.tick) {
                continue; // superseded by an earlier arming
            }
            live.conn.handle_timeout(&mut self.ctx);
            if live.conn.is_closed() {
                self.close(expired.id);
            } else {
                self.drive(expired.id);
            }
        }
        self.due = due;
    }

    /// Closes the socket and frees the slot. Closing its only descriptor also takes it
    /// out of an epoll set; poll and select forget it first.
    fn close(&mut self, id: ConnId) {
        if let Some(live) = self.conns.remove(id) {
            if !S::CLOSE_REMOVES {
                let _ = self.selector.remove(live.fd.as_fd());
            }
            drop(live.fd);
            self.stats.syscalls += 1;
            self.stats.closed += 1;
            if self.accept.on_fd_freed() {
                self.accept_resume = true;
            }
        }
    }

    fn close_all(&mut self) {
        for id in self.conns.ids() {
            self.close(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use duet_engine::MIN_WRITE_SHARE;
    use duet_http::{Limits, Site};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::Arc;

    const BIG: usize = 4 << 20;
    const GET_BIG: &[u8] = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n";

    /// A worker on an ephemeral loopback port serving `/big` (4 MiB in memory) and `/`
    /// (`hi`), driven turn by turn by the test.
    fn worker<S: Selector>() -> (Worker<S>, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let site = Site::builder()
            .route("/big", "application/octet-stream", Bytes::from(vec![7u8; BIG]))
            .route("/", "text/plain", Bytes::from_static(b"hi"))
            .build();
        let worker = Worker::new(WorkerSetup::single(listener, Arc::new(site), Limits::default())).expect("worker");
        (worker, addr)
    }

    /// One turn, waiting as the loop would (not at all while connections are queued;
    /// for events otherwise, at most 20 s); returns the bytes it sent.
    fn turn<S: Selector>(w: &mut Worker<S>) -> usize {
        let timeout = match w.poll_timeout() {
            t if t < 0 => 20_000,
            t => t.min(20_000),
        };
        let before = w.stats.bytes_written;
        w.turn(timeout).expect("turn");
        (w.stats.bytes_written - before) as usize
    }

    /// Turns until `done`, recording the bytes each sent; panics after very many.
    fn turns_until<S: Selector>(
        w: &mut Worker<S>,
        per_turn: &mut Vec<usize>,
        mut done: impl FnMut(&Worker<S>) -> bool,
    ) {
        for _ in 0..10_000 {
            if done(w) {
                return;
            }
            per_turn.push(turn(w));
        }
        panic!("the awaited state never came; bytes per turn: {per_turn:?}");
    }

    /// Each test, once per selector: `TEST::epoll`, `TEST::epoll_lt`, ...
    macro_rules! per_selector {
        ($($test:ident),*) => {
            $(selector_tests!($test: epoll = Epoll, epoll_lt = EpollLt, poll = Poll, select = Select);)*
        };
    }

    macro_rules! selector_tests {
        ($test:ident: $($name:ident = $selector:ident),*) => {
            mod $test {
                $(
                    #[test]
                    fn $name() {
                        super::$test::<crate::selector::$selector>();
                    }
                )*
            }
        };
    }

    per_selector!(
        a_turn_sends_one_connection_at_most_its_share,
        a_turn_sends_at_most_its_budget_and_a_new_client_is_answered_in_it
    );

    /// A client that asked for 4 MiB and reads nothing, on a socket whose buffers take
    /// far more than one share: no turn sends it more than a full share, it waits in
    /// the queue while its socket would take more, and once the socket is full it waits
    /// for EPOLLOUT instead (no busy loop).
    fn a_turn_sends_one_connection_at_most_its_share<S: Selector>() {
        let (mut w, addr) = worker::<S>();
        let mut big = TcpStream::connect(addr).expect("connect");
        big.write_all(GET_BIG).expect("send");
        let mut per_turn = Vec::new();
        turns_until(&mut w, &mut per_turn, |w| w.stats.bytes_written > 0);
        turns_until(&mut w, &mut per_turn, |w| w.requeued.is_empty());
        assert!(per_turn.iter().all(|&n| n <= WRITE_LIMITS.share), "bytes per turn: {per_turn:?}");
        // The socket took several shares: the budget, not the socket, cut the turns.
        assert!(w.stats.bytes_written as usize > 2 * WRITE_LIMITS.share, "bytes per turn: {per_turn:?}");
        assert!(w.conns.len() == 1 && w.poll_timeout() != 0, "a full socket waits for EPOLLOUT");
    }

    /// Twelve such clients: no turn sends more than its budget at full shares, beyond it
    /// they wait for a later turn rather than getting small pieces, and a new client
    /// asking meanwhile is answered (a small response, so beyond the budget too) in the
    /// turn that reads its request, queued connections or not.
    fn a_turn_sends_at_most_its_budget_and_a_new_client_is_answered_in_it<S: Selector>() {
        const CLIENTS: usize = 12;
        let (mut w, addr) = worker::<S>();
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let mut c = TcpStream::connect(addr).expect("connect");
            c.write_all(GET_BIG).expect("send");
            clients.push(c);
        }
        let mut per_turn = Vec::new();
        turns_until(&mut w, &mut per_turn, |w| w.ctx.stats.requests == CLIENTS as u64);
        assert!(!w.requeued.is_empty(), "the clients wait for more shares");

        let mut small = TcpStream::connect(addr).expect("connect");
        small.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
        turns_until(&mut w, &mut per_turn, |w| w.ctx.stats.requests == CLIENTS as u64 + 1);
        // Answered (and half-closed) in that turn: its whole answer is already there.
        let mut answer = Vec::new();
        small.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("timeout");
        let _ = (&small).take(4096).read_to_end(&mut answer);
        assert!(answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"hi"), "{answer:?}");

        turns_until(&mut w, &mut per_turn, |w| w.requeued.is_empty());
        // Full shares up to the turn budget, and the one small answer beyond it.
        let most = WRITE_LIMITS.per_turn + MIN_WRITE_SHARE;
        assert!(per_turn.iter().all(|&n| n <= most), "bytes per turn: {per_turn:?}");
        assert!(
            w.stats.bytes_written as usize > CLIENTS * 2 * WRITE_LIMITS.share,
            "the sockets took several shares each: {per_turn:?}"
        );
        drop(clients);
    }
}
