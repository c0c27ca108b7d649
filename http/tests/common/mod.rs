//! A test engine: drives a `Connection` exactly as the engine contract in the crate docs
//! says (input, `poll_output` + `OutBuf::fill` + `handle_sent`, write shutdown, EOF,
//! deadlines), with virtual time and configurable partial sends.

#![allow(dead_code)]

use duet_http::{Connection, Context, Limits, Site, Timer};
use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The wall clock of every test: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const WALL_SECS: u64 = 784_111_777;
pub const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

pub fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(WALL_SECS)
}

/// How the test engine sends: at most `max_bytes` per send, at most `max_iov` segments.
#[derive(Clone, Copy, Debug)]
pub struct SendMode {
    pub max_bytes: usize,
    pub max_iov: usize,
}

impl SendMode {
    pub const ALL: SendMode = SendMode { max_bytes: usize::MAX, max_iov: 64 };
}

/// One connection and the engine state around it.
pub struct Engine {
    pub ctx: Context,
    pub conn: Connection,
    pub t0: Instant,
    /// Virtual time since `t0`.
    pub elapsed: Duration,
    /// Everything sent so far, in order.
    pub out: Vec<u8>,
    /// `poll_output` calls that returned bytes to send.
    pub batches: usize,
    pub send: SendMode,
    /// The engine shut its write side (after `should_close_after_flush`).
    pub write_shut: bool,
    /// Sends that came from a file segment (`OutBuf::front_file`).
    pub file_sends: usize,
}

impl Engine {
    pub fn new(site: Site, limits: Limits) -> Self {
        Self::with_site(Arc::new(site), limits)
    }

    pub fn hello() -> Self {
        Self::new(Site::hello(), Limits::default())
    }

    pub fn with_site(site: Arc<Site>, limits: Limits) -> Self {
        let t0 = Instant::now();
        let ctx = Context::new(site, limits, t0, wall());
        let conn = Connection::new(&ctx);
        Engine {
            ctx,
            conn,
            t0,
            elapsed: Duration::ZERO,
            out: Vec::new(),
            batches: 0,
            send: SendMode::ALL,
            write_shut: false,
            file_sends: 0,
        }
    }

    /// Bytes read from the socket.
    pub fn feed(&mut self, data: &[u8]) {
        self.conn.handle_input(&mut self.ctx, data);
    }

    /// One `writev`: fills an iovec array from `poll_output`, "sends" up to
    /// `send.max_bytes`, reports it. False when there was nothing to send.
    pub fn send_once(&mut self) -> bool {
        if self.conn.is_closed() {
            return false; // the engine has dropped the connection
        }
        let Some(buf) = self.conn.poll_output() else {
            return false;
        };
        let remaining = buf.remaining();
        assert!(remaining > 0, "poll_output returned an empty buffer");
        let mut iov = vec![IoSlice::new(&[]); self.send.max_iov];
        let filled = buf.fill(&mut iov);
        if filled == 0 {
            // A file segment at the front: "sendfile" it with positional reads.
            let (file, offset, left) = buf.front_file().expect("fill gave no segment and no file is at the front");
            assert!(left > 0 && left <= remaining);
            let take = left.min(self.send.max_bytes);
            let mut chunk = vec![0u8; take];
            std::os::unix::fs::FileExt::read_exact_at(file, &mut chunk, offset).expect("read the streamed file");
            self.out.extend_from_slice(&chunk);
            self.batches += 1;
            self.file_sends += 1;
            self.conn.handle_sent(&mut self.ctx, take);
            return true;
        }
        assert!(buf.front_file().is_none(), "front_file while memory segments come first");
        let offered: usize = iov[..filled].iter().map(|s| s.len()).sum();
        assert!(offered <= remaining);
        // With iovecs free, fill leaves out bytes only when a file segment comes next.
        let file_next = filled < self.send.max_iov && offered < remaining;
        let mut n = 0;
        for s in &iov[..filled] {
            let take = s.len().min(self.send.max_bytes - n);
            self.out.extend_from_slice(&s[..take]);
            n += take;
            if n == self.send.max_bytes {
                break;
            }
        }
        self.batches += 1;
        self.conn.handle_sent(&mut self.ctx, n);
        if file_next && n == offered {
            let next = self.conn.poll_output().expect("output left after a partial fill");
            assert!(next.front_file().is_some(), "fill left out bytes although iovecs were free");
        }
        true
    }

