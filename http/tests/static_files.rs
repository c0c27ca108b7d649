//! Files served with validators: conditional requests (ETag / If-None-Match,
//! If-Modified-Since), byte ranges (206, 416, If-Range), directory redirects and index
//! aliases, and swapping the site while connections are open. Inputs go through
//! `check_with` (whole, split at every byte, byte by byte, partial sends).

use bytes::Bytes;
use duet_http::testing::*;
use duet_http::{FileMeta, Limits, Site};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

const BODY: &[u8] = b"0123456789";
const ETAG: &str = "\"v1-abc\"";
/// Last-Modified of every file: 100 s before the test clock (`DATE`).
const MODIFIED_SECS: u64 = WALL_SECS - 100;
const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:47:57 GMT";

fn meta(etag: &str) -> FileMeta {
    FileMeta { etag: etag.to_string(), modified: UNIX_EPOCH + Duration::from_secs(MODIFIED_SECS) }
}

fn big() -> Vec<u8> {
    (0..50_000u32).map(|i| (i % 251) as u8).collect()
}

fn site() -> Arc<Site> {
    Arc::new(
        Site::builder()
            .file("/a.txt", "text/plain; charset=utf-8", Bytes::from_static(BODY), &meta("v1-abc"))
            .file("/big.bin", "application/octet-stream", Bytes::from(big()), &meta("big"))
            .file("/docs/index.html", "text/html; charset=utf-8", Bytes::from_static(b"<p>docs</p>"), &meta("ix"))
            .alias("/docs/", "/docs/index.html")
            .directory("/docs")
            .route("/fixed", "text/plain", Bytes::from_static(b"fixed"))
            .build(),
    )
}

/// Parses responses where 304 and HEAD answers (indexes in `head_only`) carry no body.
/// Every response must have Date and Server; all but 304 a Content-Length.
fn parse(mut out: &[u8], head_only: &[usize]) -> Vec<Response> {
    let mut rs = Vec::new();
    while !out.is_empty() {
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("end of head") + 4;
        let head = std::str::from_utf8(&out[..end]).unwrap();
        let mut lines = head[..end - 4].split("\r\n");
        let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_string(), v.to_string())
            })
            .collect();
        let mut r = Response { status, reason: String::new(), headers, body: Vec::new(), head: out[..end].to_vec() };
        out = &out[end..];
        assert_eq!(r.header("date"), Some(DATE), "{head}");
        assert_eq!(r.header("server"), Some("duet"), "{head}");
        if status == 304 {
            assert_eq!(r.header("content-length"), None, "304 without Content-Length: {head}");
        } else {
            let len: usize = r.header("content-length").expect("Content-Length").parse().unwrap();
            if !head_only.contains(&rs.len()) {
                r.body = out[..len].to_vec();
                out = &out[len..];
            }
        }
        rs.push(r);
    }
    rs
}

fn one(input: &[u8]) -> Response {
    let o = check_with(&site(), &Limits::default(), input);
    assert!(!o.write_shut, "the connection stays open: {}", o.text());
    let mut rs = parse(&o.out, &[]);
    assert_eq!(rs.len(), 1, "{}", o.text());
    rs.remove(0)
}

fn assert_not_modified(r: &Response) {
    assert_eq!(r.status, 304, "{}", String::from_utf8_lossy(&r.head));
    assert_eq!(r.header("etag"), Some(ETAG));
    assert_eq!(r.header("last-modified"), Some(LAST_MODIFIED));
    assert!(r.body.is_empty());
}

fn assert_full(r: &Response) {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.head));
    assert_eq!(r.body, BODY);
}

#[test]
fn file_has_type_length_etag_last_modified_and_accept_ranges() {
    let r = one(&get("/a.txt"));
    assert_full(&r);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(r.header("etag"), Some(ETAG));
    assert_eq!(r.header("last-modified"), Some(LAST_MODIFIED));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
}

