//! The worker core: what every engine's loop shares, written once. An engine's worker
//! is a [`WorkerCore`] plus its own I/O state (a selector, a ring), and each
//! connection is an [`Entry`]: what every engine keeps per connection plus the
//! engine's own part (`T`, an [`EntryIo`]).
//!
//! The core owns the thread's [`Context`], its [`Stats`], the [`Publisher`], the
//! [`AccessLogWriter`], the [`Shutdown`] and the [`Drain`], the [`Deadlines`], the
//! [`TurnBudget`] and the over-budget queue (`waiting`), the [`AcceptPolicy`], the
//! [`Waker`], the listener and the connection [`Slab`]. The contract's call sequences
//! (engine/src/lib.rs) are its methods, so an engine cannot forget one:
//!
//! | when | call | what it does (contract rule) |
//! |---|---|---|
//! | starting | [`WorkerCore::new`] | registers the waker with [`Shutdown`], *then* reads the clock (`Context::set_time`): no shutdown and no replaced site is missed (9) |
//! | every turn, before blocking | [`WorkerCore::before_wait`] | publishes the counters, flushes the access log (10, 11) |
//! | every turn, after the wait | [`WorkerCore::after_wait`] | counts the wakeup, reads the clock once, starts the turn's write budget (2, 5) |
//! | shutdown turned graceful | [`WorkerCore::begin_drain`] | begins the drain once, `begin_shutdown` on every connection (9) |
//! | a loop turn | [`WorkerCore::should_stop`] | whether the loop is over (9) |
//! | the loop has ended, however | [`WorkerCore::finish`] | flushes the access log, returns the [`Stats`] with the HTTP counters and the syscalls (10, 11) |
//!
//! And for each concern, one path:
//!
//! - **Accepting** (rule 3): [`WorkerCore::accept_next`] accepts from the listener
//!   (a readiness engine's loop; a completion engine's drain) and sends every failure
//!   through [`WorkerCore::accept_failed`], which a completion engine calls for a failed
//!   accept completion: the policy decides, and the core sheds itself when told to, so
//!   what comes back is [`Next::Again`], [`Next::Wait`] or [`Next::Pause`]. A
//!   connection got either way is taken in with [`WorkerCore::adopt`] (its
//!   `Connection`, with the peer's address for the access log and draining from the
//!   start when the worker drains). [`WorkerCore::accept_due`] says when a paused
//!   accept should go again.
//! - **Closing** (rule 7): [`WorkerCore::close`] takes a connection out, lets the
//!   engine close what its part holds ([`crate::syscalls::close`] for a process
//!   descriptor), then counts it and tells the accept policy a descriptor is free.
//! - **Deadlines** (rule 8): [`WorkerCore::arm_deadline`] after handling a connection's
//!   events; each turn, [`WorkerCore::expire_deadlines`] then [`WorkerCore::next_expired`]
//!   until `None`, which calls `handle_timeout` on each live connection whose deadline
//!   came and hands its id back to be driven.
//! - **The over-budget queue** (rule 5): a connection whose output got no share, or
//!   not all it has, waits with [`WorkerCore::wait_for_share`]; each turn serves the
//!   queue first, oldest first, with [`WorkerCore::waiting_turn`] and
//!   [`WorkerCore::next_waiting`] while the turn's budget lasts (at least one).
//! - **Syscalls** (rule 10): counted inside the wrappers ([`crate::syscalls`]); the
//!   core sets `stats.syscalls` to what this thread made since [`WorkerCore::new`]
//!   whenever it publishes and when it finishes. Nothing else writes it.
//!
//! Fields an engine reads or changes in the middle of its own work (the context, the
//! counters, the slab, the budget, the listener, the accept policy, the drain) are
//! public, so the borrows split: driving a connection borrows its entry, the context
//! and the counters at once.

use crate::accept::AcceptFailure;
use crate::{
    accepted, next_wake, syscalls, AcceptPolicy, AccessLogWriter, Armed, ConnId, Deadlines, Drain, Expired, Next,
    Publisher, Shutdown, ShutdownState, Slab, Stats, TurnBudget, Waker, WorkerSetup, WriteLimits,
};
use duet_http::{Connection, Context};
use std::collections::VecDeque;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The engine's own part of a connection entry.
pub trait EntryIo {
    /// The connection's process descriptor, if it has one (an io_uring direct
    /// descriptor has none): where its peer's address is read for the access log.
    fn fd(&self) -> Option<BorrowedFd<'_>>;

