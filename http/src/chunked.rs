//! Incremental decoder for `Transfer-Encoding: chunked` request bodies, which duet
//! reads and discards so the next pipelined request is framed at the right byte.
//!
//! Strict on purpose (request smuggling lives in lenient chunk parsers): chunk lines
//! end in CRLF, sizes are hex without sign or prefix and at most 16 digits, extensions
//! and trailers may not hold control bytes, and lines are bounded.

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
    /// Whitespace after the size, before `;` or CR.
    SizeWs,
    /// In chunk extensions, until CR.
    Ext,
    /// Expecting LF after the chunk-size line.
    SizeLf,
    /// Chunk data bytes left.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
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

    /// Consumes body bytes from `input`.
    pub(crate) fn feed(&mut self, input: &[u8], max_body: u64) -> Chunked {
        let mut i = 0;
        while i < input.len() {
            if let State::Data(left) = self.state {
                let take = left.min((input.len() - i) as u64);
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
                        b';' => State::Ext,
                        b' ' | b'\t' => State::SizeWs,
                        b'\r' => State::SizeLf,
                        _ => return Chunked::Error(MALFORMED),
                    },
                },
                State::SizeWs => match b {
                    b' ' | b'\t' => State::SizeWs,
                    b';' => State::Ext,
                    b'\r' => State::SizeLf,
                    _ => return Chunked::Error(MALFORMED),
                },
                State::Ext => match b {
                    b'\r' => State::SizeLf,
                    b'\t' => State::Ext,
                    0..=0x1f | 0x7f => return Chunked::Error(MALFORMED),
                    _ => State::Ext,
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
                    b'\t' | b' ' => return Chunked::Error(MALFORMED), // obs-fold in a trailer
                    0..=0x1f | 0x7f => return Chunked::Error(MALFORMED),
                    _ => State::TrailerLine,
                },
                State::TrailerLine => match b {
                    b'\r' => State::TrailerLf,
                    b'\t' => State::TrailerLine,
                    0..=0x1f | 0x7f => return Chunked::Error(MALFORMED),
                    _ => State::TrailerLine,
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
        ChunkedDecoder::new().feed(body, 1 << 20)
    }

    /// Feeds `body` split at every offset into two pieces and in single bytes, and
    /// checks the result is the same as feeding it whole.
    fn decode_split(body: &[u8]) -> Chunked {
        let whole = decode_whole(body);
        for cut in 0..=body.len() {
            let mut d = ChunkedDecoder::new();
            let r = match d.feed(&body[..cut], 1 << 20) {
                Chunked::More => match d.feed(&body[cut..], 1 << 20) {
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
            match d.feed(std::slice::from_ref(b), 1 << 20) {
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
    fn size_overflow_is_rejected_not_wrapped() {
        assert_eq!(decode_whole(b"ffffffffffffffff\r\n"), Chunked::Error(Reject::ContentTooLarge));
    }

    #[test]
    fn body_over_limit_is_413() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.feed(b"8\r\n12345678\r\n", 10), Chunked::More);
        assert_eq!(d.feed(b"3\r\n", 10), Chunked::Error(Reject::ContentTooLarge));
    }

    #[test]
    fn overlong_extension_line_is_rejected() {
        let mut line = b"1;".to_vec();
        line.extend(std::iter::repeat_n(b'a', MAX_LINE as usize));
        assert_eq!(decode_whole(&line), Chunked::Error(MALFORMED));
    }
}
