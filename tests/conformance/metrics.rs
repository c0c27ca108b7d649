//! Engine counters: the metrics endpoint and the report at shutdown.

use crate::common::{Client, Server};
use crate::{assert_hello, prometheus_value, GET, HELLO};

per_engine!(
    metrics_endpoint_serves_counters,
    metrics_off_by_default,
    counters_logged_at_shutdown,
    syscalls_and_wakeups_per_request_at_depth_one_stay_within_the_engines_bounds,
);

fn metrics_endpoint_serves_counters(engine: &str) {
    const N: usize = 25;
    let server = Server::start(engine, &["--metrics", "/metrics"]);
    let mut c = server.connect();
    for i in 0..N {
        c.send(GET);
        assert_hello(&c.read_response(), &format!("request {i}"));
    }
    c.send(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200, "GET /metrics:\n{}", r.raw_head);
    assert!(
        r.header("content-type").is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "metrics content type:\n{}",
        r.raw_head
    );
    let text = r.body_str();
    assert!(text.contains("# TYPE duet_requests_total counter"), "no TYPE line:\n{text}");
    let name = engine.split(':').next().unwrap_or(engine);
    assert!(text.contains(&format!("duet_engine_info{{engine=\"{name}\"}} 1")), "no engine info:\n{text}");
    let value = |name: &str| prometheus_value(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    assert!(value("duet_requests_total") >= N as f64, "requests:\n{text}");
    assert!(value("duet_syscalls_total") > 0.0, "syscalls:\n{text}");
    assert!(value("duet_wakeups_total") > 0.0, "wakeups:\n{text}");
    assert!(value("duet_events_total") > 0.0, "events:\n{text}");
    assert!(value("duet_accepts_total") >= 1.0, "accepts:\n{text}");
    assert!(value("duet_read_bytes_total") >= (N * GET.len()) as f64, "bytes read:\n{text}");
    assert!(value("duet_written_bytes_total") >= (N * HELLO.len()) as f64, "bytes written:\n{text}");
    assert!(value("duet_syscalls_per_request") > 0.0, "syscalls per request:\n{text}");
    // The connection keeps working after the metrics response, and HEAD has no body.
    c.send(b"HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200, "HEAD /metrics:\n{}", r.raw_head);
    assert!(r.body.is_empty());
    c.send(GET);
    assert_hello(&c.read_response(), "request after /metrics");
}

fn metrics_off_by_default(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    c.send(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(c.read_response().status, 404);
}

fn counters_logged_at_shutdown(engine: &str) {
    const N: usize = 10;
    let mut server = Server::start(engine, &[]);
    {
        let mut c = server.connect();
        for i in 0..N {
            c.send(GET);
            assert_hello(&c.read_response(), &format!("request {i}"));
        }
    }
    server.sigterm();
    let status = server.wait_exit();
    let lines = server.stderr_lines();
    assert!(status.success(), "exit {status}; stderr:\n{}", lines.join("\n"));
    let line = lines
        .iter()
        .find(|l| l.contains("counters:"))
        .unwrap_or_else(|| panic!("no counters line at shutdown:\n{}", lines.join("\n")));
    let field = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {line}"))
    };
    assert_eq!(field("requests"), N as f64, "{line}");
    assert!(field("syscalls") > 0.0, "{line}");
    assert!(field("syscalls_per_request") > 0.0, "{line}");
    assert!(field("wakeups") > 0.0, "{line}");
    assert!(field("events_per_wakeup") > 0.0, "{line}");
    assert!(field("accepts") >= 1.0, "{line}");
}

/// Over N sequential keep-alive requests on one connection at depth 1, the counters obey
/// bounds that follow from how each engine works, whatever the timing: at depth 1 each
/// request is sent only after the previous response arrived, so the server has nothing
/// to do between requests and must block for each one.
///
/// Measured (N = 1000, one thread, and the same with 250 ms pauses between requests, so
/// nothing here scales with time): epoll 3.0 syscalls and 1.0 wakeups per request (one
/// `epoll_wait`, one `read`, one `sendmsg`); io_uring 2.0 syscalls and 2.0 wakeups per
/// request (one `io_uring_enter` that reaps the receive, one that submits the send and
/// reaps its completion). Deadlines are seconds away, so timers add no wakeups here.
fn syscalls_and_wakeups_per_request_at_depth_one_stay_within_the_engines_bounds(engine: &str) {
    const N: usize = 200;
    let server = Server::start(engine, &["--metrics", "/metrics"]);
    let mut c = server.connect();
    let counters = |c: &mut Client| {
        c.send(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 200, "GET /metrics:\n{}", r.raw_head);
        let text = r.body_str();
        let value = |name: &str| prometheus_value(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"));
        [value("duet_requests_total"), value("duet_syscalls_total"), value("duet_wakeups_total")]
    };
    // The connection is accepted and warm before the first reading.
    let before = counters(&mut c);
    for i in 0..N {
        c.send(GET);
        assert_hello(&c.read_response(), &format!("request {i}"));
    }
    let after = counters(&mut c);
    let [requests, syscalls, wakeups] = [0, 1, 2].map(|i| after[i] - before[i]);
    // The two readings are one /metrics request apart at most, on either side.
    assert!((N as f64..=N as f64 + 2.0).contains(&requests), "{requests} requests counted for {N}");
    let per_request = (syscalls / requests, wakeups / requests);
    eprintln!("{engine}: {per_request:?} syscalls and wakeups per request at depth 1");
    let (syscalls_per_request, wakeups_per_request) = per_request;

    // Every engine: the server blocks once per request at least (0.9: the readings
    // may fall either side of a loop turn), and every wakeup is a syscall. The upper
    // bound, far above any engine's few syscalls per request, catches a loop that spins
    // between requests.
    assert!(wakeups_per_request >= 0.9, "{engine}: {wakeups_per_request} wakeups per request");
    assert!(wakeups <= syscalls, "{engine}: {wakeups} wakeups but only {syscalls} syscalls");
    assert!(syscalls_per_request <= 10.0, "{engine}: {syscalls_per_request} syscalls per request");
    match engine {
        // A readiness engine reads each request and sends each response with a syscall
        // of its own, and waits for the next request in epoll_wait: 3 per request.
        "epoll" => {
            assert!(syscalls_per_request >= 2.5, "epoll: {syscalls_per_request} syscalls per request, want >= 2.5")
        }
        // A completion engine needs no read or send syscall: at most two
        // io_uring_enter per request (reap the receive; submit the send and reap it),
        // fewer when completions share a turn. Below epoll's bound above.
        e if crate::common::is_uring(e) => {
            assert!(syscalls_per_request <= 2.25, "uring: {syscalls_per_request} syscalls per request, want <= 2.25");
            assert!(wakeups_per_request <= 2.25, "uring: {wakeups_per_request} wakeups per request, want <= 2.25");
        }
        _ => {}
    }
}
