//! Conformance suite: the real `duet serve` on an ephemeral port, checked over raw TCP.
//!
//! Every test is a plain function taking the engine name; `conformance!(module,
//! "engine")` turns the whole list into one `#[test]` per function in a module named
//! after the engine. An engine that reports at start-up that it is unavailable (or not
//! built yet) is skipped with a message, unless `DUET_REQUIRE_URING=1`.
//!
//! Rules: each test starts its own server; no sleeps; no timing assertions; every
//! rejection checks the status, `Connection: close`, and that the server closes.

mod common;

use common::{run_duet, show, Client, Response, Server};
use std::net::TcpListener;
use std::time::Duration;

const HELLO: &[u8] = b"Hello, World!";
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
const GET_404: &[u8] = b"GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n";

macro_rules! conformance {
    ($module:ident, $engine:literal) => {
        mod $module {
            conformance!(@tests $engine;
                keep_alive,
                http10_closes_by_default,
                http10_keep_alive_honoured,
                connection_close_answered_with_close,
                pipelining_1000_in_order,
                byte_by_byte_input,
                half_close_answers_then_eof,
                head_has_length_but_no_body,
                not_found,
                method_not_allowed_with_allow,
                absolute_form_target,
                query_ignored_for_routing,
                content_length_body_discarded,
                chunked_body_discarded,
                reject_cl_and_te,
                reject_duplicate_cl,
                reject_bad_cl,
                reject_unknown_te,
                reject_non_final_chunked,
                reject_te_on_http10,
                reject_bad_chunk_size,
                reject_obs_fold,
                reject_space_before_colon,
                reject_control_byte,
                reject_missing_host,
                reject_duplicate_host,
                reject_bad_method_token,
                reject_http2_version,
                reject_long_request_line,
                reject_large_head,
                reject_too_many_headers,
                reject_large_body,
                max_body_size_flag,
                concurrent_500_connections,
                client_reset_mid_response,
                header_timeout_408,
                keepalive_idle_timeout,
                graceful_shutdown_finishes_in_flight,
                common_headers_on_every_response,
                out_of_descriptors_sheds_then_recovers,
                static_content_types,
                static_route_64k_file,
                static_etag_304,
                static_if_modified_since,
                static_index_and_redirect,
                static_dotfiles_hidden_unless_flag,
                static_traversal_refused,
                static_symlinks,
                static_ranges,
                static_head_on_file,
                static_startup_errors,
                static_sighup_reload,
                streaming_64mib_to_a_slow_reader_with_bounded_memory,
                streaming_ranges,
                streaming_head_on_a_large_file,
                streaming_pipelined_then_small_in_order,
                streaming_past_the_budget_and_routes,
                streaming_validators_and_reload,
                metrics_endpoint_serves_counters,
                metrics_off_by_default,
                counters_logged_at_shutdown,
            );
        }
    };
    (@tests $engine:literal; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(reason) = crate::common::skip_reason($engine) {
                    eprintln!("skipping {} on engine {}: {}", stringify!($name), $engine, reason);
                    return;
                }
                crate::$name($engine);
            }
        )*
    };
}

conformance!(epoll, "epoll");
conformance!(uring, "uring");

// ---------------------------------------------------------------------------------
// Helpers

fn assert_hello(r: &Response, what: &str) {
    assert_eq!(r.status, 200, "{what}: expected 200, got\n{}", r.raw_head);
    assert_eq!(r.body, HELLO, "{what}: body {}", show(&r.body));
}

fn assert_keeps_alive(r: &Response, what: &str) {
    assert!(!r.says_close(), "{what}: unexpected Connection: close in\n{}", r.raw_head);
}

/// Sends `request` on a fresh connection and expects `status` with
/// `Connection: close`, then the server closing the connection.
fn expect_rejected(server: &Server, request: &[u8], status: u16) {
    let mut c = server.connect();
    c.send(request);
    let r = c.read_response();
    assert_eq!(r.status, status, "request {} answered with\n{}", show(request), r.raw_head);
    assert!(r.says_close(), "request {}: no Connection: close in\n{}", show(request), r.raw_head);
    c.expect_closed();
}

/// A request with extra header lines (each ending in CRLF) and a Host.
fn get_with(headers: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n").into_bytes()
}

// ---------------------------------------------------------------------------------
// Connection management

fn keep_alive(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    for i in 0..3 {
        c.send(GET);
        let r = c.read_response();
        assert_hello(&r, &format!("request {i}"));
        assert_keeps_alive(&r, &format!("request {i}"));
    }
}

fn http10_closes_by_default(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = c.read_response();
    assert_hello(&r, "HTTP/1.0 request");
    c.expect_closed();
}

fn http10_keep_alive_honoured(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    for i in 0..2 {
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.read_response();
        assert_hello(&r, &format!("HTTP/1.0 keep-alive request {i}"));
        assert_keeps_alive(&r, "HTTP/1.0 keep-alive");
        let conn = r.header("connection").unwrap_or("");
        assert!(
            conn.eq_ignore_ascii_case("keep-alive"),
            "a 1.0 keep-alive response must say Connection: keep-alive:\n{}",
            r.raw_head
        );
    }
    // Without the header the connection closes.
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    assert_hello(&c.read_response(), "final HTTP/1.0 request");
    c.expect_closed();
}

fn connection_close_answered_with_close(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    c.send(GET);
    assert_hello(&c.read_response(), "first request");
    c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let r = c.read_response();
    assert_hello(&r, "Connection: close request");
    assert!(r.says_close(), "no Connection: close in\n{}", r.raw_head);
    c.expect_closed();
}

fn pipelining_1000_in_order(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    // Three kinds of request in a fixed rotation, so the order of answers is visible.
    let mut batch = Vec::new();
    for i in 0..1000 {
        match i % 3 {
            0 => batch.extend_from_slice(GET),
            1 => batch.extend_from_slice(GET_404),
            _ => batch.extend_from_slice(b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        }
    }
    // Write from another thread so a full socket buffer cannot deadlock the test.
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&batch)
    });
    for i in 0..1000 {
        match i % 3 {
            0 => assert_hello(&c.read_response(), &format!("pipelined request {i}")),
            1 => {
                let r = c.read_response();
                assert_eq!(r.status, 404, "pipelined request {i}:\n{}", r.raw_head);
            }
            _ => {
                let r = c.read_head_response();
                assert_eq!(r.status, 200, "pipelined HEAD {i}:\n{}", r.raw_head);
                assert_eq!(r.header("content-length"), Some("13"), "pipelined HEAD {i}");
            }
        }
    }
    sender.join().unwrap().expect("write the pipelined batch");
    // Still alive and in sync afterwards.
    c.send(GET);
    assert_hello(&c.read_response(), "request after the batch");
    assert!(c.buffered().is_empty(), "extra bytes: {}", show(c.buffered()));
}

