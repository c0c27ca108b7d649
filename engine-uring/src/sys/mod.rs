//! The unsafe layer, one file per subject: `ring` (the ring, its submissions, the
//! `io_uring_enter` wrapper and the completions), `buf_ring` (the provided-buffer rings
//! a ring owns), `send` (the `sendmsg` header kept for an in-flight send); here, what
//! names a socket in an entry ([`Target`], `on_sock!`) and the few raw syscalls.
//!
//! Outside this module the only `unsafe` is the submission sites — [`Ring::push`] is an
//! `unsafe fn` whose contract every caller meets at the call site, with its own
//! `// SAFETY:` for that entry: the one submit path of a connection's operations
//! (`worker::conn`) and the loop's own few — the worker guard's `Drop`, and the one
//! place an accepted descriptor (an accept completion's result) is adopted as an
//! `OwnedFd`. Every syscall made here is counted in `duet_engine::syscalls` by the
//! wrapper that makes it. What the types enforce here:
//! - the ring owns its buffer rings; on drop it closes the ring before it unmaps them,
//!   and unmaps them only when no operation is in flight (it leaks them otherwise:
//!   closing the ring fd does not stop an armed receive synchronously) ([`Ring`]'s
//!   `Drop`), whatever the field order;
//! - a ring has at most one buffer group, because a completion names a buffer by its id
//!   only, not by its group;
//! - a provided buffer named by a completion can be given back once only: it travels as
//!   a [`BufId`] (neither `Clone` nor `Copy`) taken once from its [`Completion`] and
//!   consumed by value by [`BufRing::consume`](buf_ring::BufRing::consume);
//! - [`Ring::in_flight`] counts the operations whose last completion has not been
//!   reaped yet, so a caller can tell when nothing refers to its memory or fds any more.

mod buf_ring;
mod ring;
mod send;

pub use buf_ring::{BufGroup, BufId, BufMode};
pub use ring::{Completion, Ring};
pub use send::{SendHeader, IORING_NOTIF_USAGE_ZC_COPIED};

use std::os::fd::RawFd;

/// What an entry names to reach a socket: a process descriptor, or a slot of the
/// ring's registered file table (a direct descriptor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Fd(RawFd),
    Direct(u32),
}

/// Builds an entry for a socket [`Target`]: `on_sock!(target, t => opcode::X::new(t, ..))`
/// with `t` a `types::Fd` or a `types::Fixed`, as the target is.
macro_rules! on_sock {
    ($target:expr, $t:ident => $entry:expr) => {
        match $target {
            $crate::sys::Target::Fd(fd) => {
                let $t = io_uring::types::Fd(fd);
                $entry
            }
            $crate::sys::Target::Direct(slot) => {
                let $t = io_uring::types::Fixed(slot);
                $entry
            }
        }
    };
}
pub(crate) use on_sock;

/// The open-file soft limit (`None` if unreadable).
pub fn nofile_soft_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    duet_engine::syscalls::count(1);
    // SAFETY: getrlimit writes one `rlimit` into `limit`, which lives across the call.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (got == 0).then_some(limit.rlim_cur)
}

/// `SOCKET_URING_OP_SIOCINQ`: the unread bytes of a socket, as a completion's result.
pub const SOCKET_URING_OP_SIOCINQ: u32 = 0;

#[cfg(test)]
pub(crate) mod test_ring {
    use super::Ring;

    /// A ring, or `None` (with a note) where io_uring is unavailable and not required.
    pub(crate) fn ring(entries: u32) -> Option<Ring> {
        ring_with(entries, false)
    }

    /// [`ring`], with `IORING_SETUP_NO_SQARRAY` tried first when `flat_sq`.
    pub(crate) fn ring_with(entries: u32, flat_sq: bool) -> Option<Ring> {
        match Ring::new(entries, None, flat_sq) {
            Ok(ring) => Some(ring),
            Err(e) if std::env::var("DUET_REQUIRE_URING").as_deref() != Ok("1") => {
                eprintln!("io_uring unavailable here ({e}): skipped");
                None
            }
            Err(e) => panic!("DUET_REQUIRE_URING=1 but no ring: {e}"),
        }
    }
}
