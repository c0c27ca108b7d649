//! duet-engine-uring: the io_uring completion engine.
//!
//! One ring per worker thread (`SINGLE_ISSUER|DEFER_TASKRUN` where the kernel has it),
//! driving the sans-IO `duet_http::Connection` exactly as the engine contract in
//! `duet_engine` says:
//!
//! - **accept**: one multishot accept on the thread's `SO_REUSEPORT` listener, re-armed
//!   when a completion comes without `F_MORE`; EMFILE trades a spare fd for
//!   accept-and-close and never spins.
//! - **receive**: one multishot receive per connection selecting from a provided
//!   buffer ring; each buffer is handed to `Connection::handle_input` and returned to
//!   the ring at once, so no read buffer belongs to a connection. The receive is
//!   cancelled while `wants_read` is false (backpressure) and re-armed after.
//! - **send**: at most one `sendmsg` in flight per connection, its `iovec`s pointing
//!   at the connection's own output segments (never copied), the header kept with the
//!   connection until the completion; partial sends continue. File bodies go by
//!   `sendfile(2)` from the loop (a ring poll waits for a full socket), see
//!   [`Feature::Sendfile`].
//! - **close**: cancel by fd, and close (drop the connection's `OwnedFd`, or close its
//!   slot of the ring's file table) only once every completion of the connection has
//!   been reaped; user_data carries the op, the connection's index and generation.
//! - **deadlines**: the core's timing wheel, and one timeout operation for the whole
//!   ring.
//!
//! A worker is a [`duet_engine::WorkerCore`] (what every engine's loop shares) plus the
//! ring and its I/O state. Memory an operation names is owned so that it cannot be freed
//! before the operation's last completion, however the worker ends (return, error or a
//! panic unwinding): a guard owns the worker, and its `Drop` cancels and reaps every
//! operation, or leaks the worker if the ring does not settle.
//!
//! `unsafe` lives in `sys` (the ring and its `io_uring_enter`, the buffer rings it
//! owns, the completions, the send header, raw syscalls, each counted in
//! `duet_engine::syscalls`), in the one submit path of a connection's operations
//! (`worker::conn`, with a note per operation on what its memory needs), and at the
//! few loop operations' submissions (accept, wake read, timeout, cancel, close): `Ring::push`
//! is an `unsafe fn`, and each caller says in its own `// SAFETY:` why the memory and
//! fds of that entry outlive its last completion.
//!
//! Layout: `lib.rs` (`serve`, `probe`, `features`), `error.rs` ([`ProbeError`]),
//! `probe.rs` (the startup probe and its functional checks), `features.rs`,
//! `sys/` (`ring.rs`, `buf_ring.rs`, `send.rs`), and the worker split along its roles:
//! `worker` (the loop, `drive`, `close`, `begin_drain`, `expire_deadlines`, the teardown
//! guard), `worker::conn` (a connection's io_uring part: receive and lifecycle states,
//! `submit`), `worker::accept` (the multishot accept), `worker::timeout` (the loop's
//! one timeout), `worker::file` (file streaming through a chunk buffer),
//! `worker::zerocopy` (file bodies by `sendfile` from the loop, or by ring splices), `worker::complete` (one handler per
//! completion) and `worker::token` (user_data, decoded once).
//!
//! Errors are typed ([`ProbeError`], [`UnknownFeature`]) and name no command-line flag:
//! the program using the engine words them for its users.

#![warn(missing_docs)]

mod error;
mod features;
mod probe;
mod sys;
mod worker;

pub use error::{ProbeError, MIN_KERNEL};
pub use features::{Feature, Features, Off, Resolved, UnknownFeature};

use duet_engine::{run_workers, ServeConfig, Shutdown, Stats};
use duet_http::Site;
use std::io;
use std::sync::Arc;

