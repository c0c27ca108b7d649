//! Conditional requests, byte ranges and directory redirects for files (RFC 9110
//! sections 13 and 14). Only reached when a file is asked for with one of the headers
//! involved; a plain GET of a file is answered with its pre-rendered 200. A file with
//! precompressed variants is first negotiated (`Accept-Encoding`), then answered from
//! the chosen representation's own validators.

use crate::accept_encoding::{AcceptEncoding, Choice};
use crate::headers::{list_items, trim, Fields, HAS_IF_MODIFIED_SINCE, HAS_IF_NONE_MATCH, HAS_IF_RANGE, HAS_RANGE};
use crate::response::{Answer, Prerendered};
use crate::site::FileEntry;
use bytes::Bytes;
use std::time::UNIX_EPOCH;

/// The answer to a GET (`is_get`) or HEAD of `file` carrying some of the headers in
/// `flags`, or of a file with precompressed variants.
pub(crate) fn serve<'a>(file: &'a FileEntry, is_get: bool, flags: u8, fields: Fields<'_>) -> Answer<'a> {
    let file = if file.variants.is_empty() {
        file
    } else {
        let mut accept = AcceptEncoding::default();
        for value in fields.values("accept-encoding") {
            accept.add(value);
        }
        // No Accept-Encoding: identity, as nginx and caddy do (RFC 9110 would allow
        // any coding, but clients that decode nothing send none).
        match accept.choose(&file.codings) {
            Choice::Identity => file,
            Choice::Encoded(c) => file.variants.iter().find(|(v, _)| *v == c).map_or(file, |(_, v)| v),
            Choice::NotAcceptable => return not_acceptable(file),
        }
    };
    if flags == 0 {
        return Answer::Shared(&file.ok);
    }
    conditional(file, is_get, flags, fields)
}

/// `406`: the client refused identity and every variant.
#[cold]
fn not_acceptable(file: &FileEntry) -> Answer<'static> {
    let body = Bytes::from_static(b"406 Not Acceptable\n");
    Answer::Owned(Box::new(Prerendered::new(406, "text/plain; charset=utf-8", body, file.lines.iter())))
}

/// The answer to a GET (`is_get`) or HEAD of `file` carrying some of the headers in
/// `flags`, evaluated in the order of RFC 9110 13.2.2.
fn conditional<'a>(file: &'a FileEntry, is_get: bool, flags: u8, fields: Fields<'_>) -> Answer<'a> {
    let values = |name: &'static str| fields.values(name);
    if flags & HAS_IF_NONE_MATCH != 0 {
        // Several field lines form one list.
        if values("if-none-match").any(|v| none_match_hits(v, &file.etag)) {
            return Answer::Shared(&file.not_modified);
        }
    } else if flags & HAS_IF_MODIFIED_SINCE != 0 {
        let mut dates = values("if-modified-since");
        if let (Some(v), None) = (dates.next(), dates.next()) {
            if parse_date(v).is_some_and(|since| file.modified <= since) {
                return Answer::Shared(&file.not_modified);
            }
        }
    }
    if !is_get || flags & HAS_RANGE == 0 {
        return Answer::Shared(&file.ok);
    }
    let mut ranges = values("range");
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return Answer::Shared(&file.ok);
    };
    if flags & HAS_IF_RANGE != 0 {
        let mut conds = values("if-range");
        match (conds.next(), conds.next()) {
            (Some(v), None) if if_range_holds(v, file) => {}
            _ => return Answer::Shared(&file.ok),
        }
    }
    let len = file.ok.body().len();
    match parse_range(range, len) {
        RangeSpec::Ignore => Answer::Shared(&file.ok),
        RangeSpec::Unsatisfiable => {
            let content_range = format!("Content-Range: bytes */{len}");
            let body = Bytes::from_static(b"416 Range Not Satisfiable\n");
            // The body is plain text, not the file's coding: no Content-Encoding.
            let extra = std::iter::once(content_range.as_str()).chain(file.lines.iter().map(|l| &**l));
            Answer::Owned(Box::new(Prerendered::new(416, "text/plain; charset=utf-8", body, extra)))
        }
        RangeSpec::Bytes(first, last) => {
            let body = file.ok.body().slice(first, last);
            let content_range = format!("Content-Range: bytes {first}-{last}/{len}");
            let etag = format!("ETag: {}", file.etag);
            let modified = format!("Last-Modified: {}", file.last_modified);
            let extra = [content_range.as_str(), etag.as_str(), modified.as_str(), "Accept-Ranges: bytes"];
            let extra = extra.into_iter().chain(file.content_lines());
            Answer::Owned(Box::new(Prerendered::new(206, &file.content_type, body, extra)))
        }
    }
}

