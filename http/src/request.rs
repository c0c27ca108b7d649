//! Parsing one request head and deciding how to answer it.

use crate::limits::MAX_HEADERS_CEILING;
use crate::reject::{Malformed, Reject};
use crate::site::{Entry, Prerendered, Snapshot};
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
}

impl Answer<'_> {
    pub(crate) fn get(&self) -> &Prerendered {
        match self {
            Answer::Shared(r) => r,
            Answer::Owned(r) => r,
        }
    }

    pub(crate) fn into_arc(self) -> Arc<Prerendered> {
        match self {
            Answer::Shared(r) => Arc::clone(r),
            Answer::Owned(r) => Arc::from(r),
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

/// Where the head ends in `buf`, if it is complete: the index just past the blank
/// line. `from` is where a previous scan stopped. Accepts CRLF and bare LF endings.
pub(crate) fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    for i in memchr::memchr_iter(b'\n', &buf[from.min(buf.len())..]).map(|i| i + from) {
        match buf.get(i + 1) {
            Some(b'\n') => return Some(i + 2),
            Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
            _ => {}
        }
    }
    None
}

/// The rejection of a head that grew past the limit: 414 when even the request line
/// does not fit, 431 otherwise.
pub(crate) fn oversize_reject(buf: &[u8], max_head: usize) -> Reject {
    if memchr::memchr(b'\n', &buf[..max_head.min(buf.len())]).is_some() {
        Reject::HeaderFieldsTooLarge
    } else {
        Reject::UriTooLong
    }
}

/// Parses the request head at the start of `head` and decides the answer, with the
/// head's length. `Ok(None)`: the head is not complete yet. `Err(reject)` is a framing
/// or syntax error: answer with `reject.status()` and close.
pub(crate) fn decide<'a>(
    site: &'a Snapshot,
    limits: &Limits,
    head: &[u8],
    metrics: Option<(&dyn MetricsSource, usize, &HttpStats)>,
) -> Result<Option<(Decision<'a>, usize)>, Reject> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CEILING];
    let headers = &mut storage[..limits.max_headers.min(MAX_HEADERS_CEILING)];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(head, headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::HeaderFieldsTooLarge),
        // Which version error (400 or 505) needs the whole request line.
        Err(httparse::Error::Version) if memchr::memchr(b'\n', head).is_none() => return Ok(None),
        Err(httparse::Error::Version) => return Err(version_error(head)),
        Err(_) => return Err(Reject::BadRequest(Malformed::Syntax)),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Reject::BadRequest(Malformed::Syntax));
    };
    let http10 = version == 0;

    let mut hosts = 0u32;
    let mut content_length: Option<u64> = None;
    let mut content_lengths = 0u32;
    let mut te = TransferCodings::default();
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut conditional = 0u8;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if !valid_host(h.value) {
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
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(Reject::BadRequest(Malformed::Host));
    }

    let keep_alive = !conn_close && (!http10 || conn_keep_alive);
    let expect_continue = expect_continue && !http10 && body != BodyKind::None;
    let path = routing_path(method, target)?;
    let raw_path = path;
    let decoded;
    let path = if memchr::memchr(b'%', path).is_some() {
        decoded = percent_decode(path).ok_or(Reject::BadRequest(Malformed::Target))?;
        &decoded[..]
    } else {
        path
    };
    if memchr::memchr(0, path).is_some() {
        return Err(Reject::BadRequest(Malformed::Target));
    }
    let known = Method::of(method);
    let response = match (known, site.lookup(path)) {
        (Method::Unknown, _) => Answer::Shared(site.error(501)),
        // `--metrics`: looked at only when no route matched, so routing costs nothing
        // more (a route or file at the same path wins).
        (Method::Get | Method::Head, None) if metrics.is_some_and(|m| m.0.path() == path) => {
            metrics.map_or_else(|| Answer::Shared(site.error(404)), |(m, worker, own)| metrics_answer(m, worker, own))
        }
        (_, None) => Answer::Shared(site.error(404)),
        (Method::Get | Method::Head, Some(Entry::Fixed(r))) => Answer::Shared(r),
        (Method::Get | Method::Head, Some(Entry::File(f))) if conditional == 0 => Answer::Shared(&f.ok),
        (Method::Get | Method::Head, Some(Entry::File(f))) => {
            static_files::conditional(f, known == Method::Get, conditional, req.headers)
        }
        (Method::Get | Method::Head, Some(Entry::Redirect)) => static_files::redirect(raw_path, target),
        (Method::Other, Some(_)) => Answer::Shared(site.error(405)),
    };
    Ok(Some((Decision { response, head_only: known == Method::Head, keep_alive, http10, body, expect_continue }, len)))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    /// Standard methods duet does not serve: 405 with Allow.
    Other,
    /// Methods it does not know at all: 501.
    Unknown,
}

