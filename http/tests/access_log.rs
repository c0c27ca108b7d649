//! The access log lines a `Connection` appends, driven in virtual time: the request
//! time spans the turns from a request's first byte to its answer, a head cut short by
//! its deadline is logged as far as it came, and a connection that never sends a
//! request logs nothing.

use duet_http::testing::*;
use duet_http::Connection;
use std::net::SocketAddr;
use std::time::Duration;

/// A connection from 192.0.2.7 on a context with the access log on.
fn logging() -> Driver {
    let mut e = Driver::hello();
    e.ctx.enable_access_log();
    e.conn = Connection::new(&e.ctx);
    e.conn.set_peer(Some(SocketAddr::from(([192, 0, 2, 7], 40000))));
    e
}

fn lines(e: &mut Driver) -> Vec<String> {
    let lines = e.ctx.access_log_lines().expect("the log is on");
    let text = String::from_utf8(std::mem::take(lines)).expect("ASCII");
    text.lines().map(str::to_string).collect()
}

#[test]
fn a_line_per_response_with_the_time_from_the_first_byte_to_the_answer() {
    let mut e = logging();
    e.advance_to(Duration::from_secs(1));
    e.read_event(b"GET / HT");
    e.advance_to(Duration::from_micros(3_500_042));
    e.read_event(b"TP/1.1\r\nHost: a\r\nUser-Agent: ua\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(e.statuses(), [200, 404]);
    let lines = lines(&mut e);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].starts_with("192.0.2.7 - - [06/Nov/1994:08:49:37 +0000] \"GET / HTTP/1.1\" 200 13 \"-\" \"ua\" "));
    assert!(lines[0].ends_with(" 2.500042"), "{}", lines[0]);
    assert!(lines[1].contains("\"GET /nope HTTP/1.1\" 404 ") && lines[1].ends_with(" 0.000000"), "{}", lines[1]);
}

#[test]
fn a_head_cut_short_by_its_deadline_is_logged_as_far_as_it_came() {
    let mut e = logging();
    e.read_event(b"GET /slow HT");
    e.advance_to(Duration::from_secs(10));
    assert_eq!(e.statuses(), [408]);
    let lines = lines(&mut e);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("\"GET /slow HT\" 408 ") && lines[0].ends_with(" 10.000000"), "{}", lines[0]);
}

#[test]
fn a_connection_that_sends_no_request_logs_nothing() {
    let mut e = logging();
    e.read_event(b"\r\n\r\n");
    e.advance_to(Duration::from_secs(10));
    assert!(e.conn.is_closed() && e.out.is_empty());
    assert!(lines(&mut e).is_empty());
}

#[test]
fn with_the_log_off_no_line_is_made() {
    let mut e = Driver::hello();
    e.conn.set_peer(Some(SocketAddr::from(([192, 0, 2, 7], 40000))));
    e.read_event(&get("/"));
    assert_eq!(e.statuses(), [200]);
    assert!(e.ctx.access_log_lines().is_none());
}
