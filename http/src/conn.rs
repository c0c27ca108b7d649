//! The per-connection HTTP/1.1 state machine.

use crate::access_log::{AccessLog, ConnLog};
use crate::chunked::{Chunked, ChunkedDecoder};
use crate::context::Context;
use crate::date::DateCache;
use crate::echo;
use crate::limits::Limits;
use crate::line::LineScan;
use crate::out::{BufPool, OutBuf};
use crate::reject::Reject;
use crate::request::{self, BodyKind};
use crate::response::{Answer, Body, Prerendered};
use crate::route;
use crate::site::Snapshot;
use crate::stats::HttpStats;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::trace;

/// Most file responses queued on one connection before it stops parsing: file bytes
/// are not counted toward `Limits::max_output` (they are not in memory), so this is what
/// bounds a pipelined run of requests for streamed files.
const MAX_QUEUED_FILES: usize = 4;

/// What the next input bytes are, and whether input is read at all.
#[derive(Debug)]
enum Reading {
    /// Between requests, or before the first: waiting for the first byte of a head.
    /// Empty lines here are skipped (RFC 9112 §2.2) and start nothing.
    Idle,
    /// Some bytes of a head have arrived (they are in the carry buffer); the check of
    /// its request line so far.
    Head(LineScan),
    /// Discarding a Content-Length body; `left` bytes to go.
    Body { left: u64 },
    /// Discarding a chunked body.
    Chunked(Box<ChunkedDecoder>),
    /// The write side is shut: input is read and discarded until EOF or the linger
    /// deadline, so bytes the peer still sends cannot turn the close into a reset.
    Lingering,
    /// Input is no longer read: a close is decided, or the connection is closed.
    Closed,
}

impl Reading {
    /// Input is parsed: a request boundary, a head or a body.
    fn is_framing(&self) -> bool {
        matches!(self, Reading::Idle | Reading::Head(_) | Reading::Body { .. } | Reading::Chunked(_))
    }
}

/// The write half of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writing {
    /// Responses are queued and sent.
    Open,
    /// Queued output reached its cap: parsing is paused (and the engine stops reading)
    /// until [`Connection::handle_sent`] brings it below.
    Full,
    /// The engine shut the write side after the last response.
    Shut,
    /// Nothing more is sent or read: the engine drops the connection.
    Closed,
}

/// Whether another request may follow the one in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeepAlive {
    /// The connection persists after each response.
    Enabled,
    /// Graceful shutdown began within its lame-duck period
    /// ([`Context::begin_lame_duck`]): the next request answered gets `Connection:
    /// close` and is the last; with none in progress the connection waits for one
    /// until the Idle timer (no later than the period's end), then turns `Draining`.
    LameDuck,
    /// Graceful shutdown began: the next request answered (the one in progress, or
    /// one already received) gets `Connection: close` and is the last; with none,
    /// the connection closes once the engine finds no unread input.
    Draining,
    /// The last response is queued: once it is sent the engine shuts the write side.
    Disabled,
}

/// A deadline of a [`Connection`], named for what it waits for. See
/// [`Connection::poll_timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// A started request head must be complete by then (`Limits::header_timeout` from
    /// its first byte); if not, 408 and a close.
    Header,
    /// The next bytes of a request body must arrive by then (`Limits::header_timeout`
    /// from the last read), and the whole body by `Limits::body_timeout` from the end
    /// of the head, whichever comes first; if not, 408 and a close.
    Body,
    /// No request is in progress and nothing is queued: the next request must start by
    /// then, or the connection closes without a word. `Limits::keepalive_timeout` from
    /// when the last response was sent; `Limits::header_timeout` from the accept on a
    /// connection that has not sent a request yet.
    Idle,
    /// Queued output must make progress by then (`Limits::send_timeout`), or the peer
    /// stopped reading: the connection is dropped with the rest unsent.
    Send,
    /// The write side is shut: the peer's EOF must come by then
    /// (`Limits::linger_timeout`); then the connection closes anyway.
    Linger,
}

