//! Parsing one request head: its syntax, the fields that frame the message and manage
//! the connection, and the few noted for routing. What the request is answered with is
//! decided above, in [`crate::route`], from the [`Head`] this returns.

use crate::headers::{list_items, trim, HAS_IF_MODIFIED_SINCE, HAS_IF_NONE_MATCH, HAS_IF_RANGE, HAS_RANGE};
use crate::limits::{Limits, MAX_HEADERS_CEILING};
use crate::line::is_host_byte;
use crate::reject::{Malformed, Reject};
use std::mem::MaybeUninit;

/// How the request body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    None,
    Fixed(u64),
    Chunked,
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

/// The rejection of a head that grew past the limit, from its first `max_head` bytes:
/// 414 when even the request line does not fit, 431 otherwise.
pub(crate) fn oversize_reject(window: &[u8]) -> Reject {
    if memchr::memchr(b'\n', window).is_some() {
        Reject::HeaderFieldsTooLarge
    } else {
        Reject::UriTooLong
    }
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
    let known = Method::of(method);
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

/// The methods, as routing tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Options,
    /// The methods an echo route answers with the request body: POST, PUT, PATCH,
    /// DELETE. Elsewhere 405 with Allow.
    Echo,
    /// Never served: 501 and a close.
    Connect,
    /// Standard methods duet does not serve (TRACE): 405 with Allow.
    Other,
    /// Methods it does not know at all: 501.
    Unknown,
}

impl Method {
    pub(crate) fn of(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            "POST" | "PUT" | "PATCH" | "DELETE" => Method::Echo,
            "CONNECT" => Method::Connect,
            "TRACE" => Method::Other,
            _ => Method::Unknown,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_strict() {
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b" 7 "), Some(7));
        for bad in [&b""[..], b"+1", b"-1", b"1,1", b"1 1", b"0x10", b"1234567890123456789"] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }
}
