//! The fuzz harness of duet-http: the [`Driver`] taken through a schedule of engine
//! events, and the invariants checked after every step.
//!
//! Used twice: by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs` call [`connection`]
//! and [`split`], nightly) and by the stable corpus replay (`http/tests/fuzz_corpus.rs`
//! calls [`replay`]), so `cargo test --workspace` checks every seed in `fuzz/seeds/`
//! against exactly the invariants the fuzzer checks.
//!
//! # Input format
//!
//! An input is the byte stream a client sends, optionally followed by [`SCHEDULE`] and a
//! schedule: one configuration byte (limits, site, how the run ends) and then operations
//! of two bytes each (kind, argument), see [`Op`]. Without the marker the configuration
//! and schedule are drawn from a small PRNG seeded with a hash of the stream: a plain
//! HTTP request file is a valid input, and a mutation of its bytes also varies where it
//! is cut, how much each send takes and when time passes.
//!
//! # The model engine
//!
//! The [`Driver`] follows the engine contract of `duet-engine`: it reads only while
//! `wants_read()` (except for [`Op::ReadAnyway`], a multishot receive completing after
//! `wants_read()` turned false), keeps at most one send in flight with its segments
//! taken from `poll_output()` until it reports them with `handle_sent`, shuts the write
//! side when `should_close_after_flush()`, reports EOF, answers the input check of a
//! draining connection once the stream is all delivered, runs `handle_timeout` when a
//! deadline is due (or late, as a timer wheel does), and drops the connection once
//! `is_closed()`. Time is virtual.
//!
//! # Invariants (checked after every step; a violation panics)
//!
//! * No panic inside duet-http.
//! * Queued output: `output_len() <= max_output - 1 + response_max + files` (see
//!   [`output_max`]). The parse loop checks the cap (`memory >= max_output` stops it)
//!   before every request it answers and before every body it reads, so at most one
//!   addition is made on top of less than `max_output` bytes in memory: one response,
//!   or one `100 Continue`; a 408 from a deadline is added only where that loop stopped
//!   below the cap. One response is at most [`response_max`]: [`HEAD_MAX`] plus its
//!   in-memory body (5000 bytes at most on the harness site), or for a 301 `HEAD_MAX`
//!   plus the target its `Location` echoes (shorter than `max_head`) plus its 22-byte
//!   body. File bodies are not in memory and do not count toward the cap; at most
//!   `MAX_QUEUED_FILES` (4, `http/src/conn.rs`) file segments are queued, so `files` is
//!   `4 * DISK_BODY_LEN` for the site with a file on disk and 0 for the other. Every head
//!   seen in the output is checked against `HEAD_MAX`, so the constant cannot silently
//!   go stale.
//! * Buffered input: `buffered_input() <= max_head` whenever `wants_read()` (all it can
//!   hold then is one incomplete head); and at any time at most `max_head` plus the last
//!   read taken while `wants_read()` plus everything handed over since while it was
//!   false (what backpressure holds back; an engine bounds each read by its buffer).
//! * Never more final responses (`HTTP/1.1 xxx` status lines with `xxx` >= 200; the
//!   `100 Continue` is not final) than complete request heads delivered (counted as
//!   blank lines `\n\n` or `\n\r\n` in the bytes delivered, an upper bound) plus one
//!   error answer; nothing after a response with `Connection: close`. The site's bodies
//!   contain neither pattern, and no header echoes a space, so counting them in the
//!   output stream is exact.
//! * The segments of a send in flight keep their addresses and bytes (and a file
//!   segment its file, offset and length) through every other call until the send is
//!   reported, even if the connection closes meanwhile (a completion engine keeps it
//!   until the completion): `poll_output()` is unchanged by `handle_input`,
//!   `handle_timeout`, `handle_eof` and `begin_shutdown`.
//! * Never held forever: a connection that is not closed always has a deadline armed.
//!   A closed one wants no input and has none.
//! * A `handle_timeout` before any deadline is due changes nothing.
//! * Output the [`Driver`] is offered is never empty; `fill` leaves bytes out with
//!   segments free only when a file segment comes next; the write side is shut at most
//!   once and never with a send in flight.
//! * The connection is closed at the end: after EOF, and after time passes when the
//!   peer stops reading.
//! * [`split`] only: the same stream delivered whole and cut as the schedule says (with
//!   partial sends and sends in flight across reads) gives byte-identical output and the
//!   same final state (the Date is fixed).

