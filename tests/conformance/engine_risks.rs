//! The risks of an engine's own I/O machinery, run against every engine: partial sends
//! to a slow reader, pipelined floods, more connections than receive buffers, clients
//! resetting mid-send, shutdown mid-request, descriptor leaks, and the open-file limit.
//!
//! These began as the io_uring engine's own tests (buffer rings, multishot receives,
//! sends in flight); every scenario applies to a readiness engine too, so every engine
//! runs them. Where a scenario is made harder through an engine's own flags (a smaller
//! buffer ring), [`uring_only`] passes them to that engine alone.

use crate::common::{Client, Server};
use crate::{assert_hello, prometheus_value, GET, HELLO};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

per_engine!(
    client_reset_mid_response,
    slow_reader_gets_all_40000_pipelined_responses_through_partial_sends,
    two_thousand_pipelined_requests_in_one_write,
    more_connections_than_receive_buffers_all_sending_at_once,
    clients_closing_while_a_send_is_in_flight_leave_the_server_healthy,
    sigterm_with_connections_mid_request_finishes_them_and_exits_zero,
    no_fd_leak_after_10000_connect_close_cycles,
    out_of_descriptors_sheds_then_recovers,
    at_the_descriptor_limit_the_server_neither_spins_nor_stops_serving,
    a_request_pipelined_behind_a_large_response_to_a_slow_reader_loses_nothing,
    more_connections_than_fd_setsize,
);

/// `flags` for the io_uring engine (which has them), nothing for the others.
fn uring_only<'a>(engine: &str, flags: &'a [&'a str]) -> &'a [&'a str] {
    if crate::common::is_uring(engine) {
        flags
    } else {
        &[]
    }
}

/// A plain stream to the server, with the harness's read and write timeouts.
fn connect(server: &Server) -> TcpStream {
    server.connect().stream
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads responses from a stream and checks each is `200 Hello, World!`.
struct Responses {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of unparsed bytes in `buf`.
    pos: usize,
    /// Bytes per read call.
    chunk: usize,
    seen: usize,
}

impl Responses {
    fn new(stream: TcpStream, chunk: usize) -> Responses {
        Responses { stream, buf: Vec::new(), pos: 0, chunk, seen: 0 }
    }

    fn fill(&mut self) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 1 << 20 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + self.chunk, 0);
        let n = loop {
            match self.stream.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("reading response {}: {e}", self.seen + 1),
            }
        };
        self.buf.truncate(old + n);
        assert!(
            n > 0,
            "EOF after {} responses; unparsed: {:?}",
            self.seen,
            String::from_utf8_lossy(&self.buf[self.pos..])
        );
    }

    /// Reads one response and checks it; returns whether it said `Connection: close`.
    fn expect_hello(&mut self) -> bool {
        let head_len = loop {
            if let Some(i) = find(&self.buf[self.pos..], b"\r\n\r\n") {
                break i + 4;
            }
            self.fill();
        };
        let head = String::from_utf8_lossy(&self.buf[self.pos..self.pos + head_len]).into_owned();
        let n = self.seen + 1;
        assert!(head.starts_with("HTTP/1.1 200 "), "response {n} is not a 200:\n{head}");
        let lower = head.to_ascii_lowercase();
        let length: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .unwrap_or_else(|| panic!("response {n} has no Content-Length:\n{head}"))
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("response {n}: bad Content-Length:\n{head}"));
        while self.buf.len() < self.pos + head_len + length {
            self.fill();
        }
        let body = &self.buf[self.pos + head_len..self.pos + head_len + length];
        assert_eq!(body, HELLO, "response {n} body");
        self.pos += head_len + length;
        self.seen += 1;
        lower.contains("\r\nconnection: close")
    }

    fn expect_hellos(&mut self, count: usize) {
        for _ in 0..count {
            let close = self.expect_hello();
            assert!(!close, "response {} unexpectedly closes the connection", self.seen);
        }
    }

    /// After the last response: nothing more, then EOF (or a reset).
    fn expect_eof(&mut self) {
        assert_eq!(self.pos, self.buf.len(), "bytes after the last response");
        let mut byte = [0u8; 64];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            Ok(n) => panic!("expected EOF, got {:?}", String::from_utf8_lossy(&byte[..n])),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected EOF, got {e}"),
        }
    }
}