    /// Writes until nothing is queued; then follows the close protocol: shut the write
    /// side when the connection asks for it.
    pub fn flush(&mut self) {
        while self.send_once() {}
        if self.conn.should_close_after_flush() {
            assert!(!self.write_shut, "asked to shut the write side twice");
            self.conn.handle_write_shutdown(&mut self.ctx);
            self.write_shut = true;
        }
    }

    /// What an engine does on a read event with `chunk`: read it if the connection
    /// wants to read, then flush. Returns false if the chunk could not be delivered.
    pub fn read_event(&mut self, chunk: &[u8]) -> bool {
        self.flush();
        if self.conn.is_closed() || !self.conn.wants_read() {
            return false;
        }
        self.feed(chunk);
        self.flush();
        true
    }

    /// The peer half-closed.
    pub fn eof(&mut self) {
        self.conn.handle_eof(&mut self.ctx);
        self.flush();
    }

    /// Moves virtual time to `t0 + elapsed` (the wall clock does not move, so Date
    /// stays the same) and runs the timer as a wheel would: only at or after the
    /// deadline.
    pub fn advance_to(&mut self, elapsed: Duration) {
        assert!(elapsed >= self.elapsed, "time goes forward");
        self.elapsed = elapsed;
        self.ctx.set_time(self.t0 + elapsed, wall());
        self.conn.handle_timeout(&mut self.ctx);
        self.flush();
    }

