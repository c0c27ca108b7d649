//! Parsing one request head: its syntax, the fields that frame the message and manage
//! the connection, and the few noted for routing. What the request is answered with is
//! decided above, in [`crate::route`], from the [`Head`] this returns.

use crate::headers::{list_items, trim, Fields, HAS_IF_MODIFIED_SINCE, HAS_IF_NONE_MATCH, HAS_IF_RANGE, HAS_RANGE};
use crate::limits::{Limits, MAX_HEADERS_CEILING};
use crate::line::{is_host_byte, is_target_byte, is_tchar, Line, LineScan, MAX_METHOD};
use crate::reject::{Malformed, Reject};

#[cfg(test)]
mod old;
#[cfg(test)]
mod old_line;

/// How the request body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    None,
    Fixed(u64),
    Chunked,
}

/// A complete, well-framed request head (`'h`: the input it was parsed from).
#[derive(Debug)]
pub(crate) struct Head<'h> {
    pub(crate) method: Method,
    /// The request target: only URI characters (the request line's check).
    pub(crate) target: &'h [u8],
    /// The field lines, read again only for files (negotiation, validators, ranges).
    pub(crate) fields: Fields<'h>,
    /// The Content-Type's value, trimmed (empty when there is none).
    pub(crate) content_type: &'h [u8],
    /// Which of the `HAS_*` fields are present.
    pub(crate) conditional: u8,
    pub(crate) keep_alive: bool,
    pub(crate) http10: bool,
    pub(crate) body: BodyKind,
    /// The client waits for `100 Continue` before sending its body.
    pub(crate) expect_continue: bool,
    /// Bytes of the head, its final blank line included.
    pub(crate) len: usize,
}

/// The rejection of a head that grew past the limit, from its first `max_head` bytes:
/// 414 when even the request line does not fit, 431 otherwise.
pub(crate) fn oversize_reject(window: &[u8]) -> Reject {
    if memchr::memchr(b'\n', window).is_some() {
        Reject::HeaderFieldsTooLarge
    } else {
        Reject::UriTooLong
    }
}

const SYNTAX: Reject = Reject::BadRequest(Malformed::Syntax);

/// Scans the head at the start of `head` (longer each call, the same bytes first) from
/// where `scan` stopped: the request line byte by byte ([`LineScan`]), then each field
/// line once it is complete, in one pass that checks its syntax, splits it and notes
/// what its name means.
///
/// `Ok(None)`: the head is not complete yet and nothing in it is invalid so far.
/// `Err(reject)`: answer with `reject.status()` and close. A field line is judged only
/// once its line end is here, so the verdict does not depend on how the input was split;
/// the checks of field values (Host, Content-Length, Expect) and of framing give theirs
/// only when the head is complete, the first in order winning, and a syntax error
/// anywhere in the head before them.
///
/// A head that arrives in pieces costs each field line's bytes twice at most: once when
/// its line is judged, and once more for all of them when the head completes, since
/// what a field means is not kept between calls (it would not fit in a `Connection`).
pub(crate) fn scan<'h>(scan: &mut LineScan, limits: &Limits, head: &'h [u8]) -> Result<Option<Head<'h>>, Reject> {
    let resumed = scan.line_done();
    let common = if scan.at_start() { common_line(head) } else { None };
    // A common line is recorded in `scan` only if the head turns out incomplete (below):
    // a complete head, nearly every one, does not need it.
    if common.is_none() {
        if !resumed {
            match scan.scan(head) {
                Line::Invalid(reject) => return Err(reject),
                Line::Incomplete => return Ok(None),
                Line::Complete => {}
            }
        } else if memchr::memchr(b'\n', head.get(scan.start as usize..).unwrap_or_default()).is_none() {
            // The field line that stopped the last scan has not ended yet.
            scan.start = u32::try_from(head.len()).unwrap_or(u32::MAX);
            return Ok(None);
        }
    }
    let max = limits.max_headers.min(MAX_HEADERS_CEILING);
    let mut fields = Acc::default();
    let (mut count, from) = match &common {
        Some(line) => (0, line.end),
        None => (scan.fields as usize, scan.pos as usize),
    };
    let end = match field_lines(head, from, &mut count, max, &mut fields)? {
        Lines::End(end) => end,
        Lines::More(next) => {
            let next = u32::try_from(next).unwrap_or(u32::MAX);
            if common.is_some() {
                scan.skip_line(next);
            }
            scan.pos = next;
            scan.start = u32::try_from(head.len()).unwrap_or(u32::MAX);
            scan.fields = count as u16;
            return Ok(None);
        }
    };
    let line = match common {
        Some(line) => line,
        None => RequestLine::of(head, if resumed { None } else { Some(from) }),
    };
    if resumed && from != line.end {
        // What the earlier field lines mean was not kept: read them all again (they are
        // valid, so this ends where the scan above did).
        (count, fields) = (0, Acc::default());
        if field_lines(head, line.end, &mut count, max, &mut fields)? != Lines::End(end) {
            return Err(SYNTAX);
        }
    }
    finish(limits, head, line, fields, end).map(Some)
}

