//! A connection's io_uring part ([`ConnIo`], the `io` of its [`Entry`] in the
//! core's slab): its socket, the memory its operations name, and the named states of its
//! receive ([`Recv`]) and its lifecycle ([`Life`]).
//!
//! Every operation of a connection goes through [`ConnIo::submit`]: the one place that
//! builds its entry from what the connection owns, counts it and pushes it, with one
//! audited `unsafe`.

use super::file::FileChunk;
use super::sock::{on_sock, Sock, Target};
use super::token::{Op, Token};
use crate::sys::{BufGroup, Ring, SendHeader, SOCKET_URING_OP_SIOCINQ};
use duet_engine::{ConnId, Entry, EntryIo};
use io_uring::{opcode, types};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

/// The receive side: the connection's one multishot receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Recv {
    /// None armed: armed at the next drive if the connection wants input.
    Off,
    /// Armed: its completions bring input until one comes without `F_MORE`.
    Armed,
    /// Armed, and its cancellation issued (backpressure: `wants_read` went false).
    Cancelling,
    /// Ended with `ENOBUFS`: waits in `Worker::starved` for its turn to re-arm, so a
    /// crowd of senders does not spin on an empty buffer ring.
    Starved,
}

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Life {
    /// Serving.
    Open,
    /// Its write side is shut down (the response that closes it is out): it lingers
    /// until EOF or its linger deadline.
    WriteShut,
    /// A socket error (or a file that cannot be sent): drop it whatever its state.
    Dead,
    /// Cancellation issued; the socket closes when the last operation completes.
    Closing,
}

impl Life {
    /// Input and sent bytes still go to the connection.
    #[inline]
    pub(super) fn is_live(self) -> bool {
        matches!(self, Life::Open | Life::WriteShut)
    }
}

/// One connection: the core's part (its `Connection`, deadline entry, place in the
/// over-budget queue) and this engine's.
pub(super) type Conn = Entry<ConnIo>;

/// A connection's io_uring part. Kept small: an idle keep-alive connection costs this
/// plus the core's part of its entry, and no buffer.
pub(super) struct ConnIo {
    /// The header of the send in flight, if any (put here by [`ConnIo::submit`]).
    pub(super) send: Option<Box<SendHeader>>,
    /// The chunk buffer of a file being streamed, if any.
    pub(super) stream: Option<Box<FileChunk>>,
    /// The connection's socket. Only `Worker::close` closes it, once `ops` is zero:
    /// every completion of every operation naming it has been reaped, so the kernel
    /// never acts on a reused fd number or table slot.
    pub(super) sock: Sock,
    /// Operations whose last completion is still to come.
    ops: u8,
    pub(super) recv: Recv,
    pub(super) life: Life,
    // Two flags that are no state machine: each is independent of the other and of the
    // two states above.
    /// An unread-bytes check through the ring is in flight (direct descriptors).
    pub(super) input_check: bool,
    /// Queued on `Worker::dirty`, for driving at the end of this turn.
    pub(super) dirty: bool,
    /// A poll for writability is in flight (a `sendfile` or a head sent from the loop
    /// found the socket full): no output until it completes.
    pub(super) pollout: bool,
    /// The process fd `sendfile` needs when the socket is a direct descriptor.
    pub(super) installed: Installed,
}

/// A direct descriptor's process fd, installed (`IORING_OP_FIXED_FD_INSTALL`) the first
/// time the connection sends a file body with `sendfile`, and closed with the connection.
#[derive(Debug, Default)]
pub(super) enum Installed {
    /// None asked for.
    #[default]
    No,
    /// The install is in flight: no output until it completes.
    Installing,
    /// The same socket as the table slot, as a process fd.
    Fd(OwnedFd),
    /// The install failed (out of descriptors): this connection's files go through the
    /// chunk buffer.
    Refused,
}

impl EntryIo for ConnIo {
    #[inline]
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.sock {
            Sock::Fd(fd) => Some(fd.as_fd()),
            // A direct descriptor has no fd (the access log turns them off).
            Sock::Direct(_) => None,
        }
    }

    #[inline]
    fn is_closing(&self) -> bool {
        self.life == Life::Closing
    }
}

