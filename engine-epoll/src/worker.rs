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
use duet_engine::{socket, syscalls, ConnId, Entry, EntryIo, Stats, Waker, WorkerCore, WorkerSetup, WriteLimits};
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;
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

/// A connection's readiness-engine part: its socket and what the selector told of it.
struct Live {
    fd: OwnedFd,
    readable: bool,
    writable: bool,
    /// The peer's FIN was reported (EPOLLRDHUP/HUP): read until EOF even after a short
    /// read, because no further edge will come.
    hup: bool,
    /// What a level-triggered selector watches it for (unused by edge-triggered ones).
    interest: Interest,
}

impl EntryIo for Live {
    #[inline]
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }
}

/// One worker: the shared [`WorkerCore`] (context, counters, connections, deadlines,
/// accept policy, drain, the over-budget queue) and the selector with what it needs.
pub(crate) struct Worker<S: Selector = Epoll> {
    core: WorkerCore<Live>,
    selector: S,
    /// Whether a level-triggered selector watches the listener (not while accepting
    /// is paused: it would report the waiting connections at every wait).
    listener_watched: bool,
    /// Connections refused since the last one the selector could watch (select's
    /// FD_SETSIZE): one log line per episode, not one per connection.
    refusing: u64,
    read_buf: Box<[u8]>,
}

impl<S: Selector> Worker<S> {
    pub(crate) fn new(setup: WorkerSetup) -> io::Result<Worker<S>> {
        let mut selector = S::new()?;
        let waker = Waker::nonblocking()?;
        selector.add(setup.listener.as_fd(), TOKEN_LISTENER, Interest::READ, false)?;
        selector.add(waker.as_fd(), TOKEN_WAKER, Interest::READ, false)?;
        Ok(Worker {
            core: WorkerCore::new(setup, waker, WRITE_LIMITS),
            selector,
            listener_watched: true,
            refusing: 0,
            read_buf: vec![0u8; READ_BUF].into_boxed_slice(),
        })
    }

    pub(crate) fn run(mut self) -> io::Result<Stats> {
        // The state may have changed before the waker was registered.
        self.begin_drain();
        let result = loop {
            if self.core.should_stop() {
                break Ok(());
            }
            let timeout = self.poll_timeout();
            self.core.before_wait();
            if let Err(e) = self.turn(timeout) {
                break Err(e);
            }
        };
        self.teardown();
        let stats = self.core.finish();
        result.map(|()| stats)
    }

    /// One loop turn: waits up to `timeout` ms for events and handles them.
    fn turn(&mut self, timeout: i32) -> io::Result<()> {
        let n = self.selector.wait(timeout)?;
        self.core.stats.events += n as u64;
        self.core.after_wait();
        // Those that used up their budget in earlier turns, oldest first (the ones this
        // turn requeues go behind them), at least one: the queue always moves.
        let mut waiting = self.core.waiting_turn();
        while let Some(id) = self.core.next_waiting(&mut waiting) {
            self.drive(id);
        }
        for i in 0..n {
            let (token, ready) = self.selector.event(i);
            match token {
                TOKEN_LISTENER => self.accept(),
                TOKEN_WAKER => {
                    self.core.waker().drain();
                    self.begin_drain();
                }
                token => self.on_event(ConnId::from_token(token), ready),
            }
        }
        if self.core.accept_due() {
            self.accept();
        }
        self.expire_deadlines();
        if !S::EDGE {
            self.watch_listener(!self.core.accept.is_paused());
        }
        Ok(())
    }

