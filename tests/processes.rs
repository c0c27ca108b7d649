//! `duet serve --processes N`: the supervisor over N server processes (docs/processes.md).
//! Restarts, signal forwarding and start-up failures, against the real binary.

mod common;

use common::{Client, Server};
use std::time::{Duration, Instant};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// The process ids whose parent is `pid`, read from `/proc/*/stat`.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // pid (comm) state ppid ...: comm may hold spaces, so read after its last ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            found.push(child);
        }
    }
    found.sort_unstable();
    found
}

fn kill(pid: u32, sig: libc::c_int) {
    // SAFETY: kill takes no pointers; `pid` is a live child of the server under test.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0, "kill {pid}");
}

/// Requests `n` fresh connections; each is answered.
fn answers(server: &Server, n: usize) {
    for i in 0..n {
        let mut c = server.connect();
        c.send(GET);
        let r = c.read_response();
        assert_eq!(r.status, 200, "request {i}: {}", r.raw_head);
    }
}

fn started(engine: &str, extra: &[&str]) -> Option<Server> {
    if let Some(reason) = common::skip_reason(engine) {
        println!("skipping: the {engine} engine cannot run here: {reason}");
        return None;
    }
    Some(Server::start(engine, extra))
}

fn a_killed_process_is_restarted_and_the_port_keeps_answering(engine: &str) {
    let Some(server) = started(engine, &["--processes", "2"]) else { return };
    let before = children(server.pid());
    assert_eq!(before.len(), 2, "two processes under the supervisor: {before:?}");
    answers(&server, 10);
    kill(before[0], libc::SIGKILL);
    // Until it is reaped, the killed process may still take connections (an io_uring
    // accept completes in the kernel without the task running) and they die with it.
    // Once it is gone, connections made while it is down wait in its listener's queue
    // (the supervisor holds the listeners): each is answered.
    server.wait_for_lines("died (killed by signal 9 (SIGKILL)); restarting it", 1);
    answers(&server, 20);
    server.wait_for_lines(" serving http://", 3);
    let after = children(server.pid());
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(!after.contains(&before[0]) && after.contains(&before[1]), "before {before:?}, after {after:?}");
    answers(&server, 20);
}

#[test]
fn a_killed_process_is_restarted_and_the_port_keeps_answering_on_epoll_engine() {
    a_killed_process_is_restarted_and_the_port_keeps_answering("epoll");
}

#[test]
fn a_killed_process_is_restarted_and_the_port_keeps_answering_on_uring_engine() {
    a_killed_process_is_restarted_and_the_port_keeps_answering("uring");
}

#[test]
fn a_process_that_keeps_dying_makes_the_supervisor_give_up_with_an_error() {
    let Some(mut server) = started("epoll", &["--processes", "2"]) else { return };
    // Process 0 is killed soon after each start: an early death each time, and the
    // fifth in a row ends the supervisor.
    for round in 1..=5 {
        server.wait_for_lines("process 0 started", round);
        kill(newest_pid_of(&server, 0), libc::SIGKILL);
    }
    let status = server.wait_exit();
    let lines = server.stderr_lines();
    assert!(!status.success(), "the supervisor exited with success:\n{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l.contains("process 0 keeps dying")), "{}", lines.join("\n"));
    // The supervisor waited for every process it started before it exited.
    for l in lines.iter().filter(|l| l.contains(" started (pid ")) {
        let pid: u32 = l.rsplit("(pid ").next().and_then(|p| p.trim_end_matches(')').parse().ok()).expect("a pid");
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} left behind");
    }
}

/// The pid of the last "process INDEX started (pid PID)" line.
fn newest_pid_of(server: &Server, index: usize) -> u32 {
    let prefix = format!("process {index} started (pid ");
    server
        .stderr_lines()
        .iter()
        .rev()
        .find_map(|l| l[l.find(&prefix)? + prefix.len()..].split(')').next()?.parse().ok())
        .expect("a start line")
}

