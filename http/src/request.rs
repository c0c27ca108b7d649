//! Parsing one request head and deciding how to answer it.

use crate::echo;
use crate::limits::MAX_HEADERS_CEILING;
use crate::line::is_host_byte;
use crate::reject::{Malformed, Reject};
use crate::site::{Allow, Entry, Prerendered, Snapshot};
use crate::static_files;
use crate::{HttpStats, Limits, MetricsSource};
use std::mem::MaybeUninit;
use std::sync::Arc;

/// The response chosen for a request: shared and pre-rendered (the common case), or
/// rendered for this request (206, 416, 301).
#[derive(Debug)]
pub(crate) enum Answer<'a> {
    Shared(&'a Arc<Prerendered>),
    Owned(Box<Prerendered>),
    /// An echo route's answer to a request with a body: `200` with the body once it
    /// is read, of this Content-Type.
    Echo(Box<str>),
}

impl Answer<'_> {
    /// The response, when it is decided from the head alone (not an echo's).
    pub(crate) fn ready(&self) -> Option<&Prerendered> {
        match self {
            Answer::Shared(r) => Some(r),
            Answer::Owned(r) => Some(r),
            Answer::Echo(_) => None,
        }
    }

    /// The status the request will be answered with.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Answer::Shared(r) => r.status(),
            Answer::Owned(r) => r.status(),
            Answer::Echo(_) => 200,
        }
    }
}

/// Request headers that matter only for files: seen in the header loop as flags, read
/// again only when a file is asked for with one of them.
pub(crate) const HAS_RANGE: u8 = 1;
pub(crate) const HAS_IF_RANGE: u8 = 2;
pub(crate) const HAS_IF_NONE_MATCH: u8 = 4;
pub(crate) const HAS_IF_MODIFIED_SINCE: u8 = 8;

/// How the request body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    None,
    Fixed(u64),
    Chunked,
}

/// The answer to a well-framed request.
#[derive(Debug)]
pub(crate) struct Decision<'a> {
    pub(crate) response: Answer<'a>,
    pub(crate) head_only: bool,
    pub(crate) keep_alive: bool,
    pub(crate) http10: bool,
    pub(crate) body: BodyKind,
    pub(crate) expect_continue: bool,
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