/// An operation of one connection, as [`ConnIo::submit`] builds it from what the
/// connection owns.
pub(super) enum ConnOp {
    /// The multishot receive, selecting from `group` (in bundles with `bundle`).
    Recv { group: BufGroup, bundle: bool },
    /// Cancels the receive (backpressure).
    CancelRecv,
    /// Cancels every operation on the socket (closing).
    CancelAll,
    /// Sends what `header` holds; the header moves into `send` until the send's last
    /// completion. `plain`: one segment may go as a `send`; `zero_copy`: `SEND_ZC`.
    Send { header: Box<SendHeader>, plain: bool, zero_copy: bool },
    /// Reads `len` bytes (at most the chunk's size) of `file` at `offset` into the
    /// connection's chunk buffer.
    FileRead { file: RawFd, offset: u64, len: usize },
    /// Sends the next `len` unsent bytes of the connection's chunk buffer.
    FileSend { len: usize },
    /// Asks the socket's unread bytes through the ring (direct descriptors).
    InputCheck,
    /// Shuts the socket's write side down through the ring (direct descriptors).
    ShutdownWrite,
    /// A one-shot poll until the socket is writable (it was full for `sendfile`).
    PollOut,
    /// Gives the direct descriptor a process fd, for `sendfile`.
    InstallFd,
    /// Splices `len` bytes of `file` at `offset` into the chunk's pipe, linked to the
    /// `SpliceOut` pushed right after it.
    SpliceIn { file: RawFd, offset: u64, len: usize },
    /// Splices `len` bytes from the chunk's pipe to the socket.
    SpliceOut { len: usize },
}

impl ConnIo {
    pub(super) fn new(sock: Sock) -> ConnIo {
        ConnIo {
            send: None,
            stream: None,
            sock,
            ops: 0,
            recv: Recv::Off,
            life: Life::Open,
            input_check: false,
            dirty: false,
            pollout: false,
            installed: Installed::No,
        }
    }