/// Writes `bytes` from another thread (so a test can read while a large pipelined
/// batch is still being written); join to learn the write's result.
fn write_in_background(stream: &TcpStream, bytes: Vec<u8>) -> thread::JoinHandle<io::Result<()>> {
    let mut writer = stream.try_clone().expect("clone stream");
    thread::spawn(move || writer.write_all(&bytes))
}

// ---------------------------------------------------------------------------------
// Resets, floods, shutdown, leaks

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

fn slow_reader_gets_all_40000_pipelined_responses_through_partial_sends(engine: &str) {
    let server = Server::start(engine, &[]);
    let stream = server.connect_small_rcvbuf(4096);
    // 40,000 responses are 5.2 MB: more than a socket send buffer can grow to (4 MiB
    // by default), so with a slow reader the server's sends come back short and are
    // continued; and with 256 KiB of output queued the connection stops reading, so
    // its multishot receive is cancelled and re-armed as output drains.
    const COUNT: usize = 40_000;
    let writer = write_in_background(&stream, GET.repeat(COUNT));
    let mut responses = Responses::new(stream, 1024);
    for i in 0..COUNT {
        let close = responses.expect_hello();
        assert!(!close, "response {} closes the connection", i + 1);
        if i % 500 == 0 {
            // Pacing, not synchronisation: keeps the reader slower than the server.
            thread::sleep(Duration::from_millis(1));
        }
    }
    writer.join().unwrap().expect("writing the requests");
    // The connection is still good afterwards.
    responses.stream.write_all(GET).unwrap();
    responses.expect_hellos(1);
    responses.stream.shutdown(Shutdown::Write).unwrap();
    responses.expect_eof();
}

fn two_thousand_pipelined_requests_in_one_write(engine: &str) {
    let server = Server::start(engine, uring_only(engine, &["--uring-buffer-size", "4KiB"]));
    let stream = connect(&server);
    // One write of 2,000 requests (54 KB): many provided buffers for one connection.
    let writer = write_in_background(&stream, GET.repeat(2000));
    let mut responses = Responses::new(stream, 64 * 1024);
    responses.expect_hellos(2000);
    writer.join().unwrap().expect("writing 2000 requests");
    responses.stream.shutdown(Shutdown::Write).unwrap();
    responses.expect_eof();
}

fn more_connections_than_receive_buffers_all_sending_at_once(engine: &str) {
    // On io_uring, 16 buffers of 512 bytes for 200 connections each sending 20 pipelined
    // requests (540 bytes, more than one buffer): the ring runs dry (ENOBUFS) and every
    // receive must be re-armed without losing a byte or a connection. Other engines
    // have no such pool: they get the same 4,000 requests arriving at once.
    let server = Server::start(engine, uring_only(engine, &["--uring-buffers", "16", "--uring-buffer-size", "512"]));
    const CONNS: usize = 200;
    const DEPTH: usize = 20;
    let streams: Vec<TcpStream> = (0..CONNS).map(|_| connect(&server)).collect();
    let batch = GET.repeat(DEPTH);
    for mut s in &streams {
        s.write_all(&batch).expect("write batch");
    }
    for (i, s) in streams.into_iter().enumerate() {
        let mut responses = Responses::new(s, 16 * 1024);
        for _ in 0..DEPTH {
            let close = responses.expect_hello();
            assert!(!close, "connection {i}: unexpected close");
        }
        responses.stream.shutdown(Shutdown::Write).unwrap();
        responses.expect_eof();
    }
    // And the server still serves.
    let mut responses = Responses::new(connect(&server), 4096);
    responses.stream.write_all(GET).unwrap();
    responses.expect_hellos(1);
}

