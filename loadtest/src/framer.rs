//! Response framing: finds where each HTTP/1.x response ends, so that responses are
//! counted, not bytes. Only what framing needs is parsed: the status line,
//! `Content-Length`, `Transfer-Encoding` and `Connection`.
//!
//! The head must be contiguous to be parsed; the caller passes what it read and the
//! framer keeps the unfinished part of a head itself (rare: heads are small). Bodies are
//! skipped without copying, chunked ones by a byte-level state machine.

use std::fmt;

/// Largest response head accepted before the server is called broken.
const MAX_HEAD: usize = 64 * 1024;

/// The server sent something that is not an HTTP/1.x response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one `feed` call completed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Responses completed (interim 1xx responses are not counted).
    pub complete: u32,
    /// Of those, how many had a status outside 2xx/3xx.
    pub status_errors: u32,
    /// The last completed response ends the connection (`Connection: close`, HTTP/1.0
    /// without keep-alive, or a body delimited by the close itself). Bytes after it
    /// were ignored.
    pub close: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// Fixed-length body: bytes left.
    Body(u64),
    /// Body delimited by the end of the connection.
    UntilEof,
    ChunkSize {
        size: u64,
        digits: u32,
    },
    /// After the size digits: extensions or whitespace up to the LF.
    ChunkExt {
        size: u64,
    },
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    TrailerLineStart,
    TrailerLineCr,
    TrailerLine,
    /// A close-delimited response finished; nothing more is read.
    Closed,
}

/// Per-connection response framer.
#[derive(Debug)]
pub struct Framer {
    state: State,
    /// Unfinished head bytes carried across reads.
    head: Vec<u8>,
    /// Responses to HEAD requests have no body whatever their headers say.
    head_request: bool,
    /// Status and close flag of the response whose body is being read.
    current_status: u16,
    current_close: bool,
    /// The last head parsed and what it said. Servers repeat the same head byte for
    /// byte (until the Date changes), so comparing bytes skips most parsing.
    cached_head: Vec<u8>,
    cached: Option<Head>,
}

/// Heads longer than this are not cached.
const CACHE_HEAD_MAX: usize = 512;

#[derive(Debug, Clone, Copy)]
struct Head {
    status: u16,
    close: bool,
    framing: Framing,
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilEof,
}

impl Framer {
    /// A framer for responses to HEAD (`head_request`: no bodies) or to any other
    /// method.
    pub fn new(head_request: bool) -> Framer {
        Framer {
            state: State::Head,
            head: Vec::new(),
            head_request,
            current_status: 0,
            current_close: false,
            cached_head: Vec::new(),
            cached: None,
        }
    }

    /// Forget everything (a new connection).
    pub fn reset(&mut self) {
        self.state = State::Head;
        self.head.clear();
    }

    /// Between responses, with no partial head kept.
    pub fn is_idle(&self) -> bool {
        self.state == State::Head && self.head.is_empty()
    }

    /// (Tests only: the worker calls the `_with` form.)
    #[cfg(test)]
    /// The connection ended. Returns the progress if that end completes a
    /// close-delimited body, `None` if a response was cut short (or none was pending).
    pub fn handle_eof(&mut self) -> Option<Progress> {
        self.handle_eof_with(&mut |_| {})
    }

    /// The connection ended, as `handle_eof` (its test-only form) says, calling
    /// `on_response` with the status of the response the end completes.
    pub fn handle_eof_with(&mut self, on_response: &mut dyn FnMut(u16)) -> Option<Progress> {
        if self.state == State::UntilEof {
            self.state = State::Closed;
            on_response(self.current_status);
            return Some(Progress {
                complete: 1,
                status_errors: u32::from(!(200..400).contains(&self.current_status)),
                close: true,
            });
        }
        None
    }

    /// (Tests only: the worker calls the `_with` form.)
    #[cfg(test)]
    /// Consumes `data`, returning what it completed.
    pub fn feed(&mut self, data: &[u8]) -> Result<Progress, FrameError> {
        self.feed_with(data, &mut |_| {})
    }