/// `301` to the request's own path with a slash appended, query kept, with the
/// `--header` lines `headers`.
pub(crate) fn redirect<'h>(raw_path: &[u8], target: &[u8], headers: impl Iterator<Item = &'h str>) -> Answer<'static> {
    // The request line's check let only ASCII through.
    let target = std::str::from_utf8(target).unwrap_or_default();
    let query = target.find('?').map_or("", |i| {
        let q = &target[i..];
        &q[..q.find('#').unwrap_or(q.len())]
    });
    let location = format!("Location: {}/{query}", String::from_utf8_lossy(raw_path));
    let body = Bytes::from_static(b"301 Moved Permanently\n");
    // The map shortens the headers' lifetime to `location`'s, so the two chain.
    #[allow(clippy::map_identity)]
    let extra = std::iter::once(location.as_str()).chain(headers.map(|h| h));
    Answer::Owned(Box::new(Prerendered::new(301, "text/plain; charset=utf-8", body, extra)))
}

/// An HTTP date as whole seconds since the epoch.
fn parse_date(v: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(trim(v)).ok()?;
    let t = httpdate::parse_http_date(text).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// True when the `If-None-Match` value `v` is `*` or lists an entity-tag that matches
/// `etag` by weak comparison (the `W/` prefix is ignored on both sides).
pub(crate) fn none_match_hits(v: &[u8], etag: &str) -> bool {
    let v = trim(v);
    if v == b"*" {
        return true;
    }
    let ours = opaque(etag.as_bytes());
    EntityTags { rest: v }.any(|(_, tag)| tag == ours)
}

/// `If-Range`: an entity-tag matches only by strong comparison (neither weak); a date
/// matches only when it equals `Last-Modified`.
fn if_range_holds(v: &[u8], file: &FileEntry) -> bool {
    let v = trim(v);
    if v.starts_with(b"\"") || v.starts_with(b"W/") {
        let mut tags = EntityTags { rest: v };
        return match (tags.next(), tags.next()) {
            (Some((false, tag)), None) => tag == opaque(file.etag.as_bytes()),
            _ => false,
        };
    }
    parse_date(v) == Some(file.modified)
}

/// The part of a quoted entity-tag between its quotes.
fn opaque(etag: &[u8]) -> &[u8] {
    etag.strip_prefix(b"\"").and_then(|e| e.strip_suffix(b"\"")).unwrap_or(etag)
}

/// Iterates over a comma-separated list of entity-tags, yielding `(weak, opaque)`; it
/// stops at the first malformed element.
struct EntityTags<'v> {
    rest: &'v [u8],
}

impl<'v> Iterator for EntityTags<'v> {
    type Item = (bool, &'v [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.rest.iter().position(|b| !matches!(b, b' ' | b'\t' | b','))?;
        let mut s = &self.rest[start..];
        let weak = s.starts_with(b"W/");
        if weak {
            s = &s[2..];
        }
        let Some(body) = s.strip_prefix(b"\"") else {
            self.rest = &[];
            return None;
        };
        let Some(end) = memchr::memchr(b'"', body) else {
            self.rest = &[];
            return None;
        };
        self.rest = &body[end + 1..];
        Some((weak, &body[..end]))
    }
}

