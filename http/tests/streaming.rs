//! Bodies streamed from disk: file segments in the output queue. The test engine sends
//! them as a real one would (`OutBuf::front_file` + positional reads), in order with
//! the memory segments around them, under every input split and partial-send size;
//! ranges point into the file; HEAD and 304 send nothing of it; and a pipelined run of
//! requests for a streamed file stops parsing after a few, not after `max_output`.

use bytes::Bytes;
use duet_http::testing::*;
use duet_http::{Body, FileMeta, Limits, Site};
use std::fs::File;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

const LEN: usize = 20_000;

fn pattern() -> Vec<u8> {
    (0..LEN as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// A file with the pattern, unlinked at once: the open descriptor is all the site needs.
fn open_pattern(tag: &str) -> Arc<File> {
    let path = std::env::temp_dir().join(format!("duet-streaming-{}-{tag}", std::process::id()));
    std::fs::write(&path, pattern()).unwrap();
    let file = File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    Arc::new(file)
}

const ETAG: &str = "\"s1\"";

fn site(tag: &str) -> Arc<Site> {
    let file = open_pattern(tag);
    let meta = FileMeta { etag: "s1".into(), modified: UNIX_EPOCH + Duration::from_secs(WALL_SECS - 100) };
    Arc::new(
        Site::builder()
            .file("/big.bin", "application/octet-stream", Body::file(Arc::clone(&file), LEN as u64), &meta)
            .route("/route.bin", "application/octet-stream", Body::file(file, LEN as u64))
            .route("/small", "text/plain", Bytes::from_static(b"small"))
            .build(),
    )
}

#[test]
fn streamed_bodies_are_sent_whole_and_in_order_between_memory_responses() {
    let data = pattern();
    let input = cat(&[
        &get("/small"),
        &get("/big.bin"),
        &get("/small"),
        &req("GET", "/big.bin", &["Range: bytes=100-199"]),
        &get("/route.bin"),
        &req("GET", "/big.bin", &["Content-Length: 3"]),
        b"abc",
        &get("/small"),
    ]);
    let o = check_with(&site("order"), &Limits::default(), &input);
    let rs = o.responses();
    assert_eq!(rs.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 200, 200, 206, 200, 200, 200]);
    assert_eq!(rs[0].body, b"small");
    assert!(rs[1].body == data, "the streamed body differs");
    assert_eq!(rs[1].header("etag"), Some(ETAG));
    assert_eq!(rs[1].header("accept-ranges"), Some("bytes"));
    assert_eq!(rs[1].header("content-length"), Some("20000"));
    assert_eq!(rs[3].body, &data[100..200]);
    assert_eq!(rs[3].header("content-range"), Some("bytes 100-199/20000"));
    assert!(rs[4].body == data, "a streamed --route body differs");
    assert!(rs[5].body == data, "the body after a request body differs");
    assert_eq!(rs[6].body, b"small");
    assert!(!o.write_shut && !o.closed);
}

/// Sends the head of the only queued response; returns it and the file range now at
/// the front (if any).
fn head_then_front(e: &mut Driver) -> (String, Option<(u64, usize)>) {
    let out = e.conn.poll_output().expect("a response");
    let mut iov = [IoSlice::new(&[]); 16];
    let n = out.fill(&mut iov);
    let head: Vec<u8> = iov[..n].iter().flat_map(|s| s.iter().copied()).collect();
    let sent = head.len();
    e.conn.handle_sent(&mut e.ctx, sent);
    let front = e.conn.poll_output().and_then(|o| o.front_file()).map(|(_, offset, left)| (offset, left));
    (String::from_utf8(head).unwrap(), front)
}

#[test]
fn ranges_of_a_streamed_file_point_into_the_file() {
    let site = site("ranges");
    for (range, offset, len, content_range) in [
        ("bytes=1000-1999", 1000, 1000, "bytes 1000-1999/20000"),
        ("bytes=-500", 19_500, 500, "bytes 19500-19999/20000"),
        ("bytes=19000-", 19_000, 1000, "bytes 19000-19999/20000"),
        ("bytes=0-0", 0, 1, "bytes 0-0/20000"),
        ("bytes=5-999999", 5, LEN - 5, "bytes 5-19999/20000"),
    ] {
        let mut e = Driver::with_site(Arc::clone(&site), Limits::default());
        e.feed(&req("GET", "/big.bin", &[&format!("Range: {range}")]));
        let (head, front) = head_then_front(&mut e);
        assert!(head.starts_with("HTTP/1.1 206 "), "{range}: {head}");
        assert!(head.contains(&format!("Content-Range: {content_range}\r\n")), "{range}: {head}");
        assert!(head.contains(&format!("Content-Length: {len}\r\n")), "{range}: {head}");
        assert_eq!(front, Some((offset, len)), "{range}");
        e.flush();
        assert_eq!(e.file_sends, 1, "{range}");
        assert!(e.out == pattern()[offset as usize..offset as usize + len], "{range}: body differs");
    }
    for range in ["bytes=20000-", "bytes=-0"] {
        let mut e = Driver::with_site(Arc::clone(&site), Limits::default());
        e.feed(&req("GET", "/big.bin", &[&format!("Range: {range}")]));
        e.flush();
        let rs = e.responses();
        assert_eq!(rs[0].status, 416, "{range}");
        assert_eq!(rs[0].header("content-range"), Some("bytes */20000"));
        assert_eq!(e.file_sends, 0);
    }
}

#[test]
fn head_and_304_on_a_streamed_file_send_none_of_it() {
    let site = site("head");
    let mut e = Driver::with_site(Arc::clone(&site), Limits::default());
    e.read_event(&cat(&[&req("HEAD", "/big.bin", &[]), &get("/small")]));
    let rs = parse_responses(&e.out, &[0]);
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].header("content-length"), Some("20000"));
    assert_eq!(rs[0].header("etag"), Some(ETAG));
    assert_eq!(rs[1].body, b"small", "no body followed the HEAD answer");
    assert_eq!(e.file_sends, 0);

    let mut e = Driver::with_site(site, Limits::default());
    e.read_event(&req("GET", "/big.bin", &[&format!("If-None-Match: {ETAG}"), "Range: bytes=0-1"]));
    let text = e.text();
    assert!(text.starts_with("HTTP/1.1 304 "), "{text}");
    assert!(text.ends_with("\r\n\r\n") && !text.contains("Content-Length"), "{text}");
    assert_eq!(e.file_sends, 0);
}