/// The answer to a request whose body is still being read.
#[derive(Debug)]
struct Reply {
    answer: Pending,
    /// When the body must be complete (`Limits::body_timeout` from the end of the
    /// head); the Body timer fires at this or at the pause deadline, the earlier.
    deadline: Instant,
    head_only: bool,
    keep_alive: bool,
    http10: bool,
}

/// What a request whose body is being read will be answered with.
#[derive(Debug)]
enum Pending {
    /// A response decided from the head; the body is discarded.
    Ready(Arc<Prerendered>),
    /// An echo route's: the body read so far, and the Content-Type to send it with.
    Echo { body: Vec<u8>, content_type: Box<str> },
}

impl Reply {
    /// Where body bytes go: kept for an echo, else nowhere (discarded).
    fn sink(reply: &mut Option<Box<Reply>>) -> Option<&mut Vec<u8>> {
        match reply.as_deref_mut() {
            Some(Reply { answer: Pending::Echo { body, .. }, .. }) => Some(body),
            _ => None,
        }
    }
}

/// One HTTP/1.1 connection: bytes in, response segments out. See the crate docs for
/// how an engine drives it.
///
/// Its state is three small machines, in the manner of hyper's `proto/h1`: `Reading`
/// (what the next input bytes are), `Writing` (the write half) and `KeepAlive` (whether
/// another request may follow), changed only through the named transitions below, each
/// of which logs at trace level. Its deadlines are computed when the state that arms them
/// is entered, so [`Connection::poll_timeout`] needs nothing but the connection.
#[derive(Debug)]
pub struct Connection {
    reading: Reading,
    writing: Writing,
    keep_alive: KeepAlive,
    /// The peer closed its write side. Held input is still framed and answered (it may
    /// be waiting behind backpressure), so this is apart from `reading`.
    peer_eof: bool,
    /// Unconsumed input: an incomplete head, or requests held back by backpressure.
    /// Empty (and unallocated) the rest of the time.
    carry: Vec<u8>,
    /// Responses queued since the last `poll_output`.
    pending: Option<Box<OutBuf>>,
    /// Responses handed to the engine and not yet fully sent.
    inflight: Option<Box<OutBuf>>,
    reply: Option<Box<Reply>>,
    /// When the read-side timer fires; which timer that is (Header, Body, Idle or
    /// Linger) and whether it is armed follow from `reading`.
    read_deadline: Instant,
    /// When the send timer fires; armed while output is queued on an open write side.
    /// Set when output is queued from empty and on every send.
    send_deadline: Instant,
    /// `--access-log`: the peer and the fields of the request being answered (`None`
    /// while the log is off).
    log: Option<Box<ConnLog>>,
}

impl Connection {
    /// A connection accepted at `ctx.now()`.
    pub fn new(ctx: &Context) -> Self {
        Connection {
            reading: Reading::Idle,
            writing: Writing::Open,
            keep_alive: KeepAlive::Enabled,
            peer_eof: false,
            carry: Vec::new(),
            pending: None,
            inflight: None,
            reply: None,
            // A connection that never sends a byte gets the head's time, not keep-alive's.
            read_deadline: ctx.deadlines.header,
            send_deadline: ctx.deadlines.send,
            log: ctx.access_log.as_ref().map(|_| Box::new(ConnLog::new(ctx.now))),
        }
    }

    /// The peer's address, for the access log (when it is on; `None`: the engine has
    /// none, logged as `-`).
    pub fn set_peer(&mut self, peer: Option<SocketAddr>) {
        if let Some(log) = self.log.as_deref_mut() {
            log.set_peer(peer);
        }
    }

    // ---- Transitions. Every change of `reading`, `writing` and `keep_alive` goes
    // through one of these.

    #[inline]
    fn set_reading(&mut self, next: Reading) {
        trace!(from = ?self.reading, to = ?next, "reading");
        self.reading = next;
    }

    #[inline]
    fn set_writing(&mut self, next: Writing) {
        trace!(from = ?self.writing, to = ?next, "writing");
        self.writing = next;
    }

    #[inline]
    fn set_keep_alive(&mut self, next: KeepAlive) {
        trace!(from = ?self.keep_alive, to = ?next, "keep-alive");
        self.keep_alive = next;
    }

