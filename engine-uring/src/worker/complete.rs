//! Completions: one dispatch on the user_data's op, and a handler per connection op
//! (the accept's is in `accept`, the file ones in `file`, the loop timeout's in
//! `timeout`).

use super::conn::{Life, Recv};
use super::conn_entry;
use super::token::{Op, Token};
use super::{Worker, HEADER_POOL_MAX};
use crate::sys::{BufId, Completion, IORING_NOTIF_USAGE_ZC_COPIED};
use duet_engine::ConnId;

/// A send that completes with `EAGAIN` sent nothing and lost nothing: the kernel woke it
/// for a writable socket that was not writable when the send ran again, and gave up
/// rather than wait a second time (the socket is non-blocking). Driving the connection
/// submits it anew, and a new send waits for the socket again: no spin.
pub(super) fn send_again(res: i32) -> bool {
    res == -libc::EAGAIN
}

impl Worker {
    pub(super) fn complete(&mut self, cqe: &mut Completion) {
        let token = Token::try_from(cqe.user_data());
        let (res, more) = (cqe.result(), cqe.more());
        tracing::trace!(?token, res, flags = cqe.flags(), "cqe");
        // Only a receive selects a provided buffer. It is taken here, once, and goes
        // back to the ring in `on_recv` on every path.
        let buffer = cqe.take_buffer();
        if let Ok(Token { op: Op::Recv, id }) = token {
            return self.on_recv(id, res, cqe.flags(), buffer);
        }
        if let Some(bid) = buffer {
            // No other operation selects a buffer; should one, it still goes back.
            let _ = self.ring.buffers(self.buf_group).consume(bid, 0, 0, |_| ());
        }
        let Ok(Token { op, id }) = token else { return };
        match op {
            Op::Accept => self.on_accept(res, more),
            Op::AcceptPoll => self.on_accept_poll(),
            Op::Wake => self.wake.armed = false,
            Op::Timer => self.timer.on_fired(),
            Op::TimerUpdate => self.timer.on_updated(),
            Op::Send => self.on_send(id, res, cqe.flags()),
            Op::Cancel | Op::Shutdown => self.on_settled(id, more),
            Op::FileRead => self.on_file_read(id, res, more),
            Op::FileSend => self.on_file_send(id, res, more),
            Op::InputCheck => self.on_input_check(id, res, more),
            Op::PollOut => self.on_pollout(id, res, more),
            Op::InstallFd => self.on_install_fd(id, res, more),
            Op::SpliceIn => self.on_splice_in(id, res, more),
            Op::SpliceOut => self.on_splice_out(id, res, more),
            Op::Recv | Op::Global | Op::CloseDirect => {}
        }
    }

    fn on_recv(&mut self, id: ConnId, res: i32, flags: u32, buffer: Option<BufId>) {
        let more = io_uring::cqueue::more(flags);
        let bufs = self.ring.buffers(self.buf_group);
        let Some(e) = conn_entry(&mut self.core.conns, id, more) else {
            // Cannot happen while ops are counted per connection, but a buffer must never be
            // lost.
            if let Some(bid) = buffer {
                let _ = bufs.consume(bid, 0, 0, |_| ());
            }
            return;
        };
        if !more {
            e.io.recv = Recv::Off;
        }
        let conn = &mut e.conn;
        // The buffer goes back to the ring here, delivered to the connection if it
        // carries data for a live one. A buffer picked for a completion that carries
        // no data still goes back (current kernels recycle it themselves).
        let deliver = res > 0 && e.io.life.is_live() && !self.stopping;
        let ctx = &mut self.core.ctx;
        let delivered = buffer.map(|bid| {
            bufs.consume(bid, res.max(0) as usize, flags, |bytes| {
                if deliver {
                    conn.handle_input(ctx, bytes);
                }
            })
        });
        if res > 0 {
            self.core.stats.bytes_read += res as u64;
            if !matches!(delivered, Some(Ok(()))) {
                untracked_buffer(res);
                e.io.fail();
            }
        } else {
            if res == -libc::ENOBUFS {
                self.core.stats.enobufs += 1;
                if !more && e.io.recv != Recv::Starved {
                    e.io.recv = Recv::Starved;
                    self.starved.push_back(id);
                }
            }
            if res == 0 {
                if e.io.life != Life::Closing && !self.stopping {
                    conn.handle_eof(ctx);
                }
            } else if res != -libc::ENOBUFS && res != -libc::ECANCELED {
                // A socket error: reset by peer, timed out, ... Drop it.
                e.io.fail();
            }
        }
        // ENOBUFS: all buffers were taken this turn; they are back by the time the
        // re-armed receive is submitted. It never drops a connection.
        if !self.stopping {
            e.io.mark_dirty(id, &mut self.dirty);
        }
    }

