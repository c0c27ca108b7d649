//! The request line, checked byte by byte as it arrives (RFC 9112 §3).
//!
//! `request-line = method SP request-target SP HTTP-version CRLF`. The scan resumes
//! where the previous one stopped, so a line trickled one byte at a time costs linear
//! time, and it stops at the first byte that can never be part of a valid line: input
//! that is not HTTP (a TLS ClientHello's 0x16, binary garbage, a NUL) is answered the
//! moment it arrives, not when a blank line that may never come does. Because every
//! verdict depends only on the bytes before the offending one, the answer does not
//! depend on how the input was split.
//!
//! What is refused, and with which status:
//! - a method byte outside `tchar`, an empty method, or a byte other than SP after it:
//!   400; a method longer than any duet implements (RFC 9112 §3: 501), at once;
//! - a target byte that is not a URI character (RFC 3986: unreserved, reserved other
//!   than `#`, and `%`): a space inside it, `#`, `"`, `<`, `>`, `\`, `^`, `` ` ``,
//!   `{`, `|`, `}`, a control or a non-ASCII byte: 400;
//! - a version that is not `HTTP/` DIGIT `.` DIGIT followed by the line end (`HTTP/1`,
//!   `HTTP/1.1x`, `http/1.1`, `HTTP/01.1`): 400; a well-formed version other than 1.0
//!   and 1.1 (`HTTP/2.0`): 505, once the line end shows the version is complete;
//! - a CR not followed by LF: 400. A bare LF ends the line (RFC 9112 §2.2 allows it).

use crate::reject::{Malformed, Reject};

/// The longest method duet implements (`OPTIONS`, `CONNECT`): a longer one is 501 at
/// once (RFC 9112 §3), before the rest of its line arrives.
pub(crate) const MAX_METHOD: u32 = 7;

const SYNTAX: Reject = Reject::BadRequest(Malformed::Syntax);
const TARGET: Reject = Reject::BadRequest(Malformed::Target);

/// `tchar` (RFC 9110 §5.6.2): the bytes of a token, such as a method or a field name.
pub(crate) const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        )
}

/// A byte that may appear in a request target: RFC 3986's unreserved and reserved
/// characters (but `#`, which starts a fragment a client never sends) and `%`.
const fn is_target_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b':'
                | b'/'
                | b'?'
                | b'['
                | b']'
                | b'@'
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
                | b'%'
        )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Method,
    Target,
    Version,
    /// A CR ended the version: LF must follow.
    Lf,
    /// The line is complete and valid.
    Done,
}

/// What the bytes of the request line seen so far prove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// Valid so far; the line has not ended.
    Incomplete,
    /// The whole line is here and valid (HTTP/1.0 or HTTP/1.1).
    Complete,
    /// It can never be a valid request line.
    Invalid(Reject),
}

/// A resumable scan of the request line at the start of a head.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LineScan {
    /// Bytes of the head scanned so far.
    pos: u32,
    /// Bytes of the current part scanned so far.
    len: u32,
    part: Part,
}

impl LineScan {
    pub(crate) const fn new() -> Self {
        LineScan { pos: 0, len: 0, part: Part::Method }
    }

