//! The risks of an engine's own I/O machinery: clients resetting mid-response, and the
//! open-file limit.

use crate::common::{Client, Server};
use crate::{assert_hello, GET};
use std::time::Duration;

per_engine!(client_reset_mid_response, out_of_descriptors_sheds_then_recovers);

// ---------------------------------------------------------------------------------
// Resets

fn client_reset_mid_response(engine: &str) {
    let server = Server::start(engine, &[]);
    for _ in 0..3 {
        let mut c = server.connect();
        let batch: Vec<u8> = GET.repeat(2000);
        c.send(&batch);
        // Wait until responses are flowing, then reset with unread data on both sides.
        assert_hello(&c.read_response(), "first of 2000 pipelined");
        socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO)).unwrap();
        drop(c);
    }
    // Also a reset before any response was read.
    let mut c = server.connect();
    c.send(&GET.repeat(2000));
    socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO)).unwrap();
    drop(c);

    let mut c = server.connect();
    c.send(GET);
    assert_hello(&c.read_response(), "new client after resets");
    c.send(GET);
    assert_hello(&c.read_response(), "new client after resets, second request");
}

// ---------------------------------------------------------------------------------
// The open-file limit

/// Out of file descriptors (EMFILE), the server accepts and closes new connections
/// instead of spinning or hanging them, keeps serving the ones it has, and serves new
/// ones again once descriptors are free.
fn out_of_descriptors_sheds_then_recovers(engine: &str) {
    let server = Server::start_with_fd_limit(engine, 64, &[]);
    let mut clients: Vec<Client> = (0..100).map(|_| server.connect()).collect();
    let (mut served, mut shed) = (Vec::new(), 0);
    for mut c in clients.drain(..) {
        c.try_send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        match c.try_read_response() {
            Some(r) => {
                assert_hello(&r, "served under the descriptor limit");
                served.push(c);
            }
            None => shed += 1,
        }
    }
    assert!(shed > 0, "no connection was shed with 100 connections and a limit of 64 descriptors");
    assert!(!served.is_empty(), "no connection was served under the limit");
    // The connections it kept still work.
    served[0].send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_hello(&served[0].read_response(), "kept connection after shedding");
    drop(served);
    // Once descriptors are free again, new connections are served. The server may see a
    // new connection before the closes above, so try a bounded number of times.
    let recovered = (0..200).any(|_| {
        let mut c = server.connect();
        c.try_send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") && c.try_read_response().is_some_and(|r| r.status == 200)
    });
    assert!(recovered, "no connection served after descriptors were freed");
    assert!(
        server.stderr_lines().iter().any(|l| l.contains("out of file descriptors")),
        "the descriptor shortage was not logged"
    );
}