    /// Moves virtual time and runs the timer, without writing afterwards.
    pub fn tick_to(&mut self, elapsed: Duration) {
        assert!(elapsed >= self.elapsed, "time goes forward");
        self.elapsed = elapsed;
        self.ctx.set_time(self.t0 + elapsed, wall());
        self.conn.handle_timeout(&mut self.ctx);
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    pub fn advance(&mut self, d: Duration) {
        self.advance_to(self.elapsed + d);
    }

    /// Time until the connection's earliest deadline, measured from `t0`.
    pub fn deadline(&self) -> Option<Duration> {
        self.conn.poll_timeout().map(|(_, at)| at - self.t0)
    }

    /// Which timer the connection's earliest deadline is.
    pub fn timer(&self) -> Option<Timer> {
        self.conn.poll_timeout().map(|(timer, _)| timer)
    }

    pub fn shutdown(&mut self) {
        self.conn.begin_shutdown(&mut self.ctx);
        self.flush();
    }

    /// What an engine does when its socket holds no unread input: tell a connection
    /// that asks ([`Connection::wants_input_check`]), then flush.
    pub fn no_pending_input(&mut self) {
        if self.conn.wants_input_check() {
            self.conn.handle_no_pending_input(&mut self.ctx);
        }
        self.flush();
    }

    pub fn responses(&self) -> Vec<Response> {
        parse_responses(&self.out, &[])
    }

    pub fn statuses(&self) -> Vec<u16> {
        self.responses().iter().map(|r| r.status).collect()
    }

    /// Takes what was sent so far.
    pub fn take_out(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

/// What feeding one input produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub out: Vec<u8>,
    pub write_shut: bool,
    pub closed: bool,
    pub wants_read: bool,
    pub buffered_input: usize,
}

impl Outcome {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// Final responses (1xx skipped), each checked for Date, Content-Length, Server.
    pub fn responses(&self) -> Vec<Response> {
        parse_responses(&self.out, &[])
    }

    pub fn statuses(&self) -> Vec<u16> {
        self.responses().iter().map(|r| r.status).collect()
    }
}

/// Feeds `chunks` one read event each, then reports. `batches` is the number of
/// non-empty `poll_output` calls.
pub fn run_chunks(site: &Arc<Site>, limits: &Limits, send: SendMode, chunks: &[&[u8]]) -> (Outcome, usize) {
    let mut e = Engine::with_site(Arc::clone(site), limits.clone());
    e.send = send;
    for chunk in chunks {
        if !e.read_event(chunk) {
            break;
        }
    }
    e.flush();
    let outcome = Outcome {
        out: e.out,
        write_shut: e.write_shut,
        closed: e.conn.is_closed(),
        wants_read: e.conn.wants_read(),
        buffered_input: e.conn.buffered_input(),
    };
    (outcome, e.batches)
}

/// Feeds `input` whole, in every split into two pieces, byte by byte, and whole again
/// with partial sends; asserts that all produce the same bytes and the same state.
pub fn check_with(site: &Arc<Site>, limits: &Limits, input: &[u8]) -> Outcome {
    let (whole, _) = run_chunks(site, limits, SendMode::ALL, &[input]);
    for send in [
        SendMode { max_bytes: 1, max_iov: 64 },
        SendMode { max_bytes: 7, max_iov: 1 },
        SendMode { max_bytes: 100, max_iov: 2 },
    ] {
        let (o, _) = run_chunks(site, limits, send, &[input]);
        assert_same(&whole, &o, &format!("whole input, {send:?}"));
    }
    for cut in 0..=input.len() {
        let (o, _) = run_chunks(site, limits, SendMode::ALL, &[&input[..cut], &input[cut..]]);
        assert_same(&whole, &o, &format!("split at {cut}"));
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let (o, _) = run_chunks(site, limits, SendMode::ALL, &bytes);
    assert_same(&whole, &o, "byte by byte");
    whole
}

pub fn check(input: &[u8]) -> Outcome {
    check_with(&Arc::new(Site::hello()), &Limits::default(), input)
}

fn assert_same(want: &Outcome, got: &Outcome, how: &str) {
    if want != got {
        panic!(
            "{how}: outcome differs from whole input\nwhole: {want:?}\n  got: {got:?}\nwhole out: {}\n  got out: {}",
            want.text(),
            got.text()
        );
    }
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status line and headers as sent, blank line included.
    pub head: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut it = self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = it.next().map(|(_, v)| v.as_str());
        assert!(it.next().is_none(), "header {name} sent twice");
        first
    }

    pub fn connection(&self) -> Option<&str> {
        self.header("connection")
    }
}

/// Parses a stream of responses. Bodies follow Content-Length, except for 1xx and for
/// the final responses whose index is in `head_only`. Every final response must carry
/// exactly one Date, Server and Content-Length; the stream must end on a boundary.
pub fn parse_responses(mut out: &[u8], head_only: &[usize]) -> Vec<Response> {
    let mut responses = Vec::new();
    while !out.is_empty() {
        let end = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("unterminated response head: {:?}", String::from_utf8_lossy(out)))
            + 4;
        let head = std::str::from_utf8(&out[..end]).expect("response head is ASCII");
        let mut lines = head[..end - 4].split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {status_line:?}");
        let status: u16 = parts.next().and_then(|s| s.parse().ok()).expect("status code");
        let reason = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap_or_else(|| panic!("header line {l:?}"));
                (n.to_string(), v.to_string())
            })
            .collect();
        let mut r = Response { status, reason, headers, body: Vec::new(), head: out[..end].to_vec() };
        out = &out[end..];
        if status >= 200 {
            assert_eq!(r.header("date"), Some(DATE), "Date in {head}");
            assert_eq!(r.header("server"), Some("duet"), "Server in {head}");
            // 204 and 304 carry neither Content-Length nor a body (RFC 9110 §8.6).
            let len: usize = if status == 204 || status == 304 {
                assert_eq!(r.header("content-length"), None, "Content-Length in {head}");
                0
            } else {
                r.header("content-length").and_then(|v| v.parse().ok()).expect("Content-Length")
            };
            if !head_only.contains(&responses.len()) {
                assert!(out.len() >= len, "body shorter than Content-Length in {head}");
                r.body = out[..len].to_vec();
                out = &out[len..];
            }
            responses.push(r);
        }
    }
    responses
}

/// Counts `HTTP/1.1 ` status lines that are final (not 1xx).
pub fn count_final_status_lines(out: &[u8]) -> usize {
    let needle = b"HTTP/1.1 ";
    out.windows(needle.len() + 1).filter(|w| w.starts_with(needle) && w[needle.len()] != b'1').count()
}

/// A valid GET for `path` with a Host header.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n").into_bytes()
}

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A `method` request for `path` with Host `example.com` and the extra header lines.
pub fn req(method: &str, path: &str, headers: &[&str]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: example.com\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}