    /// Idle → Head: the first byte of a head arrived; the Header timer runs from now.
    fn start_head(&mut self, header_deadline: Instant, now: Instant) {
        self.set_reading(Reading::Head(LineScan::new()));
        if let Some(log) = self.log.as_deref_mut() {
            log.start(now);
        }
        self.read_deadline = header_deadline;
    }

    /// Head → Body or Chunked: the head announced a body, to be answered with
    /// `reply`; the Body timer starts (and the whole body's deadline, in `reply`).
    fn start_body(&mut self, body: BodyKind, reply: Box<Reply>, header_deadline: Instant) {
        self.set_reading(match body {
            BodyKind::Fixed(left) => Reading::Body { left },
            _ => Reading::Chunked(Box::new(ChunkedDecoder::new())),
        });
        self.reply = Some(reply);
        self.body_read(header_deadline);
    }

    /// Body bytes arrived (or reading resumed): the pause allowed restarts, never past
    /// the whole body's deadline.
    fn body_read(&mut self, header_deadline: Instant) {
        self.read_deadline = match &self.reply {
            Some(reply) => header_deadline.min(reply.deadline),
            None => header_deadline,
        };
    }

    /// Head, Body or Chunked → Idle: the request is fully read. The Idle timer is armed
    /// once its response is sent ([`Connection::handle_sent`]).
    fn end_request(&mut self) {
        self.set_reading(Reading::Idle);
    }

    /// Open → Full: output reached its cap; parsing stops where it is.
    fn pause_reading(&mut self) {
        self.set_writing(Writing::Full);
    }

    /// Full → Open: parsing goes on (it pauses again at once if still over the cap).
    fn resume_reading(&mut self) {
        if self.writing == Writing::Full {
            self.set_writing(Writing::Open);
        }
    }

    /// No request follows the response just queued: input is no longer read, and once
    /// the output is sent the engine shuts the write side.
    fn disable_keep_alive(&mut self) {
        self.set_keep_alive(KeepAlive::Disabled);
        self.close_read();
    }

    fn close_read(&mut self) {
        self.set_reading(Reading::Closed);
    }

    /// The write side is shut: read and discard until EOF or `linger_deadline`, unless
    /// the peer already finished.
    fn begin_linger(&mut self, linger_deadline: Instant) {
        if self.peer_eof {
            self.close();
            return;
        }
        self.set_writing(Writing::Shut);
        self.set_reading(Reading::Lingering);
        self.read_deadline = linger_deadline;
    }

    /// Both sides are done: the engine drops the connection.
    fn close(&mut self) {
        self.set_reading(Reading::Closed);
        self.set_writing(Writing::Closed);
    }

    /// A close is decided and the write side is not shut yet (output may be flushing).
    fn is_closing(&self) -> bool {
        self.keep_alive == KeepAlive::Disabled && matches!(self.writing, Writing::Open | Writing::Full)
    }

    // ---- Input.

    /// Takes bytes read from the peer. All of them are consumed: complete requests are
    /// answered (responses queued in order), bodies discarded, and an incomplete head
    /// or input held back by backpressure is kept in the carry buffer.
    pub fn handle_input(&mut self, ctx: &mut Context, data: &[u8]) {
        if !self.reading.is_framing() {
            return; // closing or lingering: input is discarded
        }
        if self.carry.is_empty() {
            let used = self.process(ctx, data);
            if used < data.len() && self.reading.is_framing() {
                self.carry.extend_from_slice(&data[used..]);
            }
        } else {
            self.carry.extend_from_slice(data);
            self.process_carry(ctx);
        }
        self.settle();
    }

    fn process_carry(&mut self, ctx: &mut Context) {
        let mut buf = std::mem::take(&mut self.carry);
        let used = self.process(ctx, &buf);
        if used < buf.len() && self.reading.is_framing() {
            buf.drain(..used);
            self.carry = buf;
        }
    }