#[test]
fn if_none_match_answers_304_by_weak_comparison() {
    for value in [ETAG, "W/\"v1-abc\"", "\"other\", \"v1-abc\"", "*", " \"x\",W/\"v1-abc\" "] {
        let r = one(&req("GET", "/a.txt", &[&format!("If-None-Match: {value}")]));
        assert_not_modified(&r);
    }
    let r = one(&req("HEAD", "/a.txt", &[&format!("If-None-Match: {ETAG}")]));
    assert_not_modified(&r);
    for value in ["\"v1\"", "\"v1-abcd\"", "v1-abc", ""] {
        assert_full(&one(&req("GET", "/a.txt", &[&format!("If-None-Match: {value}")])));
    }
    // Two field lines are one list.
    let r = one(&req("GET", "/a.txt", &["If-None-Match: \"x\"", &format!("If-None-Match: {ETAG}")]));
    assert_not_modified(&r);
}

#[test]
fn if_modified_since_answers_304_unless_modified_later() {
    assert_not_modified(&one(&req("GET", "/a.txt", &[&format!("If-Modified-Since: {LAST_MODIFIED}")])));
    assert_not_modified(&one(&req("GET", "/a.txt", &[&format!("If-Modified-Since: {DATE}")])));
    let before = "Sun, 06 Nov 1994 08:47:56 GMT";
    assert_full(&one(&req("GET", "/a.txt", &[&format!("If-Modified-Since: {before}")])));
    assert_full(&one(&req("GET", "/a.txt", &["If-Modified-Since: yesterday"])));
    // If-None-Match takes precedence: a mismatch means 200 whatever the date says.
    let r = one(&req("GET", "/a.txt", &["If-None-Match: \"nope\"", &format!("If-Modified-Since: {DATE}")]));
    assert_full(&r);
}

#[test]
fn fixed_routes_ignore_validators_and_ranges() {
    let r = one(&req("GET", "/fixed", &["If-None-Match: *", "Range: bytes=0-1"]));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"fixed");
    assert_eq!(r.header("accept-ranges"), None);
}

#[test]
fn single_ranges_answer_206_with_content_range() {
    for (range, want, content_range) in [
        ("bytes=0-3", &b"0123"[..], "bytes 0-3/10"),
        ("bytes=2-2", b"2", "bytes 2-2/10"),
        ("bytes=7-", b"789", "bytes 7-9/10"),
        ("bytes=-4", b"6789", "bytes 6-9/10"),
        ("bytes=-40", BODY, "bytes 0-9/10"),
        ("bytes=5-400", b"56789", "bytes 5-9/10"),
    ] {
        let r = one(&req("GET", "/a.txt", &[&format!("Range: {range}")]));
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.body, want, "{range}");
        assert_eq!(r.header("content-range"), Some(content_range), "{range}");
        assert_eq!(r.header("content-length"), Some(want.len().to_string().as_str()));
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(r.header("etag"), Some(ETAG));
    }
}

#[test]
fn range_of_a_large_file_is_a_slice_sent_intact() {
    let body = big();
    let r = one(&req("GET", "/big.bin", &["Range: bytes=1000-45999"]));
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 1000-45999/50000"));
    assert_eq!(r.body, &body[1000..46000]);
}

#[test]
fn unsatisfiable_range_is_416_with_the_length() {
    for range in ["bytes=10-", "bytes=10-20", "bytes=-0"] {
        let r = one(&req("GET", "/a.txt", &[&format!("Range: {range}")]));
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("content-range"), Some("bytes */10"), "{range}");
    }
}

#[test]
fn multiple_or_malformed_ranges_are_ignored() {
    for range in ["bytes=0-1,3-4", "bytes=5-1", "lines=1-2", "bytes=x-"] {
        assert_full(&one(&req("GET", "/a.txt", &[&format!("Range: {range}")])));
    }
    // Two Range field lines: ignored too.
    assert_full(&one(&req("GET", "/a.txt", &["Range: bytes=0-1", "Range: bytes=2-3"])));
}

#[test]
fn head_ignores_range() {
    let o = check_with(&site(), &Limits::default(), &req("HEAD", "/a.txt", &["Range: bytes=0-1"]));
    let rs = parse(&o.out, &[0]);
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].header("content-length"), Some("10"));
    assert!(rs[0].body.is_empty());
}

