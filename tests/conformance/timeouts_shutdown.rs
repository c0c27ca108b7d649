//! Deadlines (head, idle keep-alive) and graceful shutdown.

use crate::common::{show, Client, Server, READ_TIMEOUT};
use crate::{assert_hello, assert_keeps_alive, TempTree, GET, HELLO};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

per_engine!(
    header_timeout_408,
    keepalive_idle_timeout,
    graceful_shutdown_finishes_in_flight,
    graceful_shutdown_answers_a_request_left_unread_in_the_socket,
    graceful_shutdown_under_load_resets_no_connection,
    graceful_shutdown_answers_the_next_request_of_an_idle_connection_with_close,
);

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
    // No lame duck: the idle connection closes as soon as the drain begins.
    let mut server = Server::start(engine, &["--drain-timeout", "60s", "--lame-duck", "0s"]);
    // A request whose body is half sent.
    let mut busy = server.connect();
    busy.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nhello");
    // An idle keep-alive connection that completed a request (one server thread: this
    // round trip also means the first connection's bytes were seen).
    let mut idle = server.connect();
    idle.send(GET);
    assert_hello(&idle.read_response(), "request on the idle connection");

    server.sigterm();
    idle.expect_orderly_close();
    drop(idle); // its EOF ends the server's linger

    busy.send(b"world");
    let r = busy.read_response();
    assert_hello(&r, "in-flight request finished during shutdown");
    assert!(r.says_close(), "no Connection: close during shutdown:\n{}", r.raw_head);
    busy.expect_orderly_close();
    drop(busy);

    let status = server.wait_exit();
    assert!(
        status.success(),
        "server exit status {status} after a graceful shutdown; stderr:\n{}",
        server.stderr_lines().join("\n")
    );
}

/// A request the client sent before the shutdown but the server had not read yet (it
/// stopped reading: the response before it fills the output queue) is answered with
/// `Connection: close` once the queue drains, and the connection then ends with an
/// orderly EOF.
fn graceful_shutdown_answers_a_request_left_unread_in_the_socket(engine: &str) {
    // More than the server's socket send buffer can hold (4 MiB at most by default)
    // plus the output cap, so the server cannot drain its queue while the client does
    // not read: it stops reading that connection.
    const SIZE: usize = 8 << 20;
    let t = TempTree::new(&format!("unread-{engine}"));
    let big = t.write("big.bin", &vec![b'x'; SIZE]);
    let route = format!("/big=@{}", big.display());
    let mut server = Server::start(
        engine,
        &["--route", &route, "--route", "/=Hello, World!", "--max-cached-file", "16MiB", "--lame-duck", "0s"],
    );
    // Every connection is on the one server thread: this one shows when draining began
    // (no lame duck: it closes as soon as the drain begins).
    let mut idle = server.connect();
    idle.send(GET);
    assert_hello(&idle.read_response(), "request on the idle connection");

    let mut stream = server.connect_small_rcvbuf(4096);
    stream.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // The head arrived: the server parsed the request and queued its 8 MiB answer.
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200 ") && head.contains(&format!("Content-Length: {SIZE}\r\n")), "{head}");
    // This request stays in the server's socket: it reads no more from this connection
    // until the output queue drains, which needs the client to read.
    stream.write_all(GET).unwrap();

    server.sigterm();
    // The idle connection closes: draining has begun, with the request still unread.
    idle.expect_orderly_close();
    drop(idle); // its EOF ends the server's linger

    let mut body = vec![0u8; SIZE];
    stream.read_exact(&mut body).expect("the whole 8 MiB body");
    assert!(body.iter().all(|&b| b == b'x'), "body differs");
    let mut c = Client::from_stream(stream);
    let r = c.read_response();
    assert_hello(&r, "the request left unread when the shutdown began");
    assert!(r.says_close(), "no Connection: close during shutdown:\n{}", r.raw_head);
    c.expect_orderly_close();
    drop(c);

    let status = server.wait_exit();
    assert!(status.success(), "exit status {status}; stderr:\n{}", server.stderr_lines().join("\n"));
}