    /// Consumes `data`, as `feed` (its test-only form) says, calling `on_response` with
    /// the status code of every response completed (interim 1xx ones excepted), in order.
    pub fn feed_with(&mut self, mut data: &[u8], on_response: &mut dyn FnMut(u16)) -> Result<Progress, FrameError> {
        let mut progress = Progress::default();
        while !data.is_empty() {
            match self.state {
                State::Head => {
                    let used = if let Some(head) = self.cached.filter(|_| data.starts_with(&self.cached_head)) {
                        self.start_body(head, &mut progress, on_response);
                        self.cached_head.len()
                    } else if self.head.is_empty() {
                        match find_head_end(data) {
                            Some(end) => {
                                let head = parse_head(&data[..end], self.head_request)?;
                                if end <= CACHE_HEAD_MAX {
                                    self.cached_head.clear();
                                    self.cached_head.extend_from_slice(&data[..end]);
                                    self.cached = Some(head);
                                }
                                self.start_body(head, &mut progress, on_response);
                                end
                            }
                            None => {
                                self.keep_partial_head(data)?;
                                data.len()
                            }
                        }
                    } else {
                        // Slow path: continue a head split across reads. Look for the end
                        // from a little before the join.
                        let old = self.head.len();
                        let from = old.saturating_sub(3);
                        self.head.extend_from_slice(&data[..data.len().min(MAX_HEAD + 4)]);
                        let n = self.head.len().min(5);
                        if self.head[..n] != b"HTTP/"[..n] {
                            return Err(not_http(&self.head));
                        }
                        match find_head_end(&self.head[from..]) {
                            Some(end) => {
                                let end = from + end;
                                let head = parse_head(&self.head[..end], self.head_request)?;
                                self.head.clear();
                                self.start_body(head, &mut progress, on_response);
                                end - old
                            }
                            None => {
                                if self.head.len() > MAX_HEAD {
                                    return Err(FrameError("response head larger than 64 KiB".into()));
                                }
                                data.len()
                            }
                        }
                    };
                    data = &data[used..];
                    if progress.close && self.state == State::Closed {
                        return Ok(progress);
                    }
                }
                State::Body(left) => {
                    let n = left.min(data.len() as u64);
                    data = &data[n as usize..];
                    if n == left {
                        self.finish(&mut progress, on_response);
                        if progress.close {
                            return Ok(progress);
                        }
                    } else {
                        self.state = State::Body(left - n);
                    }
                }
                State::UntilEof => return Ok(progress),
                State::Closed => return Ok(progress),
                State::ChunkData(left) => {
                    let n = left.min(data.len() as u64);
                    data = &data[n as usize..];
                    self.state = if n == left { State::ChunkDataCr } else { State::ChunkData(left - n) };
                }
                _ => {
                    let b = data[0];
                    data = &data[1..];
                    self.chunk_byte(b, &mut progress, on_response)?;
                    if progress.close && self.state == State::Closed {
                        return Ok(progress);
                    }
                }
            }
        }
        Ok(progress)
    }

    fn keep_partial_head(&mut self, data: &[u8]) -> Result<(), FrameError> {
        // Fail fast on garbage instead of waiting for 64 KiB of it.
        let n = data.len().min(5);
        if data[..n] != b"HTTP/"[..n] {
            return Err(not_http(data));
        }
        if data.len() > MAX_HEAD {
            return Err(FrameError("response head larger than 64 KiB".into()));
        }
        self.head.extend_from_slice(data);
        Ok(())
    }

