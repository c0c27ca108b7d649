//! accept: the one multishot accept on the worker's listener (the core's) and its
//! completion, with every failure sent through the core's accept policy
//! ([`duet_engine::WorkerCore::accept_failed`]). Waiting for the listener (out of
//! descriptors, nothing pending) is one poll on it, not an accept re-armed at once:
//! Linux fails an accept with `EMFILE` before it looks at the backlog, so re-arming would
//! spin.

use super::conn::ConnIo;
use super::sock::Sock;
use super::token::{Op, Token};
use super::Worker;
use crate::sys::Ring;
use duet_engine::{syscalls, AcceptFailure, Next, WorkerCore};
use io_uring::{opcode, types};
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The operations on the listener: the multishot accept, or the poll that waits for
/// it to be readable. The listener itself is the core's; it is closed only when neither
/// is in flight ([`Worker::release_listener`]).
pub(super) struct Acceptor {
    /// The multishot accept is armed.
    armed: bool,
    /// A poll on the listener is in flight: accept again only once it is readable.
    polling: bool,
    /// Direct descriptors: accepted sockets go into the ring's file table.
    direct: bool,
}

impl Acceptor {
    pub(super) fn new(direct: bool) -> Acceptor {
        Acceptor { armed: false, polling: false, direct }
    }

    /// Arms the multishot accept on `core`'s listener unless it is armed, waiting for
    /// the listener, paused by the policy, or over (draining, or no listener).
    pub(super) fn arm(&mut self, ring: &mut Ring, core: &WorkerCore<ConnIo>) -> io::Result<()> {
        if core.drain.is_draining() || self.armed || self.polling || core.accept.is_paused() {
            return Ok(());
        }
        let Some(listener) = core.listener.as_ref() else { return Ok(()) };
        // Direct: each socket goes into a free slot of the ring's file table (no process
        // fd, so no close-on-exec flag, which the kernel refuses there).
        let direct = self.direct;
        let entry = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
            .allocate_file_index(direct)
            .flags(if direct { libc::SOCK_NONBLOCK } else { libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK })
            .build()
            .user_data(Token::of_loop(Op::Accept).user_data());
        // SAFETY: the accept refers to no memory (no address buffer). The listener stays
        // in the core while `armed` is true: it is closed only when neither the accept
        // nor the listener poll is in flight (`Worker::release_listener`), and the worker
        // owning it outlives its operations (its guard reaps them, or leaks).
        unsafe { ring.push(&entry) }?;
        self.armed = true;
        Ok(())
    }

    /// Waits for `listener` to become readable (one-shot poll) before accepting again.
    fn wait_for_listener(&mut self, ring: &mut Ring, listener: Option<&TcpListener>) {
        if self.polling {
            return;
        }
        let Some(listener) = listener else { return };
        let entry = opcode::PollAdd::new(types::Fd(listener.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(Token::of_loop(Op::AcceptPoll).user_data());
        // SAFETY: a poll refers to no memory. The listener stays in the core while
        // `polling` is true (see `Worker::release_listener`).
        match unsafe { ring.push(&entry) } {
            Ok(()) => self.polling = true,
            // Could not wait on the listener: let the policy's retry time bring the
            // accept back instead.
            Err(e) => warn_once_poll(e),
        }
    }

    /// Cancels the accept and the listener poll in flight.
    fn cancel(&mut self, ring: &mut Ring) -> io::Result<()> {
        for (in_flight, op) in [(self.armed, Op::Accept), (self.polling, Op::AcceptPoll)] {
            if in_flight {
                let entry = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(Token::of_loop(op).user_data()))
                    .build()
                    .user_data(Token::of_loop(Op::Global).user_data());
                // SAFETY: a cancellation by user_data refers to no memory and no fd.
                unsafe { ring.push(&entry) }?;
            }
        }
        Ok(())
    }

    /// No accept or poll names the listener.
    fn idle(&self) -> bool {
        !self.armed && !self.polling
    }
}

impl Worker {
    /// The listener is readable (or the poll was cancelled): accept again.
    pub(super) fn on_accept_poll(&mut self) {
        self.accept.polling = false;
        self.release_listener();
    }

    /// Draining: no new connections. The listener closes (so the kernel refuses
    /// connections instead of queueing them) once no operation names it, after the
    /// connections it holds are taken in; the accept's completions that still come
    /// are taken in too, draining from the start.
    pub(super) fn stop_accepting(&mut self) -> io::Result<()> {
        self.accept.cancel(&mut self.ring)?;
        self.release_listener();
        Ok(())
    }

    /// Closes the listener once draining and no accept or poll names it, taking in the
    /// connections it still holds first (the kernel accepted them and their clients may
    /// have sent requests: closing the listener would reset them).
    fn release_listener(&mut self) {
        if !self.core.drain.is_draining() || !self.accept.idle() {
            return;
        }
        while let Some(fd) = self.core.accept_next() {
            self.adopt(Sock::Fd(fd));
        }
        if let Some(listener) = self.core.listener.take() {
            syscalls::close(listener);
        }
    }

    pub(super) fn on_accept(&mut self, res: i32, more: bool) {
        if !more {
            self.accept.armed = false;
            self.release_listener();
        }
        if res >= 0 && self.accept.direct {
            // The slot of the ring's file table the socket was installed in. Tearing
            // down, the table closes it with the ring.
            if !self.stopping {
                self.adopt(Sock::Direct(res as u32));
            }
            return;
        }
        if res >= 0 {
            // SAFETY: a successful accept completion's result is a socket the kernel has
            // just installed in this process's table for this worker; nothing else owns
            // it.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            // The accept was the ring's work, no syscall of ours; the close is.
            if self.stopping {
                syscalls::close(fd);
                return;
            }
            self.adopt(Sock::Fd(fd));
            return;
        }
        if -res == libc::ECANCELED || self.stopping || self.core.drain.is_draining() {
            return;
        }
        // A direct accept's ENFILE is a full file table (the kernel closed the
        // connection it took): the policy counts and names it.
        let failure = if self.accept.direct { AcceptFailure::Direct(-res) } else { AcceptFailure::Process(-res) };
        match self.core.accept_failed(failure) {
            // Re-armed by `arm_loop_ops` if the multishot accept ended.
            Next::Again => {}
            Next::Wait => self.accept.wait_for_listener(&mut self.ring, self.core.listener.as_ref()),
            // `arm_loop_ops` re-arms once the policy's retry time comes or a close
            // frees a descriptor.
            Next::Pause | Next::Shed => {}
        }
    }

    /// Takes an accepted connection in (the core makes its `Connection`: draining from
    /// the start if the worker drains). TCP_NODELAY comes from the listener (set once
    /// in `Worker::new`).
    fn adopt(&mut self, sock: Sock) {
        let id = self.core.adopt(ConnIo::new(sock));
        self.mark_dirty(id);
    }
}

#[cold]
fn warn_once_poll(e: io::Error) {
    tracing::warn!("cannot wait on the listener: {e}; retrying the accept later");
}
