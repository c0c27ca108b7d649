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

/// `tchar` (RFC 9110 §5.6.2): the bytes of a token, such as a method or a field name.
pub(crate) const fn is_tchar(b: u8) -> bool {
    CLASS[b as usize] & TCHAR != 0
}

const TCHAR: u8 = 1;
const TARGET: u8 = 2;
const HOST: u8 = 4;

/// A byte of a request target (see [`CLASS`]).
pub(crate) const fn is_target_byte(b: u8) -> bool {
    CLASS[b as usize] & TARGET != 0
}

/// A byte of `uri-host [ ":" port ]`: reg-name, IPv4 or IP-literal characters.
pub(crate) const fn is_host_byte(b: u8) -> bool {
    CLASS[b as usize] & HOST != 0
}

/// What each byte may be: a `tchar`, and/or a byte of a request target (RFC 3986's
/// unreserved and reserved characters but `#`, which starts a fragment a client never
/// sends, and `%`). One table lookup per byte keeps the scan cheap.
static CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let alnum = c.is_ascii_alphanumeric();
        if alnum
            || matches!(
                c,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            )
        {
            class[b] |= TCHAR;
        }
        if alnum
            || matches!(
                c,
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
        {
            class[b] |= TARGET;
            // The same set but `/`, `?` and `@`: what a Host field value may hold.
            if !matches!(c, b'/' | b'?' | b'@') {
                class[b] |= HOST;
            }
        }
        b += 1;
    }
    class
};

const SYNTAX: Reject = Reject::BadRequest(Malformed::Syntax);
const BAD_TARGET: Reject = Reject::BadRequest(Malformed::Target);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Method,
    Target,
    Version,
    /// The line is complete and valid: the field lines are being judged
    /// ([`crate::request::scan`]).
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

/// A resumable scan of a head: its request line here, then its field lines
/// ([`crate::request::scan`]), in the same twelve bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LineScan {
    /// In the request line: bytes of the head scanned so far. Then: where the first field
    /// line not judged yet starts.
    pub(crate) pos: u32,
    /// In the request line: where the current part starts. Then: how far the search for
    /// the end of that field line has looked.
    pub(crate) start: u32,
    /// Field lines judged so far.
    pub(crate) fields: u16,
    part: Part,
}

impl LineScan {
    pub(crate) const fn new() -> Self {
        LineScan { pos: 0, start: 0, fields: 0, part: Part::Method }
    }

    /// The request line is complete and valid; `pos` and `start` now track field lines.
    pub(crate) fn line_done(&self) -> bool {
        self.part == Part::Done
    }

    /// Nothing of the head has been scanned yet.
    pub(crate) fn at_start(&self) -> bool {
        self.part == Part::Method && self.pos == 0
    }

    /// The request line was found complete and valid by other means, ending at `end`.
    pub(crate) fn skip_line(&mut self, end: u32) {
        (self.pos, self.start, self.part) = (end, end, Part::Done);
    }

    /// Scans `head` (the bytes of the head from its first byte; longer each call) from
    /// where the last call stopped.
    pub(crate) fn scan(&mut self, head: &[u8]) -> Line {
        let (mut i, mut start) = (self.pos as usize, self.start as usize);
        let verdict = self.parts(head, &mut i, &mut start);
        (self.pos, self.start) = (i as u32, start as u32);
        verdict
    }

    /// The parts in order, each resumed at `i` (its first byte at `start`).
    #[inline(always)]
    fn parts(&mut self, head: &[u8], i: &mut usize, start: &mut usize) -> Line {
        if self.part == Part::Method {
            while *i < head.len() && CLASS[head[*i] as usize] & TCHAR != 0 {
                *i += 1;
            }
            if *i - *start > MAX_METHOD as usize {
                return Line::Invalid(Reject::NotImplemented);
            }
            if *i == head.len() {
                return Line::Incomplete;
            }
            if head[*i] != b' ' || *i == *start {
                return Line::Invalid(SYNTAX);
            }
            *i += 1;
            (*start, self.part) = (*i, Part::Target);
        }
        if self.part == Part::Target {
            while *i < head.len() && CLASS[head[*i] as usize] & TARGET != 0 {
                *i += 1;
            }
            if *i == head.len() {
                return Line::Incomplete;
            }
            match head[*i] {
                b' ' if *i > *start => {}
                b'\r' | b'\n' if *i > *start => return Line::Invalid(SYNTAX), // HTTP/0.9
                _ => return Line::Invalid(BAD_TARGET),
            }
            *i += 1;
            (*start, self.part) = (*i, Part::Version);
        }
        if self.part == Part::Version {
            // `HTTP/` DIGIT `.` DIGIT, then CRLF or LF: checked as far as it has
            // arrived, so a wrong byte is refused at once.
            const PATTERN: &[u8; 8] = b"HTTP/0.0";
            let word = |at: usize| head.get(at..at + 8).map(|v| u64::from_le_bytes(v.try_into().unwrap_or_default()));
            let (v10, v11) = (u64::from_le_bytes(*b"HTTP/1.0"), u64::from_le_bytes(*b"HTTP/1.1"));
            let known = matches!(word(*start), Some(w) if w == v11 || w == v10);
            if known && *i == *start {
                *i += 8; // the common case, in one comparison
            }
            while *i < head.len() && *i - *start < 8 {
                let (b, want) = (head[*i], PATTERN[*i - *start]);
                if !(b == want || (want == b'0' && b.is_ascii_digit())) {
                    return Line::Invalid(SYNTAX);
                }
                *i += 1;
            }
            let line_end = match head.get(*i..(*i + 2).min(head.len())).unwrap_or_default() {
                [] | [b'\r'] => return Line::Incomplete,
                [b'\n', ..] => 1,
                [b'\r', b'\n'] => 2,
                _ => return Line::Invalid(SYNTAX),
            };
            if !known {
                return Line::Invalid(Reject::VersionNotSupported);
            }
            *i += line_end;
            *start = *i;
            self.part = Part::Done;
        }
        Line::Complete
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
            assert_eq!(verdict(line), Line::Invalid(BAD_TARGET), "{:?}", String::from_utf8_lossy(line));
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