    fn start_body(&mut self, head: Head, progress: &mut Progress, on_response: &mut dyn FnMut(u16)) {
        self.current_status = head.status;
        self.current_close = head.close;
        if head.status < 200 {
            // Interim response (100 Continue, 103 Early Hints): the real one follows.
            self.state = State::Head;
            return;
        }
        match head.framing {
            Framing::None | Framing::Length(0) => self.finish(progress, on_response),
            Framing::Length(n) => self.state = State::Body(n),
            Framing::Chunked => self.state = State::ChunkSize { size: 0, digits: 0 },
            Framing::UntilEof => self.state = State::UntilEof,
        }
    }

    fn finish(&mut self, progress: &mut Progress, on_response: &mut dyn FnMut(u16)) {
        progress.complete += 1;
        on_response(self.current_status);
        if !(200..400).contains(&self.current_status) {
            progress.status_errors += 1;
        }
        if self.current_close {
            progress.close = true;
            self.state = State::Closed;
        } else {
            self.state = State::Head;
        }
    }

    fn chunk_byte(
        &mut self,
        b: u8,
        progress: &mut Progress,
        on_response: &mut dyn FnMut(u16),
    ) -> Result<(), FrameError> {
        let bad = |what: &str| Err(FrameError(format!("bad chunked body: {what}")));
        self.state = match self.state {
            State::ChunkSize { size, digits } => match hex(b) {
                Some(d) => {
                    if digits >= 15 {
                        return bad("chunk size too large");
                    }
                    State::ChunkSize { size: size * 16 + u64::from(d), digits: digits + 1 }
                }
                None if digits == 0 => return bad("chunk size is not hex"),
                None if b == b'\n' => self.chunk_size_done(size),
                None if b == b';' || b == b' ' || b == b'\t' || b == b'\r' => State::ChunkExt { size },
                None => return bad("chunk size is not hex"),
            },
            State::ChunkExt { size } => {
                if b == b'\n' {
                    self.chunk_size_done(size)
                } else {
                    State::ChunkExt { size }
                }
            }
            State::ChunkDataCr => match b {
                b'\r' => State::ChunkDataLf,
                b'\n' => State::ChunkSize { size: 0, digits: 0 },
                _ => return bad("missing CRLF after chunk data"),
            },
            State::ChunkDataLf => match b {
                b'\n' => State::ChunkSize { size: 0, digits: 0 },
                _ => return bad("missing CRLF after chunk data"),
            },
            State::TrailerLineStart => match b {
                b'\r' => State::TrailerLineCr,
                b'\n' => {
                    self.finish(progress, on_response);
                    return Ok(());
                }
                _ => State::TrailerLine,
            },
            State::TrailerLineCr => match b {
                b'\n' => {
                    self.finish(progress, on_response);
                    return Ok(());
                }
                _ => return bad("stray CR in the trailer"),
            },
            State::TrailerLine => {
                if b == b'\n' {
                    State::TrailerLineStart
                } else {
                    State::TrailerLine
                }
            }
            other => other,
        };
        Ok(())
    }

