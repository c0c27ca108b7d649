//! The socket calls every engine makes the same way, whatever its loop: accepting
//! (a readiness loop always, a completion loop when it sheds), `TCP_NODELAY` on every
//! accepted connection, and the half-close that ends a response. Errors that only mean
//! "the peer is gone" are the caller's to ignore.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

/// Accepts one pending connection, non-blocking and close-on-exec.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    crate::sys::accept(listener)
}

/// Sets `TCP_NODELAY` on an accepted connection (contract rule 3).
pub fn set_nodelay(socket: BorrowedFd<'_>) -> io::Result<()> {
    crate::sys::set_nodelay(socket)
}

/// Shuts the write side: the FIN follows what is queued (contract rule 7).
pub fn shutdown_write(socket: BorrowedFd<'_>) -> io::Result<()> {
    crate::sys::shutdown_write(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    #[test]
    fn accept_nodelay_and_half_close_on_a_real_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let err = accept(listener.as_fd()).expect_err("nothing pending");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        // The connection is pending once connect returns; a non-blocking accept may
        // still race the handshake's last step, so block for it instead.
        listener.set_nonblocking(false).expect("blocking");
        let server = TcpStream::from(accept(listener.as_fd()).expect("accept"));
        set_nodelay(server.as_fd()).expect("TCP_NODELAY");
        assert!(server.nodelay().expect("read TCP_NODELAY"));
        (&server).write_all(b"bye").expect("write");
        shutdown_write(server.as_fd()).expect("shutdown");
        let mut got = Vec::new();
        client.read_to_end(&mut got).expect("read to EOF");
        assert_eq!(got, b"bye", "the FIN follows the queued bytes");
    }
}