use super::{Driver, WALL_SECS};
use crate::{Body, FileMeta, Limits, Site, Timer};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Separates the client's byte stream from an explicit schedule.
pub const SCHEDULE: &[u8] = b"\xffSCHEDULE\xff";

/// Longest response head the harness site can produce (status line, Server,
/// Content-Type, Content-Length, ETag, Last-Modified, Accept-Ranges, Content-Range,
/// Date, Connection), apart from a 301's `Location`, which echoes the target. The
/// longest today is a 206 from `/disk` with `Connection: close`: 280 bytes.
pub const HEAD_MAX: usize = 320;

/// Mirrors `MAX_QUEUED_FILES` in `http/src/conn.rs`: file responses queued before a
/// connection stops parsing.
const MAX_QUEUED_FILES: usize = 4;

/// The site's in-memory bodies. `BIG` is above duet's inline threshold (4 KiB), so it
/// is a shared segment spliced between owned bytes, not copied.
const HELLO: &[u8] = b"Hello, World!";
const BIG_BODY_LEN: usize = 5000;
const FILE_BODY_LEN: usize = 3000;
/// The body streamed from disk (`/disk`, with the disk site only).
const DISK_BODY_LEN: usize = 6000;
const MEMORY_BODY_MAX: usize = BIG_BODY_LEN;
/// `301 Moved Permanently\n`, the body of a redirect (whose head echoes the target).
const REDIRECT_BODY_LEN: usize = 22;

// ---------------------------------------------------------------------------------
// Configuration

/// What a run is configured with: one byte of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// 0: `Limits::default()`; 1: small limits every short input reaches; 2: medium.
    pub limits: u8,
    /// Adds `/disk`, a body streamed from a file (so output holds file segments).
    pub disk: bool,
    /// How the run ends: the peer reads everything and closes (false), or closes and
    /// stops reading (true), so only the send deadline can end the connection.
    pub peer_stops_reading: bool,
    /// Adds an echo route at `/echo`, whose responses repeat request bytes: the output
    /// can then hold anything, so status lines are not counted (every other invariant,
    /// and `split`'s byte-identical output, still holds).
    pub echo: bool,
}

impl Config {
    /// Every configuration, for the stable replay.
    pub const ALL: [u8; 24] = [0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 16, 17, 18, 20, 21, 22, 24, 25, 26, 28, 29, 30];

    /// The configuration a schedule's first byte encodes (see the fields).
    pub fn from_byte(b: u8) -> Config {
        Config { limits: (b & 3) % 3, disk: b & 4 != 0, peer_stops_reading: b & 8 != 0, echo: b & 16 != 0 }
    }

    /// The [`Limits`] the `limits` field stands for.
    pub fn limits(&self) -> Limits {
        match self.limits {
            0 => Limits::default(),
            1 => Limits { max_head: 128, max_headers: 6, max_body: 64, max_output: 1024, ..Limits::default() },
            _ => Limits { max_head: 512, max_headers: 16, max_body: 4096, max_output: 4096, ..Limits::default() },
        }
    }

    fn site(&self) -> Arc<Site> {
        let sites = SITES.get_or_init(build_sites);
        Arc::clone(&sites[self.disk as usize + 2 * self.echo as usize])
    }
}

/// The sites by `disk + 2 * echo`.
static SITES: OnceLock<[Arc<Site>; 4]> = OnceLock::new();

/// Bytes of a body: lower-case letters, so no body holds a status line, a blank line
/// or `Connection: close`.
fn body_bytes(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| b'a' + ((i + salt as usize) % 26) as u8).collect()
}

fn build_sites() -> [Arc<Site>; 4] {
    let meta = FileMeta { etag: "v1".into(), modified: UNIX_EPOCH + Duration::from_secs(WALL_SECS - 3600) };
    let builder = || {
        Site::builder()
            .route("/", "text/plain", bytes_of(HELLO))
            .route("/big", "text/plain", bytes_of(&body_bytes(BIG_BODY_LEN, 0)))
            .file("/file", "text/plain", bytes_of(&body_bytes(FILE_BODY_LEN, 1)), &meta)
            .directory("/dir")
            .alias("/dir/", "/")
    };
    let file = disk_file();
    let disk = || {
        builder().file("/disk", "application/octet-stream", Body::file(Arc::clone(&file), DISK_BODY_LEN as u64), &meta)
    };
    [
        Arc::new(builder().build()),
        Arc::new(disk().build()),
        Arc::new(builder().echo("/echo").build()),
        Arc::new(disk().echo("/echo").build()),
    ]
}

