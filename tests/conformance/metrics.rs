//! Engine counters: the metrics endpoint and the report at shutdown.

use crate::common::Server;
use crate::{assert_hello, prometheus_value, GET, HELLO};

per_engine!(metrics_endpoint_serves_counters, metrics_off_by_default, counters_logged_at_shutdown,);

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
    assert!(text.contains(&format!("duet_engine_info{{engine=\"{engine}\"}} 1")), "no engine info:\n{text}");
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
