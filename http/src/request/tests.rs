use super::old::OldScan;
use super::*;
use proptest::prelude::*;

#[test]
fn content_length_is_strict() {
    assert_eq!(parse_content_length(b"42"), Some(42));
    assert_eq!(parse_content_length(b" 7 "), Some(7));
    for bad in [&b""[..], b"+1", b"-1", b"1,1", b"1 1", b"0x10", b"1234567890123456789"] {
        assert_eq!(parse_content_length(bad), None, "{bad:?}");
    }
}

/// What a parser says after one arrival of input.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Incomplete,
    Refused(Reject),
    Complete(Summary),
}

/// The verdicts of the new parser (`new`) or the old one on `input` arriving in pieces
/// ending at each of `ends`, as conn.rs feeds them: the first `max_head` bytes, and past
/// them the oversize rejection. Stops at the first verdict that is not Incomplete.
fn verdicts(limits: &Limits, input: &[u8], ends: impl IntoIterator<Item = usize>, new: bool) -> Vec<Verdict> {
    let (mut scan, mut old) = (LineScan::new(), OldScan::new());
    let mut out = Vec::new();
    for end in ends {
        let rest = &input[..end];
        let window = &rest[..rest.len().min(limits.max_head)];
        let got = if new {
            super::scan(&mut scan, limits, window).map(|h| h.map(|h| h.summary()))
        } else {
            old.scan(limits, window)
        };
        let verdict = match got {
            Ok(Some(summary)) => Verdict::Complete(summary),
            Err(reject) => Verdict::Refused(reject),
            Ok(None) if rest.len() > limits.max_head => Verdict::Refused(oversize_reject(window)),
            Ok(None) => Verdict::Incomplete,
        };
        let done = verdict != Verdict::Incomplete;
        out.push(verdict);
        if done {
            break;
        }
    }
    out
}

/// Holds the new parser to the old one's verdicts on `input`: whole, byte by byte, and cut
/// in two at every byte (at `two_piece_cuts` evenly spread points when fewer).
fn same_verdicts(limits: &Limits, input: &[u8], two_piece_cuts: usize) {
    let n = input.len();
    let check = |ends: Vec<usize>, how: &str| {
        let (old, new) = (verdicts(limits, input, ends.clone(), false), verdicts(limits, input, ends, true));
        assert_eq!(new, old, "{how} of {:?} with {limits:?}", String::from_utf8_lossy(input));
    };
    check(vec![n], "whole");
    check((1..=n).collect(), "byte by byte");
    let step = (n / two_piece_cuts.max(1)).max(1);
    for cut in (1..n).step_by(step) {
        check(vec![cut, n], &format!("cut at {cut}"));
    }
}

fn small_limits() -> Limits {
    Limits { max_head: 200, max_headers: 3, max_body: 10, ..Limits::default() }
}

#[test]
fn new_parser_gives_the_old_verdicts_on_the_fuzz_corpus() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds");
    let mut heads = 0;
    for entry in std::fs::read_dir(dir).expect("fuzz/seeds") {
        let data = std::fs::read(entry.expect("a seed").path()).expect("a seed");
        // The client's bytes, without the schedule of engine events.
        let stream = match data
            .windows(crate::testing::fuzz::SCHEDULE.len())
            .position(|w| w == crate::testing::fuzz::SCHEDULE)
        {
            Some(at) => &data[..at],
            None => &data[..],
        };
        // Every line start may begin a head (pipelined requests, bodies, garbage).
        let starts = std::iter::once(0).chain(memchr::memchr_iter(b'\n', stream).map(|i| i + 1));
        for start in starts.filter(|&s| s < stream.len()) {
            for limits in [Limits::default(), small_limits()] {
                let input = &stream[start..stream.len().min(start + limits.max_head + 64)];
                same_verdicts(&limits, input, 64);
            }
            heads += 1;
        }
    }
    assert!(heads > 500, "only {heads} heads in the corpus");
}