/// `GET target HTTP/1.1` (or 1.0) and CRLF, whole at the start of `head`: the request
/// line nearly every request has, checked here with a word compare for the version. What
/// it accepts [`LineScan`] accepts too; anything else is left to it.
#[inline(always)]
fn common_line(head: &[u8]) -> Option<RequestLine> {
    if !head.starts_with(b"GET ") {
        return None;
    }
    let mut i = 4;
    while i < head.len() && is_target_byte(head[i]) {
        i += 1;
    }
    let rest = head.get(i..i + 11)?;
    let mut version = [0u8; 8];
    version.copy_from_slice(&rest[1..9]);
    let version = u64::from_le_bytes(version);
    let http10 = match version {
        _ if i == 4 || rest[0] != b' ' || rest[9..] != *b"\r\n" => return None,
        v if v == u64::from_le_bytes(*b"HTTP/1.1") => false,
        v if v == u64::from_le_bytes(*b"HTTP/1.0") => true,
        _ => return None,
    };
    Some(RequestLine { method: Some(Method::Get), method_end: 3, target_end: i, http10, end: i + 11 })
}

/// Where the parts of a valid request line are.
struct RequestLine {
    /// The method, when the line was recognised with it (else read from the line).
    method: Option<Method>,
    method_end: usize,
    target_end: usize,
    http10: bool,
    /// The first byte after the line end.
    end: usize,
}

impl RequestLine {
    /// The parts of the valid request line at the start of `head`, which ends at `end`
    /// when that is known.
    fn of(head: &[u8], end: Option<usize>) -> RequestLine {
        let end = end.unwrap_or_else(|| head.iter().position(|&b| b == b'\n').map_or(head.len(), |i| i + 1));
        let text_end = end.saturating_sub(if head.get(end.wrapping_sub(2)) == Some(&b'\r') { 2 } else { 1 });
        // `HTTP/1.x` is the last eight bytes, after a space.
        let version = text_end.saturating_sub(8);
        let method_end = if head.starts_with(b"GET ") {
            3
        } else {
            head.iter().take(MAX_METHOD as usize + 1).position(|&b| b == b' ').unwrap_or(0)
        };
        RequestLine {
            method: None,
            method_end,
            target_end: version.saturating_sub(1).max(method_end + 1),
            http10: head.get(version + 7) == Some(&b'0'),
            end,
        }
    }
}

/// How far the field lines go.
#[derive(Debug, PartialEq, Eq)]
enum Lines {
    /// The blank line ends the head at this offset.
    End(usize),
    /// The field line starting here has not ended yet.
    More(usize),
}

