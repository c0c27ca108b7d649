//! Properties of `Connection` under arbitrary input: it never panics, its memory stays
//! bounded by the limits, it never answers more requests than it received, and how
//! the input is split never changes what it answers.

use duet_http::testing::*;
use duet_http::{Limits, Site};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// The longest single response the test site can queue (an error page with
/// `Connection: close` is the longest, about 230 bytes).
const MAX_RESPONSE: usize = 300;
/// `HTTP/1.1 100 Continue\r\n\r\n`.
const CONTINUE: usize = 25;

/// Small limits, so that arbitrary input reaches every one of them.
fn small_limits() -> Limits {
    Limits { max_head: 128, max_headers: 6, max_body: 64, max_output: 1024, ..Limits::default() }
}

/// Head terminators (`\n\n` or `\n\r\n`) in `input`: no request can be answered
/// without one, so this bounds the number of answerable requests.
fn head_terminators(input: &[u8]) -> usize {
    (0..input.len())
        .filter(|&i| input[i] == b'\n' && (input.get(i + 1) == Some(&b'\n') || input[i + 1..].starts_with(b"\r\n")))
        .count()
}

/// Pieces requests are made of, valid and invalid, so that random mixes reach deep
/// into the parser instead of failing on the first byte.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        Just(b"HEAD /x?y HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        Just(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_vec()),
        Just(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".to_vec()),
        Just(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
        Just(b"5;ext=1\r\nhello\r\n".to_vec()),
        Just(b"0\r\nTrailer: x\r\n\r\n".to_vec()),
        Just(b"0\r\n\r\n".to_vec()),
        Just(b"Expect: 100-continue\r\n".to_vec()),
        Just(b"Content-Length: 3\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Connection: close\r\n".to_vec()),
        Just(b"Host: b\r\n".to_vec()),
        Just(b"GET /%zz HTTP/1.1\r\n".to_vec()),
        Just(b"GET / HTTP/2.0\r\n".to_vec()),
        Just(b" folded\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"ffffffffffffffffff\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
        "[ -~]{0,40}".prop_map(String::into_bytes),
    ]
}

fn valid_request() -> impl Strategy<Value = (Vec<u8>, u16, bool)> {
    // (request, status, head_only)
    prop_oneof![
        Just((b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 200, false)),
        Just((b"GET /?q=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n".to_vec(), 200, false)),
        Just((b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 200, false)),
        Just((b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 200, true)),
        Just((b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 404, false)),
        Just((b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_vec(), 200, false)),
        Just((b"DELETE / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 405, false)),
        Just((b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 501, false)),
        Just((b"\r\nGET / HTTP/1.1\nHost: a\n\n".to_vec(), 200, false)),
        Just((b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nGET ".to_vec(), 405, false)),
        Just((b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx".to_vec(), 200, false)),
        Just((
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\nT: 1\r\n\r\n"
                .to_vec(),
            405,
            false
        )),
        Just((b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 200, false)),
    ]
}

/// Cut points for `len` bytes, turned into chunk boundaries.
fn split<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut at = 0;
    for c in cuts {
        chunks.push(&input[at..c]);
        at = c;
    }
    chunks.push(&input[at..]);
    chunks
}

#[derive(Clone, Debug)]
enum Event {
    Read(Vec<u8>),
    Send(usize),
    Advance(u64),
    Eof,
    Shutdown,
    /// The engine found no unread input in the socket (it says so to a draining
    /// connection that asks).
    NoPendingInput,
    /// An io_uring engine hands bytes that arrived after `wants_read` turned false.
    ReadRegardless(Vec<u8>),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => fragment().prop_map(Event::Read),
        2 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(Event::Read),
        3 => (1usize..400).prop_map(Event::Send),
        1 => (0u64..20).prop_map(Event::Advance),
        1 => Just(Event::Eof),
        1 => Just(Event::Shutdown),
        1 => Just(Event::NoPendingInput),
        1 => fragment().prop_map(Event::ReadRegardless),
    ]
}

/// Drives a connection through `events` and checks the invariants after each one.
fn drive(limits: Limits, events: &[Event]) {
    let site = Arc::new(Site::hello());
    let mut e = Driver::with_site(site, limits.clone());
    let mut fed = Vec::new();
    let mut largest_chunk = 0;
    let mut eof = false;
    let mut fed_while_stalled = 0;
    for ev in events {
        let closed_before = e.conn.is_closed();
        let sent_before = e.out.len();
        match ev {
            Event::Read(bytes) => {
                if !eof && !e.conn.is_closed() && e.conn.wants_read() {
                    largest_chunk = largest_chunk.max(bytes.len());
                    e.feed(bytes);
                    fed.extend_from_slice(bytes);
                }
            }
            Event::ReadRegardless(bytes) => {
                if !eof && !e.conn.is_closed() {
                    if !e.conn.wants_read() {
                        fed_while_stalled += bytes.len();
                    }
                    largest_chunk = largest_chunk.max(bytes.len());
                    e.feed(bytes);
                    fed.extend_from_slice(bytes);
                }
            }
            Event::Send(n) => {
                e.send = SendMode { max_bytes: *n, max_iov: 3 };
                e.send_once();
            }
            Event::Advance(s) => e.tick_to(e.elapsed + Duration::from_secs(*s)),
            Event::Eof => {
                if !eof && !e.conn.is_closed() {
                    eof = true;
                    e.conn.handle_eof(&mut e.ctx);
                }
            }
            Event::Shutdown => e.conn.begin_shutdown(&mut e.ctx),
            Event::NoPendingInput => {
                if e.conn.wants_input_check() {
                    e.conn.handle_no_pending_input(&mut e.ctx);
                }
            }
        }
        if !e.write_shut && e.conn.should_close_after_flush() {
            e.conn.handle_write_shutdown(&mut e.ctx);
            e.write_shut = true;
        }
        if closed_before {
            assert_eq!(e.out.len(), sent_before, "nothing is sent after the close");
        }
        check_bounds(&e, &limits, largest_chunk, fed_while_stalled, &fed);
    }
    // Whatever is left can be flushed, and the stream parses.
    e.send = SendMode::ALL;
    e.flush();
    check_bounds(&e, &limits, largest_chunk, fed_while_stalled, &fed);
    if eof {
        assert!(e.conn.is_closed() || e.write_shut, "after EOF and a flush the connection ends");
    }
    if !e.conn.is_closed() {
        assert_eq!(e.conn.output_len(), 0, "an open connection can always be flushed");
    }
}

fn check_bounds(e: &Driver, limits: &Limits, largest_chunk: usize, fed_while_stalled: usize, fed: &[u8]) {
    let carry = e.conn.buffered_input();
    assert!(
        carry <= limits.max_head + largest_chunk + fed_while_stalled,
        "carry {carry} > max_head {} + chunk {largest_chunk} + {fed_while_stalled}",
        limits.max_head
    );
    let queued = e.conn.output_len();
    assert!(queued < limits.max_output + MAX_RESPONSE + CONTINUE, "output {queued}");
    let answered = count_final_status_lines(&e.out);
    let bound = head_terminators(fed) + 1;
    assert!(answered <= bound, "{answered} responses for at most {bound} requests");
    if e.conn.is_idle() {
        assert_eq!(carry, 0);
        assert_eq!(queued, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_and_answer_at_most_one_error(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8),
    ) {
        let chunk_refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        for limits in [Limits::default(), small_limits()] {
            let (o, _) = run_chunks(&Arc::new(Site::hello()), &limits, SendMode::ALL, &chunk_refs);
            let input = chunks.concat();
            let answered = count_final_status_lines(&o.out);
            prop_assert!(answered <= head_terminators(&input) + 1);
            prop_assert!(o.buffered_input <= limits.max_head + chunks.iter().map(Vec::len).max().unwrap_or(0));
        }
    }

    #[test]
    fn arbitrary_events_keep_memory_bounded(
        events in proptest::collection::vec(event(), 0..40),
        small in any::<bool>(),
    ) {
        drive(if small { small_limits() } else { Limits::default() }, &events);
    }

    #[test]
    fn fragment_mixes_split_anywhere_give_the_same_answer(
        fragments in proptest::collection::vec(fragment(), 0..16),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
        small in any::<bool>(),
    ) {
        let input = fragments.concat();
        let limits = if small { small_limits() } else { Limits::default() };
        let site = Arc::new(Site::hello());
        let (whole, _) = run_chunks(&site, &limits, SendMode::ALL, &[&input]);
        let (pieces, _) = run_chunks(&site, &limits, SendMode::ALL, &split(&input, &cuts));
        prop_assert_eq!(&whole, &pieces);
        let (slow, _) = run_chunks(&site, &limits, SendMode { max_bytes: 13, max_iov: 2 }, &split(&input, &cuts));
        prop_assert_eq!(&whole, &slow);
        prop_assert!(count_final_status_lines(&whole.out) <= head_terminators(&input) + 1);
        // At most one response closes the connection, and it is the last one.
        let closes = whole.text().matches("Connection: close\r\n").count();
        prop_assert!(closes <= 1);
        if closes == 1 {
            prop_assert!(whole.write_shut || whole.closed);
        }
    }

    #[test]
    fn valid_pipelined_requests_split_anywhere_equal_feeding_them_whole(
        requests in proptest::collection::vec(valid_request(), 1..24),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
        send in 1usize..600,
    ) {
        let input: Vec<u8> = requests.iter().flat_map(|(r, _, _)| r.clone()).collect();
        let site = Arc::new(Site::hello());
        let limits = Limits { max_output: 1024, ..Limits::default() };
        let (whole, batches) = run_chunks(&site, &limits, SendMode::ALL, &[&input]);
        let (pieces, _) = run_chunks(&site, &limits, SendMode { max_bytes: send, max_iov: 4 }, &split(&input, &cuts));
        prop_assert_eq!(&whole, &pieces);
        let head_only: Vec<usize> =
            requests.iter().enumerate().filter(|(_, (_, _, h))| *h).map(|(i, _)| i).collect();
        let statuses: Vec<u16> = parse_responses(&whole.out, &head_only).iter().map(|r| r.status).collect();
        let want: Vec<u16> = requests.iter().map(|(_, s, _)| *s).collect();
        prop_assert_eq!(statuses, want, "one response per request, in order");
        prop_assert!(!whole.write_shut && whole.wants_read && whole.buffered_input == 0);
        if whole.out.len() < limits.max_output {
            prop_assert_eq!(batches, 1, "one read, one write");
        }
    }

    #[test]
    fn valid_prefix_is_answered_whatever_follows(
        requests in proptest::collection::vec(valid_request(), 1..6),
        tail in proptest::collection::vec(any::<u8>(), 0..200),
        cuts in proptest::collection::vec(any::<usize>(), 0..4),
    ) {
        let prefix: Vec<u8> = requests.iter().flat_map(|(r, _, _)| r.clone()).collect();
        let input = cat(&[&prefix, &tail]);
        let site = Arc::new(Site::hello());
        let (alone, _) = run_chunks(&site, &Limits::default(), SendMode::ALL, &[&prefix]);
        let (o, _) = run_chunks(&site, &Limits::default(), SendMode::ALL, &split(&input, &cuts));
        prop_assert!(o.out.starts_with(&alone.out));
    }
}
