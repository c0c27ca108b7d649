//! The access log's lines: nginx's `combined` format plus the request time,
//!
//! ```text
//! 127.0.0.1 - - [28/Nov/2026:14:12:28 +0000] "GET / HTTP/1.1" 200 13 "-" "curl/8.5.0" 0.000123
//! ```
//!
//! (`$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
//! "$http_referer" "$http_user_agent" $request_time`). A connection appends one line per
//! response to its worker's buffer ([`AccessLog`], in the [`Context`](crate::Context));
//! the engine writes that buffer out (duet-engine's `AccessLogWriter`). Nothing here
//! performs I/O.
//!
//! Every byte that comes from the peer is escaped as nginx does: `"`, `\` and any byte
//! outside printable ASCII become `\xHH`, so a request can never end a field or a
//! line early (no forged lines).
//!
//! When a line is written: as the response is queued (its status and body size are
//! known then), in the loop turn that completed the request. `$request_time` is the
//! time from the loop turn that received the head's first byte to that turn (the
//! sans-IO layer knows only the turns' clock): `0.000000` for a request read and
//! answered in one turn. `$body_bytes_sent` is the body's size (0 for HEAD and for
//! bodiless statuses), not what the peer actually received.

use std::net::SocketAddr;
use std::time::Instant;

/// `[28/Nov/2026:14:12:28 +0000]` without the brackets.
const CLF_TIME_LEN: usize = 26;

/// A worker's access log buffer: the lines not yet written, and the time the lines of
/// this loop turn carry.
#[derive(Debug)]
pub(crate) struct AccessLog {
    pub(crate) lines: Vec<u8>,
    time: [u8; CLF_TIME_LEN],
    now: Instant,
}

impl AccessLog {
    pub(crate) fn new(now: Instant, date: &[u8; 29]) -> AccessLog {
        let mut log = AccessLog { lines: Vec::new(), time: [b' '; CLF_TIME_LEN], now };
        log.set_time(now, date);
        log
    }

    /// The turn's time, from the IMF-fixdate of the Date cache
    /// (`Sun, 06 Nov 1994 08:49:37 GMT` → `06/Nov/1994:08:49:37 +0000`).
    pub(crate) fn set_time(&mut self, now: Instant, date: &[u8; 29]) {
        self.now = now;
        let t = &mut self.time;
        t[0..2].copy_from_slice(&date[5..7]);
        t[2] = b'/';
        t[3..6].copy_from_slice(&date[8..11]);
        t[6] = b'/';
        t[7..11].copy_from_slice(&date[12..16]);
        t[11] = b':';
        t[12..20].copy_from_slice(&date[17..25]);
        t[20..].copy_from_slice(b" +0000");
    }
}

/// What one connection remembers for its access log lines: the peer, and the fields of
/// the request being answered (already escaped).
#[derive(Debug)]
pub(crate) struct ConnLog {
    /// `$remote_addr`, or `-` when the engine had none.
    peer: Vec<u8>,
    /// The loop turn in which the current request's first byte arrived.
    start: Instant,
    /// Whether the fields below belong to the current request.
    captured: bool,
    request: Vec<u8>,
    referer: Vec<u8>,
    user_agent: Vec<u8>,
}

impl ConnLog {
    pub(crate) fn new(now: Instant) -> ConnLog {
        ConnLog {
            peer: b"-".to_vec(),
            start: now,
            captured: false,
            request: Vec::new(),
            referer: Vec::new(),
            user_agent: Vec::new(),
        }
    }

    pub(crate) fn set_peer(&mut self, peer: Option<SocketAddr>) {
        use std::io::Write;
        self.peer.clear();
        match peer {
            // An IPv4 client of a dual-stack listener is logged as IPv4, as nginx does.
            Some(addr) => {
                let _ = write!(self.peer, "{}", addr.ip().to_canonical());
            }
            None => self.peer.push(b'-'),
        }
    }

    /// The first byte of a request head arrived (in the turn of `now`).
    pub(crate) fn start(&mut self, now: Instant) {
        self.start = now;
        self.captured = false;
    }

