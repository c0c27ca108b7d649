//! Test utilities (cargo feature `testing`): one model engine that drives a
//! [`Connection`] exactly as the engine contract in `duet-engine` says, with virtual
//! time, used by duet-http's own tests and by the cargo-fuzz targets in `fuzz/`.
//!
//! Not for production: the feature is off by default, and only tests and the fuzz
//! crate turn it on. It uses nothing but this crate's public API and `std`. Unlike the
//! rest of the crate it reads a clock once (the [`Instant`] virtual time starts from)
//! and files (a file segment is "sent" with positional reads; the fuzz site streams a
//! body from a temporary file).
//!
//! * [`Driver`]: one connection and the engine around it. It reads the input it is
//!   given, sends what `poll_output` offers (whole, partially, or left in flight across
//!   other calls, over a bounded number of segments, memory or file), shuts the write
//!   side when `should_close_after_flush`, reports EOF, answers the input check while
//!   draining, runs the timer when a deadline is due and drops the connection once
//!   `is_closed`. Each step checks what the contract promises the engine: no empty
//!   output, segments that stay put while a send is in flight, a closed connection that
//!   wants nothing.
//! * [`responses`]: parsing what the peer received, building requests, and running one
//!   input under every split and send size ([`responses::check`]).
//! * [`fuzz`]: the fuzz targets' input format (a byte stream and a schedule of engine
//!   events), the invariants checked after every event (bounded memory, no more
//!   responses than complete requests, never held without a deadline...) and the
//!   targets themselves, also replayed on stable by `http/tests/fuzz_corpus.rs`.

pub mod fuzz;
pub mod responses;

pub use responses::{
    cat, check, check_with, count_final_status_lines, get, parse_responses, req, run_chunks, Outcome, Response,
};

use crate::{Connection, Context, Limits, Site, Timer};
use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The wall clock of every test at virtual time zero: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const WALL_SECS: u64 = 784_111_777;
/// [`WALL_SECS`] as an HTTP date: the Date of every response while the wall clock
/// stands still.
pub const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

/// The wall clock at virtual time zero.
pub fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(WALL_SECS)
}

/// How the driver sends: at most `max_bytes` per send, over at most `max_iov` segments.
#[derive(Clone, Copy, Debug)]
pub struct SendMode {
    /// Bytes one send takes at most (a short write below this).
    pub max_bytes: usize,
    /// Segments one send offers at most (the iovec array's length).
    pub max_iov: usize,
}

impl SendMode {
    /// Everything `fill` offers over 64 segments: a peer that reads as fast as it can.
    pub const ALL: SendMode = SendMode { max_bytes: usize::MAX, max_iov: 64 };
}

/// A send handed to the "kernel": what `poll_output` gave, copied, to compare later.
struct InFlight {
    /// `(address, length)` of each memory segment; empty for a file segment and for a
    /// send completed at once.
    segments: Vec<(usize, usize)>,
    /// For a file segment: the file's address, the offset and the bytes left.
    file: Option<(usize, u64, usize)>,
    /// The bytes of the segments: all of them for a send left in flight, the `n` sent
    /// for one completed at once (of a file segment: the `n` bytes sent).
    bytes: Vec<u8>,
    /// Bytes this send takes.
    n: usize,
    /// Segments the send offered room for.
    iov: usize,
    /// `fill` left bytes out although segments were free, and the send takes all it
    /// offered: a file segment must be at the front once it completes.
    file_next: bool,
}

/// One connection and the model engine around it.
///
/// The fields are public so that tests can reach past the engine (call the
/// connection directly, look at the context's counters, change the send mode).
pub struct Driver {
    /// The per-thread context the connection is driven with.
    pub ctx: Context,
    /// The connection under test.
    pub conn: Connection,
    /// Virtual time zero.
    pub t0: Instant,
    /// Virtual time since `t0`.
    pub elapsed: Duration,
    /// Everything the peer received, in order.
    pub out: Vec<u8>,
    /// Sends that took bytes (non-empty `poll_output` calls acted on).
    pub batches: usize,
    /// How [`Driver::send_once`] and [`Driver::flush`] send.
    pub send: SendMode,
    /// The driver shut its write side (after `should_close_after_flush`).
    pub write_shut: bool,
    /// Sends that came from a file segment (`OutBuf::front_file`).
    pub file_sends: usize,
    /// The wall clock follows virtual time (the Date changes); by default it stands
    /// still at [`wall`], so every Date is [`DATE`].
    pub wall_moves: bool,
    /// The engine dropped the connection (it reported `is_closed`).
    dropped: bool,
    inflight: Option<InFlight>,
}

impl Driver {
    /// A connection to `site` under `limits`.
    pub fn new(site: Site, limits: Limits) -> Self {
        Self::with_site(Arc::new(site), limits)
    }

    /// A connection to [`Site::hello`] under the default limits.
    pub fn hello() -> Self {
        Self::new(Site::hello(), Limits::default())
    }