    /// Whether the connection is closing: the engine only waits to release its socket
    /// (a completion engine: for its last completions). A closing connection gets no
    /// more HTTP events from the core (no timeout, no `begin_shutdown`).
    #[inline]
    fn is_closing(&self) -> bool {
        false
    }
}

/// One connection: what every engine keeps for it, and the engine's own part.
#[derive(Debug)]
pub struct Entry<T> {
    /// The sans-IO HTTP connection.
    pub conn: Connection,
    /// Its live deadline entry ([`WorkerCore::arm_deadline`]).
    pub armed: Armed,
    /// In the over-budget queue ([`WorkerCore::wait_for_share`]).
    pub waiting: bool,
    /// The engine's part: its socket and I/O state.
    pub io: T,
}

/// Where [`WorkerCore::next_waiting`] is in this turn's pass over the queue.
#[derive(Debug)]
#[must_use]
pub struct WaitingTurn {
    /// Entries left to look at (those queued again in this turn come after them).
    left: usize,
    /// Whether one was handed out: the queue always moves by at least one.
    served: bool,
}

/// What every engine's worker shares (see the module docs).
pub struct WorkerCore<T> {
    /// The worker's index (its listener's), for logs.
    pub index: usize,
    /// The thread's HTTP context.
    pub ctx: Context,
    /// The worker's counters (`syscalls` is the core's: see the module docs).
    pub stats: Stats,
    /// Every connection.
    pub conns: Slab<Entry<T>>,
    /// What this turn sends.
    pub budget: TurnBudget,
    /// The listener; `None` once draining has closed it (the engine takes it).
    pub listener: Option<TcpListener>,
    /// The listener's accept policy.
    pub accept: AcceptPolicy,
    /// The graceful drain.
    pub drain: Drain,
    waker: Arc<Waker>,
    shutdown: Shutdown,
    publisher: Publisher,
    access_log: AccessLogWriter,
    deadlines: Deadlines,
    /// Entries that came due this turn, and the next to look at.
    due: Vec<Expired>,
    due_next: usize,
    /// Connections waiting for a share of a later turn's budget, oldest first.
    waiting: VecDeque<ConnId>,
    /// A descriptor was freed while accepting was paused: accept again.
    accept_resume: bool,
    /// This thread's syscall count when the worker started.
    syscalls_at_start: u64,
}

impl<T: EntryIo> WorkerCore<T> {
    /// The core of worker `setup.index`, woken by `waker` (a readiness engine watches it
    /// non-blocking; a completion engine reads it blocking), sending each turn within
    /// `limits`. Registers the waker with the shutdown, then reads the clock: the loop
    /// checks the state at its top ([`WorkerCore::begin_drain`], [`WorkerCore::should_stop`]),
    /// so neither a shutdown nor a replaced site from before is missed (rule 9).
    /// Syscalls made by this thread from here on are the worker's.
    pub fn new(setup: WorkerSetup, waker: Waker, limits: WriteLimits) -> WorkerCore<T> {
        let WorkerSetup { index, listener, mut ctx, shutdown, drain, publisher, access_log } = setup;
        let waker = Arc::new(waker);
        {
            // The closure keeps the eventfd open for as long as the Shutdown lives, so a
            // late wake can never write to a reused descriptor number.
            let waker = Arc::clone(&waker);
            shutdown.register_waker(move || waker.wake());
        }
        ctx.set_time(Instant::now(), SystemTime::now());
        let now = ctx.now();
        let accept = AcceptPolicy::new();
        WorkerCore {
            index,
            ctx,
            stats: Stats::default(),
            conns: Slab::new(),
            budget: TurnBudget::new(limits),
            listener: Some(listener),
            accept,
            drain,
            waker,
            shutdown,
            publisher,
            access_log,
            deadlines: Deadlines::new(now),
            due: Vec::new(),
            due_next: 0,
            waiting: VecDeque::new(),
            accept_resume: false,
            syscalls_at_start: syscalls::made(),
        }
    }

