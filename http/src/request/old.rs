//! The head parser as it was before the one-pass parser ([`super::scan`]): the request
//! line checked byte by byte (`old_line`, a copy), then the field lines parsed by
//! httparse each time a new line end arrives, with the conn.rs logic that drove them.
//! Kept only for the differential test in `super::tests`, which holds the new parser to
//! the same verdicts; it goes when that test does.

use super::old_line::{Line, LineScan};
use super::{BodyKind, Method, Summary};
use crate::headers::{list_items, trim, HAS_IF_MODIFIED_SINCE, HAS_IF_NONE_MATCH, HAS_IF_RANGE, HAS_RANGE};
use crate::limits::{Limits, MAX_HEADERS_CEILING};
use crate::line::is_host_byte;
use crate::reject::{Malformed, Reject};
use std::mem::MaybeUninit;

/// The old scan of one head: the request line's check and where the search for the last
/// line end resumes (conn.rs's `scan_from`).
pub(crate) struct OldScan {
    line: LineScan,
    scan_from: usize,
}

impl OldScan {
    pub(crate) fn new() -> Self {
        OldScan { line: LineScan::new(), scan_from: 0 }
    }

    /// What conn.rs did with `window` (the head's first bytes, up to `max_head`).
    pub(crate) fn scan(&mut self, limits: &Limits, window: &[u8]) -> Result<Option<Summary>, Reject> {
        let parsed = match self.line.scan(window) {
            Line::Invalid(reject) => Some(Err(reject)),
            Line::Incomplete => None,
            Line::Complete => match memchr::memrchr(b'\n', &window[self.scan_from..]) {
                None => None,
                Some(i) => {
                    let lines = &window[..self.scan_from + i + 1];
                    let mut storage: FieldStorage<'_> = [const { MaybeUninit::uninit() }; MAX_HEADERS_CEILING];
                    parse(limits, lines, &mut storage).map(|h| h.map(|h| h.summary())).transpose()
                }
            },
        };
        match parsed {
            Some(verdict) => verdict.map(Some),
            None => {
                self.scan_from = window.len();
                Ok(None)
            }
        }
    }
}

impl Head<'_, '_> {
    fn summary(&self) -> Summary {
        Summary {
            method: self.method,
            target: self.target.as_bytes().to_vec(),
            fields: self.fields.iter().map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec())).collect(),
            content_type: self.content_type.to_vec(),
            conditional: self.conditional,
            keep_alive: self.keep_alive,
            http10: self.http10,
            body: self.body,
            expect_continue: self.expect_continue,
            len: self.len,
        }
    }
}

/// Room for the field lines of one head, filled by [`parse`]; uninitialised until then,
/// so a request pays nothing for the fields it does not send.
pub(crate) type FieldStorage<'h> = [MaybeUninit<httparse::Header<'h>>; MAX_HEADERS_CEILING];

/// A complete, well-framed request head (`'h`: the input it was parsed from; `'s`: the
/// [`FieldStorage`] holding its field lines).
#[derive(Debug)]
pub(crate) struct Head<'s, 'h> {
    pub(crate) method: Method,
    pub(crate) target: &'h str,
    /// The field lines, read again only for files (negotiation, validators, ranges).
    pub(crate) fields: &'s [httparse::Header<'h>],
    /// The Content-Type's value, trimmed (empty when there is none).
    pub(crate) content_type: &'h [u8],
    /// Which of the `HAS_*` fields are present.
    pub(crate) conditional: u8,
    pub(crate) keep_alive: bool,
    pub(crate) http10: bool,
    pub(crate) body: BodyKind,
    /// The client waits for `100 Continue` before sending its body.
    pub(crate) expect_continue: bool,
    /// Bytes of the head, its final blank line included.
    pub(crate) len: usize,
}

