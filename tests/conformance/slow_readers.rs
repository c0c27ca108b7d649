//! Clients that make the server send a lot (slow readers holding large unread
//! responses, a deep pipeline of answers nobody reads yet) never hold the loop: a fresh
//! client is answered before the server has sent them more than a small part.
//!
//! Each test registers the heavy clients, stops the server ([`Server::pause`]), lets
//! them ask and a fresh client connect and ask for `/metrics`, then resumes the server:
//! it finds everything at once, the heavy clients' requests first. The fresh client's
//! answer reports the server's counters at the moment it was answered, so the order in
//! which the server did its work is read from the outcome, not from a clock.

use crate::common::{Client, Server};
use crate::{prometheus_value, TempTree};
use std::io::Write;
use std::time::Duration;

per_engine!(
    slow_readers_of_large_files_do_not_hold_back_a_fresh_client,
    a_deep_pipeline_of_unread_answers_does_not_hold_back_a_fresh_client,
    files_over_64kib_are_streamed_by_default_on_every_engine,
    a_client_that_stops_reading_is_waited_for_not_polled,
);

const GET_METRICS: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

/// Connects a fresh client while the server is paused and sends `GET /metrics`; the
/// server answers once resumed.
fn fresh_metrics_client(server: &Server) -> Client {
    let mut fresh = server.connect();
    fresh.send(GET_METRICS);
    fresh
}

