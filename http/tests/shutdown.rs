//! Graceful shutdown, driven the way an engine drives it: `begin_shutdown`, then input
//! the socket still held, or the engine's word that it holds none.

use duet_http::testing::*;
use duet_http::{Limits, Site, Timer};
use std::sync::Arc;
use std::time::Duration;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn an_idle_connection_closes_by_half_close_once_no_input_is_pending() {
    let mut fresh = Driver::hello();
    fresh.shutdown();
    assert!(!fresh.conn.is_closed(), "not before the engine has checked its socket");
    assert!(fresh.conn.wants_input_check());
    fresh.no_pending_input();
    assert!(fresh.write_shut, "a half-close, never a close that could reset");
    assert!(!fresh.conn.is_closed() && fresh.conn.wants_read(), "lingers, reading what still comes");
    assert!(fresh.out.is_empty());
    fresh.eof();
    assert!(fresh.conn.is_closed());

    let mut kept = Driver::hello();
    kept.read_event(&get("/"));
    kept.shutdown();
    kept.no_pending_input();
    assert!(kept.write_shut);
    assert_eq!(kept.responses().len(), 1);
    // A request that crossed the half-close on the wire is discarded, not answered.
    kept.read_event(&get("/"));
    assert_eq!(kept.responses().len(), 1);
}

#[test]
fn a_request_still_in_the_socket_when_shutdown_begins_is_answered_with_close() {
    let mut e = Driver::hello();
    e.read_event(&get("/"));
    e.shutdown();
    // The engine's last read finds a request that was sent before the shutdown.
    assert!(e.read_event(&get("/")));
    let rs = e.responses();
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[0].connection(), None);
    assert_eq!(rs[1].status, 200);
    assert_eq!(rs[1].connection(), Some("close"));
    assert!(e.write_shut);
    assert!(!e.conn.wants_input_check(), "the close is decided");
}

#[test]
fn queued_responses_are_sent_then_the_next_request_received_is_the_last() {
    let mut e = Driver::hello();
    e.feed(&cat(&[&get("/"), &get("/")]));
    e.conn.begin_shutdown(&mut e.ctx);
    assert!(!e.conn.wants_input_check(), "responses are still queued");
    e.no_pending_input();
    assert!(!e.write_shut, "the engine's word does not cut queued responses short");
    assert_eq!(e.responses().len(), 2);
    // Flushed: now the connection asks again, and a request that came meanwhile is
    // answered with close.
    assert!(e.conn.wants_input_check());
    e.read_event(&get("/"));
    let rs = e.responses();
    assert_eq!(rs.iter().map(|r| r.connection()).collect::<Vec<_>>(), [None, None, Some("close")]);
    assert!(e.write_shut);
}

#[test]
fn input_held_back_by_backpressure_answers_its_next_request_with_close() {
    let limits = Limits { max_output: 1024, ..Limits::default() };
    let mut e = Driver::new(Site::hello(), limits);
    let flood: Vec<u8> = (0..100).flat_map(|_| get("/")).collect();
    e.feed(&flood);
    assert!(e.conn.buffered_input() > 0 && !e.conn.wants_read(), "parsing paused at the output cap");
    let one = {
        let mut alone = Driver::hello();
        alone.read_event(&get("/"));
        alone.out.len()
    };
    assert_eq!(e.conn.output_len() % one, 0);
    let queued = e.conn.output_len() / one;
    e.shutdown();
    let rs = e.responses();
    assert_eq!(rs.len(), queued + 1, "the queued responses and one more");
    assert!(rs[..queued].iter().all(|r| r.connection().is_none()));
    assert_eq!(rs[queued].connection(), Some("close"));
    assert!(e.write_shut);
    assert_eq!(e.conn.buffered_input(), 0, "the rest is discarded");
}

#[test]
fn a_request_in_progress_is_answered_with_close_whatever_the_engine_says() {
    let mut e = Driver::hello();
    e.read_event(b"GET / HTTP/1.1\r\nHo");
    e.shutdown();
    assert!(!e.conn.wants_input_check());
    e.no_pending_input();
    assert!(!e.write_shut && e.conn.wants_read(), "a started head is not cut off");
    e.read_event(&cat(&[b"st: a\r\n\r\n", &get("/")]));
    let rs = e.responses();
    assert_eq!(rs.len(), 1, "only the request in progress is answered");
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].connection(), Some("close"));
    assert!(e.write_shut);
}