    /// Scans `head` (the bytes of the head from its first byte; longer each call) from
    /// where the last call stopped.
    pub(crate) fn scan(&mut self, head: &[u8]) -> Line {
        while (self.pos as usize) < head.len() {
            if self.part == Part::Done {
                break;
            }
            let b = head[self.pos as usize];
            let next = match self.part {
                Part::Method => match b {
                    b' ' if self.len > 0 => Part::Target,
                    _ if !is_tchar(b) => return Line::Invalid(SYNTAX),
                    _ if self.len == MAX_METHOD => return Line::Invalid(Reject::NotImplemented),
                    _ => Part::Method,
                },
                Part::Target => match b {
                    b' ' if self.len > 0 => Part::Version,
                    _ if is_target_byte(b) => Part::Target,
                    b'\r' | b'\n' if self.len > 0 => return Line::Invalid(SYNTAX), // HTTP/0.9
                    _ => return Line::Invalid(TARGET),
                },
                Part::Version => match (self.len, b) {
                    (0..=4, _) if b == b"HTTP/"[self.len as usize] => Part::Version,
                    (5 | 7, b'0'..=b'9') | (6, b'.') => Part::Version,
                    (8, b'\r') => Part::Lf,
                    (8, b'\n') => Part::Done,
                    _ => return Line::Invalid(SYNTAX),
                },
                Part::Lf if b == b'\n' => Part::Done,
                Part::Lf => return Line::Invalid(SYNTAX),
                Part::Done => unreachable!("the loop stops at Done"),
            };
            self.len = if next == self.part { self.len + 1 } else { 0 };
            if next == Part::Lf || (next == Part::Done && self.part == Part::Version) {
                // The version is complete: its 8 bytes end just before this one.
                let at = self.pos as usize;
                if !matches!(&head[at - 8..at], b"HTTP/1.1" | b"HTTP/1.0") {
                    return Line::Invalid(Reject::VersionNotSupported);
                }
            }
            self.part = next;
            self.pos += 1;
        }
        if self.part == Part::Done {
            Line::Complete
        } else {
            Line::Incomplete
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdict on `line` scanned whole, checked to be the same when it arrives one
    /// byte at a time and when cut anywhere into two pieces.
    fn verdict(line: &[u8]) -> Line {
        let whole = LineScan::new().scan(line);
        for cut in 0..=line.len() {
            let mut s = LineScan::new();
            let first = s.scan(&line[..cut]);
            let got = if matches!(first, Line::Invalid(_)) { first } else { s.scan(line) };
            assert_eq!(got, whole, "cut at {cut} of {:?}", String::from_utf8_lossy(line));
        }
        let mut s = LineScan::new();
        let mut last = Line::Incomplete;
        for end in 1..=line.len() {
            last = s.scan(&line[..end]);
            if matches!(last, Line::Invalid(_)) {
                break;
            }
        }
        assert_eq!(last, whole, "byte by byte: {:?}", String::from_utf8_lossy(line));
        whole
    }

    #[test]
    fn valid_lines_complete() {
        for line in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"GET / HTTP/1.0\n",
            b"OPTIONS * HTTP/1.1\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\n",
            b"GET http://[::1]:8080/a;b=c/%20?q=1&r=s@t HTTP/1.1\r\n",
            b"MKCOL /~user/!$&'()*+,= HTTP/1.1\r\n",
        ] {
            assert_eq!(verdict(line), Line::Complete, "{:?}", String::from_utf8_lossy(line));
        }
        assert_eq!(verdict(b"GET /index.html HTTP/1."), Line::Incomplete);
        assert_eq!(verdict(b"GET / HTTP/1.1\r"), Line::Incomplete);
    }

    #[test]
    fn non_http_input_is_refused_at_its_first_byte() {
        for first in [0x16u8, 0x00, 0x80, b' ', b'\t', b'(', b'{'] {
            assert_eq!(LineScan::new().scan(&[first]), Line::Invalid(SYNTAX), "first byte {first:#x}");
        }
        // A TLS 1.2 ClientHello record header.
        assert_eq!(verdict(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]), Line::Invalid(SYNTAX));
    }

    #[test]
    fn bad_targets_are_400() {
        // A space inside the target ends it: what follows is no version.
        assert_eq!(verdict(b"GET /a b HTTP/1.1\r\n"), Line::Invalid(SYNTAX));
        for line in [
            &b"GET /a#frag HTTP/1.1\r\n"[..],
            b"GET /a\x01 HTTP/1.1\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\n",
            b"GET /\"x\" HTTP/1.1\r\n",
            b"GET /a|b HTTP/1.1\r\n",
            b"GET /{x} HTTP/1.1\r\n",
            b"GET  / HTTP/1.1\r\n",
        ] {
            assert_eq!(verdict(line), Line::Invalid(TARGET), "{:?}", String::from_utf8_lossy(line));
        }
        // No version at all (HTTP/0.9) is a syntax error, not a target error.
        assert_eq!(verdict(b"GET /\r\n"), Line::Invalid(SYNTAX));
    }

    #[test]
    fn malformed_versions_are_400_and_unsupported_ones_505() {
        for bad in ["HTTP/1", "HTTP/1.1x", "http/1.1", "HTTP/01.1", "HTTP/1.", "HTTP/1.1 ", "HTTP/2", "FOO/1.1", ""] {
            let line = format!("GET / {bad}\r\n");
            assert_eq!(verdict(line.as_bytes()), Line::Invalid(SYNTAX), "{line:?}");
        }
        for unsupported in ["HTTP/2.0", "HTTP/3.0", "HTTP/1.2", "HTTP/0.9"] {
            for end in ["\r\n", "\n"] {
                let line = format!("GET / {unsupported}{end}");
                assert_eq!(verdict(line.as_bytes()), Line::Invalid(Reject::VersionNotSupported), "{line:?}");
            }
        }
        assert_eq!(verdict(b"GET / HTTP/1.1\rX"), Line::Invalid(SYNTAX));
    }

    #[test]
    fn over_long_methods_are_501_at_once() {
        assert_eq!(verdict(b"OPTIONS"), Line::Incomplete);
        assert_eq!(verdict(b"PROPFIND"), Line::Invalid(Reject::NotImplemented));
        let long = vec![b'A'; 100_000];
        assert_eq!(LineScan::new().scan(&long), Line::Invalid(Reject::NotImplemented));
        assert_eq!(verdict(b" / HTTP/1.1\r\n"), Line::Invalid(SYNTAX));
    }
}
