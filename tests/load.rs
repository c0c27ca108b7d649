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

/// Runs `duet load ARGS`, expects clap's usage error (exit 2, its hint naming
/// `duet load --help`), returns stderr.
fn usage_error(args: &[&str]) -> String {
    let out = load(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "duet load {args:?}: {stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("duet load --help"), "{stderr}");
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

/// The HdrHistogram serialized under `key`.
fn histogram(v: &Value, key: &str) -> hdrhistogram::Histogram<u64> {
    let text = v[key]["histogram"].as_str().unwrap_or_else(|| panic!("no {key}.histogram in {v}"));
    duet_loadtest::decode_histogram(text).unwrap_or_else(|e| panic!("{key}.histogram: {e}"))
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
    assert!(lat("p90") <= lat("p95") && lat("p95") <= lat("p99") && lat("p99") <= lat("p999"));
    assert!(lat("p999") <= lat("p9999") && lat("p9999") <= lat("max"));
    assert!(f(&v, &["latency_us", "mean"]) > 0.0);
    let h = histogram(&v, "latency_us");
    assert_eq!(h.len(), u(&v, &["requests"]), "the histogram holds every response");
    assert_eq!(h.value_at_quantile(0.99), lat("p99"));
    assert_eq!(u(&v, &["status", "codes", "200"]), u(&v, &["requests"]), "{v}");
    assert_eq!(u(&v, &["status", "2xx"]), u(&v, &["requests"]), "{v}");
    assert!(v.get("uncorrected_latency_us").is_none(), "closed loop: one latency");
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
    for needle in [
        "  1 threads and 2 connections",
        "Thread Stats",
        "  Latency Distribution (HdrHistogram - Recorded Latency)\n 50.000%",
        "\n 99.000%",
        "\n100.000%",
        "  Detailed Percentile spectrum:\n       Value   Percentile   TotalCount 1/(1-Percentile)\n",
        "     1.000000 ",
        "#[Buckets = ",
        "  Status codes: 2xx ",
    ] {
        assert!(text.contains(needle), "missing {needle:?}: {text}");
    }
    assert!(!text.contains("Uncorrected"), "closed loop has no uncorrected latency: {text}");
    let rps_line = text.lines().find(|l| l.starts_with("Requests/sec:")).expect("Requests/sec line");
    let rps: f64 = rps_line["Requests/sec:".len()..].trim().parse().expect("a number after Requests/sec:");
    assert!(rps > 50.0, "{text}");
    assert!(text.lines().any(|l| l.starts_with("Transfer/sec:")), "{text}");
    assert!(!text.contains('\x1b') && !text.contains('\r'), "no progress line on stdout");
    assert!(
        out.stderr.is_empty(),
        "no progress bar when stderr is not a terminal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn progress_goes_to_stderr_on_a_terminal_with_the_warm_up_labelled() {
    let Some(server) = serve("epoll") else { return };
    // script(1) gives the command a terminal; stdout goes to a file, so what script
    // prints is stderr alone.
    let tmp = tempfile::tempdir().unwrap();
    let stdout_file = tmp.path().join("progress-stdout.txt");
    let command = format!("{DUET} load -c1 -t1 -d600ms --warmup 600ms {} > {}", url(&server), stdout_file.display());
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script(1), from util-linux");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert!(terminal.contains("warm-up ["), "the warm-up is labelled: {terminal:?}");
    assert!(terminal.contains("load ["), "then the measured window: {terminal:?}");
    assert!(terminal.contains(" / 0.6s"), "elapsed of total: {terminal:?}");
    let stdout = std::fs::read_to_string(&stdout_file).expect("stdout file");
    assert!(stdout.starts_with("Running ") && stdout.contains("Requests/sec:"), "{stdout}");
    assert!(!stdout.contains('\r') && !stdout.contains('\x1b') && !stdout.contains("warm-up"), "{stdout:?}");
}

// ---------------------------------------------------------------------------------------
// -n, status codes, open-loop latencies, --merge.

fn request_count_against_duet_serve(engine: &str) {
    let Some(server) = serve(engine) else { return };
    let v = load_json(&["-c", "4", "-t", "2", "-n", "1500", &url(&server)]);
    assert_eq!(u(&v, &["requests"]), 1500, "{v}");
    assert_eq!(u(&v, &["requests_limit"]), 1500, "{v}");
    assert_eq!(u(&v, &["status", "codes", "200"]), 1500, "{v}");
    assert_eq!(histogram(&v, "latency_us").len(), 1500);
    assert_no_errors(&v);
}

#[test]
fn a_request_count_ends_the_run_against_epoll_engine() {
    request_count_against_duet_serve("epoll");
}

#[test]
fn a_request_count_ends_the_run_against_uring_engine() {
    request_count_against_duet_serve("uring");
}

#[test]
fn a_request_count_at_a_rate_follows_the_schedule_and_keeps_both_latencies() {
    let Some(server) = serve("epoll") else { return };
    let v = load_json(&["-c", "2", "-t", "1", "-n", "200", "--rate", "1000", &url(&server)]);
    assert_eq!(u(&v, &["requests"]), 200, "{v}");
    // The 200th request is scheduled 199 ms after the first: an open loop cannot be done sooner.
    assert!(f(&v, &["duration_s"]) >= 0.199, "{v}");
    let corrected = histogram(&v, "latency_us");
    let uncorrected = histogram(&v, "uncorrected_latency_us");
    assert_eq!((corrected.len(), uncorrected.len()), (200, 200));
    // Each response is timed from its slot in the schedule and from its actual send,
    // which is never earlier: the corrected latency is never below the uncorrected one.
    assert!(corrected.max() >= uncorrected.max() && corrected.mean() >= uncorrected.mean(), "{v}");
    assert_no_errors(&v);

    let out = load(&["-c", "2", "-t", "1", "-n", "100", "--rate", "1000", "--latency", &url(&server)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Running 100 requests test @ "), "{text}");
    let recorded = text.find("HdrHistogram - Recorded Latency").expect(&text);
    let raw = text.find("HdrHistogram - Uncorrected Latency (measured without taking delayed starts into account)");
    assert!(raw.is_some_and(|raw| raw > recorded), "wrk2 -U's second block: {text}");
}

#[test]
fn nonsensical_request_counts_are_refused_by_the_parser() {
    let err = usage_error(&["-n", "10", "-d", "1s", "http://127.0.0.1:1/"]);
    assert!(err.contains("--requests") && err.contains("--duration"), "{err}");
    let err = usage_error(&["-n", "0", "http://127.0.0.1:1/"]);
    assert!(err.contains("--requests") && err.contains("0"), "{err}");
    let err = usage_error(&["--merge", "a.json", "-c", "4"]);
    assert!(err.contains("--merge") && err.contains("--connections"), "{err}");
    let err = usage_error(&[]);
    assert!(err.contains("<URL>"), "{err}");
}

/// Answers 200, 404, 503, 200, 404, 503, ... on each connection.
fn mixed_statuses(stream: TcpStream) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    let answers: [&[u8]; 3] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    let mut k = 0;
    while read_request(&mut reader) {
        if writer.write_all(answers[k % 3]).is_err() {
            return;
        }
        k += 1;
    }
}

#[test]
fn status_codes_are_broken_down_by_class_and_code() {
    let url = test_server(mixed_statuses);
    // One connection, a count divisible by three: exactly a third of each.
    let v = load_json(&["-c", "1", "-t", "1", "-n", "300", &url]);
    assert_eq!(u(&v, &["requests"]), 300, "{v}");
    for (code, class) in [("200", "2xx"), ("404", "4xx"), ("503", "5xx")] {
        assert_eq!(u(&v, &["status", "codes", code]), 100, "{v}");
        assert_eq!(u(&v, &["status", class]), 100, "{v}");
    }
    assert_eq!(u(&v, &["status", "3xx"]), 0, "{v}");
    assert_eq!(u(&v, &["errors", "status"]), 200, "404s and 503s are status errors: {v}");

    let out = load(&["-c", "1", "-t", "1", "-n", "30", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("  Status codes: 2xx 10, 3xx 0, 4xx 10, 5xx 10; by code: 200 10, 404 10, 503 10\n"),
        "{text}"
    );
}

#[test]
fn merged_runs_add_up_exactly_in_json_and_text() {
    let Some(server) = serve("epoll") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("merge-a.json"), tmp.path().join("merge-b.json"));
    let run = |n: &str, path: &std::path::Path| {
        let out = load(&["--json", "-c", "2", "-t", "1", "-n", n, &url(&server)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(path, &out.stdout).expect("write a --json output");
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON")
    };
    let (va, vb) = (run("300", &a), run("500", &b));
    let (pa, pb) = (a.to_str().unwrap(), b.to_str().unwrap());
    let m = load_json(&["--merge", pa, pb]);
    assert_eq!(u(&m, &["requests"]), 800, "{m}");
    assert_eq!(u(&m, &["runs"]), 2);
    assert_eq!(u(&m, &["connections"]), 4);
    assert_eq!(u(&m, &["status", "codes", "200"]), 800);
    assert_eq!(u(&m, &["bytes_read"]), u(&va, &["bytes_read"]) + u(&vb, &["bytes_read"]));
    let mut both = histogram(&va, "latency_us");
    both.add(histogram(&vb, "latency_us")).expect("same bounds");
    let merged = histogram(&m, "latency_us");
    assert_eq!(merged, both, "the merged distribution is exact");
    assert_eq!(u(&m, &["latency_us", "p99"]), both.value_at_quantile(0.99));
    let longest = f(&va, &["duration_s"]).max(f(&vb, &["duration_s"]));
    assert!((f(&m, &["duration_s"]) - longest).abs() < 1e-9, "side by side: the longest window: {m}");

    let out = load(&["--merge", pa, pb, "--latency"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("Merged 2 runs @ http://"), "{text}");
    assert!(text.contains("\n  800 requests in ") && text.contains("Detailed Percentile spectrum"), "{text}");

    // Runs that measured different things are refused; so is a file that is no report.
    let open = tmp.path().join("merge-open.json");
    let out = load(&["--json", "-c", "1", "-t", "1", "-n", "20", "--rate", "1000", &url(&server)]);
    std::fs::write(&open, &out.stdout).expect("write");
    let err = load_error(&["--merge", pa, open.to_str().unwrap()]);
    assert!(err.contains("open-loop"), "{err}");
    std::fs::write(&open, "Requests/sec: 12\n").expect("write");
    let err = load_error(&["--merge", pa, open.to_str().unwrap()]);
    assert!(err.contains("not the JSON of duet load --json"), "{err}");
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
    for key in ["p50", "p99", "max", "mean"] {
        assert!(v["latency_us"][key].is_null(), "no response, no latency: null, not 0: {v}");
    }
    assert_eq!(histogram(&v, "latency_us").len(), 0);
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

// ---------------------------------------------------------------------------------------
// --paths, --seed, --disable-keepalive, -m.

/// What a [`recording_server`] saw: for each connection (in accept order), the request
/// lines it carried and whether each said `Connection: close`.
#[derive(Debug, Default)]
struct Seen {
    connections: Vec<Vec<(String, bool)>>,
}

impl Seen {
    /// Every request line, in order, of the connections that carried any.
    fn request_lines(&self) -> Vec<String> {
        self.connections.iter().flatten().map(|(line, _)| line.clone()).collect()
    }
}

/// A server that answers every request `200 ok` and keeps the connection open whatever
/// the request says, recording what it receives.
fn recording_server() -> (String, Arc<std::sync::Mutex<Seen>>) {
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test server");
    let url = format!("http://{}/", listener.local_addr().expect("local addr"));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let index = {
                let mut seen = record.lock().unwrap();
                seen.connections.push(Vec::new());
                seen.connections.len() - 1
            };
            let record = Arc::clone(&record);
            std::thread::spawn(move || {
                let Ok(mut writer) = stream.try_clone() else { return };
                let mut reader = BufReader::new(stream);
                loop {
                    let (mut first, mut close) = (String::new(), false);
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) if first.is_empty() => first = line.trim_end().to_string(),
                            Ok(_) => close |= line.eq_ignore_ascii_case("connection: close\r\n"),
                        }
                    }
                    record.lock().unwrap().connections[index].push((first, close));
                    if writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

/// A paths file in a temporary directory.
fn paths_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("paths.txt");
    std::fs::write(&file, text).unwrap();
    let name = file.to_str().unwrap().to_string();
    (dir, name)
}

/// `--paths`: each request takes the next path of the file in turn (a thread's requests
/// cycle through all of them), pipelined batches included; `-m` sets the method.
#[test]
fn paths_spread_the_requests_in_turn() {
    let (_dir, file) = paths_file("/a.html\n\n/b/c?x=1\r\n/d\n");
    for depth in ["1", "3"] {
        let (url, seen) = recording_server();
        let v = load_json(&["-t", "1", "-c", "1", "-n", "30", "--depth", depth, "-m", "PUT", "--paths", &file, &url]);
        assert_eq!(u(&v, &["requests"]), 30, "{v}");
        assert_no_errors(&v);
        let lines = seen.lock().unwrap().request_lines();
        let want: Vec<String> =
            ["/a.html", "/b/c?x=1", "/d"].iter().cycle().take(30).map(|p| format!("PUT {p} HTTP/1.1")).collect();
        assert_eq!(lines, want, "depth {depth}");
    }
    // Two threads: each takes every path in turn, starting from its own.
    let (url, seen) = recording_server();
    let v = load_json(&["-t", "2", "-c", "2", "-n", "300", "--paths", &file, &url]);
    assert_eq!(u(&v, &["requests"]), 300, "{v}");
    let lines = seen.lock().unwrap().request_lines();
    for path in ["/a.html", "/b/c?x=1", "/d"] {
        let n = lines.iter().filter(|l| **l == format!("GET {path} HTTP/1.1")).count();
        assert!((98..=102).contains(&n), "{path}: {n} of 300: {lines:?}");
    }
}

/// `--seed N`: the paths are picked at random, the same sequence for the same seed.
#[test]
fn a_seed_picks_paths_at_random_and_repeatably() {
    let text: String = (0..10).map(|i| format!("/p{i}\n")).collect();
    let (_dir, file) = paths_file(&text);
    let run = |seed: &str| {
        let (url, seen) = recording_server();
        let v = load_json(&["-t", "1", "-c", "1", "-n", "200", "--paths", &file, "--seed", seed, &url]);
        assert_eq!(u(&v, &["requests"]), 200, "{v}");
        let lines = seen.lock().unwrap().request_lines();
        lines
    };
    let first = run("7");
    assert_eq!(first, run("7"), "the same seed, the same requests");
    assert_ne!(first, run("8"), "another seed, other requests");
    for i in 0..10 {
        assert!(first.contains(&format!("GET /p{i} HTTP/1.1")), "/p{i} never picked in {first:?}");
    }
    let in_turn: Vec<String> = (0..200).map(|i| format!("GET /p{} HTTP/1.1", i % 10)).collect();
    assert_ne!(first, in_turn, "random, not in turn");
}

/// A paths file that cannot be used is one line naming the file and what is wrong.
#[test]
fn a_bad_paths_file_is_one_clear_line() {
    let (url, _seen) = recording_server();
    for (text, says) in [
        ("", "no paths in it (one per line, e.g. /index.html)"),
        ("\n  \n", "no paths in it"),
        ("/a\nindex.html\n", "line 2: 'index.html' does not start with / (an origin-form path, e.g. /index.html)"),
        ("/a b\n", "line 1: '/a b' has a space, a control character or a non-ASCII byte (percent-encode it"),
        ("/a#top\n", "line 1: '/a#top' has a #fragment"),
    ] {
        let (_dir, file) = paths_file(text);
        let err = load_error(&["-n", "1", "--paths", &file, &url]);
        assert!(err.starts_with(&format!("duet: error: --paths {file}: {says}")), "{text:?}: {err}");
    }
    let missing = std::env::temp_dir().join(format!("duet-no-such-paths-{}", std::process::id()));
    let err = load_error(&["-n", "1", "--paths", missing.to_str().unwrap(), &url]);
    assert!(err.starts_with(&format!("duet: error: cannot read --paths {}: ", missing.display())), "{err}");
    let err = usage_error(&["-n", "1", "--seed", "3", &url]);
    assert!(err.contains("--paths <FILE>"), "--seed needs --paths: {err}");
}

/// `--disable-keepalive`: every request says `Connection: close` and has a connection of its
/// own, opened by the client even when the server would keep the last one open; the report
/// counts the connections opened. Pipelining and idle connections need keep-alive.
#[test]
fn disable_keepalive_opens_a_connection_per_request_and_counts_them() {
    let (url, seen) = recording_server();
    let v = load_json(&["-t", "1", "-c", "2", "-n", "20", "--disable-keepalive", &url]);
    assert_eq!(u(&v, &["requests"]), 20, "{v}");
    assert_no_errors(&v);
    assert_eq!(u(&v, &["connects"]), 20, "one connection per request: {v}");
    assert_eq!(u(&v, &["lost"]), 0, "a close asked for is no loss: {v}");
    let seen = seen.lock().unwrap();
    let used: Vec<&Vec<(String, bool)>> = seen.connections.iter().filter(|c| !c.is_empty()).collect();
    assert_eq!(used.len(), 20, "{seen:?}");
    assert!(used.iter().all(|c| c.len() == 1 && c[0].1), "one request each, with Connection: close: {seen:?}");
    drop(seen);

    let (url, _seen) = recording_server();
    let out = load(&["-t", "1", "-c", "1", "-n", "5", "--disable-keepalive", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("1 threads and 1 connections, a new connection per request"), "{text}");
    assert!(text.contains("Connections opened: 5 (keep-alive off: one per request)"), "{text}");
    for flag in [&["--depth", "4"][..], &["--idle", "3"][..]] {
        let err = usage_error(&[&["-n", "5", "--disable-keepalive"][..], flag, &[url.as_str()]].concat());
        assert!(err.contains("'--disable-keepalive' cannot be used with"), "{err}");
    }
}