#[test]
fn a_process_that_cannot_start_is_one_error_and_the_supervisor_exits() {
    let out = common::run_duet(&[
        "serve",
        "--processes",
        "2",
        "--port",
        "0",
        "--engine",
        "epoll",
        "--route",
        "/=@/nonexistent/duet-test-file",
    ]);
    assert!(!out.0.success(), "{}", out.1);
    assert!(out.1.contains("process ") && out.1.contains("exited while starting"), "{}", out.1);
}

#[test]
fn sighup_reaches_every_process() {
    let Some(server) = started("epoll", &["--processes", "2"]) else { return };
    server.signal(libc::SIGHUP);
    server.wait_for_lines("SIGHUP: nothing to reload", 2);
    let mut c = Client::connect(server.addr);
    c.send(GET);
    assert_eq!(c.read_response().status, 200);
}

/// The value of counter `name` on `GET /metrics` (HTTP/1.0: one connection each).
fn metric(server: &Server, name: &str) -> u64 {
    let mut c = server.connect();
    c.send(b"GET /metrics HTTP/1.0\r\n\r\n");
    let text = c.read_response().body_str();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// `--metrics` in a process group: whichever process answers sums the counters of every
/// process (through memory the supervisor shares with them).
#[test]
fn metrics_of_a_process_group_are_the_sum_over_every_process() {
    let Some(server) = started("epoll", &["--processes", "2", "--metrics", "/metrics"]) else { return };
    answers(&server, 40);
    // Each worker publishes when it next waits for events: right after its last answer.
    let give_up = Instant::now() + Duration::from_secs(20);
    while metric(&server, "duet_requests_total") < 40 {
        assert!(Instant::now() < give_up, "the 40 requests never showed in /metrics");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Published: now every answer, whichever process gives it, counts all 40 (one
    // process alone has about half of them).
    for _ in 0..8 {
        let (requests, accepts) = (metric(&server, "duet_requests_total"), metric(&server, "duet_accepts_total"));
        assert!(requests >= 40 && accepts >= 40, "requests {requests}, accepts {accepts}");
    }
}

/// A process killed with SIGKILL takes its connections with it but not its counts: the
/// supervisor folds its counters into a retired slot before its replacement reuses its
/// slot, so no counter on `/metrics` ever goes down, and the connections open (accepts
/// minus closes) drop by the ones it held.
#[test]
fn counters_never_go_down_when_a_process_is_killed_and_its_connections_count_closed() {
    let Some(server) = started("epoll", &["--processes", "2", "--metrics", "/metrics"]) else { return };
    let mut held: Vec<Client> = (0..20).map(|_| server.connect()).collect();
    for c in &mut held {
        c.send(GET);
        assert_eq!(c.read_response().status, 200);
    }
    let open =
        |server: &Server| metric(server, "duet_accepts_total").saturating_sub(metric(server, "duet_closes_total"));
    // Every worker publishes once per loop turn: wait until both have.
    let give_up = Instant::now() + Duration::from_secs(20);
    while open(&server) < 20 {
        assert!(Instant::now() < give_up, "the 20 connections never showed in /metrics");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut last = metric(&server, "duet_requests_total");
    assert!(last >= 20, "{last}");
    // Kill both processes in turn, so every held connection dies, whichever held it.
    for (round, index) in [0, 1].into_iter().enumerate() {
        kill(newest_pid_of(&server, index), libc::SIGKILL);
        server.wait_for_lines("died (killed by signal 9 (SIGKILL)); restarting it", round + 1);
        server.wait_for_lines(" serving http://", 3 + round);
        for _ in 0..10 {
            let now = metric(&server, "duet_requests_total");
            assert!(now >= last, "duet_requests_total went down from {last} to {now}");
            last = now;
        }
    }
    // Each scrape is a connection of its own, closed when answered: at most a few open.
    let give_up = Instant::now() + Duration::from_secs(20);
    while open(&server) >= 20 {
        assert!(Instant::now() < give_up, "the killed processes' connections still count open");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(metric(&server, "duet_requests_total") >= last);
}