/// What the fields that matter say, in one pass over them.
#[derive(Default)]
struct Acc<'h> {
    /// The first field value refused: given once the head is complete, unless a syntax
    /// error comes later in the head (as when every field line is checked first).
    refused: Option<Reject>,
    hosts: u32,
    host_empty: bool,
    content_length: Option<u64>,
    content_lengths: u32,
    content_type: &'h [u8],
    te: TransferCodings,
    conn_close: bool,
    conn_keep_alive: bool,
    expect_continue: bool,
    conditional: u8,
}

/// What may follow a field name's `:`: HTAB, SP, visible ASCII and obs-text (RFC 9110
/// §5.5); a control or DEL is refused.
static VALUE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b == b'\t' as usize || (b >= 0x20 && b != 0x7f);
        b += 1;
    }
    t
};

/// The end of the run of value bytes at `i` ([`value_stop`] without its line end).
#[cfg(test)]
fn value_end(h: &[u8], i: usize) -> usize {
    value_stop(h, i).0
}

/// The end of the run of value bytes at `i`: sixteen bytes a turn ([`first_stop`]),
/// HTAB (the one allowed control) stepped over, then eight (a word checked for a byte
/// below 0x20 or equal to 0x7f), the last few bytes one at a time. With it, whether a
/// CRLF is known to start there: nearly every value ends inside the sixteen bytes just
/// read, where the line end is checked without another bounds check (`false` leaves it
/// to the caller).
#[inline(always)]
fn value_stop(h: &[u8], mut i: usize) -> (usize, bool) {
    while let Some(chunk) = h.get(i..).and_then(<[u8]>::first_chunk::<16>) {
        let at = first_stop(chunk);
        if at == 16 {
            i += 16;
            continue;
        }
        i += at;
        match chunk[at] {
            b'\r' => return (i, at < 15 && chunk[at + 1] == b'\n'),
            b'\t' => i += 1,
            _ => return (i, false),
        }
    }
    while let Some(word) = h.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let stop = stops(u64::from_le_bytes(*word));
        if stop == 0 {
            i += 8;
            continue;
        }
        i += (stop.trailing_zeros() / 8) as usize;
        if h[i] != b'\t' {
            return (i, false);
        }
        i += 1;
    }
    while i < h.len() && VALUE[h[i] as usize] {
        i += 1;
    }
    (i, false)
}

/// The offset of the first byte of `chunk` below 0x20 or equal to 0x7f, 16 if none.
/// On x86-64 with SSE2 (always there): sixteen bytes compared at once, through
/// safe_arch's safe functions.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn first_stop(chunk: &[u8; 16]) -> usize {
    use safe_arch::{
        bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, min_u8_m128i, move_mask_i8_m128i, set_splat_i8_m128i,
    };
    let x = load_unaligned_m128i(chunk);
    // Unsigned `x < 0x20` is `min(x, 0x1f) == x`.
    let control = cmp_eq_mask_i8_m128i(min_u8_m128i(x, set_splat_i8_m128i(0x1f)), x);
    let del = cmp_eq_mask_i8_m128i(x, set_splat_i8_m128i(0x7f));
    let mask = move_mask_i8_m128i(bitor_m128i(control, del)) as u32;
    (mask | 1 << 16).trailing_zeros() as usize
}

/// [`first_stop`] elsewhere: two words checked with [`stops`].
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn first_stop(chunk: &[u8; 16]) -> usize {
    let (lo, hi) = chunk.split_at(8);
    let mut words = [[0u8; 8]; 2];
    words[0].copy_from_slice(lo);
    words[1].copy_from_slice(hi);
    let a = stops(u64::from_le_bytes(words[0]));
    if a != 0 {
        return (a.trailing_zeros() / 8) as usize;
    }
    let b = stops(u64::from_le_bytes(words[1]));
    8 + (b.trailing_zeros() / 8).min(8) as usize
}