    fn on_send(&mut self, id: ConnId, res: i32, flags: u32) {
        let more = io_uring::cqueue::more(flags);
        let Some(e) = conn_entry(&mut self.core.conns, id, more) else { return };
        if more {
            // A zero-copy send's result; its notification follows. The segments stay the
            // kernel's until then, so the bytes are reported sent only then.
            if let Some(header) = e.io.send.as_mut() {
                header.set_zc_result(res);
            }
            return;
        }
        let res = if io_uring::cqueue::notif(flags) {
            self.zc_sends += 1;
            if res as u32 & IORING_NOTIF_USAGE_ZC_COPIED != 0 {
                self.zc_copied += 1;
            }
            e.io.send.as_ref().and_then(|h| h.zc_result()).unwrap_or(-libc::ECANCELED)
        } else {
            res
        };
        let mut offered = 0;
        if let Some(mut header) = e.io.send.take() {
            offered = header.total();
            // The send's last completion: the kernel reads its file mapping no more.
            header.release();
            if self.headers.len() < HEADER_POOL_MAX {
                self.headers.push(header);
            }
        }
        if res > 0 {
            self.core.stats.bytes_written += res as u64;
            if (res as usize) < offered {
                self.core.stats.partial_writes += 1;
            }
            if e.io.life.is_live() && !self.stopping {
                e.conn.handle_sent(&mut self.core.ctx, res as usize);
            }
        } else if res != -libc::ECANCELED && !send_again(res) {
            e.io.fail(); // EPIPE, ECONNRESET, ... (or nothing sent)
        }
        if !self.stopping {
            e.io.mark_dirty(id, &mut self.dirty);
        }
    }

    /// The unread-bytes check through the ring completed: every receive the ring did
    /// before it has been reaped (completions are handed out in the order they were
    /// posted), so with nothing unread the connection has no pending input.
    fn on_input_check(&mut self, id: ConnId, res: i32, more: bool) {
        let Some(e) = conn_entry(&mut self.core.conns, id, more) else { return };
        e.io.input_check = false;
        if e.io.life == Life::Closing || self.stopping {
            return;
        }
        if res < 0 {
            e.io.fail();
        } else if res == 0 && e.conn.wants_input_check() {
            e.conn.handle_no_pending_input(&mut self.core.ctx);
        }
        e.io.mark_dirty(id, &mut self.dirty);
    }

    /// An operation with nothing to hand on (a cancellation, a shutdown) completed for
    /// the connection: drive it again.
    fn on_settled(&mut self, id: ConnId, more: bool) {
        if let Some(e) = conn_entry(&mut self.core.conns, id, more).filter(|_| !self.stopping) {
            e.io.mark_dirty(id, &mut self.dirty);
        }
    }
}

/// A receive's buffers could not be placed in the ring as tracked: the connection goes
/// (its bytes are unknown). Logged once: it means the ring's order is not what the
/// engine relies on.
#[cold]
fn untracked_buffer(res: i32) {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| {
        tracing::error!(
            "a receive of {res} bytes named a buffer the engine did not expect; its connection was dropped \
             (turn the io_uring features inc and bundle off and report this)"
        )
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_send_that_would_block_is_sent_again_and_a_socket_error_drops_the_connection() {
        assert!(super::send_again(-libc::EAGAIN));
        for errno in [libc::EPIPE, libc::ECONNRESET, libc::ETIMEDOUT, libc::ENOBUFS] {
            assert!(!super::send_again(-errno), "errno {errno}");
        }
    }
}