fn bytes_of(b: &[u8]) -> Body {
    Body::Memory(b.to_vec().into())
}

/// An unlinked temporary file holding the `/disk` body.
fn disk_file() -> Arc<std::fs::File> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let path = std::env::temp_dir().join(format!("duet-fuzz-{}-{nanos}.body", std::process::id()));
    std::fs::write(&path, body_bytes(DISK_BODY_LEN, 2)).expect("write the /disk body to a temporary file");
    let file = std::fs::File::open(&path).expect("open the /disk body");
    let _ = std::fs::remove_file(&path);
    Arc::new(file)
}

/// The largest single addition to the output queue: one response's head and in-memory
/// body (a `100 Continue` is smaller).
pub fn response_max(limits: &Limits) -> usize {
    let redirect = HEAD_MAX + limits.max_head + REDIRECT_BODY_LEN;
    redirect.max(HEAD_MAX + MEMORY_BODY_MAX)
}

/// The bound on `output_len()`; see the module docs.
pub fn output_max(config: &Config) -> usize {
    let limits = config.limits();
    let files = if config.disk { MAX_QUEUED_FILES * DISK_BODY_LEN } else { 0 };
    // An echo answers with a body of up to `max_body`, or a GET's head of up to
    // `max_head`.
    let echo = if config.echo { HEAD_MAX + (limits.max_body as usize).max(limits.max_head) } else { 0 };
    limits.max_output - 1 + response_max(&limits).max(echo) + files
}

// ---------------------------------------------------------------------------------
// Schedule

/// One engine event. In an explicit schedule each is two bytes: `kind % 12`, then an
/// argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A read event of up to `n` bytes of the stream, taken only if `wants_read()`.
    Read(usize),
    /// Up to `n` bytes handed over whatever `wants_read()` says: a multishot receive
    /// that completed after it turned false (io_uring).
    ReadAnyway(usize),
    /// An edge-triggered read loop: chunks of up to `n` bytes while `wants_read()`, at
    /// most 16 (the per-wakeup budget).
    ReadLoop(usize),
    /// One send, complete at once: at most `n` bytes over at most `iov` segments.
    Send {
        /// Bytes the send takes at most.
        n: usize,
        /// Segments it offers room for.
        iov: usize,
    },
    /// A send left in flight: its segments must not change until [`Op::Complete`].
    BeginSend {
        /// Bytes the send takes at most.
        n: usize,
        /// Segments it offers room for.
        iov: usize,
    },
    /// The send in flight completes.
    Complete,
    /// The peer reads everything: send until nothing is queued.
    Flush,
    /// Virtual time moves on; due deadlines fire.
    Advance(Duration),
    /// Time jumps to the earliest deadline, plus `late` (a timer wheel fires late).
    ToDeadline {
        /// How long after the deadline the timer fires.
        late: Duration,
    },
    /// `handle_timeout` before any deadline: must change nothing.
    EarlyTimeout,
    /// The peer closed its write side.
    Eof,
    /// Graceful shutdown begins.
    Shutdown,
}

/// Read lengths: 1 to 128 bytes one by one, then 64-byte steps up to 8 KiB.
fn len_of(arg: u8) -> usize {
    if arg < 128 {
        arg as usize + 1
    } else {
        (arg as usize - 127) * 64
    }
}

/// Time steps from 1 ms to ten minutes, with each limit's edges (5 s linger, 10 s
/// header, 60 s keep-alive and send) and just below them.
const STEPS_MS: [u64; 16] =
    [1, 2, 10, 100, 500, 999, 1000, 2000, 4999, 5000, 9999, 10_000, 30_000, 59_999, 60_000, 600_000];
const LATE_MS: [u64; 4] = [0, 1, 100, 1000];

fn op_of(kind: u8, arg: u8) -> Op {
    let iov = if arg & 1 == 0 { 64 } else { 2 };
    match kind % 12 {
        0 => Op::Read(len_of(arg)),
        1 => Op::ReadAnyway(len_of(arg)),
        2 => Op::ReadLoop(len_of(arg)),
        3 => Op::Send { n: len_of(arg), iov },
        4 => Op::BeginSend { n: len_of(arg), iov },
        5 => Op::Complete,
        6 => Op::Flush,
        7 => Op::Advance(Duration::from_millis(STEPS_MS[arg as usize % 16])),
        8 => Op::ToDeadline { late: Duration::from_millis(LATE_MS[arg as usize % 4]) },
        9 => Op::EarlyTimeout,
        10 => Op::Eof,
        _ => Op::Shutdown,
    }
}

