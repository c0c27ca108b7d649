//! The fuzz corpus on stable: every seed in `fuzz/seeds/` goes through the fuzz harness
//! (`duet_http::testing::fuzz`, the one the fuzz targets call), so `cargo test --workspace` checks
//! the invariants the fuzz targets check without nightly or cargo-fuzz. Each seed runs
//! as both targets run it, then under every limits/site/ending configuration with the
//! whole-input, byte-by-byte and PRNG-drawn schedules. The checks themselves are tested
//! below on output they must refuse.

use duet_http::testing::fuzz::{self as harness, Config, Input, Op, Run, SCHEDULE};
use std::path::{Path, PathBuf};

fn seeds() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("the seed corpus {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries.map(|e| e.expect("read the seed directory").path()).collect();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

/// Replays each file; returns those that broke an invariant.
fn replay_all(files: &[PathBuf]) -> Vec<String> {
    let mut failed = Vec::new();
    for path in files {
        let data = std::fs::read(path).expect("read a seed");
        if std::panic::catch_unwind(|| harness::replay(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    failed
}

#[test]
fn every_fuzz_seed_keeps_every_harness_invariant() {
    let files = seeds();
    assert!(files.len() >= 20, "the seed corpus fuzz/seeds/ holds only {} files", files.len());
    // Two threads: the machine has two cores and the seeds are independent.
    let (a, b) = files.split_at(files.len() / 2);
    let failed: Vec<String> = std::thread::scope(|s| {
        let other = s.spawn(|| replay_all(b));
        let mut failed = replay_all(a);
        failed.extend(other.join().expect("the replay thread"));
        failed
    });
    assert!(failed.is_empty(), "seeds that broke an invariant (the panic above says which): {failed:?}");
}

#[test]
fn seeds_with_a_schedule_use_it_and_plain_seeds_draw_one() {
    let mut data = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    let plain = Input::parse(&data);
    assert_eq!(plain.stream, &data[..]);
    assert!(plain.ops.iter().any(|op| matches!(op, Op::Read(_))), "a drawn schedule reads the stream");
    let stream_len = data.len();
    data.extend_from_slice(SCHEDULE);
    data.extend_from_slice(&[9, 0, 3, 4, 7, 7, 15, 10, 0]);
    let input = Input::parse(&data);
    assert_eq!(input.stream.len(), stream_len);
    assert_eq!(input.config, Config { limits: 1, disk: false, peer_stops_reading: true, echo: false });
    assert_eq!(
        input.ops,
        [Op::Read(4), Op::BeginSend { n: 8, iov: 2 }, Op::Advance(std::time::Duration::from_secs(600)), Op::Eof,]
    );
}

/// A run whose peer "received" `out`; `check` then judges it.
fn judged(stream: &[u8], out: &[u8]) {
    let mut run = Run::new(stream, Config::from_byte(0), false);
    run.apply(Op::Read(stream.len()));
    run.driver.out = out.to_vec();
    run.check();
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

#[test]
fn the_checker_accepts_one_response_per_request_plus_one_error() {
    let two_requests = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    judged(two_requests, &[OK, OK, OK].concat());
    judged(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[b"HTTP/1.1 100 Continue\r\n\r\n", OK, OK].concat());
}

#[test]
#[should_panic(expected = "final responses for at most 1 complete requests")]
fn the_checker_refuses_more_responses_than_requests_plus_one() {
    judged(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[OK, OK, OK].concat());
}

#[test]
#[should_panic(expected = "a response after one with Connection: close")]
fn the_checker_refuses_a_response_after_connection_close() {
    let close = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n";
    judged(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", &[&close[..], OK].concat());
}

#[test]
#[should_panic(expected = "response head")]
fn the_checker_refuses_a_head_longer_than_the_bound() {
    let long = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; harness::HEAD_MAX], b"\r\n\r\n"].concat();
    judged(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &long);
}

#[test]
fn the_output_bound_is_the_cap_plus_one_response_plus_the_queued_files() {
    let small = Config::from_byte(1);
    let limits = small.limits();
    assert_eq!(harness::response_max(&limits), harness::HEAD_MAX + 5000, "the /big body dominates a 128-byte head");
    assert_eq!(harness::output_max(&small), 1023 + harness::HEAD_MAX + 5000);
    let disk = Config { disk: true, ..small };
    assert_eq!(harness::output_max(&disk), harness::output_max(&small) + 4 * 6000);
    let echo = Config { echo: true, ..small };
    assert_eq!(harness::output_max(&echo), harness::output_max(&small), "a 64-byte echo is below /big");
    let echo_default = Config::from_byte(16);
    assert_eq!(
        harness::output_max(&echo_default),
        256 * 1024 - 1 + harness::HEAD_MAX + (1 << 20),
        "an echoed 1 MiB body"
    );
    let default = Config::from_byte(0);
    assert_eq!(harness::response_max(&default.limits()), harness::HEAD_MAX + 8192 + 22, "a 301 echoing the target");
}
