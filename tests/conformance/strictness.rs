//! RFC 9110/9112 strictness: input that can never be valid is answered the moment it is
//! provably invalid, and the syntax rules duet holds requests to.
//!
//! The servers here run with an hour-long header timeout, so an answer that waited for
//! a blank line or a timeout would never come: the client's read timeout fails the test.

use crate::common::{show, Client, Server};
use crate::{assert_hello, expect_rejected, GET};

per_engine!(
    tls_client_hello_is_400_at_once,
    binary_garbage_is_400_at_once,
    over_long_method_is_501_at_once,
    bad_field_line_is_400_before_the_head_ends,
    bad_targets_are_400,
    malformed_versions_are_400_unsupported_505,
    empty_host_is_400,
    options_answers_204_with_allow,
    connect_is_501_and_closes,
    expect_continue_only_when_the_body_is_wanted,
    chunk_extensions_are_strict,
    trailers_are_never_merged,
);

const PATIENT: &[&str] = &["--header-timeout", "1h", "--echo", "/echo"];

fn tls_client_hello_is_400_at_once(engine: &str) {
    let server = Server::start(engine, PATIENT);
    // The start of a TLS 1.2/1.3 ClientHello: a handshake record (0x16), version,
    // length, then the handshake header. An HTTPS client waits for the server here.
    let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    expect_rejected(&server, &hello, 400);
}

fn binary_garbage_is_400_at_once(engine: &str) {
    let server = Server::start(engine, PATIENT);
    for garbage in [&b"\x00"[..], b"\xff\xfe\xfd", b"\x80GET", b" GET / HTTP/1.1"] {
        expect_rejected(&server, garbage, 400);
    }
    // A valid request still works afterwards.
    let mut c = server.connect();
    c.send(GET);
    assert_hello(&c.read_response(), "after garbage");
}

fn over_long_method_is_501_at_once(engine: &str) {
    let server = Server::start(engine, PATIENT);
    // Longer than any method duet implements: never a 414, and no need for the rest.
    expect_rejected(&server, b"PROPFIND", 501);
    expect_rejected(&server, "X".repeat(10_000).as_bytes(), 501);
}

fn bad_field_line_is_400_before_the_head_ends(engine: &str) {
    let server = Server::start(engine, PATIENT);
    expect_rejected(&server, b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Name: x\r\n", 400);
}

fn bad_targets_are_400(engine: &str) {
    let server = Server::start(engine, &[]);
    for target in ["/a b", "/a#frag", "/\x01", "/caf\u{e9}", "/{x}", "/a|b", "localhost:80", "*"] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        expect_rejected(&server, req.as_bytes(), 400);
    }
}

fn malformed_versions_are_400_unsupported_505(engine: &str) {
    let server = Server::start(engine, &[]);
    for version in ["HTTP/1", "HTTP/1.1x", "http/1.1", "HTTP/01.1", "HTTP/2"] {
        let req = format!("GET / {version}\r\nHost: localhost\r\n\r\n");
        expect_rejected(&server, req.as_bytes(), 400);
    }
    for version in ["HTTP/2.0", "HTTP/3.0"] {
        let req = format!("GET / {version}\r\nHost: localhost\r\n\r\n");
        expect_rejected(&server, req.as_bytes(), 505);
    }
}

fn empty_host_is_400(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(&server, b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400);
    expect_rejected(&server, b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400);
}

fn options_answers_204_with_allow(engine: &str) {
    let server = Server::start(engine, &["--echo", "/echo"]);
    let mut c = server.connect();
    let all = "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE";
    for (req, allow) in [
        (&b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n"[..], all),
        (b"OPTIONS / HTTP/1.1\r\nHost: localhost\r\n\r\n", "GET, HEAD, OPTIONS"),
        (b"OPTIONS /echo HTTP/1.1\r\nHost: localhost\r\n\r\n", all),
    ] {
        c.send(req);
        let r = c.read_head_response();
        assert_eq!(r.status, 204, "{}: {}", show(req), r.raw_head);
        assert_eq!(r.header("allow"), Some(allow), "{}", r.raw_head);
        assert_eq!(r.header("content-length"), None, "no Content-Length on 204: {}", r.raw_head);
    }
    c.send(b"OPTIONS /nope HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(c.read_response().status, 404);
    c.send(GET);
    assert_hello(&c.read_response(), "after OPTIONS");
}

fn connect_is_501_and_closes(engine: &str) {
    let server = Server::start(engine, &[]);
    expect_rejected(&server, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501);
}

fn expect_continue_only_when_the_body_is_wanted(engine: &str) {
    let server = Server::start(engine, PATIENT);
    // Accepted: the 100 comes before the body is sent, the final answer after it.
    let mut c = server.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let interim = c.read_head_response();
    assert_eq!(interim.status, 100, "{}", interim.raw_head);
    c.send(b"hello");
    let r = c.read_response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]), "{}", r.raw_head);
    // Refused whatever the body: the final answer at once, no 100, and a close.
    for (req, status) in [
        (&b"POST / HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"[..], 405),
        (b"PUT /nope HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", 404),
        (b"PUT /echo HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\n", 413),
    ] {
        expect_rejected(&server, req, status);
    }
}

fn chunk_extensions_are_strict(engine: &str) {
    let server = Server::start(engine, &["--echo", "/echo"]);
    let head = "POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
    for chunk in ["1;\r\nx\r\n0\r\n\r\n", "1 \r\nx\r\n0\r\n\r\n", "1;a@b\r\nx\r\n0\r\n\r\n", "1;a b\r\nx\r\n0\r\n\r\n"]
    {
        expect_rejected(&server, format!("{head}{chunk}").as_bytes(), 400);
    }
    let mut c = server.connect();
    c.send(format!("{head}1 ; a = \"q\" ;b=c\r\nx\r\n0\r\n\r\n").as_bytes());
    let r = c.read_response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"x"[..]), "{}", r.raw_head);
}

fn trailers_are_never_merged(engine: &str) {
    let server = Server::start(engine, &["--echo", "/echo"]);
    let mut c = Client::connect(server.addr);
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\
          Content-Length: 100\r\nHost: elsewhere\r\nContent-Type: evil/x\r\n\r\nGET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]), "{}", r.raw_head);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let echoed = c.read_response().body_str();
    assert_eq!(echoed, "GET /echo HTTP/1.1\r\nHost: localhost\r\n", "the next request, framed right");
}