    fn chunk_size_done(&self, size: u64) -> State {
        if size == 0 {
            State::TrailerLineStart
        } else {
            State::ChunkData(size)
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Index just past the blank line ending the head.
fn find_head_end(data: &[u8]) -> Option<usize> {
    memchr::memmem::find(data, b"\r\n\r\n").map(|i| i + 4)
}

fn not_http(data: &[u8]) -> FrameError {
    let shown: String =
        data.iter().take(32).map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '.' }).collect();
    FrameError(format!("not an HTTP/1.x response (got \"{shown}\")"))
}

fn parse_head(head: &[u8], head_request: bool) -> Result<Head, FrameError> {
    // "HTTP/1.x SSS reason\r\n"
    if head.len() < 12 || &head[..7] != b"HTTP/1." || head[8] != b' ' || !head[7].is_ascii_digit() {
        return Err(not_http(head));
    }
    let code = &head[9..12];
    if !code.iter().all(u8::is_ascii_digit) || (head.len() > 12 && !matches!(head[12], b' ' | b'\r' | b'\n')) {
        return Err(not_http(head));
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    let http10 = head[7] == b'0';
    let mut close = http10;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let line_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
    let mut rest = &head[line_end + 1..];
    while let Some(nl) = memchr::memchr(b'\n', rest) {
        let line = trim_cr(&rest[..nl]);
        rest = &rest[nl + 1..];
        if line.is_empty() {
            break;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Err(FrameError("malformed response header line (no colon)".into()));
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value).ok_or_else(|| FrameError("bad Content-Length in the response".into()))?;
            if length.is_some_and(|old| old != n) {
                return Err(FrameError("conflicting Content-Length headers in the response".into()));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or_default();
            chunked = last.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    close = false;
                }
            }
        }
    }
    let framing = if head_request || status < 200 || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        close = true;
        Framing::UntilEof
    };
    Ok(Head { status, close, framing })
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |i| i + 1);
    &s[start..end]
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";

    /// Feeds `input` split at `split` and returns the summed progress.
    fn feed_split(input: &[u8], split: usize, head_request: bool) -> Result<Progress, FrameError> {
        let mut f = Framer::new(head_request);
        let a = f.feed(&input[..split])?;
        let b = if a.close { Progress::default() } else { f.feed(&input[split..])? };
        Ok(Progress {
            complete: a.complete + b.complete,
            status_errors: a.status_errors + b.status_errors,
            close: a.close || b.close,
        })
    }

    fn check_every_split(input: &[u8], expect: Progress) {
        for split in 0..=input.len() {
            assert_eq!(feed_split(input, split, false).unwrap(), expect, "split at {split}");
        }
    }

    #[test]
    fn pipelined_content_length_responses_split_anywhere() {
        let input = [OK, OK, OK].concat();
        check_every_split(&input, Progress { complete: 3, status_errors: 0, close: false });
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nHello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nHTTP/1.1 500 Oops\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
        check_every_split(input, Progress { complete: 2, status_errors: 1, close: false });
    }

    #[test]
    fn connection_close_stops_after_that_response() {
        let input =
            [b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc".as_slice(), OK].concat();
        check_every_split(&input, Progress { complete: 1, status_errors: 1, close: true });
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let input = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        check_every_split(input, Progress { complete: 1, status_errors: 0, close: true });
        let input = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n";
        check_every_split(input, Progress { complete: 1, status_errors: 0, close: false });
    }

    #[test]
    fn body_until_eof_completes_at_the_close() {
        let mut f = Framer::new(false);
        let p = f.feed(b"HTTP/1.1 200 OK\r\n\r\nsome body").unwrap();
        assert_eq!(p.complete, 0);
        assert_eq!(f.handle_eof(), Some(Progress { complete: 1, status_errors: 0, close: true }));
        let mut f = Framer::new(false);
        f.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").unwrap();
        assert_eq!(f.handle_eof(), None, "a cut-short body is not a response");
    }

    #[test]
    fn interim_and_bodiless_responses() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n";
        check_every_split(input, Progress { complete: 2, status_errors: 0, close: false });
        let mut f = Framer::new(true);
        let p = f.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n");
        assert_eq!(p.unwrap().complete, 2, "HEAD responses carry no body");
    }

    #[test]
    fn every_final_status_is_reported_in_order_wherever_the_input_splits() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nnoHTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\nuntil eof";
        for split in 0..=input.len() {
            let mut f = Framer::new(false);
            let mut seen = Vec::new();
            f.feed_with(&input[..split], &mut |s| seen.push(s)).unwrap();
            f.feed_with(&input[split..], &mut |s| seen.push(s)).unwrap();
            assert_eq!(seen, [204, 404, 503], "split at {split}");
            assert!(f.handle_eof_with(&mut |s| seen.push(s)).is_some());
            assert_eq!(seen, [204, 404, 503, 200], "the close completes the last one");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            b"SSH-2.0-OpenSSH_9.2\r\n".as_slice(),
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let mut f = Framer::new(false);
            assert!(f.feed(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