/// The drain's lame duck: an idle keep-alive connection is not closed when the drain
/// begins, since its client may have sent the next request already; that request is
/// answered with `Connection: close`, and the connection then ends in order. (Without
/// the lame duck the request crosses the server's half-close and is lost: what gave
/// wrk read errors on a SIGTERM under keep-alive load.)
fn graceful_shutdown_answers_the_next_request_of_an_idle_connection_with_close(engine: &str) {
    // A period longer than any test step could take on a busy machine.
    let mut server = Server::start(engine, &["--drain-timeout", "120s", "--lame-duck", "60s"]);
    let mut idle = server.connect();
    idle.send(GET);
    assert_hello(&idle.read_response(), "request before the shutdown");
    server.sigterm();
    wait_until_refused(server.addr);
    // The drain has begun on the one server thread: its listener is closed.
    idle.send(GET);
    let r = idle.read_response();
    assert_hello(&r, "request sent once the drain had begun");
    assert!(r.says_close(), "no Connection: close on the lame duck's answer:\n{}", r.raw_head);
    idle.expect_orderly_close();
    drop(idle);
    let status = server.wait_exit();
    assert!(status.success(), "exit status {status}; stderr:\n{}", server.stderr_lines().join("\n"));
}

/// Returns once connecting to `addr` is refused (the server closed its listener),
/// panicking after [`READ_TIMEOUT`].
fn wait_until_refused(addr: std::net::SocketAddr) {
    let give_up = std::time::Instant::now() + READ_TIMEOUT;
    loop {
        match TcpStream::connect(addr) {
            // Accepted while the drain begins (the connection is taken in and ends when
            // this side closes it), or before it: try again.
            Ok(stream) => drop(stream),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return,
            // Completed into the backlog as the listener closed, and reset with it: the
            // next attempt is refused.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connecting to {addr}: {e}"),
        }
        assert!(std::time::Instant::now() < give_up, "{addr} still accepts {READ_TIMEOUT:?} after SIGTERM");
        std::thread::yield_now();
    }
}

/// Reads a response head byte by byte, leaving the body in the stream.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("reading a head"), 1, "EOF in the head: {}", show(&head));
        head.push(byte[0]);
        assert!(head.len() < 4096, "no end of head: {}", show(&head));
    }
    String::from_utf8(head).expect("an ASCII head")
}

/// How one client connection of the load ended.
#[derive(Debug, Default)]
struct Ending {
    responses: usize,
    /// The server answered with `Connection: close`.
    closed_by_response: bool,
    /// The last request, sent after the SIGTERM, got no response before an orderly EOF
    /// (it crossed the server's half-close on the wire).
    unanswered_after_signal: bool,
    /// The last request was sent before the SIGTERM and got no response.
    unanswered_before_signal: bool,
    reset: bool,
    /// EOF in the middle of a response.
    partial: bool,
}

/// One keep-alive connection sending `GET /` back to back until the server ends it;
/// says on `warm` once it has had a few answers.
fn load_client(server_addr: std::net::SocketAddr, signalled: &AtomicBool, warm: mpsc::Sender<()>) -> Ending {
    let mut stream = TcpStream::connect_timeout(&server_addr, READ_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut ending = Ending::default();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut warm = Some(warm);
    loop {
        if stream.write_all(GET).is_err() {
            // The server shut its side after the last response and closed once this
            // side's data was read: the next read says how it ended.
        }
        let before_signal = !signalled.load(Ordering::SeqCst);
        // One response, or how the connection ended instead.
        let close = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or_else(|| panic!("no Content-Length in\n{head}"));
                if buf.len() >= end + 4 + len {
                    assert_eq!(&buf[end + 4..end + 4 + len], HELLO, "body of response {}", ending.responses + 1);
                    buf.drain(..end + 4 + len);
                    break Some(head.lines().any(|l| l.eq_ignore_ascii_case("connection: close")));
                }
            }
            match stream.read(&mut chunk) {
                Ok(0) => {
                    ending.partial = !buf.is_empty();
                    break None;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    ending.reset = true;
                    break None;
                }
                Err(e) => panic!("reading response {}: {e}", ending.responses + 1),
            }
        };
        match close {
            Some(close) => {
                ending.responses += 1;
                if ending.responses == 3 {
                    if let Some(warm) = warm.take() {
                        let _ = warm.send(());
                    }
                }
                if close {
                    ending.closed_by_response = true;
                    match stream.read(&mut chunk) {
                        Ok(0) => {}
                        Ok(n) => panic!("bytes after Connection: close: {}", show(&chunk[..n])),
                        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => ending.reset = true,
                        Err(e) => panic!("reading after Connection: close: {e}"),
                    }
                    return ending;
                }
            }
            None => {
                if before_signal {
                    ending.unanswered_before_signal = true;
                } else {
                    ending.unanswered_after_signal = true;
                }
                return ending;
            }
        }
    }
}