#[test]
fn pipelined_requests_for_a_streamed_file_queue_only_a_few_bodies() {
    let data = pattern();
    let mut e = Driver::with_site(site("pipeline"), Limits::default());
    let n = 50;
    let input: Vec<u8> = (0..n).flat_map(|_| get("/big.bin")).chain(get("/small")).collect();
    e.feed(&input);
    // File bytes do not count toward max_output (256 KiB here, far above 50 x 20 KB), but
    // parsing stops after a few file responses: the rest waits in the carry buffer.
    assert!(!e.conn.wants_read(), "parsing should have stopped");
    assert!(e.conn.buffered_input() > 0);
    assert!(e.conn.output_len() <= 8 * (LEN + 512), "queued {} bytes", e.conn.output_len());
    e.flush();
    let rs = e.responses();
    assert_eq!(rs.len(), n + 1);
    for r in &rs[..n] {
        assert_eq!(r.status, 200);
        assert!(r.body == data, "a pipelined streamed body differs");
    }
    assert_eq!(rs[n].body, b"small");
    assert!(e.conn.wants_read() && e.conn.is_idle());
    assert_eq!(e.file_sends, n);
}

#[test]
fn a_slow_reader_of_a_streamed_file_keeps_its_send_deadline_fresh() {
    let mut e = Driver::with_site(site("slow"), Limits::default());
    e.send = SendMode { max_bytes: 1000, max_iov: 16 };
    e.feed(&get("/big.bin"));
    let send_timeout = e.ctx.limits().send_timeout;
    // One send per almost-send-timeout: never dropped, because each send is progress.
    while e.send_once() {
        assert!(!e.conn.is_closed());
        e.tick_to(e.elapsed + send_timeout - Duration::from_millis(1));
    }
    assert!(!e.conn.is_closed());
    let rs = e.responses();
    assert!(rs[0].body == pattern());
}