#[test]
fn if_range_applies_the_range_only_when_it_matches() {
    let partial = one(&req("GET", "/a.txt", &["Range: bytes=0-1", &format!("If-Range: {ETAG}")]));
    assert_eq!(partial.status, 206);
    let partial = one(&req("GET", "/a.txt", &["Range: bytes=0-1", &format!("If-Range: {LAST_MODIFIED}")]));
    assert_eq!(partial.status, 206);
    for cond in ["\"other\"", "W/\"v1-abc\"", DATE, "garbage"] {
        assert_full(&one(&req("GET", "/a.txt", &["Range: bytes=0-1", &format!("If-Range: {cond}")])));
    }
}

#[test]
fn conditional_304_wins_over_range() {
    let r = one(&req("GET", "/a.txt", &["Range: bytes=0-1", &format!("If-None-Match: {ETAG}")]));
    assert_not_modified(&r);
}

#[test]
fn directory_without_slash_redirects_keeping_the_query() {
    let r = one(&get("/docs?lang=en"));
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/docs/?lang=en"));
    let r = one(&get("/docs"));
    assert_eq!(r.header("location"), Some("/docs/"));
    let r = one(&get("/docs/"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<p>docs</p>");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(one(&get("/docs/index.html")).body, b"<p>docs</p>");
    assert_eq!(one(&req("POST", "/docs", &["Content-Length: 0"])).status, 405);
}

#[test]
fn traversal_and_odd_encodings_never_reach_a_file() {
    for path in ["/../a.txt", "/docs/../a.txt", "/%2e%2e/a.txt", "/docs/..%2fa.txt", "/%c0%ae%c0%ae/a.txt", "/a.txt/"] {
        let r = one(&get(path));
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.body.windows(BODY.len()).any(|w| w == BODY), "{path}");
    }
    let o = check_with(&site(), &Limits::default(), &get("/a.txt%00"));
    assert_eq!(parse(&o.out, &[])[0].status, 400);
}

#[test]
fn pipelined_mix_of_plain_conditional_and_range_requests() {
    let input = cat(&[
        &get("/a.txt"),
        &req("GET", "/a.txt", &[&format!("If-None-Match: {ETAG}")]),
        &req("GET", "/a.txt", &["Range: bytes=-2"]),
        &get("/docs"),
        &get("/a.txt"),
    ]);
    let o = check_with(&site(), &Limits::default(), &input);
    let rs = parse(&o.out, &[]);
    assert_eq!(rs.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 304, 206, 301, 200]);
    assert_eq!(rs[2].body, b"89");
}

fn versioned(body: &'static [u8]) -> Site {
    Site::builder().route("/", "text/plain", Bytes::from_static(body)).build()
}

#[test]
fn replaced_site_is_seen_from_the_next_loop_turn_and_queued_responses_keep_theirs() {
    let site = Arc::new(versioned(b"one"));
    let mut e = Driver::with_site(Arc::clone(&site), Limits::default());
    e.read_event(&get("/"));
    // Queued, not yet sent, when the site is replaced.
    e.feed(&get("/"));
    assert_eq!(site.generation(), 0);
    site.replace(versioned(b"two"));
    assert_eq!(site.generation(), 1);
    // The same loop turn still answers from the table it started with.
    e.feed(&get("/"));
    e.ctx.set_time(e.t0, wall());
    e.feed(&get("/"));
    e.flush();
    let bodies: Vec<Vec<u8>> = e.responses().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies, [b"one".to_vec(), b"one".to_vec(), b"one".to_vec(), b"two".to_vec()]);
    // A new connection after the swap sees the new site at once.
    let mut fresh = Driver::with_site(Arc::clone(&site), Limits::default());
    fresh.read_event(&get("/"));
    assert_eq!(fresh.responses()[0].body, b"two");
}

#[test]
fn a_request_whose_body_is_being_read_is_answered_from_the_old_site() {
    let site = Arc::new(versioned(b"one"));
    let mut e = Driver::with_site(Arc::clone(&site), Limits::default());
    e.read_event(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab");
    site.replace(versioned(b"two"));
    e.ctx.set_time(e.t0, wall());
    e.read_event(b"cd");
    e.read_event(&get("/"));
    let bodies: Vec<Vec<u8>> = e.responses().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies, [b"one".to_vec(), b"two".to_vec()]);
}