/// A `Range` header evaluated against a representation of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeSpec {
    /// Malformed, another unit, or several ranges: serve the whole representation.
    Ignore,
    /// 416.
    Unsatisfiable,
    /// 206 with bytes `first..=last`.
    Bytes(u64, u64),
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` (a single range).
pub(crate) fn parse_range(v: &[u8], len: u64) -> RangeSpec {
    let v = trim(v);
    if v.len() < 6 || !v[..6].eq_ignore_ascii_case(b"bytes=") {
        return RangeSpec::Ignore;
    }
    let mut items = list_items(&v[6..]);
    let (Some(item), None) = (items.next(), items.next()) else {
        return RangeSpec::Ignore;
    };
    let Some(dash) = memchr::memchr(b'-', item) else {
        return RangeSpec::Ignore;
    };
    let (first, last) = (trim(&item[..dash]), trim(&item[dash + 1..]));
    match (number(first), number(last)) {
        (None, Some(suffix)) if first.is_empty() => {
            if suffix == 0 || len == 0 {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(len - suffix.min(len), len - 1)
            }
        }
        (Some(a), None) if last.is_empty() => {
            if a >= len {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(a, len - 1)
            }
        }
        (Some(a), Some(b)) if a <= b => {
            if a >= len {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(a, b.min(len - 1))
            }
        }
        _ => RangeSpec::Ignore,
    }
}

/// `1*DIGIT` that fits in a u64.
fn number(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        use RangeSpec::*;
        assert_eq!(parse_range(b"bytes=0-4", 10), Bytes(0, 4));
        assert_eq!(parse_range(b"bytes=5-", 10), Bytes(5, 9));
        assert_eq!(parse_range(b"bytes=-3", 10), Bytes(7, 9));
        assert_eq!(parse_range(b"bytes=-30", 10), Bytes(0, 9));
        assert_eq!(parse_range(b"bytes=2-100", 10), Bytes(2, 9));
        assert_eq!(parse_range(b"BYTES=1-1", 10), Bytes(1, 1));
        assert_eq!(parse_range(b"bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=10-20", 10), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-1", 0), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-1,3-4", 10), Ignore);
        assert_eq!(parse_range(b"bytes=5-4", 10), Ignore);
        assert_eq!(parse_range(b"bytes=-", 10), Ignore);
        assert_eq!(parse_range(b"bytes=a-b", 10), Ignore);
        assert_eq!(parse_range(b"items=0-1", 10), Ignore);
        assert_eq!(parse_range(b"bytes=99999999999999999999-", 10), Ignore);
    }

    #[test]
    fn entity_tag_lists() {
        assert!(none_match_hits(b"*", "\"x\""));
        assert!(none_match_hits(b"\"x\"", "\"x\""));
        assert!(none_match_hits(b"W/\"x\"", "\"x\""));
        assert!(none_match_hits(b"\"a\", W/\"b\" ,\"x\"", "\"x\""));
        assert!(none_match_hits(b"\"a,b\", \"x\"", "\"x\""));
        assert!(!none_match_hits(b"\"a,b\"", "\"b\""));
        assert!(!none_match_hits(b"\"xy\"", "\"x\""));
        assert!(!none_match_hits(b"x", "\"x\""));
        assert!(!none_match_hits(b"", "\"x\""));
    }

    #[test]
    fn redirect_keeps_the_query() {
        let a = redirect(b"/docs", b"/docs?a=b#frag", std::iter::empty());
        let head = String::from_utf8_lossy(a.ready().unwrap().head()).into_owned();
        assert!(head.contains("Location: /docs/?a=b\r\n"), "{head}");
        let a = redirect(b"/d%20s", b"/d%20s", std::iter::once("X-A: b"));
        let head = String::from_utf8_lossy(a.ready().unwrap().head()).into_owned();
        assert!(head.contains("Location: /d%20s/\r\nX-A: b\r\n"), "{head}");
    }
}
