//! Connection management, routing, request bodies and the headers on every response.

use crate::common::{self, show, Client, Response, Server};
use crate::{assert_hello, assert_keeps_alive, GET, GET_404};

per_engine!(
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
    common_headers_on_every_response,
    concurrent_500_connections,
);

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
// Every response; many connections

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
