//! The rule engines rely on when they keep the iovecs of an in-flight send while the
//! `Connection` moves (their slab of connections grows): every segment `poll_output`
//! gives points into heap storage, never into the `Connection` value's own bytes. An
//! inline output buffer (bytes stored in the struct) would make those iovecs dangle
//! after a move; these tests fail if one is introduced.

use bytes::Bytes;
use duet_http::{Connection, Context, Limits, Site};
use std::io::IoSlice;
use std::mem::size_of;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// A segment of pending output: where it is in memory, and what it holds.
#[derive(Debug, PartialEq, Eq)]
struct Segment {
    addr: usize,
    bytes: Vec<u8>,
}

/// The in-memory segments `conn` has to send, as an engine gets them.
fn segments(conn: &mut Connection) -> Vec<Segment> {
    let out = conn.poll_output().expect("a response is queued");
    let mut iov = [IoSlice::new(&[]); 64];
    let n = out.fill(&mut iov);
    assert!(n > 0, "the output starts with bytes in memory");
    iov[..n].iter().map(|s| Segment { addr: s.as_ptr() as usize, bytes: s.to_vec() }).collect()
}

/// Asserts that no segment lies, even in part, inside the bytes of `conn` itself.
fn assert_outside(conn: &Connection, segments: &[Segment], when: &str) {
    let start = std::ptr::from_ref(conn) as usize;
    let end = start + size_of::<Connection>();
    for s in segments {
        let (s_start, s_end) = (s.addr, s.addr + s.bytes.len());
        assert!(
            s_end <= start || s_start >= end,
            "{when}: a segment at {s_start:#x}..{s_end:#x} lies inside the Connection at {start:#x}..{end:#x}"
        );
    }
}

/// Handles `input` on a fresh connection, then moves the connection into a `Box` and
/// into a `Vec` that reallocates, and asserts after each move that the output segments
/// are the same addresses with the same bytes, none inside the `Connection` value.
/// Returns all the output bytes, for the caller to check what was answered.
fn assert_segments_survive_moves(site: Site, input: &[u8]) -> Vec<u8> {
    let mut ctx = Context::new(Arc::new(site), Limits::default(), Instant::now(), SystemTime::now());
    let mut conn = Connection::new(&ctx);
    conn.handle_input(&mut ctx, input);
    let before = segments(&mut conn);
    assert_outside(&conn, &before, "before any move");

    let mut boxed = Box::new(conn);
    assert_eq!(segments(&mut boxed), before, "the segments moved with the Connection into a Box");
    assert_outside(&boxed, &before, "in a Box");

    let mut slab = Vec::with_capacity(1);
    slab.push(*boxed);
    let first_home = slab.as_ptr() as usize;
    while slab.as_ptr() as usize == first_home {
        slab.push(Connection::new(&ctx)); // grows until the slab reallocates
    }
    assert_eq!(segments(&mut slab[0]), before, "the segments moved with the Connection when the slab grew");
    assert_outside(&slab[0], &before, "after the slab grew");

    before.into_iter().flat_map(|s| s.bytes).collect()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

fn site() -> Site {
    Site::builder()
        .header("X-Served-By: test")
        .expect("a valid header line")
        .hello()
        .route("/big", "application/octet-stream", Bytes::from(vec![b'b'; 64 * 1024]))
        .echo("/e")
        .build()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_prerendered_response_with_a_configured_header_is_sent_from_the_heap() {
    let out = text(&assert_segments_survive_moves(site(), &get("/")));
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("X-Served-By: test\r\n") && out.ends_with("Hello, World!"), "{out}");
}

#[test]
fn a_large_shared_body_is_sent_from_the_heap() {
    let out = assert_segments_survive_moves(site(), &get("/big"));
    assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n") && out.ends_with(&[b'b'; 64 * 1024]), "{}", out.len());
}

#[test]
fn a_not_found_answer_is_sent_from_the_heap() {
    let out = text(&assert_segments_survive_moves(site(), &get("/missing")));
    assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");
}

#[test]
fn an_echoed_body_is_sent_from_the_heap() {
    let input = b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
    let out = text(&assert_segments_survive_moves(site(), input));
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("\r\n\r\nhello"), "{out}");
}

#[test]
fn a_pipelined_pair_is_sent_from_the_heap() {
    let input = [get("/"), get("/big")].concat();
    let out = assert_segments_survive_moves(site(), &input);
    let responses = out.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
    assert_eq!(responses, 2, "both pipelined requests are answered in one output");
}
