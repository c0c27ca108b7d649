//! Deadlines (head, idle keep-alive) and graceful shutdown.

use crate::common::Server;
use crate::{assert_hello, assert_keeps_alive, GET};

per_engine!(header_timeout_408, keepalive_idle_timeout, graceful_shutdown_finishes_in_flight);

fn header_timeout_408(engine: &str) {
    let server = Server::start(engine, &["--header-timeout", "1s"]);
    let mut c = server.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: loc");
    // Blocks until the server's 1 s deadline passes.
    let r = c.read_response();
    assert_eq!(r.status, 408, "half a head:\n{}", r.raw_head);
    assert!(r.says_close(), "408 without Connection: close:\n{}", r.raw_head);
    c.expect_closed();
}

fn keepalive_idle_timeout(engine: &str) {
    let server = Server::start(engine, &["--keepalive-timeout", "1s"]);
    let mut c = server.connect();
    c.send(GET);
    let r = c.read_response();
    assert_hello(&r, "request before idling");
    assert_keeps_alive(&r, "request before idling");
    // Blocks until the server's 1 s idle deadline closes the connection.
    c.expect_closed();
}

fn graceful_shutdown_finishes_in_flight(engine: &str) {
    let mut server = Server::start(engine, &["--drain-timeout", "60s"]);
    // A request whose body is half sent.
    let mut busy = server.connect();
    busy.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nhello");
    // An idle keep-alive connection that completed a request (one server thread: this
    // round trip also means the first connection's bytes were seen).
    let mut idle = server.connect();
    idle.send(GET);
    assert_hello(&idle.read_response(), "request on the idle connection");

    server.sigterm();
    idle.expect_closed();

    busy.send(b"world");
    let r = busy.read_response();
    assert_hello(&r, "in-flight request finished during shutdown");
    assert!(r.says_close(), "no Connection: close during shutdown:\n{}", r.raw_head);
    busy.expect_closed();
    drop(busy);

    let status = server.wait_exit();
    assert!(
        status.success(),
        "server exit status {status} after a graceful shutdown; stderr:\n{}",
        server.stderr_lines().join("\n")
    );
}