/// Tuning only the io_uring engine reads.
#[derive(Clone, Debug)]
pub struct UringOptions {
    /// Submission queue entries per ring (the completion queue is sized from it).
    pub ring_entries: u32,
    /// Buffers in the provided buffer ring (a power of two); `None`: the default for
    /// the way buffers are consumed ([`RECV_POOL_INC`] or [`RECV_POOL_WHOLE`]).
    pub buf_count: Option<u16>,
    /// Size of each provided buffer; `None` as for `buf_count`.
    pub buf_size: Option<u32>,
    /// Kernel submission-queue polling, with this idle time in milliseconds.
    pub sqpoll_idle_ms: Option<u32>,
    /// The optional features asked for (each is used only if the kernel has it).
    pub features: Features,
    /// Responses whose front segment is a shared body of at least this many bytes go
    /// out with a zero-copy send (with [`Feature::ZeroCopy`]).
    pub zc_threshold: usize,
    /// A fault to inject into the workers' loop (tests only).
    #[cfg(test)]
    pub(crate) fault: Option<std::sync::Arc<worker::fault::Fault>>,
}

/// The receive pool by default with incremental consumption: (buffers, bytes each).
/// A receive takes only what it needs from the head buffer, so 2 MiB serve a turn of
/// thousands of small receives.
pub const RECV_POOL_INC: (u16, u32) = (64, 32 * 1024);
/// The receive pool by default without it: every receive takes a whole buffer, so the
/// pool needs a buffer per connection that receives in one turn.
pub const RECV_POOL_WHOLE: (u16, u32) = (1024, 16 * 1024);
/// The default zero-copy threshold (see [`UringOptions::zc_threshold`]).
pub const ZC_THRESHOLD: usize = 64 * 1024;

impl Default for UringOptions {
    fn default() -> Self {
        UringOptions {
            ring_entries: 4096,
            buf_count: None,
            buf_size: None,
            sqpoll_idle_ms: None,
            features: Features::default(),
            zc_threshold: ZC_THRESHOLD,
            #[cfg(test)]
            fault: None,
        }
    }
}

impl UringOptions {
    /// The receive pool, (buffers, bytes each), with incremental consumption or not.
    pub(crate) fn recv_pool(&self, incremental: bool) -> (u16, u32) {
        let (count, size) = if incremental { RECV_POOL_INC } else { RECV_POOL_WHOLE };
        (self.buf_count.unwrap_or(count), self.buf_size.unwrap_or(size))
    }
}

/// Checks that io_uring works here with everything the engine needs: ring setup,
/// the opcodes used (accept, receive, sendmsg, cancel, timeouts, read), a provided
/// buffer ring, a multishot receive that really stays armed, and enough locked
/// memory for `threads` workers' rings.
pub fn probe(opts: &UringOptions, threads: usize) -> Result<(), ProbeError> {
    probe::probe(opts, threads)
}

/// Serves until `shutdown` (see the engine contract in `duet_engine`), with the
/// io_uring tuning `uring`.
///
/// The workers use the optional features in `uring.features` as they are: narrow them
/// to what the kernel has with [`features()`] first.
pub fn serve(config: ServeConfig, site: Arc<Site>, shutdown: Shutdown, uring: UringOptions) -> io::Result<Stats> {
    let on = uring.features;
    run_workers("uring", config, site, &shutdown, move |setup| worker::run(setup, &uring, on))
}

/// Which of the optional features `opts` asks for this kernel has, each checked for
/// real on a small ring of its own, and why each other one is off
/// ([`Resolved::off`] says why, for the log). Call once at start, after
/// [`probe()`] passed.
pub fn features(opts: &UringOptions) -> Resolved {
    probe::features(opts)
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_accepts_this_kernel_or_names_the_cause() {
        match super::probe(&super::UringOptions::default(), 1) {
            Ok(()) => {}
            Err(e) if std::env::var("DUET_REQUIRE_URING").as_deref() != Ok("1") => {
                let msg = e.to_string();
                assert!(!msg.is_empty() && !msg.contains("--engine"), "a library error names no flag: {msg}");
                eprintln!("io_uring unavailable here: {msg}");
            }
            Err(e) => panic!("DUET_REQUIRE_URING=1 but the probe failed: {e}"),
        }
    }

    #[test]
    fn probe_rejects_a_buffer_count_that_is_not_a_power_of_two() {
        let opts = super::UringOptions { buf_count: Some(1000), ..Default::default() };
        let e = super::probe(&opts, 1).expect_err("1000 buffers accepted");
        assert!(matches!(e, super::ProbeError::BufferCount(1000)), "{e:?}");
        assert!(e.to_string().contains("power of two"), "{e}");
    }
}