fn clients_closing_while_a_send_is_in_flight_leave_the_server_healthy(engine: &str) {
    let mut server = Server::start(engine, &[]);
    for round in 0..20 {
        let mut stream = server.connect_small_rcvbuf(4096);
        // 3,000 requests (81 KB) fit the socket buffers, so this write returns; their
        // 390 KB of responses do not, so sends stay in flight.
        stream.write_all(&GET.repeat(3000)).unwrap();
        let mut responses = Responses::new(stream, 1024);
        responses.expect_hellos(1 + round);
        let stream = responses.stream;
        if round % 2 == 0 {
            // A reset, with unread data on both sides.
            socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
        }
        drop(stream);
    }
    // The server still answers, on a fresh connection.
    let mut responses = Responses::new(connect(&server), 4096);
    responses.stream.write_all(&GET.repeat(3)).unwrap();
    responses.expect_hellos(3);
    responses.stream.shutdown(Shutdown::Write).unwrap();
    responses.expect_eof();
    // A graceful shutdown waits for every completion (cancelled sends included)
    // before closing the sockets and exiting; a lost completion would hang or fail it.
    server.sigterm();
    let status = server.wait_exit();
    assert!(status.success(), "exit status {status}; stderr:\n{}", server.stderr_lines().join("\n"));
}

fn sigterm_with_connections_mid_request_finishes_them_and_exits_zero(engine: &str) {
    let mut server = Server::start(engine, &["--drain-timeout", "60s"]);
    // Requests whose heads are half sent, on several connections.
    let mut busy: Vec<TcpStream> = (0..5).map(|_| connect(&server)).collect();
    for s in &mut busy {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    }
    // A request with half its body sent.
    let mut body = connect(&server);
    body.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello").unwrap();
    // An idle keep-alive connection. One server thread: this round trip also means the
    // bytes sent above have been received.
    let mut idle = Responses::new(connect(&server), 4096);
    idle.stream.write_all(GET).unwrap();
    idle.expect_hellos(1);

    server.sigterm();
    // The idle connection closes at once.
    idle.expect_eof();
    // The in-flight requests complete, answered with Connection: close.
    for s in &mut busy {
        s.write_all(b"\r\n").unwrap();
    }
    body.write_all(b"world").unwrap();
    for s in busy.into_iter().chain([body]) {
        let mut r = Responses::new(s, 4096);
        assert!(r.expect_hello(), "no Connection: close on a request finished during shutdown");
        r.expect_eof();
    }
    let status = server.wait_exit();
    assert!(status.success(), "exit status {status}; stderr:\n{}", server.stderr_lines().join("\n"));
    assert!(
        server.stderr_lines().join("\n").contains("stopped:"),
        "no final report:\n{}",
        server.stderr_lines().join("\n")
    );
}

