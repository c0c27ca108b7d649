//! accept: the one multishot accept on the worker's listener, its completion, and
//! running out of file descriptors (EMFILE/ENFILE), which never spins.
//!
//! Kept in one place because the shared accept policy will replace it.

use super::token::{token, Op};
use super::{Slot, Worker, TICK};
use crate::sys;
use duet_http::Connection;
use io_uring::{opcode, types};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;
use tracing::warn;

/// Pending connections dropped per EMFILE completion.
const EMFILE_DROP_BATCH: usize = 64;
/// Wheel key for "retry accepting" after running out of file descriptors.
pub(super) const ACCEPT_RETRY: (u32, u32) = (u32::MAX, 0);

impl Worker {
    /// Arms the multishot accept unless it is armed, paused or over (draining).
    pub(super) fn arm_accept(&mut self) -> io::Result<()> {
        if !self.accepting || self.accept_armed || self.accept_paused {
            return Ok(());
        }
        let Some(listener) = self.listener.as_ref() else { return Ok(()) };
        let entry = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build()
            .user_data(token(Op::Accept, 0, 0));
        // SAFETY: the accept refers to no memory (no address buffer). The listener stays
        // in `self.listener` while `accept_armed` is true: it is dropped only by
        // `stop_accepting` when no accept is armed, or by `on_accept` on the accept's
        // last completion.
        unsafe { self.ring.push(&entry) }?;
        self.accept_armed = true;
        Ok(())
    }

    /// Draining: no new connections. The listener closes (so the kernel refuses
    /// connections instead of queueing them) once no accept names it.
    pub(super) fn stop_accepting(&mut self) -> io::Result<()> {
        self.accepting = false;
        if !self.accept_armed {
            self.listener = None;
            return Ok(());
        }
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(token(Op::Accept, 0, 0)))
            .build()
            .user_data(token(Op::Global, 0, 0));
        // SAFETY: a cancellation by user_data refers to no memory and no fd.
        unsafe { self.ring.push(&entry) }?;
        Ok(())
    }

    pub(super) fn on_accept(&mut self, res: i32, more: bool) {
        if !more {
            self.accept_armed = false;
            if !self.accepting {
                // Draining: the accept is gone for good, so stop the kernel queueing
                // connections nobody will take (they are refused instead).
                self.listener = None;
            }
        }
        if res >= 0 {
            // SAFETY: a successful accept completion's result is a socket the kernel has
            // just installed in this process's table for this worker; nothing else owns
            // it.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            self.ctx.stats.syscalls += 1;
            if !self.accepting || self.stopping {
                drop(fd);
                return;
            }
            sys::set_nodelay(fd.as_fd());
            let idx = match self.free.pop() {
                Some(idx) => idx,
                None => {
                    self.slots.push(Slot::vacant());
                    (self.slots.len() - 1) as u32
                }
            };
            let s = &mut self.slots[idx as usize];
            s.conn = Some(Connection::new(&self.ctx));
            s.fd = Some(fd);
            s.dirty = true;
            self.dirty.push(idx);
            self.live += 1;
            self.ctx.stats.accepted += 1;
            return;
        }
        match -res {
            libc::ECANCELED => {}
            libc::EMFILE | libc::ENFILE => self.out_of_fds(res),
            // The peer gave up, or a signal: nothing wrong with the listener.
            libc::ECONNABORTED
            | libc::EINTR
            | libc::EAGAIN
            | libc::EPROTO
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH => {}
            _ => {
                warn!("accept failed: {}; retrying in {} ms", io::Error::from_raw_os_error(-res), TICK.as_millis());
                self.pause_accept();
            }
        }
    }

    /// EMFILE/ENFILE: trade the spare fd for accept-and-close of pending connections
    /// (clients get a close instead of hanging), or pause until something closes.
    fn out_of_fds(&mut self, res: i32) {
        if !self.emfile_logged {
            self.emfile_logged = true;
            warn!(
                "out of file descriptors ({}): closing new connections until some close (raise `ulimit -n`)",
                io::Error::from_raw_os_error(-res)
            );
        }
        match self.spare.take() {
            Some(spare) => {
                drop(spare);
                self.ctx.stats.syscalls += 2; // close and reopen the spare
                let Some(listener) = self.listener.as_ref() else { return };
                for _ in 0..EMFILE_DROP_BATCH {
                    self.ctx.stats.syscalls += 1;
                    if !sys::accept_and_close(listener.as_fd()) {
                        break;
                    }
                    self.ctx.stats.syscalls += 1;
                }
                self.spare = File::open("/dev/null").ok();
                if self.spare.is_none() {
                    self.pause_accept();
                }
            }
            None => {
                self.spare = File::open("/dev/null").ok();
                self.pause_accept();
            }
        }
    }

    fn pause_accept(&mut self) {
        self.accept_paused = true;
        let at = self.ctx.now() + TICK;
        self.accept_retry_at = Some(at);
        self.wheel.arm(at, ACCEPT_RETRY);
        self.note_wake(at);
    }

    fn resume_accept(&mut self) {
        self.accept_paused = false;
        self.accept_retry_at = None;
    }

    /// The retry time of a paused accept may have come (its wheel key fired).
    pub(super) fn accept_retry_due(&mut self, now: Instant) {
        if self.accept_retry_at.is_some_and(|at| at <= now) {
            self.resume_accept();
        }
    }

    /// A connection closed: an fd is free, so a paused accept can try again.
    pub(super) fn fd_freed(&mut self) {
        if self.accept_paused {
            self.resume_accept();
        }
    }
}