fn byte_by_byte_input(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    // A request with a body (whose bytes look like a request) followed by another request.
    let body = b"GET /x HTTP/1.1\r\n\r\n";
    let mut input = format!("GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    input.extend_from_slice(body);
    input.extend_from_slice(GET_404);
    input.extend_from_slice(GET);
    c.send_bytewise(&input);
    assert_hello(&c.read_response(), "byte-by-byte request with a body");
    let r = c.read_response();
    assert_eq!(r.status, 404, "second byte-by-byte request:\n{}", r.raw_head);
    assert_hello(&c.read_response(), "third byte-by-byte request");
}

fn half_close_answers_then_eof(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    c.send(GET);
    c.shutdown_write();
    assert_hello(&c.read_response(), "request before half-close");
    c.expect_closed();
    // Two pipelined requests, then the half-close: both are answered.
    let mut c = server.connect();
    c.send(&[GET, GET_404].concat());
    c.shutdown_write();
    assert_hello(&c.read_response(), "first pipelined request before half-close");
    let r = c.read_response();
    assert_eq!(r.status, 404, "second pipelined request before half-close:\n{}", r.raw_head);
    c.expect_closed();
}

fn head_has_length_but_no_body(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    let mut input = b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    input.extend_from_slice(GET);
    c.send(&input);
    let r = c.read_head_response();
    assert_eq!(r.status, 200, "HEAD:\n{}", r.raw_head);
    assert_eq!(r.header("content-length"), Some("13"), "HEAD:\n{}", r.raw_head);
    // The next response must follow the HEAD response's head immediately.
    let r = c.read_response();
    assert_hello(&r, "GET after HEAD (a body after the HEAD response would show here)");
}

// ---------------------------------------------------------------------------------
// Routing

fn not_found(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    c.send(GET_404);
    let r = c.read_response();
    assert_eq!(r.status, 404, "\n{}", r.raw_head);
    assert_keeps_alive(&r, "404");
    c.send(GET);
    assert_hello(&c.read_response(), "request after a 404");
}

fn method_not_allowed_with_allow(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    for req in [
        &b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"[..],
        b"DELETE / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"PUT / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc",
    ] {
        c.send(req);
        let r = c.read_response();
        assert_eq!(r.status, 405, "{}:\n{}", show(req), r.raw_head);
        let allow = r.header("allow").unwrap_or_else(|| panic!("405 without Allow:\n{}", r.raw_head));
        let methods: Vec<&str> = allow.split(',').map(str::trim).collect();
        assert!(methods.contains(&"GET") && methods.contains(&"HEAD"), "Allow: {allow}");
    }
    c.send(GET);
    assert_hello(&c.read_response(), "request after 405s");
}

fn absolute_form_target(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    c.send(b"GET http://localhost/ HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_hello(&c.read_response(), "absolute-form /");
    c.send(b"GET http://localhost/?q=1 HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_hello(&c.read_response(), "absolute-form /?q=1");
    c.send(b"GET http://localhost/nope HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 404, "absolute-form /nope:\n{}", r.raw_head);
}

fn query_ignored_for_routing(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    c.send(b"GET /?a=b&c=d HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_hello(&c.read_response(), "/?a=b&c=d");
    c.send(b"GET /? HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_hello(&c.read_response(), "/?");
    c.send(b"GET /nope?x=/ HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 404, "/nope?x=/:\n{}", r.raw_head);
}

// ---------------------------------------------------------------------------------
// Request bodies

fn content_length_body_discarded(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    // The body looks like a request: it must be skipped, not parsed.
    let body = b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut input = format!("GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    input.extend_from_slice(body);
    input.extend_from_slice(GET_404);
    input.extend_from_slice(GET);
    c.send(&input);
    assert_hello(&c.read_response(), "request with a Content-Length body");
    let r = c.read_response();
    assert_eq!(r.status, 404, "request after the body:\n{}", r.raw_head);
    assert_hello(&c.read_response(), "third request");
}

fn chunked_body_discarded(engine: &str) {
    let server = Server::start(engine, &[]);
    let mut c = server.connect();
    let mut input = b"GET / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    // A chunk whose data looks like a request, then extensions and a trailer.
    let data = b"GET /nope HTTP/1.1\r\n\r\n";
    input.extend_from_slice(b"5;ext=1\r\nhello\r\n");
    input.extend_from_slice(format!("{:X} ; name=\"quoted\"\r\n", data.len()).as_bytes());
    input.extend_from_slice(data);
    input.extend_from_slice(b"\r\n0\r\nTrailer-A: x\r\n\r\n");
    input.extend_from_slice(GET_404);
    input.extend_from_slice(GET);
    c.send(&input);
    assert_hello(&c.read_response(), "request with a chunked body");
    let r = c.read_response();
    assert_eq!(r.status, 404, "request after the chunked body:\n{}", r.raw_head);
    assert_hello(&c.read_response(), "third request");
}

// ---------------------------------------------------------------------------------
// Rejections: status, Connection: close, then a close

fn reject_cl_and_te(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(
        &server,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
    expect_rejected(
        &server,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        400,
    );
}

fn reject_duplicate_cl(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(&server, &get_with("Content-Length: 5\r\nContent-Length: 5\r\n"), 400);
    expect_rejected(&server, &get_with("Content-Length: 5\r\nContent-Length: 6\r\n"), 400);
}

fn reject_bad_cl(engine: &str) {
    let server = Server::start(engine, &[]);
    for value in ["abc", "-1", "+5", "5, 5", "0x10", "1 2", ""] {
        expect_rejected(&server, &get_with(&format!("Content-Length: {value}\r\n")), 400);
    }
}

fn reject_unknown_te(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(&server, &get_with("Transfer-Encoding: gzip, chunked\r\n"), 501);
    expect_rejected(&server, &get_with("Transfer-Encoding: bogus\r\n"), 501);
}

fn reject_non_final_chunked(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(&server, &get_with("Transfer-Encoding: chunked, gzip\r\n"), 400);
    expect_rejected(&server, &get_with("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), 400);
}

fn reject_te_on_http10(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(&server, b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
}

fn reject_bad_chunk_size(engine: &str) {
    let server = Server::start(engine, &[]);
    let head = "GET / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
    for chunk in
        ["zz\r\nhello\r\n0\r\n\r\n", "-5\r\nhello\r\n0\r\n\r\n", "0x5\r\nhello\r\n0\r\n\r\n", "fffffffffffffffff\r\n"]
    {
        expect_rejected(&server, format!("{head}{chunk}").as_bytes(), 400);
    }
}

fn reject_obs_fold(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(&server, &get_with("X-Folded: a\r\n  b\r\n"), 400);
    expect_rejected(&server, &get_with("X-Folded: a\r\n\tb\r\n"), 400);
}

fn reject_space_before_colon(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(&server, &get_with("X-Spaced : a\r\n"), 400);
    expect_rejected(&server, b"GET / HTTP/1.1\r\nHost : localhost\r\n\r\n", 400);
}

fn reject_control_byte(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(&server, &get_with("X-Ctl: a\x01b\r\n"), 400);
    expect_rejected(&server, &get_with("X-Ctl: a\x7fb\r\n"), 400);
    expect_rejected(&server, &get_with("X-Ctl: a\0b\r\n"), 400);
}

fn reject_missing_host(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(&server, b"GET / HTTP/1.1\r\n\r\n", 400);
}

fn reject_duplicate_host(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(&server, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    expect_rejected(&server, b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
}

fn reject_bad_method_token(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(&server, b"G@T / HTTP/1.1\r\nHost: localhost\r\n\r\n", 400);
    expect_rejected(&server, b"GE(T / HTTP/1.1\r\nHost: localhost\r\n\r\n", 400);
}

fn reject_http2_version(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(&server, b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n", 505);
}

fn reject_long_request_line(engine: &str) {
    let server = Server::start(engine, &[]);
    let target = format!("/{}", "a".repeat(9000));
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    expect_rejected(&server, req.as_bytes(), 414);
}

fn reject_large_head(engine: &str) {
    let server = Server::start(engine, &[]);
    let req = get_with(&format!("X-Big: {}\r\n", "a".repeat(9000)));
    expect_rejected(&server, &req, 431);
    // Many small fields adding up past 8 KiB.
    let fields: String = (0..60).map(|i| format!("X-F{i}: {}\r\n", "b".repeat(150))).collect();
    expect_rejected(&server, &get_with(&fields), 431);
}

fn reject_too_many_headers(engine: &str) {
    let server = Server::start(engine, &[]);
    // Host plus 64 more: 65 fields.
    let fields: String = (0..64).map(|i| format!("X-H{i}: v\r\n")).collect();
    expect_rejected(&server, &get_with(&fields), 431);
    let fields: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    expect_rejected(&server, &get_with(&fields), 431);
    // Exactly 64 (Host plus 63) is fine.
    let fields: String = (0..63).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut c = server.connect();
    c.send(&get_with(&fields));
    assert_hello(&c.read_response(), "request with 64 header fields");
}

fn reject_large_body(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(&server, &get_with("Content-Length: 1048577\r\n"), 413);
    // At the limit is fine (the body is read and discarded).
    let mut c = server.connect();
    let mut req = get_with("Content-Length: 1048576\r\n");
    req.extend_from_slice(&vec![b'x'; 1 << 20]);
    req.extend_from_slice(GET);
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&req)
    });
    assert_hello(&c.read_response(), "request with a 1 MiB body");
    assert_hello(&c.read_response(), "request after a 1 MiB body");
    sender.join().unwrap().expect("send a 1 MiB body");
}

fn max_body_size_flag(engine: &str) {
    let server = Server::start(engine, &["--max-body-size", "10"]);
    let mut c = server.connect();
    let mut req = get_with("Content-Length: 10\r\n");
    req.extend_from_slice(b"0123456789");
    c.send(&req);
    assert_hello(&c.read_response(), "10-byte body with --max-body-size 10");
    let mut req = get_with("Content-Length: 11\r\n");
    req.extend_from_slice(b"0123456789a");
    expect_rejected(&server, &req, 413);
    let mut req = get_with("Transfer-Encoding: chunked\r\n");
    req.extend_from_slice(b"b\r\n0123456789a\r\n0\r\n\r\n");
    expect_rejected(&server, &req, 413);
}

// ---------------------------------------------------------------------------------
// Load, resets, timeouts, shutdown

fn concurrent_500_connections(engine: &str) {
    common::raise_nofile_limit();
    let server = Server::start(engine, &[]);
    // All 500 are open at once; each does two requests, interleaved with the others.
    let mut clients: Vec<Client> = (0..500).map(|_| server.connect()).collect();
    for round in 0..2 {
        for c in clients.iter_mut() {
            c.send(GET);
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let r = c.read_response();
            assert_hello(&r, &format!("connection {i} round {round}"));
            assert_keeps_alive(&r, "concurrent");
        }
    }
    // Half of them close; the rest still work.
    clients.truncate(250);
    for c in clients.iter_mut() {
        c.send(GET);
    }
    for c in clients.iter_mut() {
        assert_hello(&c.read_response(), "after half closed");
    }
}

fn client_reset_mid_response(engine: &str) {
    let server = Server::start(engine, &[]);
    for _ in 0..3 {
        let mut c = server.connect();
        let batch: Vec<u8> = GET.repeat(2000);
        c.send(&batch);
        // Wait until responses are flowing, then reset with unread data on both sides.
        assert_hello(&c.read_response(), "first of 2000 pipelined");
        socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO)).unwrap();
        drop(c);
    }
    // Also a reset before any response was read.
    let mut c = server.connect();
    c.send(&GET.repeat(2000));
    socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO)).unwrap();
    drop(c);

    let mut c = server.connect();
    c.send(GET);
    assert_hello(&c.read_response(), "new client after resets");
    c.send(GET);
    assert_hello(&c.read_response(), "new client after resets, second request");
}

fn header_timeout_408(engine: &str) {
    let server = Server::start(engine, &["--header-timeout", "1s"]);
    let mut c = server.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: loc");
    // Blocks until the server's 1 s deadline passes.
    let r = c.read_response();
    assert_eq!(r.status, 408, "half a head:\n{}", r.raw_head);
    assert!(r.says_close(), "408 without Connection: close:\n{}", r.raw_head);
    c.expect_closed();
}

fn keepalive_idle_timeout(engine: &str) {
    let server = Server::start(engine, &["--keepalive-timeout", "1s"]);
    let mut c = server.connect();
    c.send(GET);
    let r = c.read_response();
    assert_hello(&r, "request before idling");
    assert_keeps_alive(&r, "request before idling");
    // Blocks until the server's 1 s idle deadline closes the connection.
    c.expect_closed();
}

fn graceful_shutdown_finishes_in_flight(engine: &str) {
    let mut server = Server::start(engine, &["--drain-timeout", "60s"]);
    // A request whose body is half sent.
    let mut busy = server.connect();
    busy.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nhello");
    // An idle keep-alive connection that completed a request (one server thread: this
    // round trip also means the first connection's bytes were seen).
    let mut idle = server.connect();
    idle.send(GET);
    assert_hello(&idle.read_response(), "request on the idle connection");

    server.sigterm();
    idle.expect_closed();

    busy.send(b"world");
    let r = busy.read_response();
    assert_hello(&r, "in-flight request finished during shutdown");
    assert!(r.says_close(), "no Connection: close during shutdown:\n{}", r.raw_head);
    busy.expect_closed();
    drop(busy);

    let status = server.wait_exit();
    assert!(
        status.success(),
        "server exit status {status} after a graceful shutdown; stderr:\n{}",
        server.stderr_lines().join("\n")
    );
}

fn common_headers_on_every_response(engine: &str) {
    let server = Server::start(engine, &[]);
    let check = |r: &Response, what: &str, head_only: bool| {
        let date = r.header("date").unwrap_or_else(|| panic!("{what}: no Date in\n{}", r.raw_head));
        assert!(date.ends_with(" GMT") && date.len() == 29, "{what}: Date {date:?}");
        assert!(r.header("server").is_some_and(|s| !s.is_empty()), "{what}: no Server in\n{}", r.raw_head);
        let cl = r.header("content-length").unwrap_or_else(|| panic!("{what}: no Content-Length in\n{}", r.raw_head));
        if !head_only {
            assert_eq!(cl, r.body.len().to_string(), "{what}");
        }
    };
    let mut c = server.connect();
    c.send(GET);
    check(&c.read_response(), "200", false);
    c.send(b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    check(&c.read_head_response(), "HEAD", true);
    c.send(GET_404);
    check(&c.read_response(), "404", false);
    c.send(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
    check(&c.read_response(), "405", false);
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    check(&c.read_response(), "HTTP/1.0", false);
    c.send(b"GET / HTTP/1.1\r\n\r\n");
    check(&c.read_response(), "400", false);
    c.expect_closed();
    let mut c = server.connect();
    c.send(b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n");
    check(&c.read_response(), "505", false);
    c.expect_closed();
}

// ---------------------------------------------------------------------------------
// CLI (not per engine)

#[test]
fn cli_unknown_flag_is_one_line_and_fails() {
    let (status, stderr) = run_duet(&["serve", "--no-such-flag"]);
    assert!(!status.success(), "exit status {status}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{stderr}");
    assert!(lines[0].contains("no-such-flag"), "the line should name the flag: {stderr}");
}

#[test]
fn cli_port_in_use_is_one_line_and_fails() {
    // A plain listener without SO_REUSEPORT: duet must not be able to join it.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (status, stderr) =
        run_duet(&["serve", "--engine", "epoll", "--bind", "127.0.0.1", "--port", &port, "--threads", "1"]);
    assert!(!status.success(), "exit status {status}; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("already in use")).collect();
    assert_eq!(lines.len(), 1, "expected one line saying 'already in use', got:\n{stderr}");
    assert!(!stderr.contains("listening on"), "should not claim to listen:\n{stderr}");
    drop(taken);
}

/// A log reader that goes away (stderr closed) must not take the server down: it keeps
/// serving, logs nothing more, and still shuts down gracefully on SIGTERM.
#[test]
fn cli_closed_stderr_neither_kills_the_server_nor_blocks_shutdown() {
    use std::io::{BufRead, BufReader};
    let mut child = common::duet_command()
        .args(["serve", "--engine", "epoll", "--port", "0", "--threads", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn duet");
    let mut reader = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut line = String::new();
    let addr = loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            panic!("duet exited before listening");
        }
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().parse::<std::net::SocketAddr>().unwrap();
        }
    };
    drop(reader); // the log reader goes away
    let mut c = Client::connect(addr);
    for _ in 0..3 {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.read_response().status, 200, "served after stderr closed");
    }
    drop(c);
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) takes plain integers; the child is ours and not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(());
        (child, status)
    });
    let exited = rx.recv_timeout(common::EXIT_TIMEOUT).is_ok();
    if !exited {
        // Unblock the waiter so the test ends; the assertion below fails it.
        // SAFETY: as above; the waiter has not reaped the child, since it has not returned.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(exited, "duet did not exit on SIGTERM after its stderr closed");
    let (_, status) = waiter.join().expect("waiter");
    assert!(status.expect("wait").success(), "graceful shutdown should exit 0");
}

/// Out of file descriptors (EMFILE), the server accepts and closes new connections
/// instead of spinning or hanging them, keeps serving the ones it has, and serves new
/// ones again once descriptors are free.
fn out_of_descriptors_sheds_then_recovers(engine: &str) {
    let server = Server::start_with_fd_limit(engine, 64, &[]);
    let mut clients: Vec<Client> = (0..100).map(|_| server.connect()).collect();
    let (mut served, mut shed) = (Vec::new(), 0);
    for mut c in clients.drain(..) {
        c.try_send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        match c.try_read_response() {
            Some(r) => {
                assert_hello(&r, "served under the descriptor limit");
                served.push(c);
            }
            None => shed += 1,
        }
    }
    assert!(shed > 0, "no connection was shed with 100 connections and a limit of 64 descriptors");
    assert!(!served.is_empty(), "no connection was served under the limit");
    // The connections it kept still work.
    served[0].send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_hello(&served[0].read_response(), "kept connection after shedding");
    drop(served);
    // Once descriptors are free again, new connections are served. The server may see a
    // new connection before the closes above, so try a bounded number of times.
    let recovered = (0..200).any(|_| {
        let mut c = server.connect();
        c.try_send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") && c.try_read_response().is_some_and(|r| r.status == 200)
    });
    assert!(recovered, "no connection served after descriptors were freed");
    assert!(
        server.stderr_lines().iter().any(|l| l.contains("out of file descriptors")),
        "the descriptor shortage was not logged"
    );
}

// ---------------------------------------------------------------------------------
// Static content: --route and --dir

const SECRET: &[u8] = b"TOP-SECRET-OUTSIDE-THE-DIR";
const SUB_A: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

/// A directory tree under the system temp dir, removed on drop.
struct TempTree {
    root: std::path::PathBuf,
}

impl TempTree {
    fn new(tag: &str) -> TempTree {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("duet-static-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        TempTree { root }
    }

    fn write(&self, rel: &str, data: &[u8]) -> std::path::PathBuf {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }

    fn path(&self, rel: &str) -> String {
        self.root.join(rel).to_str().unwrap().to_string()
    }

    /// The standard site: `site/` is served; `secret.txt` lies outside it.
    fn site(tag: &str) -> TempTree {
        let t = TempTree::new(tag);
        t.write("secret.txt", SECRET);
        t.write("site/index.html", b"<h1>home</h1>");
        t.write("site/style.css", b"body{}");
        t.write("site/data.json", b"{}");
        t.write("site/app.js", b"1");
        t.write("site/img.png", b"\x89PNG");
        t.write("site/blob.unknownext", b"?");
        t.write("site/sub/index.html", b"<p>sub</p>");
        t.write("site/sub/a.txt", SUB_A);
        t.write("site/noindex/b.txt", b"b");
        t.write("site/.hidden.txt", b"hidden");
        t.write("site/.git/config", b"[core]");
        std::os::unix::fs::symlink("../secret.txt", t.root.join("site/escape.txt")).unwrap();
        std::os::unix::fs::symlink(t.root.join("secret.txt"), t.root.join("site/escape-abs.txt")).unwrap();
        std::os::unix::fs::symlink("..", t.root.join("site/up")).unwrap();
        std::os::unix::fs::symlink("sub/a.txt", t.root.join("site/inside.txt")).unwrap();
        t
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn get_path(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n").into_bytes()
}

fn fetch(c: &mut Client, path: &str, headers: &str) -> Response {
    c.send(&get_path(path, headers));
    c.read_response()
}

fn static_content_types(engine: &str) {
    let t = TempTree::site(&format!("types-{engine}"));
    let json = t.write("route.json", b"[1]");
    let site = t.path("site");
    let route_file = format!("/r=@{}", json.display());
    let server = Server::start(
        engine,
        &[
            "--dir",
            &site,
            "--route",
            "/t=plain text",
            "--route",
            &route_file,
            "--route-type",
            "/blob.unknownext=text/x-blob",
        ],
    );
    let mut c = server.connect();
    for (path, ty) in [
        ("/index.html", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/data.json", "application/json"),
        ("/img.png", "image/png"),
        ("/blob.unknownext", "text/x-blob"),
        ("/noindex/b.txt", "text/plain; charset=utf-8"),
        ("/t", "text/plain; charset=utf-8"),
        ("/r", "application/json"),
    ] {
        let r = fetch(&mut c, path, "");
        assert_eq!(r.status, 200, "{path}:\n{}", r.raw_head);
        assert_eq!(r.header("content-type"), Some(ty), "{path}:\n{}", r.raw_head);
        assert_keeps_alive(&r, path);
    }
    assert!(fetch(&mut c, "/app.js", "").header("content-type").unwrap().contains("javascript"));
    assert_eq!(fetch(&mut c, "/t", "").body, b"plain text");
    assert_eq!(fetch(&mut c, "/r", "").body, b"[1]");
    let r = fetch(&mut c, "/sub/a.txt", "");
    assert_eq!(r.body, SUB_A);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").is_some_and(|e| e.starts_with('"') && e.ends_with('"')), "{}", r.raw_head);
    assert!(r.header("last-modified").is_some_and(|d| d.ends_with(" GMT")), "{}", r.raw_head);
    assert_eq!(fetch(&mut c, "/missing.txt", "").status, 404);
}

fn static_route_64k_file(engine: &str) {
    let t = TempTree::new(&format!("64k-{engine}"));
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 256) as u8).collect();
    let file = t.write("payload.bin", &data);
    let route = format!("/64k=@{}", file.display());
    let server = Server::start(engine, &["--route", &route, "--route", "/=Hello, World!"]);
    let mut c = server.connect();
    for _ in 0..3 {
        let r = fetch(&mut c, "/64k", "");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert!(r.body == data, "64 KiB body differs");
    }
    assert_hello(&fetch(&mut c, "/", ""), "--route /=Hello, World!");
}

fn static_etag_304(engine: &str) {
    let t = TempTree::site(&format!("etag-{engine}"));
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    let r = fetch(&mut c, "/style.css", "");
    let etag = r.header("etag").expect("ETag").to_string();
    let modified = r.header("last-modified").expect("Last-Modified").to_string();
    for inm in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}"), "*".to_string()] {
        c.send(&get_path("/style.css", &format!("If-None-Match: {inm}\r\n")));
        let r = c.read_head_response();
        assert_eq!(r.status, 304, "If-None-Match: {inm}\n{}", r.raw_head);
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("last-modified"), Some(modified.as_str()));
        assert_eq!(r.header("content-length"), None, "{}", r.raw_head);
        assert!(r.header("date").is_some());
        assert_keeps_alive(&r, "304");
    }
    // The connection is still framed correctly after 304s.
    let r = fetch(&mut c, "/style.css", "If-None-Match: \"stale\"\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"body{}");
    c.send(&format!("HEAD /style.css HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n").into_bytes());
    assert_eq!(c.read_head_response().status, 304);
    assert_eq!(fetch(&mut c, "/index.html", "").body, b"<h1>home</h1>");
}

fn static_if_modified_since(engine: &str) {
    let t = TempTree::site(&format!("ims-{engine}"));
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    let r = fetch(&mut c, "/data.json", "");
    let modified = r.header("last-modified").unwrap().to_string();
    c.send(&get_path("/data.json", &format!("If-Modified-Since: {modified}\r\n")));
    let r = c.read_head_response();
    assert_eq!(r.status, 304, "{}", r.raw_head);
    let r = fetch(&mut c, "/data.json", "If-Modified-Since: Thu, 01 Jan 1970 00:00:01 GMT\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"{}");
    let r = fetch(&mut c, "/data.json", "If-Modified-Since: not a date\r\n");
    assert_eq!(r.status, 200);
    // If-None-Match that does not match wins over a satisfied If-Modified-Since.
    let r = fetch(&mut c, "/data.json", &format!("If-None-Match: \"x\"\r\nIf-Modified-Since: {modified}\r\n"));
    assert_eq!(r.status, 200);
}

fn static_index_and_redirect(engine: &str) {
    let t = TempTree::site(&format!("index-{engine}"));
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    assert_eq!(fetch(&mut c, "/", "").body, b"<h1>home</h1>");
    assert_eq!(fetch(&mut c, "/?q=1", "").body, b"<h1>home</h1>");
    assert_eq!(fetch(&mut c, "/sub/", "").body, b"<p>sub</p>");
    let r = fetch(&mut c, "/sub", "");
    assert_eq!(r.status, 301, "{}", r.raw_head);
    assert_eq!(r.header("location"), Some("/sub/"));
    assert_keeps_alive(&r, "301");
    let r = fetch(&mut c, "/sub?a=1&b=2", "");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/sub/?a=1&b=2"));
    let r = fetch(&mut c, "/noindex", "");
    assert_eq!(r.header("location"), Some("/noindex/"));
    assert_eq!(fetch(&mut c, "/noindex/", "").status, 404);
    assert_eq!(fetch(&mut c, "/noindex/b.txt", "").body, b"b");
}

fn static_dotfiles_hidden_unless_flag(engine: &str) {
    let t = TempTree::site(&format!("dot-{engine}"));
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    for path in ["/.hidden.txt", "/.git/config", "/.git", "/.git/"] {
        let r = fetch(&mut c, path, "");
        assert_eq!(r.status, 404, "{path}:\n{}", r.raw_head);
    }
    drop(server);
    let server = Server::start(engine, &["--dir", &t.path("site"), "--dotfiles"]);
    let mut c = server.connect();
    assert_eq!(fetch(&mut c, "/.hidden.txt", "").body, b"hidden");
    assert_eq!(fetch(&mut c, "/.git/config", "").body, b"[core]");
}

fn static_traversal_refused(engine: &str) {
    let t = TempTree::site(&format!("trav-{engine}"));
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    for target in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%2fsecret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/%c0%ae%c0%ae%c0%afsecret.txt",
        "/%00../secret.txt",
        "/index.html%00",
        "/escape.txt",
        "/escape-abs.txt",
        "/up/secret.txt",
        "/up/site/index.html",
        "/sub/./a.txt",
        "//secret.txt",
    ] {
        let mut c = server.connect();
        c.send(&get_path(target, ""));
        let r = c.read_response();
        assert!(matches!(r.status, 400 | 404), "{target} answered\n{}", r.raw_head);
        assert!(!r.body.windows(SECRET.len()).any(|w| w == SECRET), "{target} leaked the secret");
        assert!(!r.body.windows(SUB_A.len()).any(|w| w == SUB_A), "{target} served a file");
    }
}

fn static_symlinks(engine: &str) {
    let t = TempTree::site(&format!("link-{engine}"));
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    assert_eq!(fetch(&mut c, "/inside.txt", "").body, SUB_A, "a symlink inside --dir is served");
    assert_eq!(fetch(&mut c, "/escape.txt", "").status, 404);
    let lines = server.stderr_lines();
    assert!(lines.iter().any(|l| l.contains("escape.txt") && l.contains("outside")), "{lines:?}");
}

fn static_ranges(engine: &str) {
    let t = TempTree::site(&format!("range-{engine}"));
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    t.write("site/big.bin", &big);
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    for (range, first, last) in [
        ("bytes=0-9", 0, 9),
        ("bytes=10-", 10, 25),
        ("bytes=-5", 21, 25),
        ("bytes=3-1000", 3, 25),
        ("bytes=-99", 0, 25),
    ] {
        let r = fetch(&mut c, "/sub/a.txt", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 206, "{range}:\n{}", r.raw_head);
        assert_eq!(r.body, &SUB_A[first..=last], "{range}");
        let want = format!("bytes {first}-{last}/26");
        assert_eq!(r.header("content-range"), Some(want.as_str()), "{range}");
    }
    let r = fetch(&mut c, "/big.bin", "Range: bytes=5000-99998\r\n");
    assert_eq!(r.status, 206);
    assert!(r.body == big[5000..99999], "large range body differs");
    for range in ["bytes=26-", "bytes=100-200", "bytes=-0"] {
        let r = fetch(&mut c, "/sub/a.txt", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 416, "{range}:\n{}", r.raw_head);
        assert_eq!(r.header("content-range"), Some("bytes */26"));
        assert_keeps_alive(&r, "416");
    }
    let r = fetch(&mut c, "/sub/a.txt", "Range: bytes=0-1,4-5\r\n");
    assert_eq!(r.status, 200, "multiple ranges: the whole file");
    assert_eq!(r.body, SUB_A);
    let etag = fetch(&mut c, "/sub/a.txt", "").header("etag").unwrap().to_string();
    assert_eq!(fetch(&mut c, "/sub/a.txt", &format!("Range: bytes=0-1\r\nIf-Range: {etag}\r\n")).status, 206);
    assert_eq!(fetch(&mut c, "/sub/a.txt", "Range: bytes=0-1\r\nIf-Range: \"old\"\r\n").status, 200);
}

fn static_head_on_file(engine: &str) {
    let t = TempTree::site(&format!("head-{engine}"));
    let big = vec![b'z'; 300_000];
    t.write("site/big.bin", &big);
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    c.send(b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("300000"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").is_some());
    // No body followed: the next response starts right away.
    let r = fetch(&mut c, "/sub/a.txt", "");
    assert_eq!(r.body, SUB_A);
    let r = fetch(&mut c, "/big.bin", "");
    assert_eq!(r.body.len(), big.len());
}

fn static_startup_errors(engine: &str) {
    let t = TempTree::site(&format!("errors-{engine}"));
    let big = t.write("big.bin", &vec![0u8; 64 * 1024]);
    let missing = t.path("missing-dir");
    let site = t.path("site");
    let big_route = format!("/big=@{}", big.display());
    let missing_route = format!("/m=@{}", t.path("missing.bin"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--dir", &missing], "missing-dir"),
        (vec!["--route", &missing_route], "missing.bin"),
        (vec!["--route", "no-equals-sign"], "--route"),
        (vec!["--route", "relative=x"], "must start with /"),
        (vec!["--route-type", "/nothing=text/plain"], "--route-type"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["serve", "--engine", engine, "--port", "0", "--threads", "1"];
        args.extend(&extra);
        let (status, stderr) = run_duet(&args);
        assert!(!status.success(), "{extra:?} started; stderr:\n{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("duet: error:")).collect();
        assert_eq!(lines.len(), 1, "{extra:?}: expected one error line, got:\n{stderr}");
        assert!(lines[0].contains(needle), "{extra:?}: the error should mention {needle}: {stderr}");
        assert!(!stderr.contains("listening on"), "{extra:?} claims to listen:\n{stderr}");
    }
    // Files over the limits are streamed, not refused (served in `streaming_*`).
    let server = Server::start(
        engine,
        &["--dir", &site, "--route", &big_route, "--max-cached-file", "10B", "--cache-budget", "20B"],
    );
    let lines = server.stderr_lines();
    assert!(lines.iter().any(|l| l.contains("streamed from disk")), "{lines:?}");
}

/// SIGHUP swaps the whole site while a keep-alive client keeps asking: every response
/// is a complete, valid answer from the old or the new site, the connection survives,
/// and a failed reload keeps the site being served.
fn static_sighup_reload(engine: &str) {
    let t = TempTree::site(&format!("hup-{engine}"));
    t.write("site/v.txt", b"version one");
    let route = t.write("route.txt", b"route one");
    let route_arg = format!("/r=@{}", route.display());
    let server = Server::start(engine, &["--dir", &t.path("site"), "--route", &route_arg, "--max-cached-file", "1KiB"]);
    let mut c = server.connect();
    let batch = |c: &mut Client| -> (Vec<u8>, Vec<u8>) {
        c.send(&[get_path("/v.txt", ""), get_path("/r", ""), get_path("/sub/a.txt", "")].concat());
        let rs = c.read_responses(3);
        for r in &rs {
            assert_eq!(r.status, 200, "{}", r.raw_head);
            assert_keeps_alive(r, "during reload");
        }
        assert_eq!(rs[2].body, SUB_A);
        (rs[0].body.clone(), rs[1].body.clone())
    };
    assert_eq!(batch(&mut c), (b"version one".to_vec(), b"route one".to_vec()));
    let old_etag = fetch(&mut c, "/v.txt", "").header("etag").unwrap().to_string();

    t.write("site/v.txt", b"version two!");
    t.write("route.txt", b"route two!");
    t.write("site/new.txt", b"new file");
    server.signal(libc::SIGHUP);
    // The reload runs on the server's signal thread; poll with requests (bounded).
    let deadline = std::time::Instant::now() + common::READ_TIMEOUT;
    let mut switched = false;
    while std::time::Instant::now() < deadline {
        let (v, r) = batch(&mut c);
        match (v.as_slice(), r.as_slice()) {
            (b"version one", b"route one") => continue,
            (b"version two!", b"route two!") => {
                switched = true;
                break;
            }
            other => panic!("a response mixed the sites or was corrupt: {other:?}"),
        }
    }
    assert!(switched, "the new content was not served after SIGHUP; stderr:\n{}", server.stderr_lines().join("\n"));
    assert_eq!(fetch(&mut c, "/new.txt", "").body, b"new file");
    let r = fetch(&mut c, "/v.txt", &format!("If-None-Match: {old_etag}\r\n"));
    assert_eq!(r.status, 200, "the old ETag no longer matches");
    // The log line follows the swap; it may reach us a little after the new content.
    let deadline = std::time::Instant::now() + common::READ_TIMEOUT;
    let mut logged = false;
    while !logged && std::time::Instant::now() < deadline {
        assert_eq!(batch(&mut c), (b"version two!".to_vec(), b"route two!".to_vec()));
        logged = server.stderr_lines().iter().any(|l| l.contains("reloaded"));
    }
    assert!(logged, "the reload was not logged:\n{}", server.stderr_lines().join("\n"));

    // A reload that fails (the --route file is gone) keeps the current site.
    t.write("site/later.txt", b"later");
    std::fs::remove_file(&route).unwrap();
    server.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + common::READ_TIMEOUT;
    let mut logged = false;
    while !logged && std::time::Instant::now() < deadline {
        assert_eq!(batch(&mut c), (b"version two!".to_vec(), b"route two!".to_vec()));
        logged = server.stderr_lines().iter().any(|l| l.contains("reload failed") && l.contains("route.txt"));
    }
    assert!(logged, "the failed reload was not logged:\n{}", server.stderr_lines().join("\n"));
    assert_eq!(batch(&mut c), (b"version two!".to_vec(), b"route two!".to_vec()));
    assert_eq!(fetch(&mut c, "/later.txt", "").status, 404);
}

// ---------------------------------------------------------------------------------
// Streaming from disk

/// The byte at `i` of the test pattern: cheap to make and to check, and no two nearby
/// 8-byte words alike, so a misplaced chunk shows.
fn pattern_word(k: u64) -> [u8; 8] {
    k.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes()
}

fn pattern(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    for k in 0..len.div_ceil(8) as u64 {
        v.extend_from_slice(&pattern_word(k));
    }
    v.truncate(len);
    v
}

/// The server's resident set size in KiB.
fn vm_rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("read /proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value")
}

/// A client socket with a small receive buffer, set before connecting so the window
/// is small from the handshake on: the server can push only as fast as it reads.
fn slow_client(server: &Server, rcvbuf: usize) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(rcvbuf).unwrap();
    socket.connect_timeout(&server.addr.into(), common::READ_TIMEOUT).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(common::READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(common::READ_TIMEOUT)).unwrap();
    stream
}

/// A 64 MiB file streamed to a reader with a small window that reads 4 KiB at a time:
/// every byte arrives in order, and the server's memory stays far below the file size
/// during the whole transfer.
fn streaming_64mib_to_a_slow_reader_with_bounded_memory(engine: &str) {
    use std::io::{Read, Write};
    const SIZE: usize = 64 << 20;
    let t = TempTree::new(&format!("stream64-{engine}"));
    t.write("site/big.bin", &pattern(SIZE));
    t.write("site/small.txt", b"small");
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let lines = server.stderr_lines();
    assert!(lines.iter().any(|l| l.contains("1 streamed from disk (67108864 bytes)")), "{lines:?}");
    // Warm up (first request, buffers, pools), then take the baseline.
    let mut c = server.connect();
    assert_eq!(fetch(&mut c, "/small.txt", "").body, b"small");
    let base = vm_rss_kib(&server);

    let mut s = slow_client(&server, 16 * 1024);
    s.write_all(&get_path("/big.bin", "")).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "EOF in the head: {}", show(&head));
        head.push(byte[0]);
        assert!(head.len() < 4096, "no end of head: {}", show(&head));
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.contains(&format!("Content-Length: {SIZE}\r\n")), "{head}");

    let mut chunk = [0u8; 4096];
    let mut got = 0usize;
    let mut peak = base;
    let mut next_sample = 0usize;
    // Bytes not yet compared because they do not fill a pattern word.
    let mut partial: Vec<u8> = Vec::with_capacity(8);
    while got < SIZE {
        let n = s.read(&mut chunk[..(SIZE - got).min(4096)]).unwrap();
        assert!(n > 0, "EOF after {got} of {SIZE} bytes");
        for &b in &chunk[..n] {
            partial.push(b);
            let pos = got + partial.len();
            if partial.len() == 8 || pos == SIZE {
                let k = ((pos - 1) / 8) as u64;
                let want = &pattern_word(k)[..partial.len()];
                assert_eq!(partial, want, "bytes {}..{pos} differ", pos - partial.len());
                got = pos;
                partial.clear();
            }
        }
        if got >= next_sample {
            peak = peak.max(vm_rss_kib(&server));
            next_sample += 1 << 20;
        }
    }
    peak = peak.max(vm_rss_kib(&server));
    let growth_mib = peak.saturating_sub(base) / 1024;
    assert!(growth_mib < 32, "server RSS grew by {growth_mib} MiB (from {base} KiB to {peak} KiB) while streaming");
    // The connection is still usable.
    s.write_all(&get_path("/small.txt", "")).unwrap();
    let mut c2 = Client::from_stream(s);
    assert_eq!(c2.read_response().body, b"small");
}

/// A directory where `big.bin` (100 000 bytes) is streamed and `a.txt` is cached.
fn streamed_site(engine: &str, tag: &str, extra: &[&str]) -> (TempTree, Server, Vec<u8>) {
    let t = TempTree::new(&format!("{tag}-{engine}"));
    let big = pattern(100_000);
    t.write("site/big.bin", &big);
    t.write("site/a.txt", SUB_A);
    let mut args = vec!["--dir".to_string(), t.path("site"), "--max-cached-file".into(), "1KiB".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(engine, &args);
    (t, server, big)
}

fn streaming_ranges(engine: &str) {
    let (_t, server, big) = streamed_site(engine, "srange", &[]);
    let mut c = server.connect();
    for (range, first, last) in [
        ("bytes=0-9", 0, 9),
        ("bytes=99990-", 99_990, 99_999),
        ("bytes=-5", 99_995, 99_999),
        ("bytes=5000-99998", 5000, 99_998),
        ("bytes=-200000", 0, 99_999),
        ("bytes=12345-12345", 12_345, 12_345),
    ] {
        let r = fetch(&mut c, "/big.bin", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 206, "{range}:\n{}", r.raw_head);
        let want = format!("bytes {first}-{last}/100000");
        assert_eq!(r.header("content-range"), Some(want.as_str()), "{range}");
        assert!(r.body == big[first..=last], "{range}: body differs");
        assert_keeps_alive(&r, range);
    }
    for range in ["bytes=100000-", "bytes=200000-300000", "bytes=-0"] {
        let r = fetch(&mut c, "/big.bin", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 416, "{range}:\n{}", r.raw_head);
        assert_eq!(r.header("content-range"), Some("bytes */100000"));
        assert_keeps_alive(&r, "416");
    }
    let r = fetch(&mut c, "/big.bin", "Range: bytes=0-1,4-5\r\n");
    assert_eq!(r.status, 200, "multiple ranges: the whole file");
    assert!(r.body == big);
    let etag = r.header("etag").unwrap().to_string();
    let r = fetch(&mut c, "/big.bin", &format!("Range: bytes=10-19\r\nIf-Range: {etag}\r\n"));
    assert_eq!((r.status, r.body.as_slice()), (206, &big[10..20]));
    assert_eq!(fetch(&mut c, "/big.bin", "Range: bytes=0-1\r\nIf-Range: \"old\"\r\n").status, 200);
}

fn streaming_head_on_a_large_file(engine: &str) {
    const SIZE: usize = 8 << 20; // over the default --max-cached-file (4 MiB)
    let t = TempTree::new(&format!("shead-{engine}"));
    t.write("site/large.bin", &pattern(SIZE));
    t.write("site/a.txt", SUB_A);
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    c.send(b"HEAD /large.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(SIZE.to_string().as_str()));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.header("etag").is_some() && r.header("last-modified").is_some());
    // No body followed: the next response starts right away.
    assert_eq!(fetch(&mut c, "/a.txt", "").body, SUB_A);
    c.send(b"HEAD /large.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n");
    assert_eq!(c.read_head_response().status, 200, "HEAD ignores Range");
    let r = fetch(&mut c, "/large.bin", "");
    assert!(r.body == pattern(SIZE), "the streamed body differs");
}

/// Ten pipelined requests for a streamed file, then a cached one, in one write: all
/// answered in order (parsing pauses after a few file responses and resumes).
fn streaming_pipelined_then_small_in_order(engine: &str) {
    let (_t, server, big) = streamed_site(engine, "spipe", &[]);
    let mut c = server.connect();
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.extend(get_path("/big.bin", if i == 3 { "Range: bytes=-10\r\n" } else { "" }));
    }
    batch.extend(get_path("/a.txt", ""));
    batch.extend(get_path("/missing", ""));
    c.send(&batch);
    let rs = c.read_responses(12);
    for (i, r) in rs[..10].iter().enumerate() {
        if i == 3 {
            assert_eq!((r.status, r.body.as_slice()), (206, &big[99_990..]));
        } else {
            assert_eq!(r.status, 200, "{i}:\n{}", r.raw_head);
            assert!(r.body == big, "response {i}: body differs");
        }
        assert_keeps_alive(r, "pipelined streamed file");
    }
    assert_eq!(rs[10].body, SUB_A);
    assert_eq!(rs[11].status, 404);
}

/// Past --cache-budget files stream too; an `@FILE` route over the cap streams; the log
/// says how many bodies are cached and how many streamed.
fn streaming_past_the_budget_and_routes(engine: &str) {
    let t = TempTree::new(&format!("sbudget-{engine}"));
    let files: Vec<(String, Vec<u8>)> =
        (0..6).map(|i| (format!("f{i}.bin"), pattern(600 + i * 1000).split_off(i))).collect();
    for (name, data) in &files {
        t.write(&format!("site/{name}"), data);
    }
    let route_data = pattern(300_000);
    let route_file = t.write("route.bin", &route_data);
    let route = format!("/r=@{}", route_file.display());
    let server = Server::start(
        engine,
        &["--dir", &t.path("site"), "--route", &route, "--max-cached-file", "100KiB", "--cache-budget", "3000B"],
    );
    let lines = server.stderr_lines();
    assert!(
        lines.iter().any(|l| l.contains("6 files and 1 routes: 2 bodies cached") && l.contains("5 streamed from disk")),
        "{lines:?}"
    );
    let mut c = server.connect();
    for (name, data) in &files {
        let r = fetch(&mut c, &format!("/{name}"), "");
        assert_eq!(r.status, 200, "{name}");
        assert!(r.body == *data, "{name}: body differs");
    }
    let r = fetch(&mut c, "/r", "");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.body == route_data, "the streamed route differs");
    c.send(b"HEAD /r HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_head_response().header("content-length"), Some("300000"));
    assert_eq!(fetch(&mut c, "/f0.bin", "").body, files[0].1);
}

/// ETag/304 and If-Modified-Since on a streamed file; a reload re-opens the file and
/// serves its new content.
fn streaming_validators_and_reload(engine: &str) {
    let (t, server, big) = streamed_site(engine, "sval", &[]);
    let mut c = server.connect();
    let r = fetch(&mut c, "/big.bin", "");
    assert!(r.body == big);
    let etag = r.header("etag").expect("ETag").to_string();
    let modified = r.header("last-modified").expect("Last-Modified").to_string();
    for cond in [format!("If-None-Match: {etag}\r\n"), format!("If-Modified-Since: {modified}\r\n")] {
        c.send(&get_path("/big.bin", &cond));
        let r = c.read_head_response();
        assert_eq!(r.status, 304, "{cond}{}", r.raw_head);
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("content-length"), None);
    }
    assert_eq!(fetch(&mut c, "/a.txt", "").body, SUB_A, "framing intact after 304s");

    // Replace the file (a new inode) and reload: the new content is streamed.
    let new = pattern(150_000).split_off(7);
    let tmp = t.write("big.tmp", &new);
    std::fs::rename(&tmp, t.root.join("site/big.bin")).unwrap();
    server.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + common::READ_TIMEOUT;
    loop {
        let r = fetch(&mut c, "/big.bin", "");
        assert_eq!(r.status, 200);
        if r.body == new {
            assert_ne!(r.header("etag"), Some(etag.as_str()));
            break;
        }
        assert!(r.body == big, "neither the old nor the new file");
        assert!(std::time::Instant::now() < deadline, "the new file was not served after SIGHUP");
    }
}

// ---------------------------------------------------------------------------------
// Engine counters

/// The value of the sample `name` (no labels) in Prometheus text.
fn prometheus_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

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
