//! `--access-log`: a line per response in nginx's combined format plus the request
//! time, in order, escaped, all written by a graceful shutdown; `-` is standard output;
//! SIGHUP reopens the file.
//!
//! Lines are written before the loop waits for events and when a worker stops, so the
//! tests read the log after a graceful shutdown (SIGTERM), the one moment at which
//! every line is guaranteed to be there, without any wait.

use crate::common::{show, Server};
use crate::{assert_hello, TempTree, GET, HELLO};
use std::io::Read;

per_engine!(
    access_log_has_a_line_per_request_with_its_fields,
    access_log_lists_pipelined_requests_in_order,
    access_log_escapes_hostile_input_so_no_line_can_be_forged,
    access_log_logs_refused_requests_with_what_is_known_and_silent_connections_not,
    access_log_lines_are_all_written_by_a_graceful_shutdown,
    access_log_lines_of_the_last_loop_turn_are_written_at_exit,
    access_log_dash_writes_to_standard_output,
    access_log_is_reopened_on_sighup,
);

/// A server logging to a fresh file; the file's path.
fn start(engine: &str, tree: &TempTree, extra: &[&str]) -> (Server, String) {
    let path = tree.path("access.log");
    let mut args = vec!["--access-log", path.as_str()];
    args.extend_from_slice(extra);
    (Server::start(engine, &args), path)
}

/// Stops the server gracefully and returns the lines of the log at `path`.
fn stop_and_read(server: &mut Server, path: &str) -> Vec<String> {
    server.sigterm();
    read_after_exit(server, path)
}

/// Waits for the server (already asked to stop) to exit cleanly, and returns the lines
/// of the log at `path`.
fn read_after_exit(server: &mut Server, path: &str) -> Vec<String> {
    let status = server.wait_exit();
    assert!(status.success(), "graceful shutdown should exit 0, got {status}");
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    lines_of(&text)
}

/// The lines of log output, each checked to be printable ASCII (escaping leaves nothing
/// else) and to have the shape of the combined format plus the request time.
fn lines_of(text: &[u8]) -> Vec<String> {
    assert!(text.is_empty() || text.ends_with(b"\n"), "the log ends mid-line: {}", show(text));
    let text = std::str::from_utf8(text).unwrap_or_else(|_| panic!("not ASCII: {}", show(text)));
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    for line in &lines {
        assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "unescaped byte in {line:?}");
        parse(line);
    }
    lines
}

/// One line, taken apart: (peer, request, status, bytes, referer, user agent). Panics
/// unless it is `ADDR - - [TIME] "REQ" STATUS BYTES "REF" "UA" SECS.MICROS` with exactly
/// six quotes (a `"` from the peer is escaped, so it cannot add one).
fn parse(line: &str) -> (String, String, u16, u64, String, String) {
    let quoted: Vec<&str> = line.split('"').collect();
    assert_eq!(quoted.len(), 7, "not six quotes in {line:?}");
    let head: Vec<&str> = quoted[0].splitn(4, ' ').collect();
    assert_eq!(&head[1..3], ["-", "-"], "{line:?}");
    let time = head[3].trim_end();
    assert!(time.len() == 28 && time.starts_with('[') && time.ends_with(" +0000]"), "time {time:?} in {line:?}");
    let mid: Vec<&str> = quoted[2].split_whitespace().collect();
    assert_eq!(mid.len(), 2, "status and bytes in {line:?}");
    assert_eq!(quoted[4], " ", "{line:?}");
    let secs = quoted[6].strip_prefix(' ').unwrap_or_else(|| panic!("request time in {line:?}"));
    let (whole, micros) = secs.split_once('.').unwrap_or_else(|| panic!("request time in {line:?}"));
    assert!(whole.parse::<u64>().is_ok() && micros.len() == 6 && micros.parse::<u32>().is_ok(), "{line:?}");
    (
        head[0].to_string(),
        quoted[1].to_string(),
        mid[0].parse().unwrap_or_else(|_| panic!("status in {line:?}")),
        mid[1].parse().unwrap_or_else(|_| panic!("bytes in {line:?}")),
        quoted[3].to_string(),
        quoted[5].to_string(),
    )
}