impl Method {
    fn of(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" | "PUT" | "DELETE" | "OPTIONS" | "PATCH" | "TRACE" | "CONNECT" => Method::Other,
            _ => Method::Unknown,
        }
    }
}

/// The path part of the target used for routing: origin-form `/p?q` or absolute-form
/// `http://host/p?q`; the query is dropped. `*` (OPTIONS) and authority-form (CONNECT)
/// route nowhere.
fn routing_path<'t>(method: &str, target: &'t str) -> Result<&'t [u8], Reject> {
    let t = target.as_bytes();
    let path = if t.first() == Some(&b'/') {
        t
    } else if let Some(rest) = strip_scheme(t) {
        match memchr::memchr3(b'/', b'?', b'#', rest) {
            Some(i) if rest[i] == b'/' => &rest[i..],
            _ => &b"/"[..],
        }
    } else if (t == b"*" && method == "OPTIONS") || method == "CONNECT" {
        // Routes nowhere: answered by method (405).
        &b"*"[..]
    } else {
        return Err(Reject::BadRequest(Malformed::Target));
    };
    let end = memchr::memchr2(b'?', b'#', path).unwrap_or(path.len());
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

/// For an unparseable version: 505 when it is a well-formed `HTTP/x.y` that is not
/// 1.0 or 1.1, 400 when the request line is garbage.
fn version_error(head: &[u8]) -> Reject {
    let line_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
    let line = head[..line_end].strip_suffix(b"\r").unwrap_or(&head[..line_end]);
    let version = match memchr::memrchr(b' ', line) {
        Some(i) => &line[i + 1..],
        None => return Reject::BadRequest(Malformed::Syntax),
    };
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            Reject::VersionNotSupported
        }
        [b'H', b'T', b'T', b'P', b'/', major] if major.is_ascii_digit() => Reject::VersionNotSupported,
        _ => Reject::BadRequest(Malformed::Syntax),
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
    v.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
                    | b'%'
            )
    })
}

/// The counters of `metrics`, with this worker's live ones, as a fresh response.
#[cold]
fn metrics_answer(metrics: &dyn MetricsSource, worker: usize, own: &HttpStats) -> Answer<'static> {
    let text = metrics.render(worker, own);
    Answer::Owned(Box::new(Prerendered::new(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        bytes::Bytes::from(text),
        &["Cache-Control: no-store"],
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_accepts_crlf_and_bare_lf() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nX", 0), Some(27));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nHost: a\n\nX", 0), Some(24));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r", 0), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 24), Some(27));
    }

    #[test]
    fn routing_path_handles_forms_and_query() {
        assert_eq!(routing_path("GET", "/a?b=c").unwrap(), b"/a");
        assert_eq!(routing_path("GET", "http://example.com/x/y?q").unwrap(), b"/x/y");
        assert_eq!(routing_path("GET", "HTTP://example.com").unwrap(), b"/");
        assert_eq!(routing_path("GET", "http://example.com?q").unwrap(), b"/");
        assert_eq!(routing_path("OPTIONS", "*").unwrap(), b"*");
        assert_eq!(routing_path("GET", "*"), Err(Reject::BadRequest(Malformed::Target)));
        assert_eq!(routing_path("GET", "foo"), Err(Reject::BadRequest(Malformed::Target)));
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

    #[test]
    fn version_errors() {
        assert_eq!(version_error(b"GET / HTTP/2.0\r\n\r\n"), Reject::VersionNotSupported);
        assert_eq!(version_error(b"GET / HTTP/1.2\r\n\r\n"), Reject::VersionNotSupported);
        assert_eq!(version_error(b"GET / HTTP/3\r\n\r\n"), Reject::VersionNotSupported);
        assert_eq!(version_error(b"GET / FOO/1.1\r\n\r\n"), Reject::BadRequest(Malformed::Syntax));
        assert_eq!(version_error(b"GET /\r\n\r\n"), Reject::BadRequest(Malformed::Syntax));
    }
}