/// The value of counter `name` in a `/metrics` answer.
fn counter(text: &str, name: &str) -> f64 {
    prometheus_value(text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// 64 slow readers (4 KiB receive windows) each ask for a 1 MiB file and read nothing;
/// their sockets would take it all at once. Then a fresh client asks: by the time it is
/// answered the server has sent the slow readers less than a quarter of what they asked
/// for, whether the file is held in memory or streamed from the page cache.
fn slow_readers_of_large_files_do_not_hold_back_a_fresh_client(engine: &str) {
    const READERS: usize = 64;
    const BIG: usize = 1 << 20;
    let t = TempTree::new("slow-readers");
    t.write("site/big.bin", &vec![b'x'; BIG]);
    t.write("site/small.txt", b"small");
    let site = t.path("site");
    for max_cached in ["2MiB", "0"] {
        let what = format!("--max-cached-file {max_cached}");
        let server = Server::start(engine, &["--dir", &site, "--metrics", "/metrics", "--max-cached-file", max_cached]);
        let mut readers: Vec<Client> = (0..READERS)
            .map(|_| {
                let stream = server.connect_small_rcvbuf(4096);
                let mut reader = Client::from_stream(stream);
                // Accepted and registered before the pause.
                reader.send(b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n");
                assert_eq!(reader.read_response().status, 200, "{what}");
                reader
            })
            .collect();
        server.pause();
        for reader in &mut readers {
            reader.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        let mut fresh = fresh_metrics_client(&server);
        server.resume();
        let answer = fresh.read_response();
        assert_eq!(answer.status, 200, "{what}");
        let written = counter(&answer.body_str(), "duet_written_bytes_total");
        let asked = (READERS * BIG) as f64;
        assert!(
            written < asked / 4.0,
            "{what}: {written} bytes sent before a fresh client was answered; the slow readers asked for {asked}"
        );
    }
}

/// A client pipelines 1,000 requests for a 2 KiB response and reads nothing; the
/// server's socket buffers would take all 2 MiB of answers at once. Then a fresh client
/// asks: it is answered before all 1,000 are.
fn a_deep_pipeline_of_unread_answers_does_not_hold_back_a_fresh_client(engine: &str) {
    const PIPELINED: usize = 1000;
    let route = format!("/kb={}", "k".repeat(2048));
    let server = Server::start(engine, &["--route", &route, "--metrics", "/metrics"]);
    let mut deep = server.connect();
    // Accepted and registered before the pause.
    deep.send(b"GET /kb HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(deep.read_response().status, 200);
    server.pause();
    // 30 KB: one read's worth, inside the server's receive window.
    deep.send(&b"GET /kb HTTP/1.1\r\nHost: x\r\n\r\n".repeat(PIPELINED));
    let mut fresh = fresh_metrics_client(&server);
    server.resume();
    let answer = fresh.read_response();
    assert_eq!(answer.status, 200);
    let answered = counter(&answer.body_str(), "duet_requests_total") - 1.0; // less the first
    assert!(answered < PIPELINED as f64, "all {PIPELINED} pipelined answers came before the fresh client's");
    // The pipelined client still gets every answer.
    let answers = deep.read_responses(PIPELINED);
    assert!(answers.iter().all(|r| r.status == 200 && r.body.len() == 2048));
}

/// By default every engine serves a file over 64 KiB from the page cache with
/// `sendfile` (no copy into each socket; io_uring from its loop, see docs/io_uring.md)
/// and one of 64 KiB from memory; all answer it alike.
fn files_over_64kib_are_streamed_by_default_on_every_engine(engine: &str) {
    let t = TempTree::new("default-cache");
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    t.write("site/mid.bin", &body);
    t.write("site/small.bin", &vec![b's'; 64 * 1024]);
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let want = "2 files and 0 routes: 1 body cached (65536 bytes in memory), 1 streamed from disk (100000 bytes)";
    let lines = server.stderr_lines();
    assert!(lines.iter().any(|l| l.contains(want)), "{engine}: expected {want:?} in {lines:?}");
    let mut c = server.connect();
    c.send(b"GET /mid.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert!(r.status == 200 && r.body == body, "{engine}: status {}", r.status);
}

/// A client pipelines 6,000 requests for a 2 KiB answer and stops reading: the server
/// fills the socket, cannot send more, and has input it must not read yet (it would
/// only queue more answers). It must then wait for the socket, not poll it: a
/// level-triggered selector still watching for input, or for room to write, would wake
/// at every turn. The server's counters over a quiet window tell (the window scales
/// what a spinning loop would show; nothing waits for it). Then every answer arrives.
fn a_client_that_stops_reading_is_waited_for_not_polled(engine: &str) {
    const PIPELINED: usize = 6000;
    let route = format!("/kb={}", "k".repeat(2048));
    let server = Server::start(engine, &["--route", &route, "--metrics", "/metrics"]);
    let mut observer = server.connect();
    let counters = |observer: &mut Client| {
        observer.send(GET_METRICS);
        let text = observer.read_response().body_str();
        (
            counter(&text, "duet_requests_total"),
            counter(&text, "duet_partial_writes_total"),
            counter(&text, "duet_wakeups_total"),
        )
    };
    let stream = server.connect_small_rcvbuf(4096);
    // Written from another thread: the server stops reading before it has all of it.
    let mut writer = stream.try_clone().expect("clone the stream");
    let requests = b"GET /kb HTTP/1.1\r\nHost: x\r\n\r\n".repeat(PIPELINED);
    let writing = std::thread::spawn(move || writer.write_all(&requests));
    // Stuck: a send came up short, and no request but the observer's own was answered
    // since its last look.
    let mut last = counters(&mut observer);
    let stuck = (0..100_000).any(|_| {
        let now = counters(&mut observer);
        let stuck = now.1 > 0.0 && now.0 == last.0 + 1.0;
        last = now;
        stuck
    });
    assert!(stuck, "the server never stopped sending to a client that reads nothing: {last:?}");
    let before = counters(&mut observer);
    std::thread::sleep(Duration::from_millis(300));
    let after = counters(&mut observer);
    let wakeups = after.2 - before.2;
    assert!(wakeups < 50.0, "{engine}: {wakeups} wakeups in a 300 ms window while a client read nothing (a busy loop)");
    let mut client = Client::from_stream(stream);
    let answers = client.read_responses(PIPELINED);
    assert!(answers.iter().all(|r| r.status == 200 && r.body.len() == 2048));
    writing.join().expect("the writer").expect("writing the requests");
}