/// Each response is one line: the peer, the request line, status, body bytes (none for
/// HEAD), Referer and User-Agent as sent (or `-`).
fn access_log_has_a_line_per_request_with_its_fields(engine: &str) {
    let tree = TempTree::new("access-fields");
    let (mut server, path) = start(engine, &tree, &[]);
    let mut c = server.connect();
    c.send(b"GET /?q=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: test-agent/1.0\r\nReferer: http://example.com/from\r\n\r\n");
    assert_hello(&c.read_response(), "GET");
    c.send(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().status, 404);
    c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\nuser-agent: lower\r\n\r\n");
    assert_eq!(c.read_head_response().status, 200);
    drop(c);
    let lines = stop_and_read(&mut server, &path);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let parsed: Vec<_> = lines.iter().map(|l| parse(l)).collect();
    let hello = HELLO.len() as u64;
    assert_eq!(
        parsed[0],
        (
            "127.0.0.1".into(),
            "GET /?q=1 HTTP/1.1".into(),
            200,
            hello,
            "http://example.com/from".into(),
            "test-agent/1.0".into()
        )
    );
    let (peer, request, status, _, referer, agent) = &parsed[1];
    assert_eq!((peer.as_str(), request.as_str(), *status), ("127.0.0.1", "GET /nope HTTP/1.1", 404));
    assert_eq!((referer.as_str(), agent.as_str()), ("-", "-"));
    assert_eq!(parsed[2], ("127.0.0.1".into(), "HEAD / HTTP/1.1".into(), 200, 0, "-".into(), "lower".into()));
}

/// Pipelined requests sent in one write are logged in the order they were answered.
fn access_log_lists_pipelined_requests_in_order(engine: &str) {
    const N: usize = 40;
    let tree = TempTree::new("access-pipelined");
    let (mut server, path) = start(engine, &tree, &[]);
    let mut c = server.connect();
    let batch: Vec<u8> = (0..N).flat_map(|i| format!("GET /p{i} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()).collect();
    c.send(&batch);
    assert!(c.read_responses(N).iter().all(|r| r.status == 404));
    drop(c);
    let lines = stop_and_read(&mut server, &path);
    let requests: Vec<String> = lines.iter().map(|l| parse(l).1).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("GET /p{i} HTTP/1.1")).collect();
    assert_eq!(requests, expected);
}

/// A `"`, a backslash, a tab and non-ASCII bytes from the peer are written as `\xHH`
/// (other control bytes are refused with 400; a refused request line is escaped too):
/// a User-Agent that tries to close its field and start a line of its own stays one
/// field of one line.
fn access_log_escapes_hostile_input_so_no_line_can_be_forged(engine: &str) {
    let tree = TempTree::new("access-hostile");
    let (mut server, path) = start(engine, &tree, &[]);
    let mut c = server.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: a\" 200 0 \"-\" \"x\" 0.0\\\xff\tz\r\nReferer: \"r\"\r\n\r\n");
    assert_hello(&c.read_response(), "hostile User-Agent");
    drop(c);
    let lines = stop_and_read(&mut server, &path);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let (_, request, status, _, referer, agent) = parse(&lines[0]);
    assert_eq!((request.as_str(), status), ("GET / HTTP/1.1", 200));
    assert_eq!(referer, "\\x22r\\x22");
    assert_eq!(agent, "a\\x22 200 0 \\x22-\\x22 \\x22x\\x22 0.0\\x5C\\xFF\\x09z");
}