/// Parses the request head at the start of `head`, its field lines into `storage`. The
/// request line was already checked by [`crate::line::LineScan`].
/// `Ok(None)`: the head is not complete yet and nothing in it is invalid so far.
/// `Err(reject)`: a framing or syntax error, found in the bytes seen so far: answer
/// with `reject.status()` and close.
pub(crate) fn parse<'s, 'h>(
    limits: &Limits,
    head: &'h [u8],
    storage: &'s mut FieldStorage<'h>,
) -> Result<Option<Head<'s, 'h>>, Reject> {
    let headers = &mut storage[..limits.max_headers.min(MAX_HEADERS_CEILING)];
    let mut req = httparse::Request::new(&mut []);
    // httparse stops at the first invalid byte even in a partial head, so an invalid
    // field line is refused as soon as it is here.
    let len = match req.parse_with_uninit_headers(head, headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::HeaderFieldsTooLarge),
        Err(_) => return Err(Reject::BadRequest(Malformed::Syntax)),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Reject::BadRequest(Malformed::Syntax));
    };
    let http10 = version == 0;
    let fields: &'s [httparse::Header<'h>] = req.headers;

    let mut hosts = 0u32;
    let mut host_empty = false;
    let mut content_length: Option<u64> = None;
    let mut content_lengths = 0u32;
    let mut content_type: &[u8] = b"";
    let mut te = TransferCodings::default();
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut conditional = 0u8;
    for h in fields {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            let value = trim(h.value);
            host_empty = value.is_empty();
            if !valid_host(value) {
                return Err(Reject::BadRequest(Malformed::Host));
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            content_lengths += 1;
            content_length = Some(parse_content_length(h.value).ok_or(Reject::BadRequest(Malformed::ContentLength))?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te.add(h.value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in list_items(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(Reject::ExpectationFailed);
            }
        } else if name.eq_ignore_ascii_case(b"content-type") {
            content_type = trim(h.value);
        } else if name.eq_ignore_ascii_case(b"range") {
            conditional |= HAS_RANGE;
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            conditional |= HAS_IF_NONE_MATCH;
        } else if name.eq_ignore_ascii_case(b"if-modified-since") {
            conditional |= HAS_IF_MODIFIED_SINCE;
        } else if name.eq_ignore_ascii_case(b"if-range") {
            conditional |= HAS_IF_RANGE;
        }
    }

    // Framing first: a message whose length is in doubt cannot be followed.
    let body = if te.present {
        if http10 || content_lengths > 0 || te.bad {
            return Err(Reject::BadRequest(Malformed::TransferEncoding));
        }
        if te.unknown {
            return Err(Reject::NotImplemented);
        }
        if !te.chunked_last {
            return Err(Reject::BadRequest(Malformed::TransferEncoding));
        }
        BodyKind::Chunked
    } else if content_lengths > 1 {
        return Err(Reject::BadRequest(Malformed::ContentLength));
    } else {
        match content_length {
            Some(n) if n > limits.max_body => return Err(Reject::ContentTooLarge),
            Some(0) | None => BodyKind::None,
            Some(n) => BodyKind::Fixed(n),
        }
    };
    // A target without an authority (origin-form, `*`) names the host only in Host,
    // which HTTP/1.1 requires, once, and not empty (RFC 9112 §3.2).
    let has_authority = !target.starts_with('/') && target != "*";
    if hosts > 1 || (hosts == 0 && !http10) || (host_empty && !http10 && !has_authority) {
        return Err(Reject::BadRequest(Malformed::Host));
    }
    let known = Method::of(method.as_bytes());
    if known == Method::Connect {
        // duet is no proxy, and bytes after a CONNECT may already be a tunnel's.
        return Err(Reject::NotImplemented);
    }

    let keep_alive = !conn_close && (!http10 || conn_keep_alive);
    let expect_continue = expect_continue && !http10 && body != BodyKind::None;
    Ok(Some(Head {
        method: known,
        target,
        fields,
        content_type,
        conditional,
        keep_alive,
        http10,
        body,
        expect_continue,
        len,
    }))
}

/// `1*DIGIT`, no sign, no list, no whitespace inside; bounded so it cannot overflow.
fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + (d - b'0') as u64))
}

/// The transfer codings of all Transfer-Encoding lines, in order.
#[derive(Default)]
struct TransferCodings {
    present: bool,
    /// `chunked` is the last coding seen so far.
    chunked_last: bool,
    /// A coding other than chunked (we decode none): 501.
    unknown: bool,
    /// `chunked` applied twice, not last, or with parameters; or an empty list: 400.
    bad: bool,
}

impl TransferCodings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        let mut any = false;
        for coding in list_items(value) {
            any = true;
            if self.chunked_last {
                // Something after chunked: chunked is not final.
                self.bad = true;
            }
            if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked_last = true;
            } else {
                let name = coding.split(|&b| b == b';').next().map(trim).unwrap_or(coding);
                if name.eq_ignore_ascii_case(b"chunked") {
                    self.bad = true; // chunked takes no parameters
                }
                self.unknown = true;
                self.chunked_last = false;
            }
        }
        if !any {
            self.bad = true;
        }
    }
}

/// `uri-host [ ":" port ]`: reg-name, IPv4 or IP-literal characters only.
fn valid_host(v: &[u8]) -> bool {
    v.iter().all(|&b| is_host_byte(b))
}