/// The high bit of each byte of `x` that is below 0x20 or 0x7f. Per byte, without carries
/// between bytes: the low seven bits plus 0x60 reach the high bit from 0x20 up, plus 0x01
/// only at 0x7f; bytes from 0x80 pass.
#[inline(always)]
const fn stops(x: u64) -> u64 {
    let low = x & 0x7f7f_7f7f_7f7f_7f7f;
    ((low + 0x0101_0101_0101_0101) | !(low + 0x6060_6060_6060_6060)) & !x & 0x8080_8080_8080_8080
}

/// What a field name means here. Matched once per field line, so that what follows
/// dispatches on this and compares no strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Name {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Expect,
    ContentType,
    Range,
    IfNoneMatch,
    IfModifiedSince,
    IfRange,
    /// Any other field: nothing to note.
    Other,
}

impl Name {
    /// The meaning of a valid field name, whatever its case: its length first, so most
    /// names cost one compare of a length and none of a string.
    fn of(name: &[u8]) -> Name {
        let is = |lower: &[u8]| name.eq_ignore_ascii_case(lower);
        match name.len() {
            4 if is(b"host") => Name::Host,
            14 if is(b"content-length") => Name::ContentLength,
            17 if is(b"transfer-encoding") => Name::TransferEncoding,
            10 if is(b"connection") => Name::Connection,
            6 if is(b"expect") => Name::Expect,
            12 if is(b"content-type") => Name::ContentType,
            5 if is(b"range") => Name::Range,
            13 if is(b"if-none-match") => Name::IfNoneMatch,
            17 if is(b"if-modified-since") => Name::IfModifiedSince,
            8 if is(b"if-range") => Name::IfRange,
            _ => Name::Other,
        }
    }
}

/// A field name clients send often, with its colon, as words to compare a field line's
/// first bytes with: `(x | fold) & keep == want` holds exactly when the line starts with
/// the name in any case and then the colon (`fold` sets the case bit only where the name
/// has a letter, so no other byte can pass for one). A match proves the name valid too.
struct Known {
    name: Name,
    /// Bytes of the name, without the colon.
    len: usize,
    words: usize,
    want: [u64; 4],
    fold: [u64; 4],
    keep: [u64; 4],
}

const fn known(lower: &[u8], name: Name) -> Known {
    let mut k = Known {
        name,
        len: lower.len(),
        words: (lower.len() + 1).div_ceil(8),
        want: [0; 4],
        fold: [0; 4],
        keep: [0; 4],
    };
    let mut i = 0;
    while i <= lower.len() {
        let b = if i < lower.len() { lower[i] } else { b':' };
        let (word, shift) = (i / 8, (i % 8) * 8);
        k.want[word] |= (b as u64) << shift;
        k.keep[word] |= 0xff << shift;
        if b.is_ascii_lowercase() {
            k.fold[word] |= 0x20 << shift;
        }
        i += 1;
    }
    k
}

/// The names matched without a byte-by-byte scan, grouped by first letter (the order
/// within a letter is the order tried). At most 31 bytes each.
static KNOWN: [Known; 27] = [
    known(b"accept", Name::Other),
    known(b"accept-encoding", Name::Other),
    known(b"accept-language", Name::Other),
    known(b"authorization", Name::Other),
    known(b"connection", Name::Connection),
    known(b"cookie", Name::Other),
    known(b"content-length", Name::ContentLength),
    known(b"content-type", Name::ContentType),
    known(b"cache-control", Name::Other),
    known(b"dnt", Name::Other),
    known(b"expect", Name::Expect),
    known(b"host", Name::Host),
    known(b"if-none-match", Name::IfNoneMatch),
    known(b"if-modified-since", Name::IfModifiedSince),
    known(b"if-range", Name::IfRange),
    known(b"origin", Name::Other),
    known(b"pragma", Name::Other),
    known(b"priority", Name::Other),
    known(b"range", Name::Range),
    known(b"referer", Name::Other),
    known(b"sec-fetch-dest", Name::Other),
    known(b"sec-fetch-mode", Name::Other),
    known(b"sec-fetch-site", Name::Other),
    known(b"sec-fetch-user", Name::Other),
    known(b"transfer-encoding", Name::TransferEncoding),
    known(b"user-agent", Name::Other),
    known(b"upgrade-insecure-requests", Name::Other),
];