    /// Level-triggered: watches the listener only while accepting is not paused.
    fn watch_listener(&mut self, want: bool) {
        let Some(listener) = &self.core.listener else { return };
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

    /// Counts one change of a registration (its syscall, if it is one, counts itself).
    fn count_ctl(&mut self) {
        self.core.stats.interest_changes += 1;
    }

    /// How long epoll_wait may block: until the next deadline, the drain deadline or
    /// the accept retry; not at all when queued connections have work or a freed
    /// descriptor lets a paused accept go again.
    fn poll_timeout(&mut self) -> i32 {
        if self.core.has_waiting() || self.core.accept_resume_pending() {
            return 0;
        }
        match self.core.next_wake() {
            None => -1,
            Some(at) => {
                let ms = at.saturating_duration_since(Instant::now()).as_nanos().div_ceil(1_000_000);
                ms.min(i32::MAX as u128) as i32
            }
        }
    }

    /// On a graceful shutdown (once): every connection is asked to finish, what the
    /// listener holds is taken in, the listener closes, and every connection is driven.
    fn begin_drain(&mut self) {
        if !self.core.begin_drain() {
            return;
        }
        // The kernel already accepted these and their clients may have sent requests:
        // take them in (draining from the start) rather than let the close of the
        // listener reset them.
        while let Some(fd) = self.core.accept_next() {
            self.register(fd);
        }
        if let Some(listener) = self.core.listener.take() {
            // Out of the selector before it closes (an unwatched listener is out of an
            // epoll set already; poll and select still hold its entry).
            if self.listener_watched || !S::CLOSE_REMOVES {
                self.count_ctl();
                let _ = self.selector.remove(listener.as_fd());
            }
            syscalls::close(listener);
        }
        for id in self.core.conns.ids() {
            self.drive(id);
        }
    }

    /// Accepts until the listener is drained, doing what the accept policy says on
    /// each failure.
    fn accept(&mut self) {
        if self.core.accept.is_paused() {
            return;
        }
        while let Some(fd) = self.core.accept_next() {
            self.register(fd);
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
        let _ = socket::set_nodelay(fd.as_fd());
        let id = self.core.conns.next_id();
        if let Err(e) = self.selector.add(fd.as_fd(), id.token(), Interest::READ, true) {
            warn!("cannot register a connection: {e}");
            syscalls::close(fd);
            return;
        }
        let live = Live { fd, readable: false, writable: true, hup: false, interest: Interest::READ };
        let inserted = self.core.adopt(live);
        debug_assert_eq!(inserted, id);
        self.core.arm_deadline(id);
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
        self.core.stats.refused += 1;
        syscalls::close(fd);
    }

    fn on_event(&mut self, id: ConnId, ready: Ready) {
        let Some(e) = self.core.conns.get_mut(id) else { return };
        e.io.readable |= ready.readable;
        e.io.hup |= ready.hup;
        e.io.writable |= ready.writable;
        // One waiting for a share only records the readiness: it is driven in its turn.
        if !e.waiting {
            self.drive(id);
        }
    }

    /// Reads, lets the connection work, writes, and closes when it says so. At most
    /// `READ_BUDGET` reads and the turn's share of bytes written; a connection with
    /// more to do is queued for its next share.
    fn drive(&mut self, id: ConnId) {
        let Some(Entry { conn, io: live, .. }) = self.core.conns.get_mut(id) else { return };
        let ctx = &mut self.core.ctx;
        let stats = &mut self.core.stats;
        let mut reads = 0;
        // Asked once there is output: how much the turn may still send it.
        let mut share = None;
        let mut written = 0;
        let mut requeue = false;
        let mut failed = false;
        // Draining: whether this drive already read once more before closing.
        let mut probed = false;
        loop {
            while live.readable && conn.wants_read() {
                if reads == READ_BUDGET {
                    requeue = true;
                    break;
                }
                reads += 1;
                match sys::read(live.fd.as_fd(), &mut self.read_buf) {
                    Ok(0) => {
                        live.readable = false;
                        conn.handle_eof(ctx);
                    }
                    Ok(n) => {
                        // A short read drained the socket; the next edge reports more
                        // (unless the FIN already came: then read on to the EOF).
                        if n < self.read_buf.len() && !live.hup {
                            live.readable = false;
                        }
                        stats.bytes_read += n as u64;
                        conn.handle_input(ctx, &self.read_buf[..n]);
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
                let pending = conn.output_len();
                if pending == 0 {
                    break;
                }
                let allowed = *share.get_or_insert_with(|| self.core.budget.share(pending)) - written;
                if allowed == 0 {
                    requeue = true;
                    break;
                }
                let Some(out) = conn.poll_output() else { break };
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
                        conn.handle_sent(ctx, n);
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
            if conn.should_close_after_flush() {
                let _ = socket::shutdown_write(live.fd.as_fd());
                conn.handle_write_shutdown(ctx);
                continue; // lingering reads what is left
            }
            // Draining with nothing in progress: close unless the peer sent more. Read
            // once more first, whatever `readable` says: bytes may have come since the
            // last edge was handled (its event still on the way), and they are answered.
            if conn.wants_input_check() {
                if !probed {
                    probed = true;
                    live.readable = true;
                    continue;
                }
                if !live.readable {
                    conn.handle_no_pending_input(ctx);
                    continue; // half-close and linger
                }
            }
            // Sending may have released backpressure on input still in the socket.
            if !(progressed && live.readable && conn.wants_read() && reads < READ_BUDGET) {
                break;
            }
        }
        self.core.budget.spend(written);
        if failed || conn.is_closed() {
            self.close(id);
        } else {
            // (A deadline or the drain may drive a connection that is already queued:
            // it is queued once.)
            if requeue {
                self.core.wait_for_share(id);
            }
            if !S::EDGE {
                self.follow_need(id);
            }
            self.core.arm_deadline(id);
        }
    }

    /// Level-triggered: watches the connection for input only while it wants input, and
    /// for room to write only while output waits that the socket did not take.
    fn follow_need(&mut self, id: ConnId) {
        let Some(e) = self.core.conns.get_mut(id) else { return };
        let need = Interest { read: e.conn.wants_read(), write: !e.io.writable && e.conn.output_len() > 0 };
        if need == e.io.interest {
            return;
        }
        let old = std::mem::replace(&mut e.io.interest, need);
        if let Err(err) = self.selector.modify(e.io.fd.as_fd(), id.token(), old, need) {
            warn!("cannot change what a connection is watched for: {err}");
            // Not watched as it needs: it would hang, so it goes.
            self.count_ctl();
            self.close(id);
            return;
        }
        self.count_ctl();
    }

    /// Handles the deadlines that came due: each connection whose deadline came was
    /// told (`handle_timeout`) by the core, and is closed or driven.
    fn expire_deadlines(&mut self) {
        self.core.expire_deadlines();
        while let Some(id) = self.core.next_expired() {
            if self.core.conns.get(id).is_some_and(|e| e.conn.is_closed()) {
                self.close(id);
            } else {
                self.drive(id);
            }
        }
    }

    /// Closes the socket and frees the slot. Closing its only descriptor also takes it
    /// out of an epoll set; poll and select forget it first.
    fn close(&mut self, id: ConnId) {
        let selector = &mut self.selector;
        self.core.close(id, |live| {
            if !S::CLOSE_REMOVES {
                let _ = selector.remove(live.fd.as_fd());
            }
            syscalls::close(live.fd);
        });
    }

    /// The loop has ended: closes every connection. (The role io_uring's `teardown`
    /// has; a readiness engine has no operation in flight to cancel and reap first.)
    fn teardown(&mut self) {
        for id in self.core.conns.ids() {
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
    use std::net::{TcpListener, TcpStream};
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
        let before = w.core.stats.bytes_written;
        w.turn(timeout).expect("turn");
        (w.core.stats.bytes_written - before) as usize
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
        turns_until(&mut w, &mut per_turn, |w| w.core.stats.bytes_written > 0);
        turns_until(&mut w, &mut per_turn, |w| !w.core.has_waiting());
        assert!(per_turn.iter().all(|&n| n <= WRITE_LIMITS.share), "bytes per turn: {per_turn:?}");
        // The socket took several shares: the budget, not the socket, cut the turns.
        assert!(w.core.stats.bytes_written as usize > 2 * WRITE_LIMITS.share, "bytes per turn: {per_turn:?}");
        assert!(w.core.conns.len() == 1 && w.poll_timeout() != 0, "a full socket waits for EPOLLOUT");
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
        turns_until(&mut w, &mut per_turn, |w| w.core.ctx.stats.requests == CLIENTS as u64);
        assert!(w.core.has_waiting(), "the clients wait for more shares");

        let mut small = TcpStream::connect(addr).expect("connect");
        small.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
        turns_until(&mut w, &mut per_turn, |w| w.core.ctx.stats.requests == CLIENTS as u64 + 1);
        // Answered (and half-closed) in that turn: its whole answer is already there.
        let mut answer = Vec::new();
        small.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("timeout");
        let _ = (&small).take(4096).read_to_end(&mut answer);
        assert!(answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"hi"), "{answer:?}");

        turns_until(&mut w, &mut per_turn, |w| !w.core.has_waiting());
        // Full shares up to the turn budget, and the one small answer beyond it.
        let most = WRITE_LIMITS.per_turn + MIN_WRITE_SHARE;
        assert!(per_turn.iter().all(|&n| n <= most), "bytes per turn: {per_turn:?}");
        assert!(
            w.core.stats.bytes_written as usize > CLIENTS * 2 * WRITE_LIMITS.share,
            "the sockets took several shares each: {per_turn:?}"
        );
        drop(clients);
    }
}
