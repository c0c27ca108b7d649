//! Incremental decoder for `Transfer-Encoding: chunked` request bodies, which duet
//! reads and discards so the next pipelined request is framed at the right byte.
//!
//! Exactly RFC 9112 §7.1, on purpose (request smuggling lives in lenient chunk
//! parsers):
//!
//! ```text
//! chunk      = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size = 1*HEXDIG                      (at most 16 digits here)
//! chunk-ext  = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
//! ext-name   = token
//! ext-val    = token / quoted-string
//! last-chunk = 1*("0") [ chunk-ext ] CRLF
//! trailer-section = *( field-line CRLF ) CRLF
//! field-line = field-name ":" OWS field-value OWS
//! ```
//!
//! Anything else is 400 and a close: a bare `;`, an extension name that is not a
//! token, whitespace after the size with no extension, a bare LF, a folded or nameless
//! trailer line. Lines are bounded. Trailer fields are checked and then dropped: none
//! is ever merged into the request (RFC 9110 §6.5.1), so a `Content-Length`, `Host` or
//! `Transfer-Encoding` sent as a trailer cannot change how the request is framed or
//! routed.

use crate::line::is_tchar;
use crate::reject::{Malformed, Reject};

const MALFORMED: Reject = Reject::BadRequest(Malformed::ChunkedBody);

/// Longest chunk-size line (size + extensions) or trailer section accepted.
const MAX_LINE: u32 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits; `digits` seen so far.
    Size {
        digits: u8,
    },
    /// Whitespace after the size: only `;` may follow (BWS before an extension).
    SizeWs,
    /// After `;` (and whitespace): an extension name must start.
    ExtStart,
    /// In an extension name.
    ExtName,
    /// Whitespace after an extension name: `=` or `;` must follow.
    ExtNameWs,
    /// After `=` (and whitespace): a token or a quoted string must start.
    ExtValueStart,
    /// In a token value.
    ExtToken,
    /// In a quoted-string value.
    ExtQuoted,
    /// After a backslash in a quoted string.
    ExtQuotedPair,
    /// After a complete value: whitespace, then `;` or the line end.
    ExtValueEnd,
    /// Whitespace after a value: `;` must follow.
    ExtValueWs,
    /// Expecting LF after the chunk-size line.
    SizeLf,
    /// Chunk data bytes left.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// In a trailer field name.
    TrailerName,
    /// In a trailer field value.
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

const fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `qdtext`: what a quoted string holds unescaped (RFC 9110 §5.6.4).
const fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// What a field value (and a quoted pair) may hold: visible bytes, spaces and tabs,
/// obs-text.
const fn is_field_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=0x7e | 0x80..=0xff)
}

/// Progress of a decode step.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// All of the input was consumed; the body continues.
    More,
    /// The body ended after this many bytes of the input.
    Done(usize),
    /// The body is malformed or too large.
    Error(Reject),
}

#[derive(Clone, Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
    size: u64,
    total: u64,
    line: u32,
}

impl ChunkedDecoder {
    pub(crate) fn new() -> Self {
        ChunkedDecoder { state: State::Size { digits: 0 }, size: 0, total: 0, line: 0 }
    }