/// Parses the request head at the start of `head` and decides the answer, with the
/// head's length. The request line was already checked by [`crate::line::LineScan`].
/// `Ok(None)`: the head is not complete yet and nothing in it is invalid so far.
/// `Err(reject)`: a framing or syntax error, found in the bytes seen so far: answer
/// with `reject.status()` and close.
pub(crate) fn decide<'a>(
    site: &'a Snapshot,
    limits: &Limits,
    head: &[u8],
    metrics: Option<(&dyn MetricsSource, usize, &HttpStats)>,
) -> Result<Option<(Decision<'a>, usize)>, Reject> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CEILING];
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
    for h in req.headers.iter() {
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
    let decision =
        |response| Decision { response, head_only: known == Method::Head, keep_alive, http10, body, expect_continue };
    if target == "*" {
        return match known {
            Method::Options => Ok(Some((decision(Answer::Shared(site.options(Allow::Server))), len))),
            _ => Err(Reject::BadRequest(Malformed::Target)),
        };
    }
    let path = routing_path(target)?;
    let raw_path = path;
    let decoded;
    // The target holds no NUL (the request line's check refused it); only an escape
    // can make one.
    let path = if memchr::memchr(b'%', path).is_some() {
        decoded = percent_decode(path).ok_or(Reject::BadRequest(Malformed::Target))?;
        if memchr::memchr(0, &decoded).is_some() {
            return Err(Reject::BadRequest(Malformed::Target));
        }
        &decoded[..]
    } else {
        path
    };
    let response = match (known, site.lookup(path)) {
        (Method::Unknown, _) => Answer::Shared(site.error(501)),
        // `--metrics`: looked at only when no route matched, so routing costs nothing
        // more (a route or file at the same path wins).
        (_, None) if metrics.is_some_and(|m| m.0.path() == path) => match (known, metrics) {
            (Method::Get | Method::Head, Some((m, worker, own))) => metrics_answer(m, worker, own),
            (Method::Options, _) => Answer::Shared(site.options(Allow::Static)),
            _ => Answer::Shared(site.error(405)),
        },
        (_, None) => Answer::Shared(site.error(404)),
        (Method::Options, Some(Entry::Echo)) => Answer::Shared(site.options(Allow::Echo)),
        (Method::Options, Some(_)) => Answer::Shared(site.options(Allow::Static)),
        (Method::Get | Method::Head, Some(Entry::Fixed(r))) => Answer::Shared(r),
        // A file without variants and without validators or ranges asked for: its
        // pre-rendered 200. (Accept-Encoding is not looked for here: browsers send it
        // with every request, and only a file with variants needs it.)
        (Method::Get | Method::Head, Some(Entry::File(f))) if conditional == 0 && f.variants.is_empty() => {
            Answer::Shared(&f.ok)
        }
        (Method::Get | Method::Head, Some(Entry::File(f))) => {
            static_files::serve(f, known == Method::Get, conditional, req.headers)
        }
        (Method::Get | Method::Head, Some(Entry::Redirect)) => static_files::redirect(raw_path, target, site.headers()),
        (Method::Get | Method::Head, Some(Entry::Echo)) => Answer::Owned(Box::new(echo::head(&head[..len]))),
        (Method::Echo, Some(Entry::Echo)) => Answer::Echo(echo::content_type(content_type)),
        (Method::Other | Method::Connect, Some(Entry::Echo)) => Answer::Shared(site.echo_405()),
        (Method::Echo | Method::Other | Method::Connect, Some(_)) => Answer::Shared(site.error(405)),
    };
    Ok(Some((decision(response), len)))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
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
    fn of(m: &str) -> Method {
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

/// The path part of the target used for routing: origin-form `/p?q` or absolute-form
/// `http://host/p?q`; the query is dropped. Anything else (authority-form outside
/// CONNECT, which never gets here) routes nowhere: 400.
fn routing_path(target: &str) -> Result<&[u8], Reject> {
    let t = target.as_bytes();
    let path = if t.first() == Some(&b'/') {
        t
    } else if let Some(rest) = strip_scheme(t) {
        match memchr::memchr2(b'/', b'?', rest) {
            Some(i) if rest[i] == b'/' => &rest[i..],
            _ => &b"/"[..],
        }
    } else {
        return Err(Reject::BadRequest(Malformed::Target));
    };
    let end = memchr::memchr(b'?', path).unwrap_or(path.len());
    Ok(&path[..end])
}

fn strip_scheme(t: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"http://"[..], b"https://"] {
        if t.len() > scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&t[scheme.len()..]);
        }
    }
    None
}

/// Decodes `%XX` escapes; `None` if an escape is malformed.
fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hi = (*s.get(i + 1)? as char).to_digit(16)?;
            let lo = (*s.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
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

/// Non-empty, trimmed elements of a comma-separated field value.
pub(crate) fn list_items(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|s| !s.is_empty())
}

pub(crate) fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |i| i + 1);
    &v[start..end]
}

/// `uri-host [ ":" port ]`: reg-name, IPv4 or IP-literal characters only.
fn valid_host(v: &[u8]) -> bool {
    v.iter().all(|&b| is_host_byte(b))
}

/// The counters of `metrics`, with this worker's live ones, as a fresh response.
#[cold]
fn metrics_answer(metrics: &dyn MetricsSource, worker: usize, own: &HttpStats) -> Answer<'static> {
    let text = metrics.render(worker, own);
    Answer::Owned(Box::new(Prerendered::new(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        bytes::Bytes::from(text),
        ["Cache-Control: no-store"],
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_path_handles_forms_and_query() {
        assert_eq!(routing_path("/a?b=c").unwrap(), b"/a");
        assert_eq!(routing_path("http://example.com/x/y?q").unwrap(), b"/x/y");
        assert_eq!(routing_path("HTTP://example.com").unwrap(), b"/");
        assert_eq!(routing_path("http://example.com?q").unwrap(), b"/");
        assert_eq!(routing_path("*"), Err(Reject::BadRequest(Malformed::Target)));
        assert_eq!(routing_path("example.com:443"), Err(Reject::BadRequest(Malformed::Target)));
        assert_eq!(routing_path("foo"), Err(Reject::BadRequest(Malformed::Target)));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"/a%20b%2F").unwrap(), b"/a b/");
        assert!(percent_decode(b"/%zz").is_none());
        assert!(percent_decode(b"/%2").is_none());
    }

    #[test]
    fn content_length_is_strict() {
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b" 7 "), Some(7));
        for bad in [&b""[..], b"+1", b"-1", b"1,1", b"1 1", b"0x10", b"1234567890123456789"] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }
}
