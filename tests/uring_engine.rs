//! Tests that pin the io_uring engine's own risks, against the real binary:
//! `duet serve --engine uring --port 0 --threads 1`.
//!
//! - partial sends to a slow reader, and the receive cancelled and re-armed around
//!   backpressure;
//! - a pipelined burst spread over many provided buffers;
//! - more connections than provided buffers, all sending at once (ENOBUFS);
//! - clients that reset while a send is in flight;
//! - SIGTERM with requests half received;
//! - no fd leak over 10,000 connect/close cycles.
//!
//! When io_uring is unavailable the tests print why and pass, unless
//! `DUET_REQUIRE_URING=1`. No sleeps for synchronisation and no timing assertions:
//! every wait is a blocking read with a generous timeout.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitStatus;
use std::thread;
use std::time::Duration;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
const HELLO: &[u8] = b"Hello, World!";
/// Longest any single blocking read or wait may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `duet serve --engine uring` from the shared harness (killed on drop, stderr shown on
/// panic), with the raw-socket helpers these tests need.
struct Server(common::Server);

impl Server {
    /// Starts the server with `extra` flags. Returns `None` (after printing why) when
    /// io_uring is unavailable here and `DUET_REQUIRE_URING` is not `1`.
    fn start(extra: &[&str]) -> Option<Server> {
        if let Some(reason) = common::skip_reason("uring") {
            eprintln!("skipping: {reason}");
            return None;
        }
        Some(Server(common::Server::start("uring", extra)))
    }

    fn stderr_text(&self) -> String {
        self.0.stderr_lines().join("\n")
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.0.addr, TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream
    }

    /// A connection whose receive buffer is `rcvbuf` bytes, set before connecting:
    /// shrinking it on an established connection shrinks a window already offered,
    /// which stalls loopback TCP in zero-window probing for seconds.
    fn connect_small_rcvbuf(&self, rcvbuf: usize) -> TcpStream {
        use socket2::{Domain, Socket, Type};
        let addr = self.0.addr;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(rcvbuf).unwrap();
        socket.connect_timeout(&addr.into(), TIMEOUT).expect("connect");
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream
    }

    /// Open file descriptors of the server process.
    fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.0.pid())).expect("read /proc/<pid>/fd").count()
    }

    fn sigterm(&self) {
        self.0.sigterm();
    }

    fn wait_exit(&mut self) -> ExitStatus {
        self.0.wait_exit()
    }
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

#[test]
fn slow_reader_gets_all_40000_pipelined_responses_through_partial_sends() {
    let Some(server) = Server::start(&[]) else { return };
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

#[test]
fn two_thousand_pipelined_requests_in_one_write() {
    let Some(server) = Server::start(&["--uring-buffer-size", "4KiB"]) else { return };
    let stream = server.connect();
    // One write of 2,000 requests (54 KB): many provided buffers for one connection.
    let writer = write_in_background(&stream, GET.repeat(2000));
    let mut responses = Responses::new(stream, 64 * 1024);
    responses.expect_hellos(2000);
    writer.join().unwrap().expect("writing 2000 requests");
    responses.stream.shutdown(Shutdown::Write).unwrap();
    responses.expect_eof();
}

#[test]
fn more_connections_than_ring_buffers_all_sending_at_once() {
    // 16 buffers of 512 bytes for 200 connections each sending 20 pipelined requests
    // (540 bytes, more than one buffer): the ring runs dry (ENOBUFS) and every
    // receive must be re-armed without losing a byte or a connection.
    let Some(server) = Server::start(&["--uring-buffers", "16", "--uring-buffer-size", "512"]) else { return };
    const CONNS: usize = 200;
    const DEPTH: usize = 20;
    let streams: Vec<TcpStream> = (0..CONNS).map(|_| server.connect()).collect();
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
    let mut responses = Responses::new(server.connect(), 4096);
    responses.stream.write_all(GET).unwrap();
    responses.expect_hellos(1);
}

#[test]
fn clients_closing_while_a_send_is_in_flight_leave_the_server_healthy() {
    let Some(mut server) = Server::start(&[]) else { return };
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
    let mut responses = Responses::new(server.connect(), 4096);
    responses.stream.write_all(&GET.repeat(3)).unwrap();
    responses.expect_hellos(3);
    responses.stream.shutdown(Shutdown::Write).unwrap();
    responses.expect_eof();
    // A graceful shutdown waits for every completion (cancelled sends included)
    // before closing the sockets and exiting; a lost completion would hang or fail it.
    server.sigterm();
    let status = server.wait_exit();
    assert!(status.success(), "exit status {status}; stderr:\n{}", server.stderr_text());
}

#[test]
fn sigterm_with_connections_mid_request_finishes_them_and_exits_zero() {
    let Some(mut server) = Server::start(&["--drain-timeout", "60s"]) else { return };
    // Requests whose heads are half sent, on several connections.
    let mut busy: Vec<TcpStream> = (0..5).map(|_| server.connect()).collect();
    for s in &mut busy {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    }
    // A request with half its body sent.
    let mut body = server.connect();
    body.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello").unwrap();
    // An idle keep-alive connection. One server thread: this round trip also means the
    // bytes sent above have been received.
    let mut idle = Responses::new(server.connect(), 4096);
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
    assert!(status.success(), "exit status {status}; stderr:\n{}", server.stderr_text());
    assert!(server.stderr_text().contains("stopped:"), "no final report:\n{}", server.stderr_text());
}

#[test]
fn no_fd_leak_after_10000_connect_close_cycles() {
    let Some(server) = Server::start(&[]) else { return };
    // Each cycle ends with the client half-closing and reading EOF: the server sends
    // that FIN only by closing its socket (an idle connection closes on EOF without a
    // shutdown), so when the client sees EOF the server's fd is already closed.
    let cycle = |with_request: bool| {
        let mut stream = server.connect();
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
