//! A connection's socket: a process descriptor, or a direct descriptor (a slot of the
//! ring's registered file table, with [`crate::Feature::Direct`]).

pub(super) use crate::sys::{on_sock, Target};
use std::os::fd::{AsRawFd, OwnedFd};

/// Most slots of a ring's file table: 8 bytes of kernel memory each, so 2 MiB at most
/// per ring; below that, the open-file limit (the kernel's bound for a table).
pub(super) const MAX_DIRECT_SLOTS: u64 = 1 << 18;

/// A connection's socket. A process descriptor closes when this is dropped; a direct
/// one is closed through the ring (`IORING_OP_CLOSE` on its slot, see
/// `Worker::close`), or with the ring's file table when the ring goes.
#[derive(Debug)]
pub(super) enum Sock {
    Fd(OwnedFd),
    Direct(u32),
}

impl Sock {
    /// What an entry names to reach this socket.
    #[inline]
    pub(super) fn target(&self) -> Target {
        match self {
            Sock::Fd(fd) => Target::Fd(fd.as_raw_fd()),
            Sock::Direct(slot) => Target::Direct(*slot),
        }
    }
}

/// The file table's size: the open-file soft limit (the kernel refuses a larger
/// table), at most [`MAX_DIRECT_SLOTS`].
pub(super) fn direct_slots() -> u32 {
    crate::sys::nofile_soft_limit().unwrap_or(1024).clamp(16, MAX_DIRECT_SLOTS) as u32
}