/// The names of [`KNOWN`] whose first byte has these low five bits: a letter's bits are
/// the same in both cases, and any other byte only costs compares that fail. Indexed by
/// five bits, so finding a bucket takes no bounds check.
static BY_LETTER: [&[Known]; 32] = {
    let mut buckets: [&[Known]; 32] = [&[]; 32];
    let mut bits = 0;
    let mut k = 0;
    while bits < 32 {
        let lo = k;
        while k < KNOWN.len() && (KNOWN[k].want[0] as u8 & 0x1f) == bits as u8 {
            k += 1;
        }
        let (_, from) = KNOWN.split_at(lo);
        buckets[bits] = from.split_at(k - lo).0;
        bits += 1;
    }
    assert!(k == KNOWN.len(), "KNOWN is grouped by the low bits of the first letter, in order");
    buckets
};

/// The known name and its colon at the start of `line`, if it is one.
#[inline(always)]
fn known_name(line: &[u8]) -> Option<&'static Known> {
    // Every name with its colon takes a word at least: shorter lines match none, and the
    // first word, read once, picks the bucket and is compared without bounds checks.
    let first = u64::from_le_bytes(*line.first_chunk::<8>()?);
    let word = |w: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&line[w * 8..w * 8 + 8]);
        u64::from_le_bytes(bytes)
    };
    BY_LETTER[(first & 0x1f) as usize].iter().find(|k| {
        (first | k.fold[0]) & k.keep[0] == k.want[0]
            && (k.words == 1
                || line.len() >= k.words * 8 && (1..k.words).all(|w| (word(w) | k.fold[w]) & k.keep[w] == k.want[w]))
    })
}

/// Where a field name that is not in [`KNOWN`] ends.
enum NameEnd {
    /// At the colon at this offset.
    Colon(Name, usize),
    /// Past the bytes here.
    More,
    /// At this byte, which is neither a token byte nor the colon.
    Bad(usize),
}

/// The name of the field line at `line`, byte by byte: one or more tchar, then the colon.
/// Out of line, so the loop over field lines keeps its registers for the common names.
#[inline(never)]
fn other_name(head: &[u8], line: usize) -> NameEnd {
    let mut i = line;
    while i < head.len() && is_tchar(head[i]) {
        i += 1;
    }
    match head.get(i) {
        None => NameEnd::More,
        Some(b':') if i > line => NameEnd::Colon(Name::of(&head[line..i]), i),
        Some(_) => NameEnd::Bad(i),
    }
}

/// The syntax error at `at` in the field line starting at `line`, once that line is
/// complete: until its line end arrives, the line is not judged.
#[cold]
fn refuse(head: &[u8], at: usize, line: usize) -> Result<Lines, Reject> {
    match memchr::memchr(b'\n', &head[at.min(head.len())..]) {
        Some(_) => Err(SYNTAX),
        None => Ok(Lines::More(line)),
    }
}