    /// The socket as a process fd, for the calls made from the loop (`sendfile`): its
    /// own, or the one installed for its direct descriptor.
    #[inline]
    pub(super) fn process_fd(&self) -> Option<BorrowedFd<'_>> {
        match (&self.sock, &self.installed) {
            (Sock::Fd(fd), _) | (Sock::Direct(_), Installed::Fd(fd)) => Some(fd.as_fd()),
            _ => None,
        }
    }

    /// No output may start now: a send, a poll for writability, an fd install or a
    /// file chunk's operation is in flight.
    #[inline]
    pub(super) fn output_busy(&self) -> bool {
        self.send.is_some()
            || self.pollout
            || matches!(self.installed, Installed::Installing)
            || self.stream.as_ref().is_some_and(|c| c.busy)
    }

    /// Queues connection `id` on `dirty` once per turn.
    #[inline]
    pub(super) fn mark_dirty(&mut self, id: ConnId, dirty: &mut Vec<ConnId>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push(id);
        }
    }

    /// What an entry names to reach the socket.
    #[inline]
    pub(super) fn target(&self) -> Target {
        self.sock.target()
    }

    /// A socket error, or a body that cannot be sent: the connection goes (a closing
    /// one is going already).
    #[inline]
    pub(super) fn fail(&mut self) {
        if self.life != Life::Closing {
            self.life = Life::Dead;
        }
    }

    /// No operation of this connection is in flight: its socket and memory are ours.
    #[inline]
    pub(super) fn settled(&self) -> bool {
        self.ops == 0
    }

    /// The last completion of one of its operations was reaped.
    #[inline]
    pub(super) fn op_done(&mut self) {
        debug_assert!(self.ops > 0, "a completion for an operation that was not counted");
        self.ops = self.ops.saturating_sub(1);
    }

    /// Tearing down, once the ring has no operation in flight at all: whatever the
    /// count says, none of this connection's is.
    pub(super) fn ring_settled(&mut self) {
        self.ops = 0;
    }

    /// Builds connection `id`'s operation `op` from what this part owns, counts it, and
    /// pushes it to `ring`. The only place a connection's operation is submitted.
    pub(super) fn submit(&mut self, ring: &mut Ring, id: ConnId, op: ConnOp) -> io::Result<()> {
        let target = self.target();
        // What each entry names beyond the socket, and why it outlives the operation,
        // is said arm by arm; the SAFETY below relies on these notes.
        let (entry, op) = match op {
            // Writes only into buffers of `group`, which the ring owns: mapped for as
            // long as the ring exists, and the ring outlives its operations.
            ConnOp::Recv { group, bundle } => {
                let entry = if bundle {
                    on_sock!(target, t => opcode::RecvMultiBundle::new(t, group.id()).build())
                } else {
                    on_sock!(target, t => opcode::RecvMulti::new(t, group.id()).build())
                };
                (entry, Op::Recv)
            }
            // By user_data: no memory, no fd.
            ConnOp::CancelRecv => {
                let recv = Token::conn(Op::Recv, id).user_data();
                (opcode::AsyncCancel2::new(types::CancelBuilder::user_data(recv)).build(), Op::Cancel)
            }
            // No memory; the socket only to match operations on it.
            ConnOp::CancelAll => {
                let cancel = on_sock!(target, t => types::CancelBuilder::fd(t).all());
                (opcode::AsyncCancel2::new(cancel).build(), Op::Cancel)
            }
            // The `msghdr` and `iovec`s are in the boxed header, which stays in
            // `self.send` until this send's last completion (`on_send` takes it; for a
            // zero-copy send that is its notification, after which the kernel no longer
            // reads the segments). The iovecs point at the output segments of the
            // entry's `Connection`, which holds them unchanged until `handle_sent`
            // (contract rule 5: Output), called only from that last completion, or until
            // it is dropped, which `Worker::close` does only once `ops` is zero. And they
            // point into heap storage, never into the `Connection` value itself
            // (duet-http's rule: `OutBuf`'s docs, contract rule 5 in `duet_engine`,
            // pinned by http/tests/output_segments.rs): the slab moves entries when it
            // grows, and the segments stay where they are. An iovec into a file mapping
            // (`mapped`) is covered by the header too: it holds an `Arc` of the mapping,
            // released only when `on_send` takes the header at that same last
            // completion, so the unmap cannot come while the kernel may read it; and no
            // Rust code reads the mapping, so a truncated file is `EFAULT` in this send,
            // never SIGBUS.
            ConnOp::Send { header, plain, zero_copy } => {
                // One send at a time: the header of one in flight is never replaced.
                if self.send.is_some() {
                    return Err(busy());
                }
                let header = self.send.insert(header);
                (header.entry(target, plain, zero_copy), Op::Send)
            }
            // Writes into the boxed chunk buffer in `self.stream`, marked busy: neither
            // moved, freed, read nor written by the engine until `on_file_read`. The
            // file stays open: the connection's front output segment holds its
            // `Arc<File>` until that segment is reported sent, which needs this chunk's
            // send, which starts only after this read completes.
            ConnOp::FileRead { file, offset, len } => {
                let chunk = self.stream.as_mut().filter(|c| !c.busy).ok_or_else(no_chunk)?;
                let buf = chunk.start_read(len);
                (
                    opcode::Read::new(types::Fd(file), buf.as_mut_ptr(), buf.len() as u32).offset(offset).build(),
                    Op::FileRead,
                )
            }
            // Reads the boxed chunk buffer, busy (as above) until `on_file_send`.
            ConnOp::FileSend { len } => {
                let chunk = self.stream.as_mut().filter(|c| !c.busy).ok_or_else(no_chunk)?;
                let rest = chunk.start_send(len);
                let (buf, len) = (rest.as_ptr(), rest.len() as u32);
                (on_sock!(target, t => opcode::Send::new(t, buf, len).flags(libc::MSG_NOSIGNAL).build()), Op::FileSend)
            }
            // No memory: a command on the table slot.
            ConnOp::InputCheck => {
                let Target::Direct(slot) = target else { return Err(not_direct()) };
                (opcode::UringCmd16::new(types::Fixed(slot), SOCKET_URING_OP_SIOCINQ).build(), Op::InputCheck)
            }
            // No memory. Sends complete before this is queued (one at a time, and none
            // in flight when the output is flushed), so the FIN follows them.
            ConnOp::ShutdownWrite => {
                let Target::Direct(slot) = target else { return Err(not_direct()) };
                (opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_WR).build(), Op::Shutdown)
            }
            // No memory: the socket only. One at a time (`pollout` until its completion).
            ConnOp::PollOut => {
                if self.pollout {
                    return Err(busy());
                }
                self.pollout = true;
                (on_sock!(target, t => opcode::PollAdd::new(t, libc::POLLOUT as u32).build()), Op::PollOut)
            }
            // No memory: the table slot only; the fd it makes is adopted from the result.
            ConnOp::InstallFd => {
                let Target::Direct(slot) = target else { return Err(not_direct()) };
                if !matches!(self.installed, Installed::No) {
                    return Err(busy());
                }
                self.installed = Installed::Installing;
                (opcode::FixedFdInstall::new(types::Fixed(slot), 0).build(), Op::InstallFd)
            }
            // The pipe is in the boxed chunk in `self.stream`, busy (`splicing`) until
            // both splices' completions: it is neither closed nor reused before. The file
            // is held by the front output segment, as for `FileRead`.
            ConnOp::SpliceIn { file, offset, len } => {
                let chunk = self.stream.as_mut().ok_or_else(no_chunk)?;
                let w = chunk.pipe_in().ok_or_else(no_chunk)?;
                chunk.splicing += 1;
                chunk.busy = true;
                let entry = opcode::Splice::new(types::Fd(file), offset as i64, types::Fd(w), -1, len as u32)
                    .flags(libc::SPLICE_F_MOVE)
                    .build()
                    .flags(io_uring::squeue::Flags::IO_LINK);
                (entry, Op::SpliceIn)
            }
            ConnOp::SpliceOut { len } => {
                let chunk = self.stream.as_mut().ok_or_else(no_chunk)?;
                let r = chunk.pipe_out().ok_or_else(no_chunk)?;
                chunk.splicing += 1;
                chunk.busy = true;
                chunk.offered = len;
                let entry = on_sock!(target, t => opcode::Splice::new(types::Fd(r), -1, t, -1, len as u32)
                    .flags(libc::SPLICE_F_MOVE)
                    .build());
                (entry, Op::SpliceOut)
            }
        };
        let entry = entry.user_data(Token::conn(op, id).user_data());
        // SAFETY: `Ring::push` needs what the entry names to outlive its last completion.
        // - The socket (fd or table slot), named by every entry but `CancelRecv`,
        //   `FileRead` and `SpliceIn` (which name the file, see their note): it is `self.sock`, which
        //   `Worker::close` closes only once `ops` (counting this operation right after
        //   the push) is back to zero, and only `close` drops a connection.
        // - Memory: per operation, as noted at each arm above. Nothing points into the
        //   entry (which moves when the slab grows): only into boxes this part owns,
        //   into the heap the `Connection` holds, and into the ring's buffers.
        // - However the worker ends (return, error or unwind), its guard
        //   (`worker::Guard`) reaps every completion before any of this is freed, or
        //   leaks it all.
        unsafe { ring.push(&entry) }?;
        self.ops += 1;
        Ok(())
    }
}

