//! The request line's check as it was before the one-pass head parser: a copy, so the
//! differential test compares against what shipped, not against shared code.
//!
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

const TCHAR: u8 = 1;
const TARGET: u8 = 2;
const HOST: u8 = 4;

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
    /// Where the current part starts.
    start: u32,
    part: Part,
}

impl LineScan {
    pub(crate) const fn new() -> Self {
        LineScan { pos: 0, start: 0, part: Part::Method }
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
            self.part = Part::Done;
        }
        Line::Complete
    }
}