/// Judges the field lines from `i` up to the blank line that ends the head (RFC 9112
/// §5: `field-name ":" OWS field-value OWS` and CRLF or a bare LF), noting what each
/// means in `acc`. `count`: field lines judged before `i`; more than `max` is 431.
fn field_lines<'h>(
    head: &'h [u8],
    mut i: usize,
    count: &mut usize,
    max: usize,
    acc: &mut Acc<'h>,
) -> Result<Lines, Reject> {
    let mut n = *count;
    let more = |line: usize, n: usize, count: &mut usize| {
        *count = n;
        Ok(Lines::More(line))
    };
    loop {
        let line = i;
        // The name: one or more tchar, then the colon.
        let name = match head.get(i..).and_then(known_name) {
            Some(k) => {
                i += k.len + 1;
                k.name
            }
            None => {
                let Some(&first) = head.get(i) else {
                    return more(line, n, count);
                };
                if first == b'\r' || first == b'\n' {
                    return match head.get(i + 1) {
                        _ if first == b'\n' => Ok(Lines::End(i + 1)),
                        Some(b'\n') => Ok(Lines::End(i + 2)),
                        Some(_) => refuse(head, i + 1, line),
                        None => more(line, n, count),
                    };
                }
                match other_name(head, line) {
                    NameEnd::Colon(name, colon) => {
                        i = colon + 1;
                        name
                    }
                    NameEnd::More => return more(line, n, count),
                    NameEnd::Bad(at) => return refuse(head, at, line),
                }
            }
        };
        // Leading whitespace passes the value check: it is skipped only for the fields
        // whose value is read.
        let value_start = i;
        let crlf;
        (i, crlf) = value_stop(head, i);
        let value_stop = i;
        // `value_stop` stopped at the line end, a byte a value cannot hold, or the end.
        if crlf {
            i += 2;
        } else {
            match head.get(i..i + 2) {
                Some([b'\r', b'\n']) => i += 2,
                _ => match head.get(i) {
                    None => return more(line, n, count),
                    Some(b'\n') => i += 1,
                    Some(b'\r') if i + 1 == head.len() => return more(line, n, count),
                    Some(b'\r') => return refuse(head, i + 1, line),
                    Some(_) => return refuse(head, i, line),
                },
            }
        }
        if n >= max {
            return Err(Reject::HeaderFieldsTooLarge);
        }
        n += 1;
        if name != Name::Other && acc.refused.is_none() {
            // Trimmed through slice patterns, which need no bounds checks. The value
            // passed `value_stop`: its only bytes up to SP are SP and HTAB, one compare.
            let mut value = &head[value_start..value_stop];
            while let [first, rest @ ..] = value {
                if *first > b' ' {
                    break;
                }
                value = rest;
            }
            while let [rest @ .., last] = value {
                if *last > b' ' {
                    break;
                }
                value = rest;
            }
            acc.note(name, value);
        }
    }
}

impl<'h> Acc<'h> {
    /// Notes what the field `name: value` means for framing, the connection and
    /// routing.
    #[inline(always)]
    fn note(&mut self, name: Name, value: &'h [u8]) {
        match name {
            Name::Host => {
                self.hosts += 1;
                self.host_empty = value.is_empty();
                if !valid_host(value) {
                    self.refused = Some(Reject::BadRequest(Malformed::Host));
                }
            }
            Name::ContentLength => {
                self.content_lengths += 1;
                match parse_content_length(value) {
                    Some(n) => self.content_length = Some(n),
                    None => self.refused = Some(Reject::BadRequest(Malformed::ContentLength)),
                }
            }
            Name::TransferEncoding => self.te.add(value),
            // The one option most requests send, without splitting the list.
            Name::Connection if value.eq_ignore_ascii_case(b"keep-alive") => self.conn_keep_alive = true,
            Name::Connection => {
                for token in list_items(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.conn_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.conn_keep_alive = true;
                    }
                }
            }
            Name::Expect => {
                if value.eq_ignore_ascii_case(b"100-continue") {
                    self.expect_continue = true;
                } else {
                    self.refused = Some(Reject::ExpectationFailed);
                }
            }
            Name::ContentType => self.content_type = value,
            Name::Range => self.conditional |= HAS_RANGE,
            Name::IfNoneMatch => self.conditional |= HAS_IF_NONE_MATCH,
            Name::IfModifiedSince => self.conditional |= HAS_IF_MODIFIED_SINCE,
            Name::IfRange => self.conditional |= HAS_IF_RANGE,
            Name::Other => {}
        }
    }
}