    /// Parses and answers what `buf` holds; returns how many bytes were consumed.
    fn process(&mut self, ctx: &mut Context, buf: &[u8]) -> usize {
        let Context { site, limits, date, stamped, deadlines, pool, stats, metrics, access_log, now, .. } = ctx;
        let now = *now;
        // Computed once per loop turn: what a head, a body read or a response queued
        // from empty would start.
        let (header_deadline, send_deadline, body_deadline) = (deadlines.header, deadlines.send, deadlines.body);
        let mut pos = 0;
        self.resume_reading();
        loop {
            if !self.reading.is_framing() {
                return buf.len(); // a close is decided: the rest is discarded
            }
            if self.over_cap(limits) {
                self.pause_reading();
                return pos; // backpressure: resume in handle_sent
            }
            match &mut self.reading {
                Reading::Idle | Reading::Head(_) => {
                    let resuming = matches!(self.reading, Reading::Head(_));
                    if !resuming {
                        // Empty lines before a request line are ignored (RFC 9112 2.2).
                        // A request line starts with a tchar, above every control byte:
                        // one compare rules out CR and LF nearly always.
                        if buf.get(pos).is_none_or(|&b| b <= b'\r') {
                            while pos < buf.len() && (buf[pos] == b'\n' || buf[pos..].starts_with(b"\r\n")) {
                                pos += if buf[pos] == b'\n' { 1 } else { 2 };
                            }
                            if pos == buf.len() || buf[pos..] == *b"\r" {
                                return pos;
                            }
                        }
                        self.start_head(header_deadline, now);
                    }
                    let rest = &buf[pos..];
                    // Only the first `max_head` bytes can belong to an acceptable head,
                    // and every verdict below depends on those alone: the moment they
                    // prove the head invalid it is answered, and how the input was
                    // split never changes the answer.
                    let window = &rest[..rest.len().min(limits.max_head)];
                    let Reading::Head(scan) = &mut self.reading else { unreachable!("started above") };
                    let parsed = match request::scan(scan, limits, window) {
                        Ok(None) => None,
                        Ok(Some(head)) => {
                            let metrics = metrics.as_ref().map(|(m, i)| (&**m, *i, &*stats));
                            Some(route::decide(site, &head, window, metrics).map(|d| (d, head.len)))
                        }
                        Err(reject) => Some(Err(reject)),
                    };
                    let (d, end) = match parsed {
                        Some(Ok(parsed)) => parsed,
                        Some(Err(reject)) => {
                            self.reject(pool, date, stats, send_deadline, access_log, site, reject, window);
                            return buf.len();
                        }
                        None if rest.len() > limits.max_head => {
                            let reject = request::oversize_reject(window);
                            self.reject(pool, date, stats, send_deadline, access_log, site, reject, window);
                            return buf.len();
                        }
                        None => return pos,
                    };
                    pos += end;
                    if let Some(log) = self.log.as_deref_mut() {
                        log.capture_head(&rest[..end]);
                    }
                    // The common answer: a pre-rendered response without a body to
                    // read, on a connection that stays open, queued in one copy.
                    let whole = match &d.response {
                        Answer::Shared(r)
                            if d.body == BodyKind::None
                                && d.keep_alive
                                && !d.http10
                                && !d.head_only
                                && self.keep_alive == KeepAlive::Enabled
                                && self.log.is_none() =>
                        {
                            stamped.get(r, date).map(|whole| (whole, r.status()))
                        }
                        _ => None,
                    };
                    if let Some((whole, status)) = whole {
                        self.end_request();
                        self.queue(pool, send_deadline).push_owned(whole);
                        stats.answered(status);
                        continue;
                    }
                    match d.body {
                        BodyKind::None => {
                            self.end_request();
                            let echo;
                            let response = match &d.response {
                                Answer::Echo(content_type) => {
                                    echo = echo::body(content_type, Vec::new());
                                    &echo
                                }
                                ready => ready.ready().expect("not an echo"),
                            };
                            self.respond(
                                pool,
                                date,
                                stats,
                                send_deadline,
                                access_log,
                                response,
                                d.head_only,
                                d.keep_alive,
                                d.http10,
                            );
                        }
                        // The answer is known and is not to take the body: it goes now,
                        // without the 100 the client waits for, and the connection
                        // closes (whether the body follows is up to the client).
                        _ if d.expect_continue && d.response.status() >= 300 => {
                            let response = d.response.ready().expect("an echo is accepted");
                            self.respond(
                                pool,
                                date,
                                stats,
                                send_deadline,
                                access_log,
                                response,
                                d.head_only,
                                false,
                                d.http10,
                            );
                        }
                        body => {
                            if d.expect_continue {
                                self.queue(pool, send_deadline).push_owned(b"HTTP/1.1 100 Continue\r\n\r\n");
                            }
                            let answer = match d.response {
                                Answer::Shared(r) => Pending::Ready(Arc::clone(r)),
                                Answer::Owned(r) => Pending::Ready(Arc::from(r)),
                                Answer::Echo(content_type) => {
                                    let expected = match body {
                                        BodyKind::Fixed(n) => n.min(64 * 1024) as usize,
                                        _ => 0,
                                    };
                                    Pending::Echo { body: Vec::with_capacity(expected), content_type }
                                }
                            };
                            let reply = Box::new(Reply {
                                answer,
                                deadline: body_deadline,
                                head_only: d.head_only,
                                keep_alive: d.keep_alive,
                                http10: d.http10,
                            });
                            self.start_body(body, reply, header_deadline);
                        }
                    }
                }
                Reading::Body { left } => {
                    let take = (*left).min((buf.len() - pos) as u64);
                    let data = &buf[pos..pos + take as usize];
                    pos += data.len();
                    *left -= take;
                    let done = *left == 0;
                    if let Some(sink) = Reply::sink(&mut self.reply) {
                        sink.extend_from_slice(data);
                    }
                    self.body_read(header_deadline);
                    if !done {
                        return pos;
                    }
                    self.finish_body(pool, date, stats, send_deadline, access_log);
                }
                Reading::Chunked(decoder) => {
                    let fed = decoder.feed(&buf[pos..], limits.max_body, Reply::sink(&mut self.reply));
                    self.body_read(header_deadline);
                    match fed {
                        Chunked::More => return buf.len(),
                        Chunked::Done(n) => {
                            pos += n;
                            self.finish_body(pool, date, stats, send_deadline, access_log);
                        }
                        Chunked::Error(reject) => {
                            self.reply = None;
                            self.reject(pool, date, stats, send_deadline, access_log, site, reject, &[]);
                            return buf.len();
                        }
                    }
                }
                Reading::Lingering | Reading::Closed => return buf.len(),
            }
        }
    }