    /// A connection to a shared `site` under `limits`.
    pub fn with_site(site: Arc<Site>, limits: Limits) -> Self {
        let t0 = Instant::now();
        let ctx = Context::new(site, limits, t0, wall());
        let conn = Connection::new(&ctx);
        Driver {
            ctx,
            conn,
            t0,
            elapsed: Duration::ZERO,
            out: Vec::new(),
            batches: 0,
            send: SendMode::ALL,
            write_shut: false,
            file_sends: 0,
            wall_moves: false,
            dropped: false,
            inflight: None,
        }
    }

    /// True once the engine has dropped the connection: it does nothing more with it.
    pub fn dropped(&self) -> bool {
        self.dropped
    }

    /// True while a send begun by [`Driver::begin_send`] has not completed.
    pub fn send_in_flight(&self) -> bool {
        self.inflight.is_some()
    }

    // ---- Input.

    /// Bytes read from the socket, handed over whatever `wants_read` says.
    pub fn feed(&mut self, data: &[u8]) {
        self.conn.handle_input(&mut self.ctx, data);
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

    /// The peer half-closed; then flush.
    pub fn eof(&mut self) {
        self.conn.handle_eof(&mut self.ctx);
        self.flush();
    }

    /// Graceful shutdown begins; then flush.
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

    // ---- Output.

    /// One `writev` (or `sendfile`), complete at once: up to `send.max_bytes` over up
    /// to `send.max_iov` segments. False when there was nothing to send or the
    /// connection is closed.
    pub fn send_once(&mut self) -> bool {
        if self.conn.is_closed() {
            return false; // the engine has dropped the connection
        }
        self.complete();
        // Completed at once, with nothing in between to check against: only the bytes
        // sent are kept, so a one-byte send of a large queue does not copy the queue.
        let Some(flight) = self.take_send(self.send.max_bytes, self.send.max_iov, false) else {
            return false;
        };
        self.finish_send(flight);
        true
    }

    /// Writes until nothing is queued; then follows the close protocol: shut the write
    /// side when the connection asks for it, drop the connection once it is closed.
    pub fn flush(&mut self) {
        while self.send_once() {}
        self.react();
    }

    /// Takes the next segments from `poll_output` into a send of at most `n` bytes over
    /// at most `iov` segments, left in flight until [`Driver::complete`]: its segments
    /// must not change meanwhile. False when there is nothing to send, a send is
    /// already in flight or the connection was dropped.
    pub fn begin_send(&mut self, n: usize, iov: usize) -> bool {
        if self.inflight.is_some() {
            return false;
        }
        self.inflight = self.take_send(n, iov, true);
        self.inflight.is_some()
    }

    /// The next send from `poll_output`, checked. `keep_all`: keep the segments and
    /// every byte offered, to compare later, not only the bytes the send takes.
    fn take_send(&mut self, n: usize, iov: usize, keep_all: bool) -> Option<InFlight> {
        if self.dropped {
            return None;
        }
        let buf = self.conn.poll_output()?;
        let remaining = buf.remaining();
        assert!(remaining > 0, "poll_output returned an empty buffer");
        let mut slices = vec![IoSlice::new(&[]); iov];
        let filled = buf.fill(&mut slices);
        let flight = if filled == 0 {
            // A file segment at the front: "sendfile" it with positional reads.
            let (file, offset, left) =
                buf.front_file().expect("fill gave nothing, yet no file segment is at the front");
            assert!(left > 0 && left <= remaining, "front_file length {left} of {remaining} remaining");
            let n = n.min(left);
            let mut bytes = vec![0; n];
            std::os::unix::fs::FileExt::read_exact_at(file, &mut bytes, offset).expect("read the streamed file");
            let file = Some((file as *const std::fs::File as usize, offset, left));
            self.file_sends += 1;
            InFlight { segments: Vec::new(), file, bytes, n, iov, file_next: false }
        } else {
            assert!(buf.front_file().is_none(), "front_file while memory segments come first");
            let offered: usize = slices[..filled].iter().map(|s| s.len()).sum();
            assert!(offered <= remaining, "fill offered more than remains");
            let n = n.min(offered);
            let (segments, keep) = if keep_all {
                (slices[..filled].iter().map(|s| (s.as_ptr() as usize, s.len())).collect(), offered)
            } else {
                (Vec::new(), n)
            };
            let mut bytes = Vec::with_capacity(keep);
            for s in &slices[..filled] {
                let take = s.len().min(keep - bytes.len());
                bytes.extend_from_slice(&s[..take]);
            }
            // With segments free, fill leaves out bytes only when a file segment is next.
            let file_next = filled < iov && offered < remaining && n == offered;
            InFlight { segments, file: None, n, bytes, iov, file_next }
        };
        self.batches += 1;
        Some(flight)
    }

    /// The send in flight completes: its bytes reach the peer and are reported with
    /// `handle_sent`. Nothing happens when no send is in flight.
    pub fn complete(&mut self) {
        self.complete_with(String::new);
    }

    /// [`Driver::complete`]; `context` words where the driver is, for a panic message.
    pub fn complete_with(&mut self, context: impl Fn() -> String) {
        if self.dropped {
            return;
        }
        self.check_inflight(context);
        if let Some(flight) = self.inflight.take() {
            self.finish_send(flight);
        }
    }

    /// The peer receives the bytes of `flight`; the connection hears of them.
    fn finish_send(&mut self, flight: InFlight) {
        self.out.extend_from_slice(&flight.bytes[..flight.n]);
        self.conn.handle_sent(&mut self.ctx, flight.n);
        if flight.file_next {
            let next = self.conn.poll_output().expect("output left after a partial fill");
            assert!(next.front_file().is_some(), "fill left out bytes although segments were free");
        }
    }

    /// What an engine does after handling any event: shut the write side when asked,
    /// drop the connection once it is closed.
    pub fn react(&mut self) {
        if self.dropped {
            return;
        }
        if self.conn.should_close_after_flush() {
            assert!(!self.write_shut, "asked to shut the write side twice");
            assert!(self.inflight.is_none(), "asked to shut the write side with a send in flight");
            self.conn.handle_write_shutdown(&mut self.ctx);
            self.write_shut = true;
        }
        if self.conn.is_closed() {
            // A completion engine keeps the connection until its send completes; the
            // segments are checked until then (here: once more).
            self.check_inflight(String::new);
            self.inflight = None;
            self.dropped = true;
            assert!(!self.conn.wants_read(), "a closed connection wants input");
            assert!(self.conn.poll_timeout().is_none(), "a closed connection has a deadline armed");
        }
    }

    /// The segments of the send in flight are still exactly what `poll_output` gave
    /// (addresses, lengths and bytes; for a file segment its file, offset and length).
    /// `context` words where the driver is, for the panic message.
    pub fn check_inflight(&mut self, context: impl Fn() -> String) {
        let Some(flight) = &self.inflight else {
            return;
        };
        let Some(buf) = self.conn.poll_output() else {
            panic!("a send is in flight, yet poll_output has nothing ({})", context());
        };
        if let Some((file, offset, left)) = flight.file {
            let front = buf.front_file().map(|(f, o, l)| (f as *const std::fs::File as usize, o, l));
            assert_eq!(front, Some((file, offset, left)), "the file segment in flight changed ({})", context());
            return;
        }
        let mut slices = vec![IoSlice::new(&[]); flight.iov];
        let filled = buf.fill(&mut slices);
        let segments: Vec<(usize, usize)> = slices[..filled].iter().map(|s| (s.as_ptr() as usize, s.len())).collect();
        assert_eq!(segments, flight.segments, "segments in flight moved ({})", context());
        let kept = flight.bytes.len();
        let same = slices[..filled].iter().flat_map(|s| s.iter()).take(kept).eq(flight.bytes.iter());
        assert!(same, "bytes in flight changed ({})", context());
    }

    // ---- Time.

    /// Moves virtual time to `t0 + elapsed` and runs `handle_timeout`, whether a
    /// deadline is due or not, without writing afterwards.
    pub fn tick_to(&mut self, elapsed: Duration) {
        self.set_clock(elapsed);
        self.conn.handle_timeout(&mut self.ctx);
    }

    /// [`Driver::tick_to`], then flush.
    pub fn advance_to(&mut self, elapsed: Duration) {
        self.tick_to(elapsed);
        self.flush();
    }

    /// [`Driver::advance_to`] `d` later.
    pub fn advance(&mut self, d: Duration) {
        self.advance_to(self.elapsed + d);
    }

    /// Time passes by `d` and the timer fires as a timer wheel does: only once the
    /// earliest deadline is due. Nothing is written afterwards.
    pub fn pass_time(&mut self, d: Duration) {
        self.set_clock(self.elapsed + d);
        if self.conn.poll_timeout().is_some_and(|(_, at)| at <= self.ctx.now()) {
            self.conn.handle_timeout(&mut self.ctx);
        }
    }

    /// Moves the clocks (virtual time, and the wall clock if it moves) to `elapsed`.
    fn set_clock(&mut self, elapsed: Duration) {
        assert!(elapsed >= self.elapsed, "time goes forward");
        self.elapsed = elapsed;
        let wall = if self.wall_moves { wall() + elapsed } else { wall() };
        self.ctx.set_time(self.t0 + elapsed, wall);
    }

    /// Time until the connection's earliest deadline, measured from `t0`.
    pub fn deadline(&self) -> Option<Duration> {
        self.conn.poll_timeout().map(|(_, at)| at - self.t0)
    }

    /// Which timer the connection's earliest deadline is.
    pub fn timer(&self) -> Option<Timer> {
        self.conn.poll_timeout().map(|(timer, _)| timer)
    }

    // ---- What the peer received.

    /// What the peer received, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// The final responses received, each checked (see [`responses::parse_responses`]).
    pub fn responses(&self) -> Vec<responses::Response> {
        responses::parse_responses(&self.out, &[])
    }

    /// The status codes of [`Driver::responses`].
    pub fn statuses(&self) -> Vec<u16> {
        self.responses().iter().map(|r| r.status).collect()
    }

    /// Takes what was received so far.
    pub fn take_out(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}
