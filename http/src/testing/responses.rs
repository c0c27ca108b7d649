//! What the peer received, read back: responses parsed and checked, requests built,
//! and one input run under every split and send size.

use super::{Driver, SendMode, DATE};
use crate::{Limits, Site};
use std::sync::Arc;

/// What feeding one input produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Everything the peer received.
    pub out: Vec<u8>,
    /// The driver shut its write side.
    pub write_shut: bool,
    /// The connection ended closed.
    pub closed: bool,
    /// The connection wanted input at the end.
    pub wants_read: bool,
    /// Input bytes the connection held at the end.
    pub buffered_input: usize,
}

impl Outcome {
    /// What the peer received, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// Final responses (1xx skipped), each checked for Date, Content-Length, Server.
    pub fn responses(&self) -> Vec<Response> {
        parse_responses(&self.out, &[])
    }

    /// The status codes of [`Outcome::responses`].
    pub fn statuses(&self) -> Vec<u16> {
        self.responses().iter().map(|r| r.status).collect()
    }
}

/// Feeds `chunks` one read event each, then reports. The count is the number of
/// sends that took bytes.
pub fn run_chunks(site: &Arc<Site>, limits: &Limits, send: SendMode, chunks: &[&[u8]]) -> (Outcome, usize) {
    let mut d = Driver::with_site(Arc::clone(site), limits.clone());
    d.send = send;
    for chunk in chunks {
        if !d.read_event(chunk) {
            break;
        }
    }
    d.flush();
    let outcome = Outcome {
        write_shut: d.write_shut,
        closed: d.conn.is_closed(),
        wants_read: d.conn.wants_read(),
        buffered_input: d.conn.buffered_input(),
        out: d.out,
    };
    (outcome, d.batches)
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

/// [`check_with`] on [`Site::hello`] under the default limits.
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

/// One response as the peer received it.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The header fields, in order, as sent.
    pub headers: Vec<(String, String)>,
    /// The body (empty for a response to HEAD, see [`parse_responses`]).
    pub body: Vec<u8>,
    /// The status line and headers as sent, blank line included.
    pub head: Vec<u8>,
}

impl Response {
    /// The value of header `name` (any case); panics if it was sent twice.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut it = self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = it.next().map(|(_, v)| v.as_str());
        assert!(it.next().is_none(), "header {name} sent twice");
        first
    }

    /// The `Connection` header.
    pub fn connection(&self) -> Option<&str> {
        self.header("connection")
    }
}

/// Parses a stream of responses. Bodies follow Content-Length, except for 1xx and for
/// the final responses whose index is in `head_only`. Every final response must carry
/// exactly one Date (the fixed [`DATE`]), Server and Content-Length; the stream must
/// end on a boundary.
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

/// The pieces, concatenated.
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
