//! Response types: [`Prerendered`] responses and their [`Body`], the reason phrases,
//! and the [`Answer`] chosen for a request. Rendered once when a site is built (or, for
//! the few answers that depend on the request, once per request), never parsed.

use crate::date::DateCache;
use crate::out::INLINE_BODY_MAX;
use bytes::Bytes;
use std::fs::File;
use std::sync::Arc;

/// The value of the `Server` header.
pub const SERVER_NAME: &str = "duet";

/// A response body: bytes held in memory, or a byte range of a file streamed from disk
/// at request time.
#[derive(Clone, Debug)]
pub enum Body {
    /// Shared bytes, sent without copying.
    Memory(Bytes),
    /// `len` bytes of `file` from `offset`. The file was opened by whoever built the
    /// site (duet-http never performs I/O); engines send it with positional I/O
    /// (`sendfile`, `splice`, `pread`), so one descriptor serves every request.
    File {
        /// The open file, shared by all responses that stream from it.
        file: Arc<File>,
        /// Where the body starts in the file.
        offset: u64,
        /// Bytes of the body.
        len: u64,
    },
}

impl Body {
    /// The first `len` bytes of `file`, streamed from disk.
    pub fn file(file: Arc<File>, len: u64) -> Self {
        Body::File { file, offset: 0, len }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Body::Memory(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    /// True when the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the body is streamed from a file.
    pub fn is_file(&self) -> bool {
        matches!(self, Body::File { .. })
    }

    /// Bytes `first..=last` of the body (within its length).
    pub(crate) fn slice(&self, first: u64, last: u64) -> Body {
        match self {
            Body::Memory(b) => Body::Memory(b.slice(first as usize..=last as usize)),
            Body::File { file, offset, .. } => {
                Body::File { file: Arc::clone(file), offset: offset + first, len: last - first + 1 }
            }
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Memory(b)
    }
}

/// A response whose status line and headers were rendered once, at start. Only `Date`
/// (and `Connection` when needed) is added per request.
#[derive(Debug)]
pub struct Prerendered {
    /// Status line and headers, each ending in CRLF, without `Date`, `Connection` and
    /// the final blank line.
    head: Box<[u8]>,
    body: Body,
    status: u16,
}

/// No extra header lines, for [`Prerendered::new`].
pub(crate) const NO_LINES: [&str; 0] = [];

impl Prerendered {
    /// Renders a response with `Server`, `Content-Type`, `Content-Length` and `extra`
    /// header lines (each `Name: value`).
    pub fn new(
        status: u16,
        content_type: &str,
        body: impl Into<Body>,
        extra: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Self {
        let body = body.into();
        let mut head = status_and_server(status);
        if !content_type.is_empty() {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        for line in extra {
            head.push_str(line.as_ref());
            head.push_str("\r\n");
        }
        Prerendered { head: head.into_bytes().into_boxed_slice(), body, status }
    }

    /// A response without a body and without `Content-Length` (204, 304).
    pub(crate) fn bodiless(status: u16, extra: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        let mut head = status_and_server(status);
        for line in extra {
            head.push_str(line.as_ref());
            head.push_str("\r\n");
        }
        Prerendered { head: head.into_bytes().into_boxed_slice(), body: Body::Memory(Bytes::new()), status }
    }

    pub(crate) fn error(status: u16, extra: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        let body = format!("{status} {}\n", reason(status));
        Prerendered::new(status, "text/plain; charset=utf-8", Bytes::from(body), extra)
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    pub(crate) fn head(&self) -> &[u8] {
        &self.head
    }

    /// The body (sent unless the request was HEAD).
    pub fn body(&self) -> &Body {
        &self.body
    }
}

fn status_and_server(status: u16) -> String {
    format!("HTTP/1.1 {status} {}\r\nServer: {SERVER_NAME}\r\n", reason(status))
}

/// The reason phrase for the status codes duet sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The statuses that have a pre-rendered error response.
pub(crate) const ERROR_STATUSES: [u16; 10] = [400, 404, 405, 408, 413, 414, 417, 431, 501, 505];

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

/// One pre-rendered response rendered whole for the current second: its head, the Date
/// line with the blank line, and its body, so that answering it again this second is
/// one copy. A worker keeps one (the route a benchmark or a health check hits over and
/// over); another response takes its place.
#[derive(Debug, Default)]
pub(crate) struct Stamped {
    /// The address of the response `bytes` render, in the site snapshot the worker
    /// holds (0: none). An address names one response only while that snapshot is
    /// held: [`Stamped::forget`] when it is replaced.
    key: usize,
    second: u64,
    bytes: Vec<u8>,
}

impl Stamped {
    /// `response` whole with the Date of `date`, when its body is small and in memory
    /// (else `None`: its body is not copied). `response` must belong to the site
    /// snapshot held since the last [`Stamped::forget`].
    #[inline]
    pub(crate) fn get(&mut self, response: &Prerendered, date: &DateCache) -> Option<&[u8]> {
        let key = std::ptr::from_ref(response) as usize;
        if key != self.key || date.second() != self.second {
            self.render(key, response, date)?;
        }
        Some(&self.bytes)
    }

    #[cold]
    #[inline(never)]
    fn render(&mut self, key: usize, response: &Prerendered, date: &DateCache) -> Option<()> {
        let Body::Memory(body) = &response.body else {
            return None;
        };
        if body.len() > INLINE_BODY_MAX {
            return None;
        }
        self.bytes.clear();
        self.bytes.extend_from_slice(&response.head);
        self.bytes.extend_from_slice(date.line());
        self.bytes.extend_from_slice(body);
        (self.key, self.second) = (key, date.second());
        Some(())
    }

    /// The site snapshot changed: the addresses kept may name other responses now.
    pub(crate) fn forget(&mut self) {
        self.key = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn whole(r: &Prerendered, date: &DateCache) -> Vec<u8> {
        [r.head(), &date.line()[..], r.body_bytes()].concat()
    }

    impl Prerendered {
        fn body_bytes(&self) -> &[u8] {
            match &self.body {
                Body::Memory(b) => b,
                Body::File { .. } => panic!("a file body"),
            }
        }
    }

    #[test]
    fn stamped_is_the_response_whole_with_the_date_of_its_second() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let mut date = DateCache::new(t);
        let (a, b) = (
            Prerendered::new(200, "text/plain", Bytes::from_static(b"a"), NO_LINES),
            Prerendered::new(404, "text/plain", Bytes::from_static(b"not here"), NO_LINES),
        );
        let mut stamped = Stamped::default();
        assert_eq!(stamped.get(&a, &date).unwrap(), whole(&a, &date));
        // Another response takes the place of the first, and gives it back.
        assert_eq!(stamped.get(&b, &date).unwrap(), whole(&b, &date));
        assert_eq!(stamped.get(&a, &date).unwrap(), whole(&a, &date));
        // The next second: rendered again with its date.
        date.update(t + Duration::from_secs(1));
        let again = stamped.get(&a, &date).unwrap().to_vec();
        assert_eq!(again, whole(&a, &date));
        assert!(again.windows(8).any(|w| w == b"08:49:38"));
        stamped.forget();
        assert_eq!(stamped.get(&a, &date).unwrap(), whole(&a, &date));
    }

    #[test]
    fn stamped_leaves_out_bodies_it_would_not_copy() {
        let date = DateCache::new(UNIX_EPOCH);
        let big = Prerendered::new(200, "text/plain", Bytes::from(vec![b'x'; INLINE_BODY_MAX + 1]), NO_LINES);
        let mut stamped = Stamped::default();
        assert!(stamped.get(&big, &date).is_none());
        let file = tempfile_body();
        assert!(stamped.get(&file, &date).is_none());
    }

    fn tempfile_body() -> Prerendered {
        let path = std::env::temp_dir().join(format!("duet-stamped-{}", std::process::id()));
        std::fs::write(&path, b"file").unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        Prerendered::new(200, "text/plain", Body::file(Arc::new(file), 4), NO_LINES)
    }
}
