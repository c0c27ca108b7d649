//! The per-connection HTTP/1.1 state machine.

use crate::chunked::{Chunked, ChunkedDecoder};
use crate::out::{BufPool, OutBuf};
use crate::reject::Reject;
use crate::request::{self, BodyKind};
use crate::serve::{Context, Stats};
use crate::site::{Body, Prerendered, Snapshot};
use crate::{DateCache, Limits};
use std::sync::Arc;
use std::time::Instant;

/// Most file responses queued on one connection before it stops parsing: file bytes
/// are not counted toward `Limits::max_output` (they are not in memory), so this is what
/// bounds a pipelined run of requests for streamed files.
const MAX_QUEUED_FILES: usize = 4;

#[derive(Debug)]
enum Phase {
    /// Waiting for or reading a request head.
    Head,
    /// Discarding a Content-Length body; `left` bytes to go.
    Body {
        left: u64,
    },
    /// Discarding a chunked body.
    Chunked(Box<ChunkedDecoder>),
    /// A close is decided: input is ignored while the output flushes.
    Closing,
    /// The write side is shut: input is drained until EOF or the linger deadline.
    Lingering,
    Closed,
}

/// The answer to a request whose body is still being read.
#[derive(Debug)]
struct Reply {
    response: Arc<Prerendered>,
    head_only: bool,
    keep_alive: bool,
    http10: bool,
}

/// One HTTP/1.1 connection: bytes in, response segments out. See the crate docs for
/// how an engine drives it.
#[derive(Debug)]
pub struct Connection {
    phase: Phase,
    /// Unconsumed input: an incomplete head, or requests held back by backpressure.
    /// Empty (and unallocated) the rest of the time.
    carry: Vec<u8>,
    /// Where the search for the end of the head in `carry` resumes.
    scan_from: usize,
    /// Responses queued since the last `poll_output`.
    pending: Option<Box<OutBuf>>,
    /// Responses handed to the engine and not yet fully sent.
    inflight: Option<Box<OutBuf>>,
    reply: Option<Box<Reply>>,
    /// Start of the current wait for input: first byte of a head, last body read, start
    /// of idleness, or start of lingering.
    read_mark: Instant,
    /// Last time output was queued from empty or made progress.
    write_mark: Instant,
    /// Some bytes of the current head have arrived.
    head_started: bool,
    /// No request has completed yet on this connection.
    fresh: bool,
    read_closed: bool,
    draining: bool,
    /// Parsing stopped because the output queue reached its cap.
    stalled: bool,
}

impl Connection {
    /// A connection accepted at `ctx.now()`.
    pub fn new(ctx: &Context) -> Self {
        Connection {
            phase: Phase::Head,
            carry: Vec::new(),
            scan_from: 0,
            pending: None,
            inflight: None,
            reply: None,
            read_mark: ctx.now,
            write_mark: ctx.now,
            head_started: false,
            fresh: true,
            read_closed: false,
            draining: false,
            stalled: false,
        }
    }

