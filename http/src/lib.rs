//! duet-http: the sans-IO HTTP/1.1 layer shared by both of duet's engines.
//!
//! This crate never touches a socket, a file descriptor or a clock. Bytes and time go
//! in; response bytes and decisions come out. Both engines drive exactly this code, so
//! a behaviour exists once and is tested once.
//!
//! ```text
//!            engine (epoll or io_uring)                     duet-http
//!   socket ──recv──▶ &[u8] ──────────────▶ Connection::handle_input(ctx, bytes)
//!                                              │ parse, frame bodies, route
//!                                              ▼
//!   socket ◀─writev/sendmsg── IoSlices ◀── Connection::poll_output()   (OutBuf::fill)
//!   socket ◀─sendfile/splice── file range ◀┘                          (OutBuf::front_file)
//!                       n bytes sent ─────▶ Connection::handle_sent(ctx, n)
//!   EOF / RDHUP ───────────────────────────▶ Connection::handle_eof(ctx)
//!   timer wheel ── now ────────────────────▶ Connection::handle_timeout(ctx, now)
//! ```
//!
//! # The engine contract
//!
//! Every engine crate exposes
//! `pub fn serve(config: ServeConfig, site: Arc<Site>, shutdown: Shutdown) -> io::Result<Report>`
//! and meets these rules. The [`Site`] may be swapped while serving ([`Site::replace`],
//! on SIGHUP): each [`Context`] picks up the new table in [`Context::set_time`], so the
//! engines need to do nothing about it. The binary picks an engine with a `match`; nothing here is
//! dynamically dispatched on the hot path.
//!
//! 1. **Threads and listeners.** `config.listeners` holds one bound, listening,
//!    non-blocking `SO_REUSEPORT` socket per worker thread. Worker `i` accepts only on
//!    listener `i`, and pins itself to CPU `i` when `config.pin` is set.
//! 2. **One [`Context`] per thread.** Before handling the events of a loop turn the
//!    worker calls [`Context::set_time`] (monotonic and wall clock read once per turn).
//! 3. **Input.** Bytes read from a connection are handed to
//!    [`Connection::handle_input`] as a borrowed slice from a buffer the engine owns.
//!    The connection consumes all of it (it copies only an incomplete head into a small
//!    carry buffer), so the engine may reuse or return its buffer at once. The engine
//!    reads only while [`Connection::wants_read`] is true: that is the backpressure
//!    that bounds memory under a pipelining flood. An io_uring engine whose multishot
//!    receive delivers bytes after `wants_read` turned false still hands them over;
//!    it then stops re-arming the receive until `wants_read` is true again.
//! 4. **Output.** [`Connection::poll_output`] gives the segments to send next. They
//!    stay valid and unchanged — same addresses, same bytes — until the engine reports
//!    them with [`Connection::handle_sent`] or drops the connection, even when more
//!    input is handled in between (new responses go to a second queue). So an engine
//!    may keep the `iovec`s of one in-flight send without copying. At most one send is
//!    in flight per connection. After `handle_sent`, call `poll_output` again.
//! 5. **Files.** Output may hold file segments: bodies streamed from disk (files over
//!    `--max-cached-file` or past `--cache-budget`), as `(file, offset, len)` spliced in
//!    order between memory segments. [`OutBuf::fill`] returns only the memory segments
//!    *before* the first unsent file segment; when it returns none while
//!    [`OutBuf::remaining`] is not zero, [`OutBuf::front_file`] gives the file segment at
//!    the front: the engine sends from it with positional I/O (the descriptor is shared
//!    by every request, so never use or move its file offset), at most a bounded chunk
//!    per call, and reports the bytes with [`Connection::handle_sent`] exactly like
//!    memory bytes; then it calls `poll_output` again. Every engine must stream files:
//!    epoll uses `sendfile(sock, file, &mut offset, min(len, chunk))` and waits for
//!    `EPOLLOUT` on `EAGAIN`; io_uring reads a chunk into a buffer through the ring and
//!    sends it. Backpressure is the socket's: the engine never reads ahead of what the
//!    socket accepts, so a slow reader never makes the server buffer a file. A file
//!    segment that ends early (the file shrank: `sendfile` returns 0) cannot be framed
//!    any more; the engine drops the connection.
//! 6. **Closing.** When output is drained and [`Connection::should_close_after_flush`]
//!    is true, the engine shuts down its write side (`shutdown(SHUT_WR)`) and calls
//!    [`Connection::handle_write_shutdown`]; the connection then discards input until
//!    EOF or its linger deadline, so a pipelined tail cannot turn the close into a reset
//!    that destroys the response. When [`Connection::is_closed`] is true the engine
//!    closes the socket and drops the connection. An EOF from the peer is reported
//!    with [`Connection::handle_eof`]; a socket error simply drops the connection.
//! 7. **Deadlines.** After handling any event for a connection the engine reads
//!    [`Connection::poll_timeout`] (the earliest armed [`Timer`] and its instant) and
//!    arms that instant in its [`TimerWheel`]; when the wheel says a connection is due,
//!    the engine calls [`Connection::handle_timeout`], which acts on the timer that
//!    fired and ignores early calls. One timer for the whole loop, never one per
//!    connection.
//! 8. **Shutdown.** When [`Shutdown`] turns graceful the engine stops accepting, calls
//!    [`Connection::begin_shutdown`] on every connection (idle ones close at once, busy
//!    ones finish their response with `Connection: close`), and returns once all are
//!    closed or `config.drain_timeout` has passed. A forced shutdown returns at once.
//! 9. **Report.** `serve` returns the merged [`Stats`] of all workers. Engines count
//!    their own work in `ctx.stats` (wakeups, events, syscalls, bytes, partial
//!    writes, ENOBUFS, accepts, closes) with plain adds; the connection counts requests.
//! 10. **Metrics.** Worker `i` calls [`Context::attach_metrics`] with
//!     `config.metrics` and `i`, and [`Context::publish_stats`] once per loop turn before
//!     blocking; the connection answers `GET` on the metrics path itself.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod chunked;
mod conn;
mod date;
mod limits;
mod out;
mod reject;
mod request;
mod serve;
mod site;
mod static_files;
mod timer;

pub use conn::{Connection, Timer};
pub use date::DateCache;
pub use limits::Limits;
pub use out::{BufPool, OutBuf};
pub use serve::{run_workers, Context, Metrics, Report, ServeConfig, Shutdown, ShutdownState, Stats, UringOptions};
pub use site::{Body, FileMeta, Prerendered, Site, SiteBuilder};
pub use timer::TimerWheel;
