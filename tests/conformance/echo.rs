//! The echo route (`--echo PATH`): bodies and heads sent back, bounded by the limits.

use crate::common::{show, Server};

per_engine!(
    echo_methods,
    echo_get_shows_the_head,
    echo_over_max_body_is_413,
    slow_body_gets_408,
    echo_flood_keeps_memory_bounded
);

fn echo_methods(engine: &str) {
    let server = Server::start(engine, &["--echo", "/echo"]);
    let mut c = server.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}");
    let r = c.read_response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"{\"a\":1}"[..]), "{}", r.raw_head);
    assert_eq!(r.header("content-type"), Some("application/json"));
    c.send(
        b"PUT /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
    );
    assert_eq!(c.read_response().body, b"hello");
    c.send(b"PATCH /echo?x=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\n!");
    assert_eq!(c.read_response().body, b"!");
    c.send(b"DELETE /echo HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let r = c.read_response();
    assert_eq!((r.status, r.body.len()), (200, 0));
    // The hello site is still served beside the echo route.
    c.send(crate::GET);
    crate::assert_hello(&c.read_response(), "beside --echo");
}

fn echo_get_shows_the_head(engine: &str) {
    let server = Server::start(engine, &["--echo", "/echo"]);
    let mut c = server.connect();
    let req = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nCookie: s=1\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";
    c.send(req);
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, &req[..req.len() - 2], "the request line and fields as received: {}", show(&r.body));
    assert_eq!(r.header("content-type"), Some("text/plain"));
}

fn echo_over_max_body_is_413(engine: &str) {
    let server = Server::start(engine, &["--echo", "/echo", "--max-body-size", "10"]);
    let mut c = server.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 413, "{}", r.raw_head);
    assert!(r.says_close());
    c.expect_closed();
}

fn slow_body_gets_408(engine: &str) {
    // The pause between reads is within the header timeout (an hour), but the body as
    // a whole must arrive within --body-timeout of the end of its head.
    let server = Server::start(engine, &["--echo", "/echo", "--header-timeout", "1h", "--body-timeout", "1s"]);
    let mut c = server.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nsome");
    let r = c.read_response();
    assert_eq!(r.status, 408, "{}", r.raw_head);
    assert!(r.says_close());
    c.expect_closed();
}

/// Resident memory of `pid` in KiB (`VmHWM`: the peak).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

/// Waits up to `ms` for `fd` to take more bytes; true when it can.
fn writable(fd: std::os::fd::RawFd, ms: i32) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) == 1 }
}

fn echo_flood_keeps_memory_bounded(engine: &str) {
    // A greedy client with a small receive buffer: it writes 1 MiB POSTs as long as the
    // server takes them and reads a response only when the server has stopped taking
    // more. Without backpressure the server would read everything and queue every
    // echoed body (64 MiB); with it the server stops reading once its output is over
    // the cap, so its peak memory stays near one body being read plus the queued output
    // (and, on io_uring, its provided buffers). How long the client waits before it
    // reads decides only how hard the test pushes, never whether a correct server passes.
    let server = Server::start(engine, &["--echo", "/echo", "--max-body-size", "1MiB", "--max-output", "256KiB"]);
    let before = peak_rss_kib(server.pid());
    let body = vec![b'z'; 1 << 20];
    let mut post =
        format!("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    post.extend_from_slice(&body);
    let requests = 64;
    let total = post.len() * requests;
    let stream = server.connect_small_rcvbuf(64 * 1024);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let mut c = crate::common::Client::from_stream(stream.try_clone().unwrap());
    let (mut sent, mut answered) = (0, 0);
    while answered < requests {
        if sent < total {
            let chunk = &post[sent % post.len()..];
            // SAFETY: `fd` is the connected socket `stream` owns (alive for this whole
            // loop) and `chunk` is valid for reads of its length.
            let n = unsafe { libc::send(fd, chunk.as_ptr().cast(), chunk.len(), libc::MSG_DONTWAIT) };
            if n > 0 {
                sent += n as usize;
                continue;
            }
            let err = std::io::Error::last_os_error();
            assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "send: {err}");
            if writable(fd, 200) {
                continue;
            }
        }
        if answered < sent / post.len() {
            let r = c.read_response();
            assert!(r.status == 200 && r.body == body, "echo {answered}: {}", r.raw_head);
            answered += 1;
        } else {
            assert!(writable(fd, crate::common::READ_TIMEOUT.as_millis() as i32), "the server stopped reading");
        }
    }
    let grown = peak_rss_kib(server.pid()).saturating_sub(before);
    eprintln!("{engine}: peak RSS grew by {grown} KiB");
    assert!(grown < 40 * 1024, "the server's peak memory grew by {grown} KiB for a 64 MiB flood");
}
