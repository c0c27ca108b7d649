//! Rejections: status, `Connection: close`, then a close.

use crate::common::Server;
use crate::{assert_hello, expect_rejected, GET};

per_engine!(
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
);

/// A request with extra header lines (each ending in CRLF) and a Host.
fn get_with(headers: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n").into_bytes()
}

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
