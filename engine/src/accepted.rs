//! The connection state for a socket a worker has just accepted, made the same way by
//! every engine.

use crate::{socket, Drain};
use duet_http::{Connection, Context};
use std::os::fd::BorrowedFd;

/// A new [`Connection`] for an accepted socket. With the access log on it knows its
/// peer's address (one `getpeername`), read from `socket`; `None` is
/// a socket with no process descriptor (an io_uring direct descriptor), logged as `-`.
/// One accepted while draining (the kernel took it before the listener closed, and its
/// client may have sent a request) drains from the start: what it sent is answered,
/// then it closes.
pub fn accepted(ctx: &mut Context, socket: Option<BorrowedFd<'_>>, drain: &Drain) -> Connection {
    let mut conn = Connection::new(ctx);
    if let Some(fd) = socket.filter(|_| ctx.access_log_enabled()) {
        conn.set_peer(socket::peer_addr(fd));
    }
    if drain.is_draining() {
        conn.begin_shutdown(ctx);
    }
    conn
}