/// An input split into the client's stream and the run's configuration and events.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The bytes the client sends.
    pub stream: &'a [u8],
    /// Limits, site and ending of the run.
    pub config: Config,
    /// The engine events, in order.
    pub ops: Vec<Op>,
}

impl<'a> Input<'a> {
    /// The stream and schedule of `data` (see the module docs).
    pub fn parse(data: &'a [u8]) -> Input<'a> {
        match find(data, SCHEDULE) {
            Some(at) => {
                let schedule = &data[at + SCHEDULE.len()..];
                let config = Config::from_byte(schedule.first().copied().unwrap_or(0));
                let ops =
                    schedule.get(1..).unwrap_or(&[]).chunks(2).map(|p| op_of(p[0], p.get(1).copied().unwrap_or(0)));
                Input { stream: &data[..at], config, ops: ops.collect() }
            }
            None => {
                let mut rng = Rng::new(fnv1a(data));
                let config = Config::from_byte(rng.next_u64() as u8);
                Input { stream: data, config, ops: random_ops(data.len(), &mut rng) }
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// FNV-1a of `data`: the seed of a drawn schedule.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// xorshift64*: enough to vary schedules deterministically.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (never zero, which xorshift would keep).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A schedule that delivers a `len`-byte stream in pieces of every size, with partial
/// sends, sends in flight across reads, and time mostly in small steps.
pub fn random_ops(len: usize, rng: &mut Rng) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut delivered = 0;
    while delivered < len && ops.len() < 4 * len + 64 {
        let scale = [1, 4, 32, 256, 4096][rng.below(5) as usize];
        let size = 1 + rng.below(scale) as usize;
        let iov = if rng.below(2) == 0 { 64 } else { 2 };
        let op = match rng.below(1000) {
            0..=449 => Op::Read(size),
            450..=499 => Op::ReadAnyway(size),
            500..=549 => Op::ReadLoop(size),
            550..=699 => Op::Send { n: size, iov },
            700..=769 => Op::BeginSend { n: size, iov },
            770..=829 => Op::Complete,
            830..=869 => Op::Flush,
            // Small steps mostly: a long one ends most runs with a 408.
            870..=939 => {
                let longest = 8 + rng.below(8);
                Op::Advance(Duration::from_millis(STEPS_MS[rng.below(longest + 1) as usize]))
            }
            940..=969 => Op::ToDeadline { late: Duration::from_millis(LATE_MS[rng.below(4) as usize]) },
            970..=993 => Op::EarlyTimeout,
            994..=996 => Op::Shutdown,
            _ => Op::Eof,
        };
        if let Op::Read(n) | Op::ReadAnyway(n) = op {
            delivered += n;
        }
        ops.push(op);
    }
    ops
}

// ---------------------------------------------------------------------------------
// The run: the driver, the stream it reads, and the checker

/// One connection driven through a schedule: the [`Driver`], the client's stream it
/// reads from, and what the checker tracks.
pub struct Run<'a> {
    /// The model engine and its connection.
    pub driver: Driver,
    config: Config,
    limits: Limits,
    output_max: usize,
    stream: &'a [u8],
    /// Bytes of the stream handed to `handle_input`.
    delivered: usize,
    eof: bool,
    /// Bound on `buffered_input()`: `max_head` + the last read taken while the
    /// connection wanted input + what was handed over since while it did not.
    input_allowance: usize,
    /// Blank lines (`\n\n`, `\n\r\n`) in the delivered bytes: an upper bound on the
    /// complete request heads received.
    heads: usize,
    /// Output scanned so far for status lines and `Connection: close`.
    scanned: usize,
    finals: usize,
    /// Where the head being scanned started (its status line).
    head_start: Option<usize>,
    /// Final responses seen when one with `Connection: close` was: nothing may follow.
    closed_after: Option<usize>,
    /// Step counter, for messages.
    step: usize,
    last_op: Option<Op>,
}

impl<'a> Run<'a> {
    /// A connection to `config`'s site that will read `stream`. `wall_moves`: the wall
    /// clock follows virtual time (the Date changes); `split` keeps it still.
    pub fn new(stream: &'a [u8], config: Config, wall_moves: bool) -> Run<'a> {
        let limits = config.limits();
        let mut driver = Driver::with_site(config.site(), limits.clone());
        driver.wall_moves = wall_moves;
        Run {
            driver,
            config,
            input_allowance: limits.max_head,
            output_max: output_max(&config),
            limits,
            stream,
            delivered: 0,
            eof: false,
            heads: 0,
            scanned: 0,
            finals: 0,
            head_start: None,
            closed_after: None,
            step: 0,
            last_op: None,
        }
    }

    /// Applies `ops` in order until the connection is dropped.
    pub fn run(&mut self, ops: &[Op]) {
        for &op in ops {
            if self.driver.dropped() {
                break;
            }
            self.apply(op);
        }
    }

    /// Performs one event, then what an engine does after any event, then checks.
    pub fn apply(&mut self, op: Op) {
        self.step += 1;
        self.last_op = Some(op);
        match op {
            Op::Read(n) => {
                if self.driver.conn.wants_read() {
                    self.deliver(n);
                }
            }
            Op::ReadAnyway(n) => self.deliver(n),
            Op::ReadLoop(n) => {
                for _ in 0..16 {
                    if !self.driver.conn.wants_read() || self.delivered == self.stream.len() || self.eof {
                        break;
                    }
                    self.deliver(n);
                    self.check();
                }
            }
            Op::Send { n, iov } => {
                self.complete();
                if self.driver.begin_send(n, iov) {
                    self.check();
                    self.complete();
                }
            }
            Op::BeginSend { n, iov } => {
                self.complete();
                self.driver.begin_send(n, iov);
            }
            Op::Complete => self.complete(),
            Op::Flush => self.flush(),
            Op::Advance(d) => self.driver.pass_time(d),
            Op::ToDeadline { late } => {
                if let Some((_, at)) = self.driver.conn.poll_timeout() {
                    let target = at.saturating_duration_since(self.driver.t0).max(self.driver.elapsed) + late;
                    self.driver.pass_time(target - self.driver.elapsed);
                }
            }
            Op::EarlyTimeout => self.early_timeout(),
            Op::Eof => {
                if !self.eof {
                    self.eof = true;
                    self.driver.conn.handle_eof(&mut self.driver.ctx);
                }
            }
            Op::Shutdown => self.driver.conn.begin_shutdown(&mut self.driver.ctx),
        }
        self.react();
        self.check();
    }

    /// What an engine does after handling any event: answer the input check while
    /// draining, shut the write side when asked, drop the connection once it is closed.
    fn react(&mut self) {
        if self.driver.dropped() {
            return;
        }
        // Graceful shutdown: a draining connection with nothing in progress asks whether
        // its socket holds unread input. Here the socket holds the undelivered rest of
        // the stream (nothing once the peer's EOF is modelled).
        if self.driver.conn.wants_input_check() && (self.eof || self.delivered == self.stream.len()) {
            self.driver.conn.handle_no_pending_input(&mut self.driver.ctx);
        }
        self.driver.react();
    }

    /// Hands up to `n` more bytes of the stream to the connection.
    fn deliver(&mut self, n: usize) {
        if self.driver.dropped() || self.eof || self.delivered == self.stream.len() {
            return;
        }
        let end = self.stream.len().min(self.delivered + n);
        let chunk = &self.stream[self.delivered..end];
        if self.driver.conn.wants_read() {
            self.input_allowance = self.limits.max_head + chunk.len();
        } else {
            self.input_allowance += chunk.len();
        }
        self.driver.feed(chunk);
        for e in self.delivered + 1..=end {
            let s = &self.stream[..e];
            if s.ends_with(b"\n\n") || s.ends_with(b"\n\r\n") {
                self.heads += 1;
            }
        }
        self.delivered = end;
    }

    /// The send in flight completes, its segments checked first.
    fn complete(&mut self) {
        let (step, op) = (self.step, self.last_op);
        self.driver.complete_with(|| format!("step {step}, {op:?}"));
    }

    /// The peer reads everything queued; the engine sends until nothing is.
    fn flush(&mut self) {
        self.complete();
        while !self.driver.dropped() && self.driver.begin_send(usize::MAX, 64) {
            self.complete();
            self.react();
            self.check();
        }
    }

    fn early_timeout(&mut self) {
        let due = self.driver.conn.poll_timeout().is_some_and(|(_, at)| at <= self.driver.ctx.now());
        if due {
            return;
        }
        let before = self.state();
        self.driver.conn.handle_timeout(&mut self.driver.ctx);
        assert_eq!(before, self.state(), "handle_timeout before any deadline changed the connection");
    }

    #[allow(clippy::type_complexity)]
    fn state(&self) -> (usize, usize, bool, bool, bool, Option<(Timer, Instant)>) {
        let c = &self.driver.conn;
        (
            c.output_len(),
            c.buffered_input(),
            c.wants_read(),
            c.is_closed(),
            c.should_close_after_flush(),
            c.poll_timeout(),
        )
    }

    /// Every invariant of the module docs that holds after each step.
    pub fn check(&mut self) {
        let (step, op, config) = (self.step, self.last_op, self.config);
        let ctx = move || format!("step {step}, {op:?}, config {config:?}");
        self.scan_output();
        assert!(
            self.config.echo || self.finals <= self.heads + 1,
            "{} final responses for at most {} complete requests ({})",
            self.finals,
            self.heads,
            ctx()
        );
        if self.driver.dropped() {
            return;
        }
        self.driver.check_inflight(ctx);
        let conn = &self.driver.conn;
        let queued = conn.output_len();
        assert!(queued <= self.output_max, "output queue {queued} > bound {} ({})", self.output_max, ctx());
        let held = conn.buffered_input();
        if conn.wants_read() {
            assert!(held <= self.limits.max_head, "{held} input bytes held while reading ({})", ctx());
        }
        assert!(held <= self.input_allowance, "{held} input bytes held > {} ({})", self.input_allowance, ctx());
        assert!(conn.poll_timeout().is_some(), "an open connection with no deadline armed ({})", ctx());
    }

    /// Counts final status lines, checks each head's length, and that nothing follows
    /// a response with `Connection: close`.
    fn scan_output(&mut self) {
        if self.config.echo {
            return; // echoed bytes can look like anything
        }
        const STATUS: &[u8] = b"HTTP/1.1 ";
        const CLOSE: &[u8] = b"\r\nConnection: close\r\n";
        let out = &self.driver.out;
        for e in self.scanned + 1..=out.len() {
            let s = &out[..e];
            if s.len() > STATUS.len() && s[..e - 1].ends_with(STATUS) && s[e - 1].is_ascii_digit() {
                let start = e - 1 - STATUS.len();
                assert!(self.head_start.is_none(), "a status line inside a response head at {start}");
                self.head_start = Some(start);
                if s[e - 1] != b'1' {
                    assert!(self.closed_after.is_none(), "a response after one with Connection: close");
                    self.finals += 1;
                }
            } else if s.ends_with(b"\r\n\r\n") {
                if let Some(start) = self.head_start.take() {
                    let head = &out[start..e];
                    let allowed = if find(head, b"\r\nLocation: ").is_some() {
                        HEAD_MAX + self.limits.max_head
                    } else {
                        HEAD_MAX
                    };
                    assert!(head.len() <= allowed, "a {}-byte response head (bound {allowed})", head.len());
                }
            }
            if self.head_start.is_some() && s.ends_with(CLOSE) {
                self.closed_after = Some(self.finals);
            }
        }
        self.scanned = out.len();
    }

    /// The end of a run: the rest of the stream is delivered as the engine would read
    /// it, then EOF; either the peer reads everything, or it stops reading and only time
    /// passes. Either way the connection must end closed.
    pub fn finish(&mut self) {
        if self.config.peer_stops_reading {
            self.apply(Op::Eof);
        } else {
            while !self.driver.dropped() && !self.eof && self.delivered < self.stream.len() {
                self.apply(Op::Flush);
                if !self.driver.conn.wants_read() {
                    break; // closing: the rest is never read
                }
                self.apply(Op::Read(self.stream.len()));
            }
            self.apply(Op::Flush);
            self.apply(Op::Eof);
            self.apply(Op::Flush);
        }
        for _ in 0..8 {
            if self.driver.dropped() {
                break;
            }
            self.apply(Op::ToDeadline { late: Duration::ZERO });
        }
        assert!(self.driver.dropped(), "still open after EOF and every deadline (config {:?})", self.config);
    }
}

// ---------------------------------------------------------------------------------
// The targets

/// Target `connection`: the input's stream and schedule, every invariant after every
/// step, then the end of the connection.
pub fn connection(data: &[u8]) {
    let input = Input::parse(data);
    run_connection(&input);
}

/// [`connection`] on an input already parsed.
pub fn run_connection(input: &Input<'_>) {
    let mut d = Run::new(input.stream, input.config, true);
    d.run(&input.ops);
    d.finish();
}

/// Target `split`: the stream delivered whole gives the same bytes and end state as
/// the stream cut where the schedule reads, with its partial sends.
pub fn split(data: &[u8]) {
    let input = Input::parse(data);
    run_split(&input);
}

/// What the peer saw, and how the connection stood before and after its EOF.
#[derive(Debug, PartialEq, Eq)]
struct SplitOutcome {
    out: Vec<u8>,
    /// `(wants_read, buffered_input, write_shut, closed)` before the EOF.
    before_eof: (bool, usize, bool, bool),
    closed: bool,
}

/// [`split`] on an input already parsed.
pub fn run_split(input: &Input<'_>) {
    let whole = split_run(input.stream, input.config, &[Op::Read(input.stream.len())]);
    // Only the events that cut input or output: time, EOF and shutdown would change
    // the answers.
    let cuts: Vec<Op> = input
        .ops
        .iter()
        .copied()
        .filter(|op| {
            matches!(op, Op::Read(_) | Op::ReadAnyway(_) | Op::Send { .. } | Op::BeginSend { .. } | Op::Complete)
        })
        .collect();
    let pieces = split_run(input.stream, input.config, &cuts);
    if whole != pieces {
        panic!(
            "cut input gives different output (config {:?})\nwhole: {:?} {:?}\n  cut: {:?} {:?}\nwhole out: {}\n  cut out: {}",
            input.config,
            whole.before_eof,
            whole.closed,
            pieces.before_eof,
            pieces.closed,
            String::from_utf8_lossy(&whole.out),
            String::from_utf8_lossy(&pieces.out),
        );
    }
}

/// Delivers the stream as `ops` cut it (a read the connection does not want waits for
/// the output to drain, as a peer that reads would make it), then the rest, then EOF.
fn split_run(stream: &[u8], config: Config, ops: &[Op]) -> SplitOutcome {
    let mut d = Run::new(stream, config, false);
    for &op in ops {
        if d.driver.dropped() {
            break;
        }
        if let Op::Read(_) = op {
            if !d.driver.conn.wants_read() {
                d.apply(Op::Flush);
            }
        }
        d.apply(op);
    }
    while !d.driver.dropped() && d.delivered < stream.len() {
        d.apply(Op::Flush);
        if !d.driver.conn.wants_read() {
            break;
        }
        d.apply(Op::Read(stream.len()));
    }
    d.apply(Op::Flush);
    let before_eof =
        (d.driver.conn.wants_read(), d.driver.conn.buffered_input(), d.driver.write_shut, d.driver.dropped());
    d.apply(Op::Eof);
    d.apply(Op::Flush);
    SplitOutcome { out: std::mem::take(&mut d.driver.out), before_eof, closed: d.driver.dropped() }
}

/// The stable replay of one corpus file: both targets on the input as it is, then on
/// its stream under every configuration with several schedules: whole, byte by byte
/// with one-byte sends, and drawn from the PRNG.
pub fn replay(data: &[u8]) {
    connection(data);
    split(data);
    let stream = Input::parse(data).stream;
    let whole = vec![Op::Read(stream.len()), Op::Flush];
    let mut bytewise = Vec::new();
    for _ in 0..stream.len() {
        bytewise.extend([Op::Read(1), Op::Send { n: 1, iov: 1 }]);
    }
    for &config in &Config::ALL {
        let config = Config::from_byte(config);
        let mut schedules = vec![whole.clone(), bytewise.clone()];
        let mut rng = Rng::new(fnv1a(stream) ^ config_seed(config));
        for _ in 0..4 {
            schedules.push(random_ops(stream.len(), &mut rng));
        }
        for ops in schedules {
            let input = Input { stream, config, ops };
            run_connection(&input);
            run_split(&input);
        }
    }
}

fn config_seed(config: Config) -> u64 {
    (config.limits as u64) << 8
        | (config.disk as u64) << 16
        | (config.peer_stops_reading as u64) << 24
        | (config.echo as u64) << 32
}