    fn finish_body(
        &mut self,
        pool: &mut BufPool,
        date: &DateCache,
        stats: &mut HttpStats,
        send_deadline: Instant,
        log: &mut Option<Box<AccessLog>>,
    ) {
        self.end_request();
        if let Some(r) = self.reply.take() {
            let Reply { answer, head_only, keep_alive, http10, .. } = *r;
            let echo;
            let response = match answer {
                Pending::Ready(ref r) => &**r,
                Pending::Echo { body, content_type } => {
                    echo = echo::body(&content_type, body);
                    &echo
                }
            };
            self.respond(pool, date, stats, send_deadline, log, response, head_only, keep_alive, http10);
        }
    }

    /// The queue new responses go to. `send_deadline` arms the Send timer when output
    /// was empty (progress on a non-empty queue is counted in `handle_sent`).
    fn queue(&mut self, pool: &mut BufPool, send_deadline: Instant) -> &mut OutBuf {
        // Behind an earlier response of the same batch (the common case when requests
        // are pipelined) the output is not empty: one check, not the sum of both queues.
        let queued = self.pending.as_ref().is_some_and(|b| b.remaining() > 0);
        if !queued && self.output_len() == 0 {
            self.send_deadline = send_deadline;
        }
        self.pending.get_or_insert_with(|| pool.take())
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        pool: &mut BufPool,
        date: &DateCache,
        stats: &mut HttpStats,
        send_deadline: Instant,
        log: &mut Option<Box<AccessLog>>,
        response: &Prerendered,
        head_only: bool,
        keep_alive: bool,
        http10: bool,
    ) {
        let close = !keep_alive || self.keep_alive != KeepAlive::Enabled;
        let out = self.queue(pool, send_deadline);
        // The head is rendered but for the Date, itself rendered once a second with the
        // blank line after it: two copies.
        out.push_owned(response.head());
        let line = date.line();
        if close {
            out.push_owned(&line[..37]);
            out.push_owned(b"Connection: close\r\n\r\n");
        } else if http10 {
            out.push_owned(&line[..37]);
            out.push_owned(b"Connection: keep-alive\r\n\r\n");
        } else {
            out.push_owned(line);
        }
        if !head_only {
            match response.body() {
                Body::Memory(body) => out.push_shared(body),
                Body::File { file, offset, len } => out.push_file(file, *offset, *len as usize),
            }
        }
        if let (Some(conn), Some(log)) = (self.log.as_deref_mut(), log.as_deref_mut()) {
            conn.write(log, response.status(), if head_only { 0 } else { response.body().len() });
        }
        stats.answered(response.status());
        if close {
            self.disable_keep_alive();
        }
    }

