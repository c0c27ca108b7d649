//! accept: the one multishot accept on the worker's listener and its completion, with
//! every failure handled by the shared [`duet_engine::AcceptPolicy`]. Waiting for the
//! listener (out of descriptors, nothing pending) is one poll on it, not an accept
//! re-armed at once: Linux fails an accept with `EMFILE` before it looks at the
//! backlog, so re-arming would spin.

use super::slot::Slot;
use super::sock::Sock;
use super::token::{Op, Token};
use super::Worker;
use crate::sys::Ring;
use duet_engine::{socket, syscalls, AcceptFailure, AcceptPolicy, Next};
use io_uring::{opcode, types};
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// The worker's acceptor: its listener, the one multishot accept or listener poll in
/// flight on it, and the policy every accept result goes through.
pub(super) struct Acceptor {
    /// Closed (so the kernel refuses new connections) once draining has stopped the
    /// accept; never while an accept or a poll naming it is in flight.
    listener: Option<TcpListener>,
    /// The multishot accept is armed.
    armed: bool,
    /// A poll on the listener is in flight: accept again only once it is readable.
    waiting: bool,
    /// Direct descriptors: accepted sockets go into the ring's file table.
    direct: bool,
    pub(super) policy: AcceptPolicy,
}

impl Acceptor {
    pub(super) fn new(listener: TcpListener, direct: bool) -> Acceptor {
        Acceptor { listener: Some(listener), armed: false, waiting: false, direct, policy: AcceptPolicy::new() }
    }

    /// Arms the multishot accept unless it is armed, waiting for the listener, paused
    /// by the policy, or over (`draining`).
    fn arm(&mut self, ring: &mut Ring, draining: bool) -> io::Result<()> {
        if draining || self.armed || self.waiting || self.policy.is_paused() {
            return Ok(());
        }
        let Some(listener) = self.listener.as_ref() else { return Ok(()) };
        // Direct: each socket goes into a free slot of the ring's file table (no process
        // fd, so no close-on-exec flag, which the kernel refuses there).
        let direct = self.direct;
        let entry = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
            .allocate_file_index(direct)
            .flags(if direct { libc::SOCK_NONBLOCK } else { libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK })
            .build()
            .user_data(Token::of_loop(Op::Accept).user_data());
        // SAFETY: the accept refers to no memory (no address buffer). The listener stays
        // in `self.listener` while `armed` is true: it is dropped only when neither the
        // accept nor the listener poll is in flight (`Worker::release_listener`), and
        // the worker owning it outlives its operations (its guard reaps them, or leaks).
        unsafe { ring.push(&entry) }?;
        self.armed = true;
        Ok(())
    }

    /// Waits for the listener to become readable (one-shot poll) before accepting again.
    fn wait_for_listener(&mut self, ring: &mut Ring, draining: bool) {
        if self.waiting || draining {
            return;
        }
        let Some(listener) = self.listener.as_ref() else { return };
        let entry = opcode::PollAdd::new(types::Fd(listener.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(Token::of_loop(Op::AcceptPoll).user_data());
        // SAFETY: a poll refers to no memory. The listener stays in `self.listener` while
        // `waiting` is true (see `Worker::release_listener`).
        match unsafe { ring.push(&entry) } {
            Ok(()) => self.waiting = true,
            // Could not wait on the listener: let the policy's retry time bring the
            // accept back instead.
            Err(e) => warn_once_poll(e),
        }
    }

    /// Cancels the accept and the listener poll in flight.
    fn cancel(&mut self, ring: &mut Ring) -> io::Result<()> {
        for (in_flight, op) in [(self.armed, Op::Accept), (self.waiting, Op::AcceptPoll)] {
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
        !self.armed && !self.waiting
    }
}

impl Worker {
    /// Arms the multishot accept unless it is armed, waiting, paused or over.
    pub(super) fn arm_accept(&mut self) -> io::Result<()> {
        self.accept.arm(&mut self.ring, self.drain.is_draining())
    }

    /// The listener is readable (or the poll was cancelled): accept again.
    pub(super) fn on_accept_poll(&mut self) {
        self.accept.waiting = false;
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

    /// Drops the listener once draining and no accept or poll names it, taking in the
    /// connections it still holds first.
    fn release_listener(&mut self) {
        if self.drain.is_draining() && self.accept.idle() {
            self.accept_pending();
            if let Some(listener) = self.accept.listener.take() {
                syscalls::close(listener);
            }
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
        if -res == libc::ECANCELED || self.stopping || self.drain.is_draining() {
            return;
        }
        let now = self.ctx.now();
        let accept = &mut self.accept;
        // A direct accept's ENFILE is a full file table (the kernel closed the
        // connection it took): the policy counts and names it.
        let failure = if accept.direct { AcceptFailure::Direct(-res) } else { AcceptFailure::Process(-res) };
        let next = match (accept.policy.on_failure(failure, now), accept.listener.as_ref()) {
            (Next::Shed, Some(listener)) => accept.policy.shed(listener.as_fd(), now),
            (next, _) => next,
        };
        match next {
            // Re-armed by `arm_loop_ops` if the multishot accept ended.
            Next::Again => {}
            Next::Wait => self.accept.wait_for_listener(&mut self.ring, self.drain.is_draining()),
            // `arm_loop_ops` re-arms once the policy's retry time comes or a close
            // frees a descriptor.
            Next::Pause | Next::Shed => {}
        }
    }

    /// Takes an accepted connection in (drained from the start if draining, see
    /// [`duet_engine::accepted`]). TCP_NODELAY comes from the listener (set once in
    /// `run`).
    fn adopt(&mut self, sock: Sock) {
        self.accept.policy.on_accepted();
        // A direct descriptor has no fd for the peer's address (the access log turns
        // them off).
        let fd = match &sock {
            Sock::Fd(fd) => Some(fd.as_fd()),
            Sock::Direct(_) => None,
        };
        let conn = duet_engine::accepted(&mut self.ctx, fd, &self.drain);
        let id = self.slots.insert(Slot::new(conn, sock));
        self.mark_dirty(id);
        self.stats.accepted += 1;
    }

    /// Draining: takes in the connections the kernel has already accepted, so closing
    /// the listener resets none of them (their clients may have sent requests).
    fn accept_pending(&mut self) {
        // Out of the acceptor while it accepts, so adopting can borrow the worker.
        let Some(listener) = self.accept.listener.take() else { return };
        // Until EAGAIN (none left) or any other error (the listener closes anyway).
        while let Ok(fd) = socket::accept(listener.as_fd()) {
            self.adopt(Sock::Fd(fd));
        }
        self.accept.listener = Some(listener);
    }

    /// A connection closed: a descriptor is free, so a paused accept is armed again.
    pub(super) fn fd_freed(&mut self) {
        self.accept.policy.on_fd_freed();
    }
}

#[cold]
fn warn_once_poll(e: io::Error) {
    tracing::warn!("cannot wait on the listener: {e}; retrying the accept later");
}