    /// Takes bytes read from the peer. All of them are consumed: complete requests are
    /// answered (responses queued in order), bodies discarded, and an incomplete head
    /// or input held back by backpressure is kept in the carry buffer.
    pub fn handle_input(&mut self, ctx: &mut Context, data: &[u8]) {
        if !self.is_reading() {
            return; // closing or lingering: input is discarded
        }
        if self.carry.is_empty() {
            let used = self.process(ctx, data);
            if used < data.len() && self.is_reading() {
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
        if used < buf.len() && self.is_reading() {
            buf.drain(..used);
            self.carry = buf;
        }
    }

    fn is_reading(&self) -> bool {
        matches!(self.phase, Phase::Head | Phase::Body { .. } | Phase::Chunked(_))
    }

    /// Parses and answers what `buf` holds; returns how many bytes were consumed.
    fn process(&mut self, ctx: &mut Context, buf: &[u8]) -> usize {
        let Context { site, limits, date, now, pool, stats, metrics, .. } = ctx;
        let now = *now;
        let mut pos = 0;
        self.stalled = false;
        loop {
            if self.over_cap(limits) {
                self.stalled = true;
                return pos; // backpressure: resume in handle_sent
            }
            match &mut self.phase {
                Phase::Head => {
                    let resuming = self.head_started;
                    if !self.head_started {
                        // Empty lines before a request line are ignored (RFC 9112 2.2).
                        while pos < buf.len() && (buf[pos] == b'\n' || buf[pos..].starts_with(b"\r\n")) {
                            pos += if buf[pos] == b'\n' { 1 } else { 2 };
                        }
                        if pos == buf.len() || buf[pos..] == *b"\r" {
                            return pos;
                        }
                        self.head_started = true;
                        self.read_mark = now;
                    }
                    let rest = &buf[pos..];
                    // A head seen incomplete before is parsed again only once its end has
                    // arrived (a cheap scan that resumes where it stopped), so a head
                    // trickled byte by byte costs linear time, not quadratic. An error is
                    // acted on only once the whole head is here, as it would be had the
                    // head arrived in pieces: answers never depend on how input was split.
                    let oversize = || request::oversize_reject(rest, limits.max_head);
                    let parsed = if resuming && request::find_head_end(rest, self.scan_from).is_none() {
                        None
                    } else {
                        let metrics = metrics.as_ref().map(|(m, i)| (&**m, *i, &*stats));
                        match request::decide(site, limits, rest, metrics) {
                            Ok(Some((_, end))) if end > limits.max_head => Some(Err(oversize())),
                            Ok(Some(parsed)) => Some(Ok(parsed)),
                            Ok(None) => None,
                            Err(reject) => match request::find_head_end(rest, 0) {
                                Some(end) if end <= limits.max_head => Some(Err(reject)),
                                Some(_) => Some(Err(oversize())),
                                None => None,
                            },
                        }
                    };
                    let (d, end) = match parsed {
                        Some(Ok(parsed)) => parsed,
                        Some(Err(reject)) => {
                            self.reject(pool, date, stats, now, site, reject);
                            return buf.len();
                        }
                        None if rest.len() > limits.max_head => {
                            self.reject(pool, date, stats, now, site, oversize());
                            return buf.len();
                        }
                        None => {
                            self.scan_from = rest.len().saturating_sub(2);
                            return pos;
                        }
                    };
                    self.scan_from = 0;
                    self.head_started = false;
                    pos += end;
                    self.fresh = false;
                    match d.body {
                        BodyKind::None => {
                            self.respond(pool, date, stats, now, d.response.get(), d.head_only, d.keep_alive, d.http10)
                        }
                        body => {
                            if d.expect_continue {
                                self.queue(pool, now).push_owned(b"HTTP/1.1 100 Continue\r\n\r\n");
                            }
                            self.reply = Some(Box::new(Reply {
                                response: d.response.into_arc(),
                                head_only: d.head_only,
                                keep_alive: d.keep_alive,
                                http10: d.http10,
                            }));
                            self.read_mark = now;
                            self.phase = match body {
                                BodyKind::Fixed(left) => Phase::Body { left },
                                _ => Phase::Chunked(Box::new(ChunkedDecoder::new())),
                            };
                        }
                    }
                }
                Phase::Body { left } => {
                    let take = (*left).min((buf.len() - pos) as u64);
                    pos += take as usize;
                    *left -= take;
                    self.read_mark = now;
                    if *left > 0 {
                        return pos;
                    }
                    self.finish_body(pool, date, stats, now);
                }
                Phase::Chunked(decoder) => {
                    self.read_mark = now;
                    match decoder.feed(&buf[pos..], limits.max_body) {
                        Chunked::More => return buf.len(),
                        Chunked::Done(n) => {
                            pos += n;
                            self.finish_body(pool, date, stats, now);
                        }
                        Chunked::Error(reject) => {
                            self.reply = None;
                            self.reject(pool, date, stats, now, site, reject);
                            return buf.len();
                        }
                    }
                }
                Phase::Closing | Phase::Lingering | Phase::Closed => return buf.len(),
            }
        }
    }

    fn finish_body(&mut self, pool: &mut BufPool, date: &DateCache, stats: &mut Stats, now: Instant) {
        self.phase = Phase::Head;
        if let Some(r) = self.reply.take() {
            self.respond(pool, date, stats, now, &r.response, r.head_only, r.keep_alive, r.http10);
        }
    }

    fn queue(&mut self, pool: &mut BufPool, now: Instant) -> &mut OutBuf {
        if self.output_len() == 0 {
            self.write_mark = now;
        }
        self.pending.get_or_insert_with(|| pool.take())
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        pool: &mut BufPool,
        date: &DateCache,
        stats: &mut Stats,
        now: Instant,
        response: &Prerendered,
        head_only: bool,
        keep_alive: bool,
        http10: bool,
    ) {
        let close = !keep_alive || self.draining;
        let out = self.queue(pool, now);
        out.push_owned(response.head());
        out.push_owned(b"Date: ");
        out.push_owned(date.value());
        if close {
            out.push_owned(b"\r\nConnection: close\r\n\r\n");
        } else if http10 {
            out.push_owned(b"\r\nConnection: keep-alive\r\n\r\n");
        } else {
            out.push_owned(b"\r\n\r\n");
        }
        if !head_only {
            match response.body() {
                Body::Memory(body) => out.push_shared(body),
                Body::File { file, offset, len } => out.push_file(file, *offset, *len as usize),
            }
        }
        stats.requests += 1;
        if response.status() >= 400 {
            stats.errors += 1;
        }
        if close {
            self.phase = Phase::Closing;
        }
    }

    /// Answers `reject` with its error response and closes: the rest of the input cannot
    /// be framed.
    fn reject(
        &mut self,
        pool: &mut BufPool,
        date: &DateCache,
        stats: &mut Stats,
        now: Instant,
        site: &Snapshot,
        reject: Reject,
    ) {
        self.carry = Vec::new();
        self.reply = None;
        self.respond(pool, date, stats, now, site.error(reject.status()), false, false, false);
    }

    /// Bytes queued and not yet sent (bytes to stream from files included).
    pub fn output_len(&self) -> usize {
        self.pending.as_ref().map_or(0, |b| b.remaining()) + self.inflight.as_ref().map_or(0, |b| b.remaining())
    }

    /// True when queued output is at the cap: parsing stops until some is sent. Bytes
    /// in memory count against `max_output`; file segments count only in number.
    fn over_cap(&self, limits: &Limits) -> bool {
        let (mut memory, mut files) = (0, 0);
        for buf in [&self.pending, &self.inflight].into_iter().flatten() {
            memory += buf.memory_remaining();
            files += buf.files_unsent();
        }
        memory >= limits.max_output || files >= MAX_QUEUED_FILES
    }

    /// The output to send next, if any. The segments stay valid and unchanged until
    /// [`Connection::handle_sent`] (see the contract in the crate docs).
    pub fn poll_output(&mut self) -> Option<&OutBuf> {
        if self.inflight.is_none() {
            self.inflight = self.pending.take();
        }
        self.inflight.as_deref().filter(|b| b.remaining() > 0)
    }

    /// Reports that `n` bytes of the output from `poll_output` were sent.
    pub fn handle_sent(&mut self, ctx: &mut Context, n: usize) {
        self.write_mark = ctx.now;
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
            if !self.head_started && matches!(self.phase, Phase::Head) {
                self.read_mark = ctx.now; // idle from now
            }
        }
        if self.stalled && !self.over_cap(&ctx.limits) {
            self.process_carry(ctx);
        }
        self.settle();
    }

    /// The peer closed its write side (EOF, EPOLLRDHUP). Requests already received are
    /// still answered; then the connection closes.
    pub fn handle_eof(&mut self, _ctx: &mut Context) {
        self.read_closed = true;
        if matches!(self.phase, Phase::Lingering) {
            self.phase = Phase::Closed;
        }
        self.settle();
    }

    fn settle(&mut self) {
        if self.read_closed && self.output_len() == 0 && !matches!(self.phase, Phase::Closed) {
            // Nothing more can arrive and everything is sent; a partial request left
            // in the carry can never complete.
            self.carry = Vec::new();
            self.phase = Phase::Closed;
        }
    }

    /// True when the engine should read: not while output is over the cap (parsing
    /// stopped there), not after EOF, not while closing.
    pub fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Head | Phase::Body { .. } | Phase::Chunked(_) => !self.read_closed && !self.stalled,
            Phase::Lingering => true,
            Phase::Closing | Phase::Closed => false,
        }
    }

    /// Output is drained and the connection decided to close: the engine shuts down
    /// its write side and calls [`Connection::handle_write_shutdown`].
    pub fn should_close_after_flush(&self) -> bool {
        matches!(self.phase, Phase::Closing) && self.output_len() == 0
    }

    /// The write side is shut; linger for the peer's EOF.
    pub fn handle_write_shutdown(&mut self, ctx: &mut Context) {
        self.phase = if self.read_closed { Phase::Closed } else { Phase::Lingering };
        self.read_mark = ctx.now;
    }

    /// True when the engine should close the socket and drop the connection.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// True while nothing is queued, nothing partial is held and no request is open:
    /// the state in which a connection holds no buffer.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Head) && !self.head_started && self.output_len() == 0 && self.carry.is_empty()
    }

    /// The next instant at which [`Connection::handle_timeout`] has something to do.
    pub fn deadline(&self, limits: &crate::Limits) -> Option<Instant> {
        let read = match self.phase {
            Phase::Closed => return None,
            Phase::Lingering => return Some(self.read_mark + limits.linger_timeout),
            Phase::Closing => None,
            Phase::Head if self.head_started || self.fresh => Some(self.read_mark + limits.header_timeout),
            Phase::Head if self.read_closed || self.output_len() > 0 => None,
            Phase::Head => Some(self.read_mark + limits.keepalive_timeout),
            // Not reading because output is over the cap: the peer is not late, only
            // the send deadline applies (reading resumes with a fresh body deadline).
            Phase::Body { .. } | Phase::Chunked(_) if self.stalled => None,
            Phase::Body { .. } | Phase::Chunked(_) => Some(self.read_mark + limits.header_timeout),
        };
        let write = (self.output_len() > 0).then(|| self.write_mark + limits.send_timeout);
        match (read, write) {
            (Some(r), Some(w)) => Some(r.min(w)),
            (r, w) => r.or(w),
        }
    }

    /// Acts on deadlines that have passed by `ctx.now()`: an idle, stalled or
    /// lingering connection closes; a request not received in time gets 408 and a close.
    pub fn handle_timeout(&mut self, ctx: &mut Context) {
        let now = ctx.now;
        let limits = &ctx.limits;
        if self.deadline(limits).is_none_or(|d| now < d) {
            return;
        }
        if self.output_len() > 0 && now >= self.write_mark + limits.send_timeout {
            self.phase = Phase::Closed; // the peer stopped reading
            return;
        }
        let receiving = match self.phase {
            Phase::Head => self.head_started,
            Phase::Body { .. } | Phase::Chunked(_) => true,
            _ => false,
        };
        if receiving {
            let Context { site, date, pool, stats, .. } = ctx;
            self.reject(pool, date, stats, now, site, Reject::Timeout);
        } else {
            self.phase = Phase::Closed;
        }
    }

    /// Graceful shutdown: an idle connection closes now; one with a request in
    /// progress answers it with `Connection: close`; queued responses are flushed first.
    pub fn begin_shutdown(&mut self, _ctx: &mut Context) {
        self.draining = true;
        match self.phase {
            Phase::Head if !self.head_started => {
                if self.output_len() == 0 {
                    self.phase = Phase::Closed;
                } else {
                    self.carry = Vec::new();
                    self.phase = Phase::Closing;
                }
            }
            _ => {}
        }
    }

    /// Bytes held in the carry buffer (an incomplete head or held-back input).
    pub fn buffered_input(&self) -> usize {
        self.carry.len()
    }
}