    /// The worker's waker (its eventfd).
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// The shutdown state now.
    #[inline]
    pub fn state(&self) -> ShutdownState {
        self.shutdown.state()
    }

    /// Whether the loop is over: a forced shutdown, or a drain that is done or out of
    /// time.
    #[inline]
    pub fn should_stop(&self) -> bool {
        self.drain.should_stop(self.shutdown.state(), self.conns.len(), self.ctx.now())
    }

    /// Once per loop turn, right before blocking: publishes the counters and writes
    /// the turn's access log lines.
    #[inline]
    pub fn before_wait(&mut self) {
        self.stats.syscalls = syscalls::made() - self.syscalls_at_start;
        self.publisher.publish(&self.stats, &self.ctx.stats);
        self.access_log.turn_end(&mut self.ctx);
    }

    /// Once per loop turn, right after the wait returned: counts the wakeup, reads the
    /// clock for the turn and starts the turn's write budget.
    #[inline]
    pub fn after_wait(&mut self) {
        self.stats.wakeups += 1;
        self.ctx.set_time(Instant::now(), SystemTime::now());
        self.budget.start_turn();
    }

    /// When the loop must wake next for its own reasons: the earliest connection
    /// deadline, the drain deadline or a paused accept's retry (`None`: block until
    /// I/O).
    #[inline]
    pub fn next_wake(&mut self) -> Option<Instant> {
        next_wake(&mut self.deadlines, &self.drain, &self.accept)
    }

    /// Begins the drain when the shutdown has turned graceful, once: every connection
    /// not closing is asked to finish (`Connection::begin_shutdown`). Returns true the
    /// one time it begins: the engine then stops accepting (taking in what its listener
    /// holds, with [`WorkerCore::accept_next`] and [`WorkerCore::adopt`]: they drain
    /// from the start), closes the listener, and drives every connection.
    #[must_use]
    pub fn begin_drain(&mut self) -> bool {
        if self.shutdown.state() == ShutdownState::Running || !self.drain.begin(self.ctx.now()) {
            return false;
        }
        if let Some(end) = self.drain.lame_duck_end() {
            self.ctx.begin_lame_duck(end);
        }
        for id in self.conns.ids() {
            if let Some(e) = self.conns.get_mut(id).filter(|e| !e.io.is_closing()) {
                e.conn.begin_shutdown(&mut self.ctx);
            }
        }
        true
    }