    /// Answers `reject` with its error response and closes: the rest of the input cannot
    /// be framed. `raw` is the input of the refused request, for the access log when its
    /// head was not parsed.
    #[allow(clippy::too_many_arguments)]
    fn reject(
        &mut self,
        pool: &mut BufPool,
        date: &DateCache,
        stats: &mut HttpStats,
        send_deadline: Instant,
        log: &mut Option<Box<AccessLog>>,
        site: &Snapshot,
        reject: Reject,
        raw: &[u8],
    ) {
        trace!(?reject, "request rejected");
        if let Some(conn) = self.log.as_deref_mut() {
            conn.capture_raw(raw);
        }
        self.carry = Vec::new();
        self.reply = None;
        self.respond(pool, date, stats, send_deadline, log, site.error(reject.status()), false, false, false);
    }

    // ---- Output.

    /// Bytes queued and not yet sent (bytes to stream from files included).
    #[must_use]
    pub fn output_len(&self) -> usize {
        self.pending.as_ref().map_or(0, |b| b.remaining()) + self.inflight.as_ref().map_or(0, |b| b.remaining())
    }

    /// True when queued output is at the cap: parsing stops until some is sent. Bytes
    /// in memory count against `max_output`; file segments count only in number.
    /// Checked before each request: both queues are read directly, which costs fewer
    /// instructions than an iterator over the two.
    fn over_cap(&self, limits: &Limits) -> bool {
        let of = |buf: &Option<Box<OutBuf>>| buf.as_ref().map_or((0, 0), |b| (b.memory_remaining(), b.files_unsent()));
        let ((pending, pending_files), (inflight, inflight_files)) = (of(&self.pending), of(&self.inflight));
        pending + inflight >= limits.max_output || pending_files + inflight_files >= MAX_QUEUED_FILES
    }

