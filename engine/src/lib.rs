//! duet-engine: what every duet engine shares, and the contract they all meet.
//!
//! The engines (`duet-engine-epoll`: a readiness loop; `duet-engine-uring`: a
//! completion loop) own sockets and time and drive the sans-IO
//! [`duet_http::Connection`]. Everything that is the same in every loop lives here,
//! written once and tested on its own: the [`WorkerCore`] every engine's worker is
//! built on (see the [`core`] module: it owns what each loop shares and
//! does the contract's call sequences below), the worker threads and their pinning
//! ([`run_workers`]), [`Shutdown`] and the [`Drain`], the connection [`Slab`] with
//! generation-checked [`ConnId`]s, the [`Deadlines`] (a timing wheel plus the
//! stale-entry filter), the [`AcceptPolicy`] (errno → retry, wait, shed or pause, with
//! the spare descriptor), the [`Waker`], and the counters ([`Stats`], [`Metrics`];
//! syscalls are counted inside the wrappers, [`syscalls`]). Nothing here makes an HTTP
//! decision.
//!
//! ```text
//!            engine (epoll or io_uring)                     duet-http
//!   socket ──recv──▶ &[u8] ──────────────▶ Connection::handle_input(ctx, bytes)
//!                                              │ parse, frame bodies, route
//!                                              ▼
//!   socket ◀─writev/sendmsg── IoSlices ◀── Connection::poll_output()   (OutBuf::fill)
//!   socket ◀─sendfile/read+send── file range ◀┘                      (OutBuf::front_file)
//!                       n bytes sent ─────▶ Connection::handle_sent(ctx, n)
//!   EOF / RDHUP ───────────────────────────▶ Connection::handle_eof(ctx)
//!   Deadlines ── now ──────────────────────▶ Connection::handle_timeout(ctx)
//! ```
//!
//! # The engine contract
//!
//! Every engine crate exposes a `serve(config: ServeConfig, site: Arc<Site>, shutdown:
//! Shutdown, options) -> io::Result<Stats>` (`options`: the engine's own tuning, always
//! the last argument), builds its worker on a [`WorkerCore`] (the core plus the
//! engine's own I/O state; a connection is an [`Entry`] with the engine's part), has the
//! same shape — `lib.rs` (`serve`), `worker.rs` (the loop), `sys.rs` or `sys/` (the
//! `unsafe` syscall layer, whose wrappers count their syscalls with [`syscalls::count`];
//! a completion engine also has `unsafe` in the one submit path of a connection's
//! operations, at the loop's own submissions and where it adopts an accepted
//! descriptor) — and names the same roles the same way:
//! `accept`, `drive` (bring one connection's I/O in line with its state), `close`,
//! `begin_drain`, `expire_deadlines`, `teardown` (the loop has ended: close every
//! connection, after cancelling and reaping what is in flight), each built on the
//! core's method of the same concern. It meets these rules. The
//! [`Site`](duet_http::Site) may be swapped while serving (on SIGHUP): each
//! [`Context`](duet_http::Context) picks up the new table in `Context::set_time`, and
//! [`run_workers`] wakes every worker through the wakers registered with [`Shutdown`]
//! (rule 9) so that this happens at once; engines do nothing more about it. The binary
//! picks an engine with a `match`; nothing is dynamically dispatched on the hot path.
//!
//! 1. **Threads and listeners.** [`run_workers`] runs one worker per listener in
//!    `config.listeners` (bound, listening, non-blocking, `SO_REUSEPORT`); worker `i`
//!    accepts only on listener `i` and is pinned by [`pin_cpu`] when `config.pin`.
//! 2. **One `Context` per thread**, handed over in [`WorkerSetup`] and owned by the
//!    [`WorkerCore`]. Before handling the events of a loop turn the worker calls
//!    [`WorkerCore::after_wait`], which calls `Context::set_time` (monotonic and wall
//!    clock read once per turn) and starts the turn's [`TurnBudget`].
//! 3. **Accepting.** Every accept result goes through the worker's [`AcceptPolicy`]
//!    by one path, [`WorkerCore::accept_next`] (`accept4` on the listener) or
//!    [`WorkerCore::accept_failed`] (a failed accept completion; the core sheds itself
//!    when the policy says so), and the worker does what it says: never a busy loop, never giving up on the
//!    listener (see the [`accept`] module). Accepted sockets get `TCP_NODELAY`, are
//!    owned as `OwnedFd`, and live in the worker's [`Slab`], taken in with
//!    [`WorkerCore::adopt`].
//! 4. **Input.** Bytes read from a connection are handed to `Connection::handle_input`
//!    as a borrowed slice from a buffer the engine owns. The connection consumes all of
//!    it (it copies only an incomplete head into a small carry buffer), so the engine
//!    may reuse or return its buffer at once. The engine reads only while
//!    `Connection::wants_read` is true: that is the backpressure that bounds memory
//!    under a pipelining flood. A completion engine whose multishot receive delivers
//!    bytes after `wants_read` turned false still hands them over; it then stops
//!    re-arming the receive until `wants_read` is true again.
//! 5. **Output.** `Connection::poll_output` gives the segments to send next. They stay
//!    valid and unchanged — same addresses, same bytes — until the engine reports them
//!    with `Connection::handle_sent` or drops the connection, even when more input is
//!    handled in between (new responses go to a second queue). They point into heap
//!    storage that the `Connection` owns or shares (`Bytes`, `Vec`, `Box`), never into
//!    the `Connection` value itself, so they stay put when the value moves — as it does
//!    when the engine's slab grows (see `OutBuf`'s docs; `http/tests/output_segments.rs`
//!    moves a connection mid-send and fails on an inline buffer). So an engine may keep
//!    the `iovec`s of one in-flight send without copying. At most one send is in
//!    flight per connection. After `handle_sent`, call `poll_output` again. What a
//!    loop turn sends is bounded by its [`TurnBudget`] (the engine's [`WriteLimits`]):
//!    at most a full share to one connection (memory and file bytes alike,
//!    `OutBuf::fill_max` cuts the segments to it), at most the turn's budget in all at
//!    full shares, and after that only small outputs (up to [`MIN_WRITE_SHARE`]). A
//!    connection with more to send waits for a later turn
//!    ([`WorkerCore::wait_for_share`]), and connections waiting so are served first,
//!    oldest first ([`WorkerCore::next_waiting`]): so a turn stays short however many large
//!    responses are in flight, a small response is never held back, and every
//!    connection moves.
//! 6. **Files.** Output may hold file segments: bodies streamed from disk, as `(file,
//!    offset, len)` in order between memory segments. `OutBuf::fill` returns only the
//!    memory segments *before* the first unsent file segment; when it returns none
//!    while `OutBuf::remaining` is not zero, `OutBuf::front_file` gives the file
//!    segment at the front: the engine sends from it with positional I/O (the
//!    descriptor is shared by every request, so never use or move its file offset), at
//!    most a bounded chunk per call, and reports the bytes with `handle_sent` exactly
//!    like memory bytes. epoll uses `sendfile` and waits for `EPOLLOUT` on `EAGAIN`;
//!    io_uring reads a chunk into a buffer through the ring and sends it. Backpressure
//!    is the socket's: a slow reader never makes the server buffer a file. A file
//!    segment that ends early (the file shrank) cannot be framed any more; the engine
//!    drops the connection.
//! 7. **Closing.** When output is drained and `Connection::should_close_after_flush`
//!    is true, the engine shuts down its write side (`shutdown(SHUT_WR)`) and calls
//!    `Connection::handle_write_shutdown`; the connection then discards input until EOF
//!    or its linger deadline, so a pipelined tail cannot turn the close into a reset
//!    that destroys the response. When `Connection::is_closed` is true the engine
//!    closes the socket (drops its `OwnedFd`; a completion engine only once every
//!    completion naming it has been reaped) and removes it from the slab. An EOF from
//!    the peer is reported with `Connection::handle_eof`; a socket error simply drops
//!    the connection. Every close tells the [`AcceptPolicy`] a descriptor is free:
//!    [`WorkerCore::close`] does, once the engine has closed the socket.
//! 8. **Deadlines.** After handling any event for a connection the engine asks
//!    `Connection::poll_timeout` and arms the answer in its [`Deadlines`] (one wheel,
//!    one timer for the whole loop, never one per connection): [`WorkerCore::arm_deadline`].
//!    Entries that come due ([`WorkerCore::expire_deadlines`]) are filtered with the
//!    slab and [`Armed::fire`], and the connection's `handle_timeout` is called (it
//!    ignores early calls): [`WorkerCore::next_expired`].
//! 9. **Shutdown.** The worker registers its [`Waker`] with [`Shutdown`] and then
//!    checks the state and calls `Context::set_time` (so neither a shutdown nor a
//!    replaced site from before the registration is missed; the waker also fires when
//!    the site is replaced): [`WorkerCore::new`] registers and reads the clock, the
//!    loop checks the state at its top. When it turns graceful the worker begins its
//!    [`Drain`] ([`WorkerCore::begin_drain`], which also calls `begin_shutdown` on
//!    every connection, and returns true once): it
//!    takes in the connections its listener holds (their clients may have sent
//!    requests) and closes it (so the kernel refuses new ones instead of queueing
//!    them), calls `Connection::begin_shutdown` on every connection and drives it,
//!    and returns once [`Drain::should_stop`] says so ([`WorkerCore::should_stop`]). Nothing received is lost: a
//!    draining connection answers the request in progress, or the next one received,
//!    with `Connection: close`. The drain's first part is a lame-duck period
//!    (`Context::begin_lame_duck`, set by the core): a connection with nothing in
//!    progress stays open for its next request until the period ends (its Idle timer,
//!    handled by rule 8), since its client may have sent that request already. After
//!    that, one with nothing in progress says so with
//!    `Connection::wants_input_check`; the engine then makes sure the socket holds no
//!    unread input — a readiness engine reads once more (the edge of bytes that just
//!    came may still be on its way), a completion engine asks [`socket::unread_bytes`]
//!    and then checks that no completion waits to be reaped — and calls
//!    `Connection::handle_no_pending_input`, after which the connection closes by rule
//!    7: half-close and linger, never a close with unread input (a reset). A forced
//!    shutdown returns at once.
//! 10. **Counters.** `serve` returns the merged [`Stats`] of all workers. Engines count
//!     their own work (events, bytes, partial writes, ENOBUFS) with plain adds; the
//!     core counts wakeups ([`WorkerCore::after_wait`]), accepts and closes
//!     ([`WorkerCore::adopt`], [`WorkerCore::close`]); syscalls are counted inside the
//!     syscall wrappers ([`syscalls`], never at a call site) and the core turns them into
//!     `stats.syscalls`; the connection counts requests and errors in `ctx.stats`. Each
//!     worker publishes once per loop turn before blocking ([`WorkerCore::before_wait`]
//!     calls [`Publisher::publish`]); with `--metrics` the connection answers `GET` on
//!     the metrics path with [`Metrics`] rendered as Prometheus text.
//! 11. **Access log.** When `WorkerSetup::access_log` is on (`--access-log`), the worker
//!     hands each new connection its peer address (`Connection::set_peer`; `None` when
//!     it has none: logged as `-`; [`WorkerCore::adopt`] does), calls
//!     [`AccessLogWriter::turn_end`] once per loop turn before blocking
//!     ([`WorkerCore::before_wait`]), and [`AccessLogWriter::finish`] once its loop has
//!     ended, however it ended ([`WorkerCore::finish`], which also returns the worker's
//!     [`Stats`] with the HTTP counters). The connections append the lines; the writer
//!     writes them.

#![warn(missing_docs)]

pub mod accept;
mod accepted;
mod access_log;
mod budget;
pub mod core;
mod deadline;
mod shutdown;
mod slab;
pub mod socket;
mod stats;
mod sys;
pub mod syscalls;
mod waker;
mod wheel;
mod workers;

pub use crate::core::{Entry, EntryIo, WaitingTurn, WorkerCore};
pub use accept::{AcceptError, AcceptFailure, AcceptPolicy, Limit, Next, Spare, SpareFd};
pub use accepted::accepted;
pub use access_log::{AccessLog, AccessLogWriter};
pub use budget::{TurnBudget, WriteLimits, MIN_WRITE_SHARE};
pub use deadline::{next_wake, Armed, Deadlines, Expired, TICK};
pub use shutdown::{Drain, Shutdown, ShutdownState};
pub use slab::{ConnId, Slab, GENERATION_BITS, TOKEN_BITS};
pub use stats::{GroupCounters, Metrics, Stats};
pub use waker::Waker;
pub use wheel::TimerWheel;
pub use workers::{pin_cpu, run_workers, Publisher, ServeConfig, WorkerSetup};