    /// Consumes body bytes from `input`; the chunks' data goes to `sink` when there is
    /// one (an echo), else it is discarded.
    pub(crate) fn feed(&mut self, input: &[u8], max_body: u64, mut sink: Option<&mut Vec<u8>>) -> Chunked {
        let mut i = 0;
        while i < input.len() {
            if let State::Data(left) = self.state {
                let take = left.min((input.len() - i) as u64);
                if let Some(sink) = sink.as_deref_mut() {
                    sink.extend_from_slice(&input[i..i + take as usize]);
                }
                i += take as usize;
                self.state = if take == left { State::DataCr } else { State::Data(left - take) };
                continue;
            }
            let b = input[i];
            i += 1;
            self.line += 1;
            if self.line > MAX_LINE {
                return Chunked::Error(MALFORMED);
            }
            self.state = match self.state {
                State::Size { digits } => match (b as char).to_digit(16) {
                    Some(d) => {
                        if digits == 16 {
                            return Chunked::Error(MALFORMED);
                        }
                        self.size = self.size * 16 + d as u64;
                        State::Size { digits: digits + 1 }
                    }
                    None if digits == 0 => return Chunked::Error(MALFORMED),
                    None => match b {
                        b';' => State::ExtStart,
                        _ if is_ws(b) => State::SizeWs,
                        b'\r' => State::SizeLf,
                        _ => return Chunked::Error(MALFORMED),
                    },
                },
                State::SizeWs => match b {
                    _ if is_ws(b) => State::SizeWs,
                    b';' => State::ExtStart,
                    _ => return Chunked::Error(MALFORMED),
                },
                State::ExtStart => match b {
                    _ if is_ws(b) => State::ExtStart,
                    _ if is_tchar(b) => State::ExtName,
                    _ => return Chunked::Error(MALFORMED),
                },
                State::ExtName => match b {
                    _ if is_tchar(b) => State::ExtName,
                    _ if is_ws(b) => State::ExtNameWs,
                    b'=' => State::ExtValueStart,
                    b';' => State::ExtStart,
                    b'\r' => State::SizeLf,
                    _ => return Chunked::Error(MALFORMED),
                },
                State::ExtNameWs => match b {
                    _ if is_ws(b) => State::ExtNameWs,
                    b'=' => State::ExtValueStart,
                    b';' => State::ExtStart,
                    _ => return Chunked::Error(MALFORMED),
                },
                State::ExtValueStart => match b {
                    _ if is_ws(b) => State::ExtValueStart,
                    b'"' => State::ExtQuoted,
                    _ if is_tchar(b) => State::ExtToken,
                    _ => return Chunked::Error(MALFORMED),
                },
                State::ExtToken => match b {
                    _ if is_tchar(b) => State::ExtToken,
                    _ if is_ws(b) => State::ExtValueWs,
                    b';' => State::ExtStart,
                    b'\r' => State::SizeLf,
                    _ => return Chunked::Error(MALFORMED),
                },
                State::ExtQuoted => match b {
                    b'"' => State::ExtValueEnd,
                    b'\\' => State::ExtQuotedPair,
                    _ if is_qdtext(b) => State::ExtQuoted,
                    _ => return Chunked::Error(MALFORMED),
                },
                State::ExtQuotedPair if is_field_byte(b) => State::ExtQuoted,
                State::ExtQuotedPair => return Chunked::Error(MALFORMED),
                State::ExtValueEnd => match b {
                    _ if is_ws(b) => State::ExtValueWs,
                    b';' => State::ExtStart,
                    b'\r' => State::SizeLf,
                    _ => return Chunked::Error(MALFORMED),
                },
                State::ExtValueWs => match b {
                    _ if is_ws(b) => State::ExtValueWs,
                    b';' => State::ExtStart,
                    _ => return Chunked::Error(MALFORMED),
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Chunked::Error(MALFORMED);
                    }
                    self.line = 0;
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        self.total = match self.total.checked_add(self.size) {
                            Some(t) if t <= max_body => t,
                            _ => return Chunked::Error(Reject::ContentTooLarge),
                        };
                        let size = self.size;
                        self.size = 0;
                        State::Data(size)
                    }
                }
                State::Data(_) => unreachable!("handled above"),
                State::DataCr => {
                    if b != b'\r' {
                        return Chunked::Error(MALFORMED);
                    }
                    State::DataLf
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Chunked::Error(MALFORMED);
                    }
                    self.line = 0;
                    State::Size { digits: 0 }
                }
                State::TrailerStart => match b {
                    b'\r' => State::FinalLf,
                    // Anything but a field name, an obs-fold among them: 400.
                    _ if is_tchar(b) => State::TrailerName,
                    _ => return Chunked::Error(MALFORMED),
                },
                State::TrailerName => match b {
                    _ if is_tchar(b) => State::TrailerName,
                    b':' => State::TrailerValue,
                    _ => return Chunked::Error(MALFORMED),
                },
                State::TrailerValue => match b {
                    b'\r' => State::TrailerLf,
                    _ if is_field_byte(b) => State::TrailerValue,
                    _ => return Chunked::Error(MALFORMED),
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return Chunked::Error(MALFORMED);
                    }
                    // The trailer section as a whole stays bounded by MAX_LINE.
                    State::TrailerStart
                }
                State::FinalLf => {
                    if b != b'\n' {
                        return Chunked::Error(MALFORMED);
                    }
                    self.state = State::Done;
                    return Chunked::Done(i);
                }
                State::Done => return Chunked::Done(i - 1),
            };
        }
        Chunked::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_whole(body: &[u8]) -> Chunked {
        ChunkedDecoder::new().feed(body, 1 << 20, None)
    }

    /// Feeds `body` split at every offset into two pieces and in single bytes, and
    /// checks the result is the same as feeding it whole.
    fn decode_split(body: &[u8]) -> Chunked {
        let whole = decode_whole(body);
        for cut in 0..=body.len() {
            let mut d = ChunkedDecoder::new();
            let r = match d.feed(&body[..cut], 1 << 20, None) {
                Chunked::More => match d.feed(&body[cut..], 1 << 20, None) {
                    Chunked::Done(n) => Chunked::Done(cut + n),
                    other => other,
                },
                other => other,
            };
            assert_eq!(r, whole, "split at {cut}");
        }
        let mut d = ChunkedDecoder::new();
        let mut bytewise = Chunked::More;
        for (i, b) in body.iter().enumerate() {
            match d.feed(std::slice::from_ref(b), 1 << 20, None) {
                Chunked::More => continue,
                Chunked::Done(_) => {
                    bytewise = Chunked::Done(i + 1);
                    break;
                }
                e => {
                    bytewise = e;
                    break;
                }
            }
        }
        assert_eq!(bytewise, whole, "byte by byte");
        whole
    }

    #[test]
    fn frames_chunks_extensions_and_trailers() {
        let body = b"5;name=val;x\r\nhello\r\nA \t;e\r\n0123456789\r\n0\r\nTrailer: t\r\nOther: u\r\n\r\nNEXT";
        assert_eq!(decode_split(body), Chunked::Done(body.len() - 4));
        assert_eq!(decode_split(b"0\r\n\r\n"), Chunked::Done(5));
        assert_eq!(decode_split(b"000\r\n\r\n"), Chunked::Done(7));
    }

    #[test]
    fn rejects_bad_sizes_and_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"-1\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\r\r",
            b"10000000000000000\r\n",
            b"5 x\r\n",
            b"5;a\x01b\r\n",
            b"0\r\n bad: fold\r\n\r\n",
            b"0\r\nT: a\x00\r\n\r\n",
            b"\r\n",
        ] {
            assert_eq!(decode_whole(bad), Chunked::Error(MALFORMED), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn extensions_follow_the_grammar() {
        for ok in [
            &b"1;a\r\nx\r\n0\r\n\r\n"[..],
            b"1 ; a = b ; c\r\nx\r\n0\r\n\r\n",
            b"1;a=\"q \\\" ;\"\r\nx\r\n0\r\n\r\n",
            b"1;a=\"\" ;b\r\nx\r\n0\r\n\r\n",
            b"1;a=b;c=d\r\nx\r\n0;last\r\n\r\n",
        ] {
            assert_eq!(decode_split(ok), Chunked::Done(ok.len()), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"1;\r\n"[..],      // a bare `;`
            b"1 \r\n",           // whitespace after the size, no extension
            b"1;a b\r\n",        // two names
            b"1;a \r\n",         // whitespace before the line end
            b"1;a@b\r\n",        // `@` is not a tchar
            b"1;=b\r\n",         // no name
            b"1;a=\r\n",         // no value
            b"1;a=b c\r\n",      // two values
            b"1;a=\"b\r\n",      // unterminated quoted string
            b"1;a=\"b\"c\r\n",   // bytes after a quoted string
            b"1;a=\"\x01\"\r\n", // control byte in a quoted string
            b"1;a,b\r\n",        // not a separator
            b"1;a\n",            // bare LF
        ] {
            assert_eq!(decode_split(bad), Chunked::Error(MALFORMED), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn trailers_are_field_lines() {
        let ok = b"0\r\nX-Sum: abc \r\nContent-Length: 9\r\nHost: elsewhere\r\n\r\n";
        assert_eq!(decode_split(ok), Chunked::Done(ok.len()));
        for bad in
            [&b"0\r\nNo colon\r\n\r\n"[..], b"0\r\nName : v\r\n\r\n", b"0\r\n: v\r\n\r\n", b"0\r\nA: v\nB: w\r\n\r\n"]
        {
            assert_eq!(decode_split(bad), Chunked::Error(MALFORMED), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn data_goes_to_the_sink_and_nothing_else_does() {
        let body = b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: zz\r\n\r\n";
        for cut in 0..=body.len() {
            let (mut d, mut sink) = (ChunkedDecoder::new(), Vec::new());
            let first = d.feed(&body[..cut], 1 << 20, Some(&mut sink));
            if first == Chunked::More {
                assert_eq!(d.feed(&body[cut..], 1 << 20, Some(&mut sink)), Chunked::Done(body.len() - cut));
            }
            assert_eq!(sink, b"abcde", "cut at {cut}");
        }
    }

    #[test]
    fn size_overflow_is_rejected_not_wrapped() {
        assert_eq!(decode_whole(b"ffffffffffffffff\r\n"), Chunked::Error(Reject::ContentTooLarge));
    }

    #[test]
    fn body_over_limit_is_413() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.feed(b"8\r\n12345678\r\n", 10, None), Chunked::More);
        assert_eq!(d.feed(b"3\r\n", 10, None), Chunked::Error(Reject::ContentTooLarge));
    }

    #[test]
    fn overlong_extension_line_is_rejected() {
        let mut line = b"1;".to_vec();
        line.extend(std::iter::repeat_n(b'a', MAX_LINE as usize));
        assert_eq!(decode_whole(&line), Chunked::Error(MALFORMED));
    }
}