fn no_fd_leak_after_10000_connect_close_cycles(engine: &str) {
    let server = Server::start(engine, &[]);
    // Each cycle ends with the client half-closing and reading EOF: the server sends
    // that FIN only by closing its socket (an idle connection closes on EOF without a
    // shutdown), so when the client sees EOF the server's fd is already closed.
    let cycle = |with_request: bool| {
        let mut stream = connect(&server);
        if with_request {
            stream.write_all(GET).unwrap();
        }
        let mut responses = Responses::new(stream, 4096);
        if with_request {
            responses.expect_hellos(1);
        }
        responses.stream.shutdown(Shutdown::Write).unwrap();
        responses.expect_eof();
    };
    cycle(true);
    let before = server.fd_count();
    for i in 0..10_000 {
        cycle(i % 4 != 3);
    }
    let after = server.fd_count();
    assert_eq!(after, before, "open fds before {before}, after 10,000 connect/close cycles {after}");
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

/// At the open-file limit the server must neither spin nor stop: with every descriptor
/// in use and more clients knocking, it waits (shedding or leaving the newcomers in the
/// backlog) at almost no cost, keeps serving the connections it holds, and accepts again
/// as soon as descriptors are free.
///
/// Known failure: on this branch the io_uring engine busy-loops at the limit (about
/// 110,000-210,000 syscalls and 28,000-53,000 wakeups in the 500 ms window, against
/// epoll's 3 and 1, which are the /metrics request itself); its fix is separate work.
fn at_the_descriptor_limit_the_server_neither_spins_nor_stops_serving(engine: &str) {
    const LIMIT: u32 = 64;
    /// Clients that keep knocking once the limit is reached.
    const KNOCKING: usize = 16;
    let server = Server::start_with_fd_limit(engine, LIMIT, &["--metrics", "/metrics"]);
    // The observer: one keep-alive connection, taken before the limit is reached, that
    // reads the counters.
    let mut observer = server.connect();
    observer.send(GET);
    assert_hello(&observer.read_response(), "observer");

    // Held connections, one at a time, each answered, until the server has every
    // descriptor it may open (or sheds one, at a limit of its own below that): from
    // then on a new connection can only be shed or wait in the backlog. (Not reading
    // from a connection that may wait in the backlog keeps this from blocking.)
    let mut held: Vec<Client> = Vec::new();
    let mut shed = false;
    while !shed && server.fd_count() < LIMIT as usize {
        assert!(held.len() < 4 * LIMIT as usize, "{} connections held with a limit of {LIMIT} descriptors", held.len());
        let mut c = server.connect();
        c.try_send(GET);
        match c.try_read_response() {
            Some(r) => {
                assert_hello(&r, &format!("held connection {}", held.len()));
                held.push(c);
            }
            None => shed = true,
        }
    }
    // More clients knocking, each with a request: shed (accepted and closed) or left in
    // the backlog. Either way the server must wait for descriptors, not spin.
    let knocking: Vec<Client> = (0..KNOCKING)
        .map(|_| {
            let mut c = server.connect();
            c.try_send(GET);
            c
        })
        .collect();

    // The cost of waiting at the limit. The window is a measurement window, not
    // synchronisation: nothing is sent during it and nothing waits for it to end, and
    // its length only scales what a spinning loop would show (tens of thousands of
    // syscalls per second) against what a waiting one does (a handful).
    let before = counters(&mut observer);
    thread::sleep(Duration::from_millis(500));
    let after = counters(&mut observer);
    let (syscalls, wakeups) = (after.0 - before.0, after.1 - before.1);
    eprintln!("{engine} at the descriptor limit: {syscalls} syscalls, {wakeups} wakeups in 500 ms");
    assert!(
        syscalls < 200.0 && wakeups < 200.0,
        "at the descriptor limit with {} held and {KNOCKING} knocking connections, the {engine} server made \
         {syscalls} syscalls and {wakeups} wakeups in a 500 ms window without traffic (a busy loop)",
        held.len()
    );

    // The held connections are still served.
    for (i, c) in held.iter_mut().enumerate() {
        c.send(GET);
        assert_hello(&c.read_response(), &format!("held connection {i} at the limit"));
    }
    // Free descriptors: a brand-new connection is accepted and answered. Knocking
    // clients still in the backlog are accepted first (and then see their client gone),
    // and the server may see a new connection before the closes, so try a bounded
    // number of times.
    drop(knocking);
    held.truncate(held.len() / 2);
    let recovered = (0..200).any(|_| {
        let mut c = server.connect();
        c.try_send(GET) && c.try_read_response().is_some_and(|r| r.status == 200)
    });
    assert!(recovered, "no new connection served after half the held ones closed");
    observer.send(GET);
    assert_hello(&observer.read_response(), "observer after recovery");
}

/// More connections than select(2) can watch (FD_SETSIZE, 1024 descriptors). Every
/// engine but select serves them all. select serves those whose descriptors fit and
/// refuses the rest at accept (closed, counted in `duet_refused_total`, one log line for
/// the episode, never an `FD_SET` out of bounds), keeps serving the ones it holds, and
/// watches new connections again once descriptors below the limit are free.
fn more_connections_than_fd_setsize(engine: &str) {
    const CONNECTIONS: usize = 1100;
    let limit = crate::common::raise_nofile_limit();
    if limit < CONNECTIONS as u64 + 100 {
        eprintln!("skipping: this test needs {} open files, the limit here is {limit}", CONNECTIONS + 100);
        return;
    }
    let server = Server::start(engine, &["--metrics", "/metrics"]);
    let mut observer = server.connect();
    observer.send(GET);
    assert_hello(&observer.read_response(), "observer");
    let (mut served, mut refused) = (Vec::new(), 0);
    for i in 0..CONNECTIONS {
        let mut c = server.connect();
        c.try_send(GET);
        match c.try_read_response() {
            Some(r) => {
                assert_hello(&r, &format!("connection {i}"));
                assert!(refused == 0, "connection {i} served after {refused} were refused");
                served.push(c);
            }
            None => refused += 1,
        }
    }
    let value = |c: &mut Client, name: &str| {
        c.send(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let r = c.read_response();
        prometheus_value(&r.body_str(), name).unwrap_or_else(|| panic!("no {name} in:\n{}", r.body_str()))
    };
    let refusals = |server: &Server| {
        let lines = server.stderr_lines();
        lines.iter().filter(|l| l.contains("cannot watch descriptor")).count()
    };
    if engine != "select" {
        assert_eq!(refused, 0, "{engine} refused {refused} of {CONNECTIONS} connections");
        assert_eq!(value(&mut observer, "duet_refused_total"), 0.0);
        assert_eq!(refusals(&server), 0);
        return;
    }
    assert!(refused > 0, "select held {} connections, past FD_SETSIZE", served.len() + 1);
    assert!(served.len() > 900, "select served only {} connections before refusing", served.len());
    assert_eq!(value(&mut observer, "duet_refused_total"), refused as f64);
    let lines = server.wait_for_line("cannot watch descriptor");
    let warned: Vec<&String> = lines.iter().filter(|l| l.contains("cannot watch descriptor")).collect();
    assert_eq!(warned.len(), 1, "one log line for the episode, got {warned:?}");
    assert!(
        warned[0].contains("select cannot watch descriptor 10")
            && warned[0].contains(">= FD_SETSIZE (1024); use poll or epoll"),
        "{}",
        warned[0]
    );
    // The connections it holds are still served.
    for (i, c) in served.iter_mut().enumerate().step_by(97) {
        c.send(GET);
        assert_hello(&c.read_response(), &format!("held connection {i} after the refusals"));
    }
    // Free descriptors below the limit; once the server has closed them (its counters
    // say so), a new connection is watched again and the episode's end is logged.
    let accepted = value(&mut observer, "duet_accepts_total");
    drop(served);
    let closed = (0..100_000).any(|_| value(&mut observer, "duet_closes_total") >= accepted - 1.0);
    assert!(closed, "the server never closed the {} connections the client closed", accepted - 1.0);
    let mut c = server.connect();
    c.send(GET);
    assert_hello(&c.read_response(), "a new connection once descriptors are free");
    // The end of the episode is logged.
    server.wait_for_line(&format!("watching new connections again (refused {refused})"));
}

/// `(duet_syscalls_total, duet_wakeups_total)` read over `c`.
fn counters(c: &mut Client) -> (f64, f64) {
    c.send(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200, "GET /metrics:\n{}", r.raw_head);
    let text = r.body_str();
    let value = |name: &str| prometheus_value(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    (value("duet_syscalls_total"), value("duet_wakeups_total"))
}

/// A large in-memory response to a reader with a small window, and a request pipelined
/// behind it while the server's send waits for the window: the whole body and then the
/// second response arrive, connection after connection. (On io_uring such a send may
/// complete with `EAGAIN` — woken for a socket that was not writable once the send ran
/// again — which means "send again", not a dead connection. Without that rule this
/// test failed in about half the runs here: timing decides.)
fn a_request_pipelined_behind_a_large_response_to_a_slow_reader_loses_nothing(engine: &str) {
    const SIZE: usize = 8 << 20;
    let t = crate::TempTree::new(&format!("pipelined-big-{engine}"));
    let big = t.write("big.bin", &vec![b'x'; SIZE]);
    let route = format!("/big=@{}", big.display());
    let server =
        Server::start(engine, &["--route", &route, "--route", "/=Hello, World!", "--max-cached-file", "16MiB"]);
    for round in 1..=10 {
        let mut stream = server.connect_small_rcvbuf(4096);
        stream.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).expect("reading the head"), 1, "round {round}: EOF in the head");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(head.contains(&format!("Content-Length: {SIZE}\r\n")), "round {round}: {head}");
        stream.write_all(GET).unwrap();
        // Reads of a few KiB, about what the window lets through at a time.
        let mut chunk = [0u8; 8192];
        let mut got = 0;
        while got < SIZE {
            let n = stream.read(&mut chunk[..(SIZE - got).min(8192)]);
            let n = n.unwrap_or_else(|e| panic!("round {round}: reading the body after {got} of {SIZE} bytes: {e}"));
            assert!(n > 0, "round {round}: EOF after {got} of {SIZE} bytes");
            assert!(chunk[..n].iter().all(|&b| b == b'x'), "round {round}: body differs");
            got += n;
        }
        let mut responses = Responses::new(stream, 4096);
        assert!(!responses.expect_hello(), "round {round}: the pipelined request closes the connection");
    }
}