/// A request refused before its head could be parsed is logged with the raw start of
/// its first line (escaped), a refusal after the head with its request line; a
/// connection that sends nothing logs nothing.
fn access_log_logs_refused_requests_with_what_is_known_and_silent_connections_not(engine: &str) {
    let tree = TempTree::new("access-refused");
    let (mut server, path) = start(engine, &tree, &[]);
    let mut silent = server.connect();
    silent.shutdown_write();
    silent.expect_closed();
    for (request, status) in [
        (&b"\x16\x03\x01\x02\x00\x01\x00"[..], 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    ] {
        let mut c = server.connect();
        c.send(request);
        assert_eq!(c.read_response().status, status, "{}", show(request));
    }
    let lines = stop_and_read(&mut server, &path);
    let seen: Vec<(String, u16)> = lines.iter().map(|l| parse(l)).map(|p| (p.1, p.2)).collect();
    assert_eq!(
        seen,
        [
            ("\\x16\\x03\\x01\\x02\\x00\\x01\\x00".to_string(), 400),
            ("GET / HTTP/1.1".to_string(), 501),
            ("BREW /pot HTTP/1.1".to_string(), 501),
        ]
    );
}

/// Many requests over connections still open when SIGTERM comes: every one is in the
/// log once the server has exited.
fn access_log_lines_are_all_written_by_a_graceful_shutdown(engine: &str) {
    const CLIENTS: usize = 4;
    const EACH: usize = 50;
    let tree = TempTree::new("access-shutdown");
    let (mut server, path) = start(engine, &tree, &[]);
    let mut clients: Vec<_> = (0..CLIENTS).map(|_| server.connect()).collect();
    for _ in 0..EACH {
        for c in &mut clients {
            c.send(GET);
            assert_hello(&c.read_response(), "keep-alive GET");
        }
    }
    // The clients stay connected through the shutdown.
    let lines = stop_and_read(&mut server, &path);
    assert_eq!(lines.len(), CLIENTS * EACH);
    assert!(lines.iter().all(|l| parse(l).1 == "GET / HTTP/1.1"));
    drop(clients);
}

/// A request completed during the shutdown, in the loop turn after which the server
/// stops (its client half-closes with the last body bytes, so the connection closes in
/// that turn too): its line is written on the way out.
fn access_log_lines_of_the_last_loop_turn_are_written_at_exit(engine: &str) {
    let tree = TempTree::new("access-last-turn");
    let (mut server, path) = start(engine, &tree, &[]);
    let mut c = server.connect();
    c.send(b"POST /last HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345");
    server.sigterm();
    // The drain has begun once the listener is closed: new connections are refused.
    let deadline = std::time::Instant::now() + crate::common::READ_TIMEOUT;
    while std::net::TcpStream::connect(server.addr).is_ok() {
        assert!(std::time::Instant::now() < deadline, "the server did not start draining");
    }
    // The rest of the body and the FIN reach the server together.
    server.pause();
    c.send(b"67890");
    c.shutdown_write();
    server.resume();
    let r = c.read_response();
    assert_eq!(r.status, 404, "{}", r.raw_head);
    c.expect_closed();
    let lines = read_after_exit(&mut server, &path);
    let requests: Vec<String> = lines.iter().map(|l| parse(l).1).collect();
    assert_eq!(requests, ["POST /last HTTP/1.1"]);
}

/// `--access-log -` writes the lines to standard output.
fn access_log_dash_writes_to_standard_output(engine: &str) {
    let mut server = Server::start_capturing_stdout(engine, &["--access-log", "-"]);
    let mut c = server.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: to-stdout\r\n\r\n");
    assert_hello(&c.read_response(), "GET");
    drop(c);
    server.sigterm();
    assert!(server.wait_exit().success());
    let mut out = Vec::new();
    server.stdout.take().expect("piped stdout").read_to_end(&mut out).expect("read stdout");
    let lines = lines_of(&out);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let (_, request, status, _, _, agent) = parse(&lines[0]);
    assert_eq!((request.as_str(), status, agent.as_str()), ("GET / HTTP/1.1", 200, "to-stdout"));
}

/// Like `nginx -s reopen`: after the log is moved away, SIGHUP makes the server create
/// it again and write there; the moved file keeps what was written before.
fn access_log_is_reopened_on_sighup(engine: &str) {
    let tree = TempTree::new("access-reopen");
    let (mut server, path) = start(engine, &tree, &[]);
    let rotated = tree.path("access.log.1");
    let mut c = server.connect();
    c.send(b"GET /before HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().status, 404);
    std::fs::rename(&path, &rotated).expect("rotate");
    server.signal(libc::SIGHUP);
    // Until the server says it reopened the log, requests may still go to the old file.
    let deadline = std::time::Instant::now() + crate::common::READ_TIMEOUT;
    while !server.stderr_lines().iter().any(|l| l.contains("reopened the access log")) {
        c.send(b"GET /waiting HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.read_response().status, 404);
        assert!(std::time::Instant::now() < deadline, "SIGHUP did not reopen the access log");
    }
    c.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().status, 404);
    drop(c);
    let new = stop_and_read(&mut server, &path);
    let old = lines_of(&std::fs::read(&rotated).expect("the rotated log"));
    let requests = |lines: &[String]| lines.iter().map(|l| parse(l).1).collect::<Vec<_>>();
    let (old, new) = (requests(&old), requests(&new));
    // The first line was written before the reopen or just after it (it may still have
    // been in the worker's buffer): in one of the files, once.
    let before = "GET /before HTTP/1.1".to_string();
    assert_eq!(old.iter().chain(&new).filter(|r| **r == before).count(), 1, "old {old:#?}, new {new:#?}");
    assert!(!old.contains(&"GET /after HTTP/1.1".to_string()), "{old:#?}");
    assert_eq!(new.last(), Some(&"GET /after HTTP/1.1".to_string()), "{new:#?}");
}
