//! File bodies without the copy through a user buffer.
//!
//! - [`Feature::Sendfile`](crate::Feature::Sendfile) (the default): `sendfile(2)` from
//!   the loop thread on the non-blocking socket, at most the connection's share of the
//!   turn; the page-cache pages go to the socket by reference. A full socket (a short
//!   `sendfile`, or `EAGAIN`) arms one `POLLOUT` poll through the ring, and the
//!   connection is driven again at its completion. A direct descriptor has no process
//!   fd, so the first file body of such a connection asks for one
//!   (`IORING_OP_FIXED_FD_INSTALL`), kept until the connection closes. The response
//!   head before a body under [`HEAD_WITH_BODY_MIN`] goes by a ring send like any
//!   in-memory output, and the body's `sendfile` follows at that send's completion;
//!   before a larger body it is sent from the loop (`sendmsg` with `MSG_MORE`), so head
//!   and body leave in the same turn with no ring completion between them.
//! - [`Feature::Splice`](crate::Feature::Splice) (an ablation item): per share a linked
//!   pair of `IORING_OP_SPLICE`, file -> pipe -> socket, through the connection's pipe
//!   (in its chunk, pooled like the chunk buffers). io_uring cannot splice without
//!   blocking, so every splice is punted to an io-wq worker thread. Bytes a short splice
//!   to the socket leaves in the pipe go first next time (after a `POLLOUT` when the
//!   socket was full).
//!
//! Either way a connection holds at most its share of the turn in flight: nothing in
//! user memory with `sendfile`, one pipe's worth with splice.

use super::conn::{ConnOp, Installed};
use super::file::{self, FileChunk};
use super::sock::Sock;
use super::{conn_entry, Worker};
use crate::sys::MAX_IOV;
use duet_engine::ConnId;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use tracing::warn;

/// The capacity asked of a splice pipe: the largest share of a turn, so one pair of
/// splices carries a whole share.
pub(super) const PIPE_SIZE: usize = 1024 * 1024;

/// The smallest file body whose head is sent from the loop right before its first
/// `sendfile` (`sendmsg` with `MSG_MORE`); a smaller body's head goes by a ring send,
/// and its `sendfile` after that send's completion. Measured (docs/results.md, file
/// bodies): head and body in the same turn made the server do more of the TCP transmit
/// inside its own calls, 1.0-1.6x the server CPU per request of the other order at
/// 256 KiB and 1 MiB (for 0.95-1.4x its requests per second), while at 16 MiB it was
/// the cheaper order (0.72-0.78x).
pub(super) const HEAD_WITH_BODY_MIN: usize = 4 * 1024 * 1024;

/// How file bodies leave this worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FilePath {
    /// Read into the connection's chunk buffer, then sent from it.
    Read,
    Sendfile,
    Splice,
    /// Sent from a mapping of the file (`mapped`), by zero copy or not.
    Mmap {
        zero_copy: bool,
    },
}

/// What a step from the loop left: drive the connection's output on, stop (a poll or an
/// install armed, the share used, or the connection failed), or take the chunk buffer
/// path instead (no process fd could be had, or the kernel refused).
pub(super) enum Step {
    Again,
    Stop,
    Fallback,
}

impl Worker {
    /// The path for file bodies: the features asked, less what the kernel refused at
    /// run time.
    pub(super) fn file_path(&self) -> FilePath {
        if self.features.has(crate::Feature::Splice) {
            FilePath::Splice
        } else if self.features.has(crate::Feature::MmapZc) && !self.mmap_refused {
            FilePath::Mmap { zero_copy: true }
        } else if self.features.has(crate::Feature::Mmap) && !self.mmap_refused {
            FilePath::Mmap { zero_copy: false }
        } else if self.features.has(crate::Feature::Sendfile) && !self.sendfile_refused {
            FilePath::Sendfile
        } else {
            FilePath::Read
        }
    }

    /// The connection's process fd is not there: asks for one for a direct descriptor
    /// (`Stop` until it comes), or says to use the chunk buffer (`Fallback`).
    fn need_fd(&mut self, id: ConnId) -> io::Result<Step> {
        let Some(e) = self.core.conns.get_mut(id) else { return Ok(Step::Stop) };
        match (&e.io.sock, &e.io.installed) {
            (Sock::Direct(_), Installed::No) => {
                e.io.submit(&mut self.ring, id, ConnOp::InstallFd)?;
                Ok(Step::Stop)
            }
            (_, Installed::Installing) => Ok(Step::Stop),
            _ => Ok(Step::Fallback),
        }
    }