    /// The head of the current request, complete and valid: its request line, Referer
    /// and User-Agent (the first of each).
    pub(crate) fn capture_head(&mut self, head: &[u8]) {
        let mut rest = head;
        let mut lines = std::iter::from_fn(|| {
            let end = memchr::memchr(b'\n', rest)?;
            let line = &rest[..end];
            rest = &rest[end + 1..];
            Some(line.strip_suffix(b"\r").unwrap_or(line))
        });
        self.request.clear();
        escape_into(&mut self.request, lines.next().unwrap_or_default());
        self.referer.clear();
        self.user_agent.clear();
        let (mut referer, mut user_agent) = (false, false);
        for line in lines.take_while(|l| !l.is_empty()) {
            // Only the names of the two fields wanted are looked at further.
            let wanted = match line[0] | 0x20 {
                b'r' => !referer,
                b'u' => !user_agent,
                _ => false,
            };
            if !wanted {
                continue;
            }
            let Some(colon) = memchr::memchr(b':', line) else { continue };
            let (name, value) = (&line[..colon], crate::headers::trim(&line[colon + 1..]));
            if !referer && name.eq_ignore_ascii_case(b"referer") {
                referer = true;
                escape_into(&mut self.referer, value);
            } else if !user_agent && name.eq_ignore_ascii_case(b"user-agent") {
                user_agent = true;
                escape_into(&mut self.user_agent, value);
            }
        }
        self.captured = true;
    }

    /// A request refused before its head could be parsed: what is known is the raw
    /// start of its first line (`raw` is the input received for it).
    pub(crate) fn capture_raw(&mut self, raw: &[u8]) {
        if self.captured {
            return; // the head was parsed; the refusal came later (its body)
        }
        let line = memchr::memchr(b'\n', raw).map_or(raw, |i| &raw[..i]);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.request.clear();
        escape_into(&mut self.request, line);
        self.referer.clear();
        self.user_agent.clear();
        self.captured = true;
    }

    /// Appends the line of the response just queued to `log`.
    pub(crate) fn write(&mut self, log: &mut AccessLog, status: u16, body_bytes: u64) {
        let out = &mut log.lines;
        // The fixed parts and the numbers take well under 100 bytes.
        out.reserve(self.peer.len() + self.request.len() + self.referer.len() + self.user_agent.len() + 100);
        out.extend_from_slice(&self.peer);
        out.extend_from_slice(b" - - [");
        out.extend_from_slice(&log.time);
        out.extend_from_slice(b"] \"");
        let captured = self.captured;
        let field = |out: &mut Vec<u8>, value: &[u8]| {
            out.extend_from_slice(if !captured || value.is_empty() { b"-" } else { value });
        };
        field(out, &self.request);
        out.extend_from_slice(b"\" ");
        if (100..1000).contains(&status) {
            out.extend_from_slice(&[
                b'0' + (status / 100) as u8,
                b'0' + (status / 10 % 10) as u8,
                b'0' + (status % 10) as u8,
            ]);
        } else {
            push_decimal(out, u64::from(status));
        }
        out.push(b' ');
        push_decimal(out, body_bytes);
        out.extend_from_slice(b" \"");
        field(out, &self.referer);
        out.extend_from_slice(b"\" \"");
        field(out, &self.user_agent);
        out.extend_from_slice(b"\" ");
        let elapsed = log.now.saturating_duration_since(self.start);
        if elapsed.is_zero() {
            // Read and answered in one loop turn: the common case.
            out.extend_from_slice(b"0.000000\n");
        } else {
            push_decimal(out, elapsed.as_secs());
            out.push(b'.');
            let mut digits = [b'0'; 6];
            let mut m = elapsed.subsec_micros();
            for d in digits.iter_mut().rev() {
                *d = b'0' + (m % 10) as u8;
                m /= 10;
            }
            out.extend_from_slice(&digits);
            out.push(b'\n');
        }
        self.captured = false;
    }
}

