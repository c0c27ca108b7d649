//! accept: the one multishot accept on the worker's listener and its completion, with
//! every failure handled by the shared [`duet_engine::AcceptPolicy`]. Waiting for the
//! listener (out of descriptors, nothing pending) is one poll on it, not an accept
//! re-armed at once: Linux fails an accept with `EMFILE` before it looks at the
//! backlog, so re-arming would spin.

use super::sock::Sock;
use super::token::{loop_token, Op};
use super::{Slot, Worker};
use crate::Feature;
use duet_engine::{socket, AcceptFailure, Next};
use io_uring::{opcode, types};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

impl Worker {
    /// Arms the multishot accept unless it is armed, waiting for the listener, paused
    /// by the policy, or over (draining).
    pub(super) fn arm_accept(&mut self) -> io::Result<()> {
        if self.drain.is_draining() || self.accept_armed || self.accept_waiting || self.accept.is_paused() {
            return Ok(());
        }
        let Some(listener) = self.listener.as_ref() else { return Ok(()) };
        // Direct: each socket goes into a free slot of the ring's file table (no process
        // fd, so no close-on-exec flag, which the kernel refuses there).
        let direct = self.features.has(Feature::Direct);
        let entry = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
            .allocate_file_index(direct)
            .flags(if direct { libc::SOCK_NONBLOCK } else { libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK })
            .build()
            .user_data(loop_token(Op::Accept));
        // SAFETY: the accept refers to no memory (no address buffer). The listener stays
        // in `self.listener` while `accept_armed` is true: it is dropped only when
        // neither the accept nor the listener poll is in flight (`release_listener`).
        unsafe { self.ring.push(&entry) }?;
        self.accept_armed = true;
        Ok(())
    }

    /// Waits for the listener to become readable (one-shot poll) before accepting again.
    fn wait_for_listener(&mut self) {
        if self.accept_waiting || self.drain.is_draining() {
            return;
        }
        let Some(listener) = self.listener.as_ref() else { return };
        let entry = opcode::PollAdd::new(types::Fd(listener.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(loop_token(Op::AcceptPoll));
        // SAFETY: a poll refers to no memory. The listener stays in `self.listener` while
        // `accept_waiting` is true (see `release_listener`).
        match unsafe { self.ring.push(&entry) } {
            Ok(()) => self.accept_waiting = true,
            // Could not wait on the listener: let the policy's retry time bring the
            // accept back instead.
            Err(e) => warn_once_poll(e),
        }
    }

    /// The listener is readable (or the poll was cancelled): accept again.
    pub(super) fn on_accept_poll(&mut self) {
        self.accept_waiting = false;
        self.release_listener();
    }

    /// Draining: no new connections. The listener closes (so the kernel refuses
    /// connections instead of queueing them) once no operation names it, after the
    /// connections it holds are taken in; the accept's completions that still come
    /// are taken in too, draining from the start.
    pub(super) fn stop_accepting(&mut self) -> io::Result<()> {
        for (armed, op) in [(self.accept_armed, Op::Accept), (self.accept_waiting, Op::AcceptPoll)] {
            if armed {
                let entry = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(loop_token(op)))
                    .build()
                    .user_data(loop_token(Op::Global));
                // SAFETY: a cancellation by user_data refers to no memory and no fd.
                unsafe { self.ring.push(&entry) }?;
            }
        }
        self.release_listener();
        Ok(())
    }

    /// Drops the listener once draining and no accept or poll names it, taking in the
    /// connections it still holds first.
    fn release_listener(&mut self) {
        if self.drain.is_draining() && !self.accept_armed && !self.accept_waiting {
            self.accept_pending();
            self.listener = None;
        }
    }

    pub(super) fn on_accept(&mut self, res: i32, more: bool) {
        if !more {
            self.accept_armed = false;
            self.release_listener();
        }
        if res >= 0 && self.features.has(Feature::Direct) {
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
            self.stats.syscalls += 1;
            if self.stopping {
                drop(fd);
                return;
            }
            self.adopt(Sock::Fd(fd));
            return;
        }
        if -res == libc::ECANCELED || self.stopping || self.drain.is_draining() {
            return;
        }
        let now = self.ctx.now();
        // A direct accept's ENFILE is a full file table (the kernel closed the
        // connection it took): the policy counts and names it.
        let failure =
            if self.features.has(Feature::Direct) { AcceptFailure::Direct(-res) } else { AcceptFailure::Process(-res) };
        let next = match (self.accept.on_failure(failure, now), self.listener.as_ref()) {
            (Next::Shed, Some(listener)) => self.accept.shed(listener.as_fd(), now),
            (next, _) => next,
        };
        match next {
            // Re-armed by `arm_loop_ops` if the multishot accept ended.
            Next::Again => {}
            Next::Wait => self.wait_for_listener(),
            // `arm_loop_ops` re-arms once the policy's retry time comes or a close
            // frees a descriptor.
            Next::Pause | Next::Shed => {}
        }
    }

    /// Takes an accepted connection in (drained from the start if draining, see
    /// [`duet_engine::accepted`]). TCP_NODELAY comes from the listener (set once in
    /// `run`).
    fn adopt(&mut self, sock: Sock) {
        self.accept.on_accepted();
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
        // Out of the worker while it accepts, so adopting can borrow the rest.
        let Some(listener) = self.listener.take() else { return };
        // Until EAGAIN (none left) or any other error (the listener closes anyway).
        while let Ok(fd) = socket::accept(listener.as_fd()) {
            self.adopt(Sock::Fd(fd));
        }
        self.listener = Some(listener);
    }

    /// A connection closed: a descriptor is free, so a paused accept is armed again.
    pub(super) fn fd_freed(&mut self) {
        self.accept.on_fd_freed();
    }
}

#[cold]
fn warn_once_poll(e: io::Error) {
    tracing::warn!("cannot wait on the listener: {e}; retrying the accept later");
}