#[test]
fn new_parser_gives_the_old_verdicts_on_edge_cases() {
    let cases: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\rX",
        b"GET / HTTP/1.1\r\nHost: a\r\n\rX\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \t \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n:a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\nContent-Length: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: x\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nExpect: x\r\nHost: a b\r\nBad Line\r\n\r\n",
        b"GET / HTTP/1.1\r\nExpect: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"PATCH /x HTTP/1.1\r\nHost: a\r\nIf-None-Match: x\r\nRange: bytes=1-\r\nIf-Range: y\r\nIf-Modified-Since: z\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \x80\xff\r\n\r\n",
        // Optional whitespace around the values read, SP and HTAB mixed; obs-text kept.
        b"POST / HTTP/1.1\r\nHost:\ta\t\r\nContent-Length:\t 3 \t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\x80\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \t \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \x80a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: \tclose\t \r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect:\t100-continue\t\r\nContent-Length: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
        b"GET / HTTP/1.1\r\nhOsT: a\r\nHOST: b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ];
    for input in cases {
        for limits in [Limits::default(), small_limits()] {
            same_verdicts(&limits, input, usize::MAX);
        }
    }
}

/// Pieces heads are made of: valid ones and the mistakes a strict parser must catch.
fn head() -> impl Strategy<Value = Vec<u8>> {
    let line = prop::sample::select(vec![
        &b"GET / HTTP/1.1\r\n"[..],
        b"GET / HTTP/1.0\r\n",
        b"GET /a?b HTTP/1.1\n",
        b"POST /echo HTTP/1.1\r\n",
        b"OPTIONS * HTTP/1.1\r\n",
        b"CONNECT a:1 HTTP/1.1\r\n",
        b"HEAD http://h/x HTTP/1.1\r\n",
        b"BREW / HTTP/1.1\r\n",
        b"GET / HTTP/2.0\r\n",
        b"GET /a b HTTP/1.1\r\n",
    ]);
    let name = prop::sample::select(vec![
        &b"Host"[..],
        b"host",
        b"HOST",
        b"Content-Length",
        b"content-length",
        b"Transfer-Encoding",
        b"Connection",
        b"Expect",
        b"Content-Type",
        b"Range",
        b"If-None-Match",
        b"If-Modified-Since",
        b"If-Range",
        b"Accept-Encoding",
        b"User-Agent",
        b"cookie",
        b"Sec-Fetch-Mode",
        b"UPGRADE-INSECURE-REQUESTS",
        b"Accept",
        b"If-Rangex",
        b"X-A",
        b"Hosts",
        b"Bad Name",
        b"",
        b" Host",
        b"X(",
    ]);
    let colon = prop::sample::select(vec![&b":"[..], b": ", b":\t", b" :", b"", b":  "]);
    let value_piece = prop::sample::select(vec![
        &b"x"[..],
        b"a.b:80",
        b"[::1]",
        b"0",
        b"5",
        b"12",
        b"-1",
        b"chunked",
        b"gzip",
        b"close",
        b"keep-alive",
        b"100-continue",
        b",",
        b" ",
        b"\t",
        b";q=1",
        b"\x01",
        b"\x7f",
        b"\x80",
        b"\xff",
        b"\r",
        b"\0",
        b"text/plain",
        b"0123456789abcdef",
    ]);
    let end = prop::sample::select(vec![&b"\r\n"[..], b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n"]);
    let field = (name, colon, prop::collection::vec(value_piece, 0..4), end).prop_map(|(n, c, v, e)| {
        let mut f = [n, c].concat();
        f.extend(v.concat());
        f.extend_from_slice(e);
        f
    });
    let last = prop::sample::select(vec![&b"\r\n"[..], b"\n", b"", b"\r", b"\r\nGET / HTTP/1.1\r\n"]);
    let edit = (any::<prop::sample::Index>(), any::<u8>(), 0..3u8);
    (line, prop::collection::vec(field, 0..7), last, prop::collection::vec(edit, 0..3)).prop_map(
        |(line, fields, last, edits)| {
            let mut h = line.to_vec();
            h.extend(fields.concat());
            h.extend_from_slice(last);
            for (at, byte, kind) in edits {
                let i = at.index(h.len() + 1);
                match kind {
                    0 if i < h.len() => h[i] = byte,
                    1 => h.insert(i, byte),
                    _ if i < h.len() => {
                        h.remove(i);
                    }
                    _ => {}
                }
            }
            h
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn new_parser_gives_the_old_verdicts_on_generated_heads(
        h in head(),
        max_head in prop::sample::select(vec![64usize, 100, 200, 8192]),
        max_headers in 1usize..6,
        max_body in 0u64..20,
    ) {
        same_verdicts(&Limits::default(), &h, usize::MAX);
        same_verdicts(&Limits { max_head, max_headers, max_body, ..Limits::default() }, &h, usize::MAX);
    }
}

#[test]
fn known_names_match_in_any_case_and_nothing_else() {
    let mut first = 0;
    for k in &KNOWN {
        assert!(k.want[0] as u8 >= first, "KNOWN is grouped by first letter");
        first = k.want[0] as u8;
        let lower: Vec<u8> = (0..k.len).map(|i| (k.want[i / 8] >> (i % 8 * 8)) as u8).collect();
        assert!(lower.iter().all(|&b| is_tchar(b)));
        assert_eq!(Name::of(&lower), k.name, "{:?}", String::from_utf8_lossy(&lower));
        let padded = |name: &[u8], rest: &[u8]| [name, rest, &[b'x'; 32][..]].concat();
        for name in [lower.clone(), lower.to_ascii_uppercase()] {
            let line = padded(&name, b": v\r\n");
            assert_eq!(known_name(&line).map(|k| k.len), Some(k.len), "{:?}", String::from_utf8_lossy(&line));
        }
        // One byte more, or any byte changed to one that is not the same letter in the
        // other case, is not the name.
        assert!(known_name(&padded(&lower, b"s: v")).is_none_or(|m| m.len != k.len));
        for i in 0..=k.len {
            for b in 0..=255u8 {
                let mut line = padded(&lower, b": v");
                if line[i] == b || line[i].eq_ignore_ascii_case(&b) {
                    continue;
                }
                line[i] = b;
                assert!(
                    known_name(&line).is_none_or(|m| m.len != k.len || m.name != k.name),
                    "{:?}",
                    String::from_utf8_lossy(&line)
                );
            }
        }
        // Too few bytes to compare in words: left to the byte-by-byte scan.
        assert!(known_name(&lower).is_none());
    }
}

#[test]
fn value_end_stops_at_the_first_control_or_del_wherever_it_is() {
    // Byte by byte, as RFC 9110 §5.5 reads: HTAB, SP, visible ASCII and obs-text pass.
    let reference = |h: &[u8], i: usize| i + h[i..].iter().position(|&b| !VALUE[b as usize]).unwrap_or(h.len() - i);
    for len in 0..40 {
        for start in 0..3.min(len + 1) {
            for at in start..=len {
                for (stop, filler) in [(b'\r', b'a'), (0x7f, b'\t'), (0, 0x80), (0x1f, b' '), (b'\n', 0xff)] {
                    let mut h = vec![filler; len];
                    if at < len {
                        h[at] = stop;
                    }
                    // A tab just before the stop, and one at the start, are stepped over.
                    if at > start {
                        h[at - 1] = b'\t';
                    }
                    assert_eq!(value_end(&h, start), reference(&h, start), "{h:?} from {start}");
                }
            }
        }
    }
}

#[test]
fn first_stop_finds_the_first_control_or_del_among_sixteen_bytes() {
    for b in 0..=255u8 {
        for at in 0..16 {
            let mut chunk = [b'a'; 16];
            chunk[at] = b;
            let stop = b < 0x20 || b == 0x7f;
            assert_eq!(first_stop(&chunk), if stop { at } else { 16 }, "byte {b:#x} at {at}");
            // A later stop does not hide an earlier one.
            chunk[15] = b'\r';
            assert_eq!(first_stop(&chunk), if stop { at } else { 15 }, "byte {b:#x} at {at}, CR last");
        }
    }
    assert_eq!(first_stop(&[0x80; 16]), 16, "obs-text passes");
}