    /// The output to send next, if any. The segments stay valid and unchanged until
    /// [`Connection::handle_sent`] (see the contract in the crate docs), even when this
    /// `Connection` value moves meanwhile: they point into heap storage, never into the
    /// `Connection` itself (see "Segments never point into the `Connection`" in
    /// [`OutBuf`]), so an engine may keep the iovecs of a send in flight while its slab
    /// of connections grows.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<&OutBuf> {
        if self.inflight.is_none() {
            self.inflight = self.pending.take();
        }
        self.inflight.as_deref().filter(|b| b.remaining() > 0)
    }

    /// Reports that `n` bytes of the output from `poll_output` were sent.
    pub fn handle_sent(&mut self, ctx: &mut Context, n: usize) {
        self.send_deadline = ctx.deadlines.send;
        if let Some(buf) = self.inflight.as_mut() {
            buf.advance(n);
            if buf.remaining() == 0 {
                if let Some(buf) = self.inflight.take() {
                    ctx.pool.give(buf);
                }
            }
        }
        if self.output_len() == 0 {
            if let Some(buf) = self.pending.take() {
                ctx.pool.give(buf);
            }
            if matches!(self.reading, Reading::Idle) {
                // Everything answered: the keep-alive wait starts now, not when the
                // request arrived.
                self.read_deadline = ctx.deadlines.keepalive;
            }
        }
        if self.writing == Writing::Full && !self.over_cap(&ctx.limits) {
            self.process_carry(ctx);
        }
        self.settle();
    }

    // ---- Closing.

    /// The peer closed its write side (EOF, EPOLLRDHUP). Requests already received are
    /// still answered; then the connection closes.
    pub fn handle_eof(&mut self, _ctx: &mut Context) {
        trace!("peer eof");
        self.peer_eof = true;
        if matches!(self.reading, Reading::Lingering) {
            self.close();
        }
        self.settle();
    }

    fn settle(&mut self) {
        if self.peer_eof && self.output_len() == 0 && !self.is_closed() {
            // Nothing more can arrive and everything is sent; a partial request left
            // in the carry can never complete.
            self.carry = Vec::new();
            self.close();
        }
    }

    /// True when the engine should read: not while output is over the cap (parsing
    /// stopped there), not after EOF, not while closing.
    #[must_use]
    pub fn wants_read(&self) -> bool {
        match self.reading {
            Reading::Idle | Reading::Head(_) | Reading::Body { .. } | Reading::Chunked(_) => {
                !self.peer_eof && self.writing != Writing::Full
            }
            Reading::Lingering => true,
            Reading::Closed => false,
        }
    }

    /// Output is drained and the connection decided to close: the engine shuts down
    /// its write side and calls [`Connection::handle_write_shutdown`].
    #[must_use]
    pub fn should_close_after_flush(&self) -> bool {
        self.is_closing() && self.output_len() == 0
    }

    /// The write side is shut; linger for the peer's EOF.
    pub fn handle_write_shutdown(&mut self, ctx: &mut Context) {
        self.begin_linger(ctx.deadlines.linger);
    }

    /// True when the engine should close the socket and drop the connection.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.writing == Writing::Closed
    }

    /// True while nothing is queued, nothing partial is held and no request is open:
    /// the state in which a connection holds no buffer.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        matches!(self.reading, Reading::Idle) && self.output_len() == 0 && self.carry.is_empty()
    }

    // ---- Time.

    /// The read-side timer armed in this state, if any (its instant is `read_deadline`).
    fn read_timer(&self) -> Option<Timer> {
        match self.reading {
            // While a response is owed the client is not idle; after EOF none can come.
            Reading::Idle if self.peer_eof || self.output_len() > 0 => None,
            Reading::Idle => Some(Timer::Idle),
            Reading::Head(_) => Some(Timer::Header),
            // Not reading because output is over the cap: the peer is not late, only
            // the send deadline applies (reading resumes with a fresh body deadline).
            Reading::Body { .. } | Reading::Chunked(_) if self.writing == Writing::Full => None,
            Reading::Body { .. } | Reading::Chunked(_) => Some(Timer::Body),
            Reading::Lingering => Some(Timer::Linger),
            Reading::Closed => None,
        }
    }

    /// The Send timer is armed while output waits on a write side that is not shut.
    fn send_timer_armed(&self) -> bool {
        matches!(self.writing, Writing::Open | Writing::Full) && self.output_len() > 0
    }

    /// The earliest armed deadline and which timer it is: the next instant at which
    /// [`Connection::handle_timeout`] has something to do. `None` when nothing is armed
    /// (for instance a closed connection).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Timer, Instant)> {
        let read = self.read_timer().map(|timer| (timer, self.read_deadline));
        let send = self.send_timer_armed().then_some((Timer::Send, self.send_deadline));
        match (read, send) {
            // On a tie the Send timer is the one handle_timeout acts on.
            (Some(read), Some(send)) => Some(if read.1 < send.1 { read } else { send }),
            (read, send) => read.or(send),
        }
    }

    /// The timer to act on at `now`, if one has fired. The Send timer comes first when
    /// both fired: a peer that stopped reading is dropped, not sent a 408.
    fn fired(&self, now: Instant) -> Option<Timer> {
        if self.send_timer_armed() && now >= self.send_deadline {
            return Some(Timer::Send);
        }
        self.read_timer().filter(|_| now >= self.read_deadline)
    }

    /// Acts on the timer that fired by `ctx.now()`; a call before any did does nothing.
    /// A request not received in time gets 408 and a close; an idle, stuck or lingering
    /// connection closes.
    pub fn handle_timeout(&mut self, ctx: &mut Context) {
        let Some(timer) = self.fired(ctx.now) else {
            return;
        };
        trace!(?timer, "timer fired");
        match timer {
            Timer::Header | Timer::Body => {
                let Context { site, date, pool, stats, deadlines, access_log, .. } = ctx;
                let carry = std::mem::take(&mut self.carry);
                self.reject(pool, date, stats, deadlines.send, access_log, site, Reject::Timeout, &carry);
            }
            Timer::Idle if self.keep_alive == KeepAlive::LameDuck => {
                // The lame duck is over for this connection: it closes as a draining
                // one does, once the engine found no unread input (which must take no
                // longer than a linger).
                self.set_keep_alive(KeepAlive::Draining);
                self.read_deadline = ctx.deadlines.linger;
            }
            Timer::Idle | Timer::Send | Timer::Linger => self.close(),
        }
    }

    // ---- Graceful shutdown.

    /// Graceful shutdown began. Nothing already received is lost: queued responses are
    /// sent, and the next request to complete — the one in progress, one held back by
    /// backpressure, or one still unread in the socket — is answered with
    /// `Connection: close` and is the last. A connection with nothing in progress
    /// closes once its engine has made sure the socket holds no unread input
    /// ([`Connection::wants_input_check`]); within the lame-duck period
    /// ([`Context::begin_lame_duck`]) it first waits for a next request until the
    /// period ends (the Idle timer), so a request already on the wire is answered
    /// rather than crossing the close. Every close is then a half-close and a linger,
    /// never a close with unread input (which the kernel turns into a reset that
    /// destroys the response).
    pub fn begin_shutdown(&mut self, ctx: &mut Context) {
        if self.keep_alive != KeepAlive::Enabled {
            return;
        }
        match ctx.lame_duck_end.filter(|&end| end > ctx.now) {
            Some(end) => {
                self.set_keep_alive(KeepAlive::LameDuck);
                if matches!(self.reading, Reading::Idle) {
                    // (Once output pending is sent, the keep-alive wait that starts
                    // then ends by `end` too: see Context::set_time.)
                    self.read_deadline = self.read_deadline.min(end);
                }
            }
            None => self.set_keep_alive(KeepAlive::Draining),
        }
    }

    /// True when the connection is draining with nothing in progress and nothing
    /// queued: it closes unless the peer already sent more. The engine then checks that
    /// its socket holds no unread input (a readiness engine: a read would block; a
    /// completion engine: nothing unread in the socket and no receive completion
    /// waiting) and, if so, calls [`Connection::handle_no_pending_input`]. Input found
    /// instead is handed over as usual, and answered with `Connection: close`.
    #[must_use]
    pub fn wants_input_check(&self) -> bool {
        self.keep_alive == KeepAlive::Draining
            && matches!(self.reading, Reading::Idle)
            && self.writing == Writing::Open
            && self.output_len() == 0
    }

    /// The engine found no unread input (see [`Connection::wants_input_check`]): a
    /// draining connection with nothing in progress decides to close, so
    /// [`Connection::should_close_after_flush`] turns true (half-close, then linger). A
    /// request that arrives later is discarded by the linger and the peer sees an
    /// orderly end of stream, as when any idle keep-alive connection is closed. Does
    /// nothing in any other state.
    pub fn handle_no_pending_input(&mut self, _ctx: &mut Context) {
        if self.wants_input_check() {
            self.carry = Vec::new(); // at most a lone CR of an empty line
            self.disable_keep_alive();
        }
    }

    /// Bytes held in the carry buffer (an incomplete head or held-back input).
    #[must_use]
    pub fn buffered_input(&self) -> usize {
        self.carry.len()
    }
}