#[test]
fn a_body_in_progress_is_answered_with_close() {
    let mut e = Driver::hello();
    e.read_event(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\na");
    e.shutdown();
    e.no_pending_input();
    assert!(!e.write_shut);
    e.read_event(b"bc");
    let rs = e.responses();
    assert_eq!(rs[0].status, 405);
    assert_eq!(rs[0].connection(), Some("close"));
    assert!(e.write_shut);
}

#[test]
fn empty_lines_received_while_draining_do_not_keep_the_connection() {
    let mut e = Driver::with_site(Arc::new(Site::hello()), Limits::default());
    e.shutdown();
    e.read_event(b"\r\n\r");
    assert!(e.conn.wants_input_check(), "an empty line starts no request");
    e.no_pending_input();
    assert!(e.write_shut);
    assert_eq!(e.conn.buffered_input(), 0);
    assert!(e.out.is_empty());
}

/// A lame-duck period of `secs` seconds from `e`'s present, as the engine core begins
/// it with the drain.
fn lame_duck(e: &mut Driver, secs: u64) {
    let end = e.ctx.now() + Duration::from_secs(secs);
    e.ctx.begin_lame_duck(end);
    e.shutdown();
}

#[test]
fn within_the_lame_duck_an_idle_connection_waits_for_its_next_request_and_answers_it_with_close() {
    let mut e = Driver::hello();
    e.read_event(&get("/"));
    lame_duck(&mut e, 2);
    assert!(!e.conn.wants_input_check(), "no close while the lame duck lasts");
    assert_eq!((e.timer(), e.deadline()), (Some(Timer::Idle), Some(secs(2))), "it waits until the period ends");
    // The client's next request was on the wire when the drain began.
    e.pass_time(secs(1));
    assert!(e.read_event(&get("/")));
    let rs = e.responses();
    assert_eq!(rs.iter().map(|r| r.connection()).collect::<Vec<_>>(), [None, Some("close")]);
    assert!(e.write_shut, "then a half-close");
}

#[test]
fn at_the_lame_ducks_end_an_idle_connection_closes_as_any_draining_one_does() {
    let mut e = Driver::hello();
    e.read_event(&get("/"));
    lame_duck(&mut e, 2);
    e.pass_time(secs(2));
    assert!(!e.conn.is_closed(), "not an idle timeout's plain close");
    assert!(e.conn.wants_input_check(), "the engine checks its socket, then half-closes");
    e.no_pending_input();
    assert!(e.write_shut);
    assert_eq!(e.responses().len(), 1);
    // The engine's check is bounded: a linger later the connection goes anyway.
    let mut slow = Driver::hello();
    lame_duck(&mut slow, 2);
    slow.pass_time(secs(2));
    assert!(slow.conn.wants_input_check());
    slow.pass_time(Limits::default().linger_timeout);
    assert!(slow.conn.is_closed());
}

#[test]
fn a_keep_alive_wait_that_starts_in_the_lame_duck_ends_with_it() {
    // A response queued before the drain and sent after it began: the keep-alive wait
    // starts at the send, and still ends when the lame duck does.
    let mut e = Driver::hello();
    e.feed(&get("/"));
    lame_duck(&mut e, 2);
    e.flush();
    assert_eq!(e.responses()[0].connection(), None, "queued before the drain");
    assert_eq!((e.timer(), e.deadline()), (Some(Timer::Idle), Some(secs(2))));
    // A connection whose keep-alive deadline comes first keeps it, and then closes as a
    // draining one does.
    let limits = Limits { keepalive_timeout: secs(1), ..Limits::default() };
    let mut short = Driver::new(Site::hello(), limits);
    short.read_event(&get("/"));
    lame_duck(&mut short, 2);
    assert_eq!(short.deadline(), Some(secs(1)));
    short.pass_time(secs(1));
    assert!(short.conn.wants_input_check());
}

#[test]
fn a_lame_duck_that_has_ended_is_no_period_at_all() {
    let mut e = Driver::hello();
    e.read_event(&get("/"));
    lame_duck(&mut e, 0);
    assert!(e.conn.wants_input_check(), "closes once no input is pending, as without a lame duck");
}
