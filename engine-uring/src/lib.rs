//! duet-engine-uring: the io_uring completion engine.
//!
//! One ring per worker thread (`SINGLE_ISSUER|DEFER_TASKRUN` where the kernel has it),
//! driving the sans-IO `duet_http::Connection` exactly as the engine contract in
//! `duet_http` says:
//!
//! - **accept**: one multishot accept on the thread's `SO_REUSEPORT` listener, re-armed
//!   when a completion comes without `F_MORE`; EMFILE trades a spare fd for
//!   accept-and-close and never spins.
//! - **receive**: one multishot receive per connection selecting from a provided
//!   buffer ring; each buffer is handed to `Connection::handle_input` and returned to
//!   the ring at once, so no read buffer belongs to a connection. The receive is
//!   cancelled while `wants_read` is false (backpressure) and re-armed after.
//! - **send**: at most one `sendmsg` in flight per connection, its `iovec`s pointing
//!   at the connection's own output segments (never copied), kept in the slot until
//!   the completion; partial sends continue.
//! - **close**: cancel by fd, and close (drop the slot's `OwnedFd`) only once every
//!   completion of the connection has been reaped; user_data carries slot and
//!   generation.
//! - **deadlines**: one timing wheel and one timeout operation for the whole ring.
//!
//! `unsafe` lives in `sys` (the ring, the buffer rings it owns, the completions, raw
//! syscalls) and at each submission site in the worker: `Ring::push` is an
//! `unsafe fn`, and every caller says in its own `// SAFETY:` why the memory and fds
//! of that entry outlive its last completion.
//!
//! The worker is split along its roles: `worker` (the loop, `drive`, `close`,
//! `begin_drain`, `arm_deadline`, `expire_deadlines`, `teardown`), `worker::accept`,
//! `worker::timeout` (the loop's one timeout), `worker::file` (file streaming),
//! `worker::complete` (one handler per completion) and `worker::token` (user_data).

mod probe;
mod sys;
mod worker;

use duet_http::{Report, ServeConfig, Shutdown, Site, UringOptions};
use std::fmt;
use std::io;
use std::sync::Arc;

/// Why io_uring cannot be used here: one line naming the cause and the fix.
#[derive(Debug)]
pub struct ProbeError(String);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

/// Checks that io_uring works here with everything the engine needs: ring setup,
/// the opcodes used (accept, receive, sendmsg, cancel, timeouts, read), a provided
/// buffer ring, a multishot receive that really stays armed, and enough locked
/// memory for `threads` workers' rings.
pub fn probe(opts: &UringOptions, threads: usize) -> Result<(), ProbeError> {
    probe::probe(opts, threads)
}

/// Serves until `shutdown` (see the engine contract in `duet_http`).
pub fn serve(config: ServeConfig, site: Arc<Site>, shutdown: Shutdown) -> io::Result<Report> {
    let ServeConfig { listeners, pin, limits, drain_timeout, uring, metrics } = config;
    let shared =
        Arc::new(worker::Shared { site, limits, uring, drain_timeout, pin, shutdown: shutdown.clone(), metrics });
    duet_http::run_workers("uring", listeners, &shutdown, move |index, listener| worker::run(index, listener, &shared))
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_accepts_this_kernel_or_names_the_cause() {
        match super::probe(&duet_http::UringOptions::default(), 1) {
            Ok(()) => {}
            Err(e) if std::env::var("DUET_REQUIRE_URING").as_deref() != Ok("1") => {
                let msg = e.to_string();
                assert!(msg.contains("--engine epoll") || msg.contains("--uring"), "probe error without a fix: {msg}");
                eprintln!("io_uring unavailable here: {msg}");
            }
            Err(e) => panic!("DUET_REQUIRE_URING=1 but the probe failed: {e}"),
        }
    }

    #[test]
    fn probe_rejects_a_buffer_count_that_is_not_a_power_of_two() {
        let opts = duet_http::UringOptions { buf_count: 1000, ..Default::default() };
        let msg = super::probe(&opts, 1).expect_err("1000 buffers accepted").to_string();
        assert!(msg.contains("power of two"), "{msg}");
    }
}
