//! The socket calls every engine makes the same way, whatever its loop: accepting
//! (a readiness loop always, a completion loop when it sheds), `TCP_NODELAY` on every
//! accepted connection, the half-close that ends a response, and the count of unread
//! bytes a completion engine checks before a draining connection closes. Errors that
//! only mean "the peer is gone" are the caller's to ignore. Each call counts its
//! syscall ([`crate::syscalls`]).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};

/// Accepts one pending connection, non-blocking and close-on-exec.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    crate::sys::accept(listener)
}

/// The peer's address of an accepted connection (`getpeername`), for the access log;
/// `None` if the socket has none any more (the peer is gone) or is not TCP/IP.
pub fn peer_addr(socket: BorrowedFd<'_>) -> Option<SocketAddr> {
    crate::syscalls::count(1);
    socket2::SockRef::from(&socket).peer_addr().ok()?.as_socket()
}

/// Sets `TCP_NODELAY` on an accepted connection (contract rule 3).
pub fn set_nodelay(socket: BorrowedFd<'_>) -> io::Result<()> {
    crate::sys::set_nodelay(socket)
}

/// Shuts the write side: the FIN follows what is queued (contract rule 7).
pub fn shutdown_write(socket: BorrowedFd<'_>) -> io::Result<()> {
    crate::sys::shutdown_write(socket)
}

/// Bytes the socket has received that nobody has read yet (`FIONREAD`): what a
/// completion engine, which cannot try a read, checks before it lets a draining
/// connection close (contract rule 9).
pub fn unread_bytes(socket: BorrowedFd<'_>) -> io::Result<usize> {
    crate::sys::unread_bytes(socket)
}

/// Closes the `SO_REUSEPORT` group of `listener` to latecomers: from now on the kernel
/// hands each new connection to one of the group's first `count` sockets (at random),
/// so a socket of another process that joins later (it sets `SO_REUSEPORT` too, which
/// Linux allows any process of the same user) is never handed one. `count` is the
/// number of sockets the caller has bound, which hold the group's first places: a
/// group keeps its sockets in bind order, and moves its last socket into the place of
/// one that closes (only then can a latecomer be picked).
pub fn reuseport_pick_among_first(listener: BorrowedFd<'_>, count: u32) -> io::Result<()> {
    crate::sys::reuseport_pick_among_first(listener, count)
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
        assert_eq!(peer_addr(server.as_fd()), Some(client.local_addr().unwrap()));
        assert!(server.nodelay().expect("read TCP_NODELAY"));
        (&server).write_all(b"bye").expect("write");
        shutdown_write(server.as_fd()).expect("shutdown");
        let mut got = Vec::new();
        client.read_to_end(&mut got).expect("read to EOF");
        assert_eq!(got, b"bye", "the FIN follows the queued bytes");
    }

    fn reuseport_listener(addr: SocketAddr) -> TcpListener {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        s.set_reuse_port(true).expect("SO_REUSEPORT");
        s.bind(&addr.into()).expect("bind");
        s.listen(64).expect("listen");
        s.into()
    }

    #[test]
    fn a_reuseport_group_with_its_program_never_hands_a_latecomer_a_connection() {
        let first = reuseport_listener("127.0.0.1:0".parse().unwrap());
        let addr = first.local_addr().unwrap();
        let second = reuseport_listener(addr);
        reuseport_pick_among_first(first.as_fd(), 2).expect("SO_ATTACH_REUSEPORT_CBPF");
        let late = reuseport_listener(addr);
        for l in [&first, &second, &late] {
            l.set_nonblocking(true).unwrap();
        }
        let clients: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(addr).expect("connect")).collect();
        // Each connect returned once the handshake was done, so each is queued somewhere.
        let drain = |l: &TcpListener| std::iter::from_fn(|| l.accept().ok()).count();
        let (a, b) = (drain(&first), drain(&second));
        assert_eq!(drain(&late), 0, "the latecomer was handed a connection");
        assert_eq!(a + b, clients.len());
        assert!(a > 0 && b > 0, "the program spreads over both: {a}/{b}");
    }

    #[test]
    fn unread_bytes_counts_what_arrived_and_was_not_read() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        assert_eq!(unread_bytes(server.as_fd()).expect("FIONREAD"), 0);
        client.write_all(b"hello").expect("write");
        // Blocking: once one byte is readable, all five are (one segment on loopback).
        let mut first = [0u8; 1];
        server.read_exact(&mut first).expect("read");
        assert_eq!(unread_bytes(server.as_fd()).expect("FIONREAD"), 4);
    }
}
