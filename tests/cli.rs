//! The command line of `duet serve` (not per engine): one-line errors, and a server that
//! outlives its log reader.

mod common;

use common::{run_duet, Server};
use std::net::TcpListener;

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
    let mut server = Server::start_then_close_stderr("epoll", &[]);
    let mut c = server.connect();
    for _ in 0..3 {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.read_response().status, 200, "served after stderr closed");
    }
    drop(c);
    server.sigterm();
    // Bounded: the harness kills the server and fails the test if it does not exit.
    let status = server.wait_exit();
    assert!(status.success(), "graceful shutdown should exit 0, got {status}");
}