/// The verdict on a complete head whose field lines are valid: the field values
/// refused, then framing, Host and the method.
fn finish<'h>(
    limits: &Limits,
    head: &'h [u8],
    line: RequestLine,
    acc: Acc<'h>,
    len: usize,
) -> Result<Head<'h>, Reject> {
    if let Some(reject) = acc.refused {
        return Err(reject);
    }
    let http10 = line.http10;
    let te = &acc.te;
    // Framing first: a message whose length is in doubt cannot be followed.
    let body = if te.present {
        if http10 || acc.content_lengths > 0 || te.bad {
            return Err(Reject::BadRequest(Malformed::TransferEncoding));
        }
        if te.unknown {
            return Err(Reject::NotImplemented);
        }
        if !te.chunked_last {
            return Err(Reject::BadRequest(Malformed::TransferEncoding));
        }
        BodyKind::Chunked
    } else if acc.content_lengths > 1 {
        return Err(Reject::BadRequest(Malformed::ContentLength));
    } else {
        match acc.content_length {
            Some(n) if n > limits.max_body => return Err(Reject::ContentTooLarge),
            Some(0) | None => BodyKind::None,
            Some(n) => BodyKind::Fixed(n),
        }
    };
    let target = &head[line.method_end + 1..line.target_end];
    // A target without an authority (origin-form, `*`) names the host only in Host,
    // which HTTP/1.1 requires, once, and not empty (RFC 9112 §3.2).
    let has_authority = target.first() != Some(&b'/') && target != b"*";
    let hosts = acc.hosts;
    if hosts > 1 || (hosts == 0 && !http10) || (acc.host_empty && !http10 && !has_authority) {
        return Err(Reject::BadRequest(Malformed::Host));
    }
    let known = line.method.unwrap_or_else(|| Method::of(&head[..line.method_end]));
    if known == Method::Connect {
        // duet is no proxy, and bytes after a CONNECT may already be a tunnel's.
        return Err(Reject::NotImplemented);
    }
    let keep_alive = !acc.conn_close && (!http10 || acc.conn_keep_alive);
    let expect_continue = acc.expect_continue && !http10 && body != BodyKind::None;
    Ok(Head {
        method: known,
        target,
        fields: Fields::new(&head[line.end..len]),
        content_type: acc.content_type,
        conditional: acc.conditional,
        keep_alive,
        http10,
        body,
        expect_continue,
        len,
    })
}

/// The methods, as routing tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Options,
    /// The methods an echo route answers with the request body: POST, PUT, PATCH,
    /// DELETE. Elsewhere 405 with Allow.
    Echo,
    /// Never served: 501 and a close.
    Connect,
    /// Standard methods duet does not serve (TRACE): 405 with Allow.
    Other,
    /// Methods it does not know at all: 501.
    Unknown,
}

impl Method {
    pub(crate) fn of(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"OPTIONS" => Method::Options,
            b"POST" | b"PUT" | b"PATCH" | b"DELETE" => Method::Echo,
            b"CONNECT" => Method::Connect,
            b"TRACE" => Method::Other,
            _ => Method::Unknown,
        }
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

/// `uri-host [ ":" port ]`: reg-name, IPv4 or IP-literal characters only.
fn valid_host(v: &[u8]) -> bool {
    v.iter().all(|&b| is_host_byte(b))
}

/// What a head parser made of a complete head, to compare the old parser with the new.
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    method: Method,
    target: Vec<u8>,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    content_type: Vec<u8>,
    conditional: u8,
    keep_alive: bool,
    http10: bool,
    body: BodyKind,
    expect_continue: bool,
    len: usize,
}

#[cfg(test)]
impl Head<'_> {
    fn summary(&self) -> Summary {
        Summary {
            method: self.method,
            target: self.target.to_vec(),
            fields: self.fields.all().map(|(n, v)| (n.to_vec(), v.to_vec())).collect(),
            content_type: self.content_type.to_vec(),
            conditional: self.conditional,
            keep_alive: self.keep_alive,
            http10: self.http10,
            body: self.body,
            expect_continue: self.expect_continue,
            len: self.len,
        }
    }
}

#[cfg(test)]
mod tests;
