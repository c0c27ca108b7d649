//! `duet load` end to end: the real binary against `duet serve` (both engines) and against
//! small servers written here, each misbehaving in one known way. Loopback only; every run
//! is bounded by its `-d` and by a watchdog.

mod common;

use common::Server;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const DUET: &str = env!("CARGO_BIN_EXE_duet");

/// Runs `duet load ARGS`, killing it if it is still running after 30 s.
fn load(args: &[&str]) -> Output {
    let child = Command::new(DUET)
        .arg("load")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn duet load");
    let pid = child.id() as libc::pid_t;
    let done = Arc::new(AtomicBool::new(false));
    let watchdog_done = Arc::clone(&done);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        if !watchdog_done.load(Ordering::SeqCst) {
            // SAFETY: kill takes no pointers; the child has not been reaped (done is
            // false), so the pid still names it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().expect("wait for duet load");
    done.store(true, Ordering::SeqCst);
    out
}

/// Runs `duet load --json ARGS`, expects success, returns the parsed object.
fn load_json(args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = load(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "duet load {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

/// Runs `duet load ARGS`, expects failure, returns stderr (which must be one line).
fn load_error(args: &[&str]) -> String {
    let out = load(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "duet load {args:?} should fail; stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.starts_with("duet: error: "), "{stderr}");
    stderr
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut v = v;
    for key in path {
        v = &v[key];
    }
    v.as_u64().unwrap_or_else(|| panic!("{path:?} is not an integer in {v}"))
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for key in path {
        v = &v[key];
    }
    v.as_f64().unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

fn assert_no_errors(v: &Value) {
    for kind in ["connect", "read", "write", "timeout", "status"] {
        assert_eq!(u(v, &["errors", kind]), 0, "{kind} errors in {v}");
    }
}

// ---------------------------------------------------------------------------------------
// The real server.

/// `duet serve --engine ENGINE --port 0 --threads 1` from the shared harness (killed on
/// drop, panics included); `None` (with the reason printed) when the engine cannot run
/// here and DUET_REQUIRE_URING is not set.
fn serve(engine: &str) -> Option<Server> {
    if let Some(reason) = common::skip_reason(engine) {
        println!("skipping: the {engine} engine cannot run here: {reason}");
        return None;
    }
    Some(Server::start(engine, &[]))
}

/// The URL of the server's `/`.
fn url(server: &Server) -> String {
    format!("http://{}/", server.addr)
}

fn closed_loop_against_duet_serve(engine: &str) {
    let Some(server) = serve(engine) else { return };
    let v = load_json(&["-c", "8", "-t", "2", "-d", "1s", &url(&server)]);
    assert!(u(&v, &["requests"]) > 100, "{v}");
    assert_no_errors(&v);
    let d = f(&v, &["duration_s"]);
    assert!((0.9..2.0).contains(&d), "duration_s {d}");
    let rps = f(&v, &["requests_per_sec"]);
    assert!((rps - u(&v, &["requests"]) as f64 / d).abs() < rps * 0.01 + 1.0, "{v}");
    assert!(u(&v, &["bytes_read"]) >= u(&v, &["requests"]) * 13, "every response carries Hello, World!");
    let lat = |k| u(&v, &["latency_us", k]);
    assert!(lat("p50") >= 1 && lat("p50") <= lat("p75") && lat("p75") <= lat("p90"));
    assert!(lat("p90") <= lat("p99") && lat("p99") <= lat("p999") && lat("p999") <= lat("max"));
    assert!(f(&v, &["latency_us", "mean"]) > 0.0);
    assert!(v.get("server").is_none(), "no server figures without --server-pid");
}

#[test]
fn closed_loop_against_epoll_engine_has_no_errors() {
    closed_loop_against_duet_serve("epoll");
}

#[test]
fn closed_loop_against_uring_engine_has_no_errors() {
    closed_loop_against_duet_serve("uring");
}

fn pipelined_idle_and_server_pid(engine: &str) {
    let Some(server) = serve(engine) else { return };
    let pid = server.pid().to_string();
    let v = load_json(&[
        "-c",
        "4",
        "-t",
        "1",
        "-d",
        "1s",
        "--depth",
        "8",
        "--idle",
        "50",
        "--server-pid",
        &pid,
        &url(&server),
    ]);
    assert!(u(&v, &["requests"]) > 100, "{v}");
    assert_no_errors(&v);
    assert_eq!(u(&v, &["depth"]), 8);
    assert_eq!(u(&v, &["idle_held"]), 50, "every idle connection stays open: {v}");
    assert!(f(&v, &["server", "cpu_s"]) > 0.0, "the server worked: {v}");
    assert!(f(&v, &["server", "cpu_us_per_req"]) > 0.0, "{v}");
    assert!(u(&v, &["server", "rss_peak_bytes"]) > 100_000, "{v}");
}

#[test]
fn pipelining_idle_connections_and_server_cpu_against_epoll_engine() {
    pipelined_idle_and_server_pid("epoll");
}

#[test]
fn pipelining_idle_connections_and_server_cpu_against_uring_engine() {
    pipelined_idle_and_server_pid("uring");
}

#[test]
fn head_requests_are_framed_without_a_body() {
    let Some(server) = serve("epoll") else { return };
    let v = load_json(&["-c", "2", "-t", "1", "-d", "1s", "--method", "HEAD", "--depth", "4", &url(&server)]);
    assert!(u(&v, &["requests"]) > 100, "{v}");
    assert_no_errors(&v);
}

#[test]
fn text_output_follows_wrk_and_has_no_progress_line_off_a_terminal() {
    let Some(server) = serve("epoll") else { return };
    let out = load(&["-c", "2", "-t", "1", "-d", "1s", "--latency", "--warmup", "300ms", &url(&server)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Running 1.00s test @ http://"), "{text}");
    for needle in ["  1 threads and 2 connections", "Thread Stats", "Latency Distribution", "     99%"] {
        assert!(text.contains(needle), "missing {needle:?}: {text}");
    }
    let rps_line = text.lines().find(|l| l.starts_with("Requests/sec:")).expect("Requests/sec line");
    let rps: f64 = rps_line["Requests/sec:".len()..].trim().parse().expect("a number after Requests/sec:");
    assert!(rps > 50.0, "{text}");
    assert!(text.lines().any(|l| l.starts_with("Transfer/sec:")), "{text}");
    assert!(!text.contains('\x1b') && !text.contains('\r'), "no progress line when stdout is a pipe");
}

// ---------------------------------------------------------------------------------------
// Test servers, each one misbehaving (or behaving) in a known way.

/// Accepts on 127.0.0.1 and runs `handle` on a thread per connection. Threads end when
/// their client goes away; the test process ends the rest.
fn test_server(handle: fn(TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test server");
    let url = format!("http://{}/", listener.local_addr().expect("local addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || handle(stream));
        }
    });
    url
}

/// Reads one request head; false at EOF.
fn read_request(reader: &mut BufReader<TcpStream>) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line == "\r\n" => return true,
            Ok(_) => {}
        }
    }
}

/// Answers every request with `response` written in pieces (so the client must frame
/// responses split across reads), optionally closing after each one.
fn answer_each(stream: TcpStream, response: &[u8], pieces: usize, close: bool) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream);
    while read_request(&mut reader) {
        let step = response.len().div_ceil(pieces);
        for piece in response.chunks(step) {
            if writer.write_all(piece).and_then(|()| writer.flush()).is_err() {
                return;
            }
        }
        if close {
            return;
        }
    }
}

const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHello\r\n8;ext=1\r\n, World!\r\n0\r\nX-Trailer: yes\r\n\r\n";

#[test]
fn chunked_responses_are_framed() {
    let url = test_server(|s| answer_each(s, CHUNKED, 3, false));
    let v = load_json(&["-c", "4", "-t", "2", "-d", "1s", &url]);
    assert!(u(&v, &["requests"]) > 50, "{v}");
    assert_no_errors(&v);
    assert_eq!(u(&v, &["reconnects"]), 0, "chunked responses keep the connection: {v}");
    // One counted request per whole chunked response; at most one partial response per
    // connection is in flight when the run stops.
    let (bytes, requests, len) = (u(&v, &["bytes_read"]), u(&v, &["requests"]), CHUNKED.len() as u64);
    assert!(bytes >= requests * len && bytes < (requests + 4) * len, "one request per whole response: {v}");
}

#[test]
fn server_closing_after_every_response_is_reconnected_and_counted() {
    let url = test_server(|s| {
        answer_each(s, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 1, true)
    });
    let v = load_json(&["-c", "2", "-t", "1", "-d", "1s", &url]);
    let requests = u(&v, &["requests"]);
    assert!(requests > 20, "{v}");
    assert_no_errors(&v);
    let reconnects = u(&v, &["reconnects"]);
    assert!(reconnects + 2 >= requests && reconnects <= requests + 2, "one reconnect per response: {v}");
}

#[test]
fn responses_without_length_end_at_the_close() {
    let url = test_server(|s| answer_each(s, b"HTTP/1.0 200 OK\r\n\r\nbody until close", 2, true));
    let v = load_json(&["-c", "2", "-t", "1", "-d", "1s", &url]);
    assert!(u(&v, &["requests"]) > 20, "{v}");
    assert_no_errors(&v);
}

#[test]
fn server_errors_are_counted_as_status_errors() {
    let url = test_server(|s| {
        answer_each(s, b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops", 1, false)
    });
    let v = load_json(&["-c", "2", "-t", "1", "-d", "1s", &url]);
    let requests = u(&v, &["requests"]);
    assert!(requests > 20, "{v}");
    assert_eq!(u(&v, &["errors", "status"]), requests, "every 500 counts: {v}");
    for kind in ["connect", "read", "write", "timeout"] {
        assert_eq!(u(&v, &["errors", kind]), 0, "{v}");
    }
}

const DELAY: Duration = Duration::from_millis(50);

/// Answers each request after DELAY, one at a time per connection.
fn delayed(stream: TcpStream) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while read_request(&mut reader) {
        std::thread::sleep(DELAY);
        if writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
            return;
        }
    }
}

#[test]
fn latency_of_a_delaying_server_is_its_delay() {
    let url = test_server(delayed);
    let v = load_json(&["-c", "4", "-t", "1", "-d", "1s", &url]);
    let delay_us = DELAY.as_micros() as u64;
    let p50 = u(&v, &["latency_us", "p50"]);
    assert!(p50 >= delay_us * 99 / 100 && p50 < delay_us * 3 + 20_000, "p50 {p50} us for a {delay_us} us delay");
    let requests = u(&v, &["requests"]);
    // 4 connections, one request per 50 ms each, for 1 s: about 80.
    assert!((20..=100).contains(&requests), "{v}");
    assert_no_errors(&v);
}

#[test]
fn open_loop_above_capacity_shows_the_backlog_in_the_percentiles() {
    let url = test_server(delayed);
    // Capacity: 2 connections x 20/s = 40/s. Asking 200/s builds a backlog; latency from
    // the intended send time must grow with it, where a closed loop would hide it.
    let v = load_json(&["-c", "2", "-t", "1", "-d", "1s", "--rate", "200", &url]);
    let delay_us = DELAY.as_micros() as u64;
    let p50 = u(&v, &["latency_us", "p50"]);
    let p99 = u(&v, &["latency_us", "p99"]);
    assert!(p99 >= delay_us * 5, "corrected p99 {p99} us should reflect the backlog: {v}");
    assert!(p50 >= delay_us * 2, "{v}");
    assert!(p99 > p50, "{v}");
    assert!(f(&v, &["rate"]) == 200.0);

    // At a rate the server can take, latency stays near the delay.
    let v = load_json(&["-c", "2", "-t", "1", "-d", "1s", "--rate", "20", &url]);
    let p50 = u(&v, &["latency_us", "p50"]);
    assert!(p50 >= delay_us * 99 / 100 && p50 < delay_us * 3 + 20_000, "p50 {p50} us below capacity: {v}");
}

#[test]
fn a_server_that_never_answers_produces_timeouts() {
    let url = test_server(|mut s| {
        // Read (and ignore) until the client goes away.
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let v = load_json(&["-c", "2", "-t", "1", "-d", "1s", "--timeout", "200ms", &url]);
    assert_eq!(u(&v, &["requests"]), 0, "{v}");
    assert!(u(&v, &["errors", "timeout"]) >= 4, "2 connections x ~5 timeouts each: {v}");
    assert_eq!(u(&v, &["latency_us", "p99"]), 0, "{v}");
}

#[test]
fn a_server_sending_garbage_is_one_clear_error() {
    let url = test_server(|s| answer_each(s, b"SSH-2.0-OpenSSH_9.2p1\r\n", 1, false));
    let err = load_error(&["-c", "2", "-t", "1", "-d", "1s", &url]);
    assert!(err.contains("invalid HTTP response") && err.contains("not an HTTP/1.x response"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Refusals before the run.

#[test]
fn connection_refused_is_one_clear_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let err = load_error(&["-d", "1s", &format!("http://127.0.0.1:{port}/")]);
    assert!(err.contains("connection refused"), "{err}");
}

#[test]
fn https_and_bad_urls_are_refused() {
    let err = load_error(&["https://127.0.0.1:1/"]);
    assert!(err.contains("https:// is not supported"), "{err}");
    for bad in ["127.0.0.1:8080", "http://127.0.0.1:notaport/", "http:///x"] {
        let err = load_error(&[bad]);
        assert!(err.contains("bad URL"), "{bad}: {err}");
    }
}

#[test]
fn more_connections_than_the_file_limit_are_refused_before_starting() {
    let err = load_error(&["-c", "10", "--idle", "1000000000000", "-d", "1s", "http://127.0.0.1:1/"]);
    assert!(err.contains("open files") && err.contains("limit"), "{err}");
}