    /// Sends the front file segment of connection `id` with sendfile(2), at most `share`
    /// bytes. The caller has checked that no output is in flight (bytes would interleave).
    pub(super) fn sendfile_out(&mut self, id: ConnId, share: usize) -> io::Result<Step> {
        loop {
            let Some(e) = self.core.conns.get_mut(id) else { return Ok(Step::Stop) };
            let Some(sock) = e.io.process_fd() else { return self.need_fd(id) };
            let Some((file, offset, left)) = e.conn.poll_output().and_then(|out| out.front_file()) else {
                return Ok(Step::Again);
            };
            let want = left.min(share);
            let result = crate::sys::sendfile(sock, file.as_fd(), offset, want);
            match result {
                Ok(0) => {
                    // The file shrank under us: the promised length cannot be sent.
                    e.io.fail();
                    return Ok(Step::Stop);
                }
                Ok(n) => {
                    // What was offered, as for a ring send: a full socket still costs
                    // its share, so one turn does not fill every slow reader's socket
                    // before a fresh client is answered.
                    self.core.budget.spend(want);
                    self.core.stats.bytes_written += n as u64;
                    e.conn.handle_sent(&mut self.core.ctx, n);
                    if n < want {
                        // The socket is full: wait for room through the ring.
                        self.core.stats.partial_writes += 1;
                        e.io.submit(&mut self.ring, id, ConnOp::PollOut)?;
                        return Ok(Step::Stop);
                    }
                    if n == left {
                        // The segment is out: what follows it goes on.
                        return Ok(Step::Again);
                    }
                    // A whole share sent and more of the file left: the rest waits for
                    // the next turn, served first there (the over-budget queue).
                    self.core.wait_for_share(id);
                    return Ok(Step::Stop);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    e.io.submit(&mut self.ring, id, ConnOp::PollOut)?;
                    return Ok(Step::Stop);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if refused(&err) => {
                    // Nothing was sent: this worker's files go through the chunk buffer.
                    self.sendfile_refused = true;
                    warn_refused(&err);
                    return Ok(Step::Fallback);
                }
                Err(_) => {
                    e.io.fail();
                    return Ok(Step::Stop);
                }
            }
        }
    }

    /// When the unsent in-memory output of connection `id` (a response head, at most
    /// `share` bytes) is followed by a file body of at least [`HEAD_WITH_BODY_MIN`],
    /// sends it now from the loop, so the body's `sendfile` follows in the same turn.
    /// `None`: nothing of the kind (no file follows, a smaller one, or no process fd can
    /// be had): the ring sends it.
    pub(super) fn send_head_now(&mut self, id: ConnId, share: usize) -> io::Result<Option<Step>> {
        let Some(e) = self.core.conns.get_mut(id) else { return Ok(Some(Step::Stop)) };
        let Some(out) = e.conn.poll_output().filter(|out| out.has_file()) else { return Ok(None) };
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let count = out.fill_max(&mut iov, share);
        let total: usize = iov[..count].iter().map(|s| s.len()).sum();
        // `fill_max` stops early only at a file segment (or when `iov` is full).
        let file_follows = count > 0 && count < MAX_IOV && total < share && total < out.remaining();
        let large = out.first_unsent_file().is_some_and(|(_, _, left)| left >= HEAD_WITH_BODY_MIN);
        if !large {
            return Ok(None);
        }
        if !file_follows {
            return Ok(None);
        }
        let Some(sock) = e.io.process_fd() else {
            return match self.need_fd(id)? {
                Step::Fallback => Ok(None),
                step => Ok(Some(step)),
            };
        };
        let result = crate::sys::send_now(sock, &iov[..count], true);
        match result {
            Ok(n) => {
                self.core.budget.spend(n);
                self.core.stats.bytes_written += n as u64;
                e.conn.handle_sent(&mut self.core.ctx, n);
                if n < total {
                    self.core.stats.partial_writes += 1;
                    e.io.submit(&mut self.ring, id, ConnOp::PollOut)?;
                    return Ok(Some(Step::Stop));
                }
                Ok(Some(Step::Again))
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                e.io.submit(&mut self.ring, id, ConnOp::PollOut)?;
                Ok(Some(Step::Stop))
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => Ok(Some(Step::Again)),
            Err(_) => {
                e.io.fail();
                Ok(Some(Step::Stop))
            }
        }
    }

    pub(super) fn on_pollout(&mut self, id: ConnId, res: i32, more: bool) {
        let Some(e) = conn_entry(&mut self.core.conns, id, more) else { return };
        e.io.pollout = false;
        if res < 0 && res != -libc::ECANCELED {
            e.io.fail();
        }
        if !self.stopping {
            e.io.mark_dirty(id, &mut self.dirty);
        }
    }

    pub(super) fn on_install_fd(&mut self, id: ConnId, res: i32, more: bool) {
        // Owned at once, whatever becomes of the connection: it closes with it, or here.
        let fd = (res >= 0).then(|| crate::sys::adopt_installed_fd(res));
        let Some(e) = conn_entry(&mut self.core.conns, id, more) else {
            if let Some(fd) = fd {
                duet_engine::syscalls::close(fd);
            }
            return;
        };
        e.io.installed = match fd {
            Some(fd) => Installed::Fd(fd),
            None => {
                if res != -libc::ECANCELED {
                    warn_no_fd(res);
                }
                Installed::Refused
            }
        };
        if !self.stopping {
            e.io.mark_dirty(id, &mut self.dirty);
        }
    }
}

impl Worker {
    /// Splice path: the next step of connection `id`'s front file segment, at most
    /// `share` bytes: the bytes left in its pipe (after a `POLLOUT` if the socket was
    /// full), or a linked file -> pipe -> socket pair. `Fallback` when no pipe can be
    /// had (out of descriptors): the chunk buffer serves this body.
    pub(super) fn splice_out(&mut self, id: ConnId, share: usize) -> io::Result<Step> {
        let Some(e) = self.core.conns.get_mut(id) else { return Ok(Step::Stop) };
        if e.io.stream.as_ref().is_some_and(|c| !c.has_pipe()) {
            if let Some(chunk) = e.io.stream.take() {
                file::recycle(&mut self.chunks, chunk);
            }
        }
        if e.io.stream.is_none() {
            let pooled = self.chunks.iter().rposition(|c| c.has_pipe()).map(|i| self.chunks.swap_remove(i));
            let chunk = match pooled {
                Some(chunk) => chunk,
                None => match FileChunk::piped(PIPE_SIZE) {
                    Ok(chunk) => chunk,
                    Err(err) => {
                        warn_no_pipe(&err);
                        return Ok(Step::Fallback);
                    }
                },
            };
            e.io.stream = Some(chunk);
        }
        let Some((file, offset, left)) = e.conn.poll_output().and_then(|out| out.front_file()) else {
            return Ok(Step::Again);
        };
        let file = std::os::fd::AsRawFd::as_raw_fd(file);
        let Some(chunk) = e.io.stream.as_mut() else { return Ok(Step::Stop) };
        if chunk.in_pipe > 0 {
            if chunk.stalled {
                chunk.stalled = false;
                e.io.submit(&mut self.ring, id, ConnOp::PollOut)?;
                return Ok(Step::Stop);
            }
            let len = chunk.in_pipe.min(share);
            self.core.budget.spend(len);
            e.io.submit(&mut self.ring, id, ConnOp::SpliceOut { len })?;
            return Ok(Step::Stop);
        }
        let len = left.min(share).min(PIPE_SIZE);
        self.core.budget.spend(len);
        e.io.submit(&mut self.ring, id, ConnOp::SpliceIn { file, offset, len })?;
        e.io.submit(&mut self.ring, id, ConnOp::SpliceOut { len })?;
        Ok(Step::Stop)
    }

    pub(super) fn on_splice_in(&mut self, id: ConnId, res: i32, more: bool) {
        let Some(e) = conn_entry(&mut self.core.conns, id, more) else { return };
        if let Some(chunk) = e.io.stream.as_mut() {
            chunk.splicing = chunk.splicing.saturating_sub(1);
            chunk.busy = chunk.splicing > 0;
            if res > 0 {
                chunk.in_pipe += res as usize;
            } else if res != -libc::ECANCELED {
                // The file shrank (0) or cannot be read: the promised length cannot be sent.
                e.io.fail();
            }
        }
        if !self.stopping {
            e.io.mark_dirty(id, &mut self.dirty);
        }
    }

    pub(super) fn on_splice_out(&mut self, id: ConnId, res: i32, more: bool) {
        let Some(e) = conn_entry(&mut self.core.conns, id, more) else { return };
        if let Some(chunk) = e.io.stream.as_mut() {
            chunk.splicing = chunk.splicing.saturating_sub(1);
            chunk.busy = chunk.splicing > 0;
            if res > 0 {
                let n = res as usize;
                chunk.in_pipe = chunk.in_pipe.saturating_sub(n);
                self.core.stats.bytes_written += n as u64;
                if n < chunk.offered {
                    self.core.stats.partial_writes += 1;
                    chunk.stalled = true;
                }
                if e.io.life.is_live() && !self.stopping {
                    e.conn.handle_sent(&mut self.core.ctx, n);
                }
            } else if res == -libc::EAGAIN {
                chunk.stalled = true;
            } else if res != -libc::ECANCELED {
                // A socket error, or (linked after a short file splice) nothing to send.
                if res != 0 {
                    e.io.fail();
                }
            }
        }
        if !self.stopping {
            e.io.mark_dirty(id, &mut self.dirty);
        }
    }
}

/// sendfile(2) cannot serve this file or socket at all (a file system without
/// `splice_read`, say): nothing was sent.
fn refused(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP))
}

#[cold]
fn warn_refused(err: &io::Error) {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| {
        warn!("sendfile refused a file body ({err}); this worker reads file bodies through a buffer from now on")
    });
}

#[cold]
fn warn_no_fd(res: i32) {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    let err = io::Error::from_raw_os_error(-res);
    LOGGED.call_once(|| {
        warn!("cannot give a direct descriptor a process fd for sendfile ({err}); its files go through a buffer")
    });
}

#[cold]
fn warn_no_pipe(err: &io::Error) {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| warn!("cannot open a splice pipe ({err}); file bodies go through a buffer meanwhile"));
}