/// Many keep-alive connections send requests back to back; SIGTERM lands in the middle.
/// Every connection ends in order: each request gets a complete response or the
/// connection ends with an orderly EOF between responses — never a reset (a close with
/// unread input) and never a cut response.
fn graceful_shutdown_under_load_resets_no_connection(engine: &str) {
    const CONNECTIONS: usize = 64;
    crate::common::raise_nofile_limit();
    let mut server = Server::start(engine, &["--drain-timeout", "60s"]);
    let signalled = Arc::new(AtomicBool::new(false));
    let (warm_tx, warm_rx) = mpsc::channel();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (addr, signalled, warm) = (server.addr, Arc::clone(&signalled), warm_tx.clone());
            std::thread::spawn(move || load_client(addr, &signalled, warm))
        })
        .collect();
    drop(warm_tx);
    for i in 0..CONNECTIONS {
        warm_rx.recv_timeout(READ_TIMEOUT).unwrap_or_else(|e| panic!("client {i} never got 3 responses: {e}"));
    }
    // Raised before the signal: a request whose send completed while it was still
    // down was in the server's socket before the shutdown began.
    signalled.store(true, Ordering::SeqCst);
    server.sigterm();
    let endings: Vec<Ending> = clients.into_iter().map(|c| c.join().expect("a client thread panicked")).collect();
    let count = |f: fn(&Ending) -> bool| endings.iter().filter(|e| f(e)).count();
    let resets = count(|e| e.reset);
    let partial = count(|e| e.partial);
    let closed_by_response = count(|e| e.closed_by_response);
    let unanswered_before = count(|e| e.unanswered_before_signal);
    let unanswered_after = count(|e| e.unanswered_after_signal);
    eprintln!(
        "{engine}: {CONNECTIONS} connections, {} responses; ended by a Connection: close response {closed_by_response}, \
         by EOF with the last request (sent after the signal) unanswered {unanswered_after}, before the signal \
         {unanswered_before}; resets {resets}, cut responses {partial}",
        endings.iter().map(|e| e.responses).sum::<usize>()
    );
    assert_eq!(resets, 0, "connections reset by the shutdown");
    assert_eq!(partial, 0, "responses cut off by the shutdown");
    // Sent before the signal, so in the server's socket before the shutdown began.
    assert_eq!(unanswered_before, 0, "requests sent before the SIGTERM left unanswered");
    // The lame duck (2 s by default) kept every idle connection open for the request
    // its client sends right after a response: none crossed a close on the wire.
    assert_eq!(unanswered_after, 0, "requests sent after the SIGTERM met a close instead of an answer");
    // One server thread for 64 connections is the bottleneck: when the shutdown begins,
    // requests wait in its sockets, some not read yet. They are read and answered.
    assert!(closed_by_response > 0, "no request waiting when the shutdown began was answered");
    let status = server.wait_exit();
    assert!(status.success(), "exit status {status}; stderr:\n{}", server.stderr_lines().join("\n"));
}