/// Appends `bytes` escaped as nginx escapes log fields: printable ASCII as is, except
/// `"` and `\`; everything else (controls, DEL, non-ASCII) as `\xHH`.
pub(crate) fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut rest = bytes;
    // Runs of plain bytes (nearly all of them) are copied at once.
    while let Some(i) = rest.iter().position(|&b| !PLAIN[b as usize]) {
        out.extend_from_slice(&rest[..i]);
        let b = rest[i];
        out.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

/// The bytes written as they are: printable ASCII but `"` and `\`.
static PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        table[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    table
};

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DATE: &[u8; 29] = b"Sat, 28 Nov 2026 14:12:28 GMT";

    fn line(conn: &mut ConnLog, log: &mut AccessLog, status: u16, bytes: u64) -> String {
        log.lines.clear();
        conn.write(log, status, bytes);
        String::from_utf8(log.lines.clone()).expect("a log line is ASCII")
    }

    #[test]
    fn a_parsed_request_gives_the_combined_format_with_the_request_time() {
        let t0 = Instant::now();
        let mut log = AccessLog::new(t0, DATE);
        let mut conn = ConnLog::new(t0);
        conn.set_peer(Some("127.0.0.1:5555".parse().unwrap()));
        conn.start(t0);
        conn.capture_head(b"GET /a?b HTTP/1.1\r\nHost: x\r\nUser-Agent:  curl/8 \r\nREFERER: http://r/\r\n\r\n");
        log.set_time(t0 + Duration::from_micros(1_000_123), DATE);
        assert_eq!(
            line(&mut conn, &mut log, 200, 1234),
            "127.0.0.1 - - [28/Nov/2026:14:12:28 +0000] \"GET /a?b HTTP/1.1\" 200 1234 \"http://r/\" \"curl/8\" 1.000123\n"
        );
        // The next response without a parsed request (none captured): dashes.
        assert_eq!(
            line(&mut conn, &mut log, 408, 0),
            "127.0.0.1 - - [28/Nov/2026:14:12:28 +0000] \"-\" 408 0 \"-\" \"-\" 1.000123\n"
        );
    }

    #[test]
    fn peers_are_logged_as_addresses_and_a_missing_one_as_a_dash() {
        let t0 = Instant::now();
        let mut log = AccessLog::new(t0, DATE);
        let mut conn = ConnLog::new(t0);
        assert!(line(&mut conn, &mut log, 400, 0).starts_with("- - - ["));
        conn.set_peer(Some("[::ffff:10.0.0.1]:80".parse().unwrap()));
        assert!(line(&mut conn, &mut log, 400, 0).starts_with("10.0.0.1 - - ["));
        conn.set_peer(Some("[::1]:80".parse().unwrap()));
        assert!(line(&mut conn, &mut log, 400, 0).starts_with("::1 - - ["));
    }

    #[test]
    fn hostile_bytes_are_escaped_so_no_field_or_line_can_be_forged() {
        let t0 = Instant::now();
        let mut log = AccessLog::new(t0, DATE);
        let mut conn = ConnLog::new(t0);
        conn.start(t0);
        conn.capture_raw(b"\x16\x03\x01\"\\\x7f\xff\nGET /x HTTP/1.1");
        let l = line(&mut conn, &mut log, 400, 0);
        assert_eq!(
            l,
            "- - - [28/Nov/2026:14:12:28 +0000] \"\\x16\\x03\\x01\\x22\\x5C\\x7F\\xFF\" 400 0 \"-\" \"-\" 0.000000\n"
        );
        conn.capture_head(b"GET / HTTP/1.1\r\nUser-Agent: a\" 200 0 \"x\r\n\r\n");
        let l = line(&mut conn, &mut log, 200, 0);
        assert!(l.contains("\"a\\x22 200 0 \\x22x\" "), "{l}");
        assert_eq!(l.matches('"').count(), 6, "{l}");
    }

    #[test]
    fn a_refusal_after_the_head_keeps_the_parsed_request_line() {
        let t0 = Instant::now();
        let mut log = AccessLog::new(t0, DATE);
        let mut conn = ConnLog::new(t0);
        conn.start(t0);
        conn.capture_head(b"POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        conn.capture_raw(b"zz\r\n");
        assert!(line(&mut conn, &mut log, 400, 0).contains("\"POST /e HTTP/1.1\" 400 0"));
    }
}