#[cold]
fn no_chunk() -> io::Error {
    io::Error::other("a file operation on a connection with no idle chunk buffer")
}

#[cold]
fn busy() -> io::Error {
    io::Error::other("a send on a connection with a send in flight")
}

#[cold]
fn not_direct() -> io::Error {
    io::Error::other("a ring socket command on a connection without a direct descriptor")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::test_ring::ring;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// `submit` counts each operation it pushes (the connection is not settled until
    /// its last completion), and refuses one whose memory is not the connection's to
    /// give: a second send while one is in flight, a file send with no chunk buffer, a
    /// ring socket command without a direct descriptor. A refused one is not counted.
    #[test]
    fn submit_counts_each_operation_and_refuses_one_whose_memory_is_not_there() {
        let Some(mut ring) = ring(8) else { return };
        let (local, _peer) = UnixStream::pair().expect("socket pair");
        let mut io = ConnIo::new(Sock::Fd(OwnedFd::from(local)));
        let id = ConnId { index: 3, generation: 5 };
        assert!(io.submit(&mut ring, id, ConnOp::FileSend { len: 1 }).is_err(), "no chunk buffer");
        assert!(io.submit(&mut ring, id, ConnOp::InputCheck).is_err(), "not a direct descriptor");
        assert!(io.settled() && ring.in_flight() == 0);

        io.submit(&mut ring, id, ConnOp::CancelRecv).expect("a cancellation");
        let send = || ConnOp::Send { header: SendHeader::boxed(), plain: false, zero_copy: false };
        io.submit(&mut ring, id, send()).expect("a send (of nothing)");
        assert!(io.submit(&mut ring, id, send()).is_err(), "a second send while one is in flight");
        assert!(!io.settled());
        assert_eq!(ring.in_flight(), 2);

        let mut reaped = Vec::new();
        let mut cqes = Vec::new();
        while reaped.len() < 2 {
            ring.submit_and_wait_timeout(1, Duration::from_millis(100)).expect("enter");
            ring.reap(&mut cqes, 8);
            for cqe in &cqes {
                assert!(!cqe.more());
                io.op_done();
                reaped.push(Token::try_from(cqe.user_data()).expect("ours"));
            }
        }
        reaped.sort_by_key(|t| t.op as u8);
        assert_eq!(reaped, [Token::conn(Op::Send, id), Token::conn(Op::Cancel, id)]);
        assert!(io.settled(), "every completion reaped");
    }
}