    /// Accepts one connection from the listener (`accept4`), sending a failure through
    /// [`WorkerCore::accept_failed`]: `None` when accepting stops for now (nothing
    /// pending, or the policy paused it), or when there is no listener.
    pub fn accept_next(&mut self) -> Option<OwnedFd> {
        loop {
            let listener = self.listener.as_ref()?;
            match crate::socket::accept(listener.as_fd()) {
                Ok(fd) => {
                    self.accept.on_accepted();
                    return Some(fd);
                }
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    match self.accept_failed(AcceptFailure::Process(errno)) {
                        Next::Again => {}
                        Next::Wait | Next::Pause | Next::Shed => return None,
                    }
                }
            }
        }
    }

    /// An accept failed: what the policy says to do. When it says shed, the core sheds
    /// on the listener itself, so the answer is [`Next::Again`] (accept again now),
    /// [`Next::Wait`] (until the listener is readable) or [`Next::Pause`] (until
    /// [`WorkerCore::accept_due`]).
    pub fn accept_failed(&mut self, failure: AcceptFailure) -> Next {
        let now = self.ctx.now();
        match (self.accept.on_failure(failure, now), self.listener.as_ref()) {
            (Next::Shed, Some(listener)) => self.accept.shed(listener.as_fd(), now),
            // No listener to shed from: the episode waits for the next knock.
            (Next::Shed, None) => Next::Wait,
            (next, _) => next,
        }
    }

    /// Whether a paused accept should go again now: a descriptor was freed since, or
    /// its retry time came.
    #[inline]
    pub fn accept_due(&mut self) -> bool {
        std::mem::take(&mut self.accept_resume) || self.accept.retry_due(self.ctx.now())
    }

    /// Whether a descriptor was freed while accepting was paused and no accept followed
    /// yet (the loop should not block).
    #[inline]
    pub fn accept_resume_pending(&self) -> bool {
        self.accept_resume
    }

    /// Takes in an accepted connection whose engine part is `io`: its `Connection`
    /// (with the peer's address when the access log is on; draining from the start when
    /// the worker drains), counted. Returns its id ([`Slab::next_id`] before the call).
    pub fn adopt(&mut self, io: T) -> ConnId {
        self.accept.on_accepted();
        let conn = accepted(&mut self.ctx, io.fd(), &self.drain);
        self.stats.accepted += 1;
        self.conns.insert(Entry { conn, armed: Armed::default(), waiting: false, io })
    }

    /// Closes connection `id`: takes it out of the slab, hands its engine part to
    /// `release` (which closes the socket: [`crate::syscalls::close`] for a process
    /// descriptor), then counts it and tells the accept policy a descriptor is free (a
    /// paused accept may go again: [`WorkerCore::accept_due`]). Returns false when `id`
    /// was gone already.
    pub fn close(&mut self, id: ConnId, release: impl FnOnce(T)) -> bool {
        let Some(e) = self.conns.remove(id) else { return false };
        release(e.io);
        self.stats.closed += 1;
        if self.accept.on_fd_freed() {
            self.accept_resume = true;
        }
        true
    }

    /// Arms connection `id`'s deadline (`Connection::poll_timeout`) unless an earlier
    /// one is armed. Returns the deadline when a new wheel entry was added (the loop's
    /// next wake-up may have moved earlier).
    #[inline]
    pub fn arm_deadline(&mut self, id: ConnId) -> Option<Instant> {
        let e = self.conns.get_mut(id)?;
        let (_, at) = e.conn.poll_timeout()?;
        self.deadlines.arm(&mut e.armed, id, at).then_some(at)
    }

    /// Collects the deadlines due now; take them with [`WorkerCore::next_expired`] until
    /// it returns `None`.
    pub fn expire_deadlines(&mut self) {
        self.due.clear();
        self.due_next = 0;
        self.deadlines.expire(self.ctx.now(), &mut self.due);
    }

    /// The next connection whose deadline came (stale entries, closed and closing
    /// connections are skipped), after its `Connection::handle_timeout`: drive it (or
    /// close it when the connection says it is closed).
    pub fn next_expired(&mut self) -> Option<ConnId> {
        while let Some(&expired) = self.due.get(self.due_next) {
            self.due_next += 1;
            let Some(e) = self.conns.get_mut(expired.id) else { continue };
            if e.io.is_closing() || !e.armed.fire(expired.tick) {
                continue; // closing, or superseded by an earlier arming
            }
            e.conn.handle_timeout(&mut self.ctx);
            return Some(expired.id);
        }
        None
    }

    /// Queues connection `id` for a share of a later turn's budget (once).
    #[inline]
    pub fn wait_for_share(&mut self, id: ConnId) {
        if let Some(e) = self.conns.get_mut(id) {
            if !e.waiting {
                e.waiting = true;
                self.waiting.push_back(id);
            }
        }
    }

    /// Whether connections wait for a share (the loop should not block).
    #[inline]
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Starts this turn's pass over the over-budget queue: connections queued before
    /// now, oldest first (see [`WorkerCore::next_waiting`]).
    #[inline]
    pub fn waiting_turn(&self) -> WaitingTurn {
        WaitingTurn { left: self.waiting.len(), served: false }
    }

    /// The next connection of this turn's pass to drive: the oldest still waiting,
    /// while the turn's budget lasts (at least one per turn, so the queue always moves).
    /// Driving may queue it again, behind the others.
    #[inline]
    pub fn next_waiting(&mut self, turn: &mut WaitingTurn) -> Option<ConnId> {
        while turn.left > 0 && !(turn.served && self.budget.is_spent()) {
            turn.left -= 1;
            let id = self.waiting.pop_front()?;
            if let Some(e) = self.conns.get_mut(id).filter(|e| e.waiting) {
                e.waiting = false;
                turn.served = true;
                return Some(id);
            }
        }
        None
    }

    /// Once the loop has ended, however it ended (after the engine closed what it
    /// holds): writes the last access log lines and returns the worker's counters, with
    /// the HTTP layer's and the syscalls made.
    pub fn finish(&mut self) -> Stats {
        self.access_log.finish(&mut self.ctx);
        self.stats.syscalls = syscalls::made() - self.syscalls_at_start;
        self.stats.set_http(&self.ctx.stats);
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_http::{Limits, Site};
    use std::os::fd::AsFd;

    struct Io(OwnedFd);

    impl EntryIo for Io {
        fn fd(&self) -> Option<BorrowedFd<'_>> {
            Some(self.0.as_fd())
        }
    }

    fn core() -> (WorkerCore<Io>, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        let setup = WorkerSetup::single(listener, Arc::new(Site::hello()), Limits::default());
        let core =
            WorkerCore::new(setup, Waker::nonblocking().expect("eventfd"), WriteLimits::new(64 << 10, 256 << 10));
        (core, addr)
    }

    /// A connection taken in from a real client (blocking until the kernel has it).
    fn accept_one(core: &mut WorkerCore<Io>, addr: std::net::SocketAddr) -> (ConnId, std::net::TcpStream) {
        let client = std::net::TcpStream::connect(addr).expect("connect");
        core.listener.as_ref().expect("listener").set_nonblocking(false).expect("blocking");
        let fd = core.accept_next().expect("accepted");
        core.listener.as_ref().expect("listener").set_nonblocking(true).expect("non-blocking");
        (core.adopt(Io(fd)), client)
    }

    #[test]
    fn the_over_budget_queue_serves_the_oldest_first_at_least_one_and_while_the_budget_lasts() {
        let (mut core, addr) = core();
        let (a, _ca) = accept_one(&mut core, addr);
        let (b, _cb) = accept_one(&mut core, addr);
        let (c, _cc) = accept_one(&mut core, addr);
        for id in [a, b, a, c] {
            core.wait_for_share(id);
        }
        assert!(core.has_waiting());
        let mut turn = core.waiting_turn();
        assert_eq!(core.next_waiting(&mut turn), Some(a), "queued once, oldest first");
        core.wait_for_share(a); // queued again: behind the others, not in this pass
        assert_eq!(core.next_waiting(&mut turn), Some(b));
        core.budget.spend(usize::MAX);
        assert_eq!(core.next_waiting(&mut turn), None, "the budget is spent");
        core.after_wait();
        let mut turn = core.waiting_turn();
        core.budget.spend(usize::MAX);
        assert_eq!(core.next_waiting(&mut turn), Some(c), "at least one per turn");
        assert_eq!(core.next_waiting(&mut turn), None);
        // A connection closed while it waits is skipped.
        assert!(core.close(a, |io| syscalls::close(io.0)));
        core.after_wait();
        let mut turn = core.waiting_turn();
        assert_eq!(core.next_waiting(&mut turn), None);
        assert!(!core.has_waiting());
    }

    #[test]
    fn accepting_and_closing_are_counted_and_the_syscalls_come_from_the_wrappers() {
        let (mut core, addr) = core();
        assert_eq!(core.accept_next().map(drop), None, "nothing pending");
        let (id, _client) = accept_one(&mut core, addr);
        assert_eq!(core.conns.len(), 1);
        assert!(core.close(id, |io| syscalls::close(io.0)));
        assert!(!core.close(id, |_| panic!("closed twice")));
        let stats = core.finish();
        assert_eq!((stats.accepted, stats.closed), (1, 1));
        // An accept that found nothing, one that worked, one close: none counted by hand.
        assert_eq!(stats.syscalls, 3, "{stats:?}");
    }

    #[test]
    fn a_draining_core_asks_every_connection_to_finish_once() {
        let (mut core, addr) = core();
        let (id, _client) = accept_one(&mut core, addr);
        assert!(!core.begin_drain(), "running: nothing to begin");
        core.shutdown.trigger();
        assert!(core.begin_drain());
        assert!(!core.begin_drain(), "once");
        assert!(core.conns.get(id).expect("present").conn.wants_input_check(), "draining, nothing in progress");
        assert!(!core.should_stop(), "a connection is still open");
        assert!(core.close(id, |io| syscalls::close(io.0)));
        assert!(core.should_stop());
    }
}
