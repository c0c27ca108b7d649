//! The io_uring engine's optional features (`--uring-features`): each one turned off
//! leaves a working engine and says so in the one features line; and what each one
//! changes that a client or the process can see. (The whole conformance suite runs with
//! every feature on, `uring`, and every one off, `uring:none`.)

mod common;

use common::{Client, Server};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
const FEATURES: [&str; 11] =
    ["direct", "ring-fd", "flat-sq", "send", "bundle", "zc", "inc", "sendfile", "splice", "mmap", "mmap-zc"];

/// The io_uring engine is here, or the test is skipped (unless DUET_REQUIRE_URING=1).
fn uring_here() -> bool {
    match common::skip_reason("uring") {
        Some(reason) => {
            eprintln!("skipped: {reason}");
            false
        }
        None => true,
    }
}

fn features_line(server: &Server) -> String {
    let lines = server.stderr_lines();
    let found: Vec<&String> = lines.iter().filter(|l| l.contains("io_uring features on:")).collect();
    assert_eq!(found.len(), 1, "expected one features line in:\n{}", lines.join("\n"));
    found[0].clone()
}

fn assert_serves(server: &Server, what: &str) {
    let mut c = server.connect();
    for _ in 0..3 {
        c.send(GET);
        let r = c.read_response();
        assert!(r.status == 200 && r.body == b"Hello, World!", "{what}: status {}", r.status);
    }
}

#[test]
fn uring_features_all_are_on_here_and_each_turned_off_is_named() {
    if !uring_here() {
        return;
    }
    let server = Server::start("uring:all", &[]);
    let line = features_line(&server);
    let on = line.split("io_uring features on: ").nth(1).unwrap_or_default();
    assert_eq!(on.split(',').collect::<Vec<_>>(), FEATURES, "{line}");
    assert_serves(&server, "all features");
    let server = Server::start("uring", &[]);
    let line = features_line(&server);
    assert!(
        line.ends_with(
            "on: direct,ring-fd,flat-sq,send,bundle,inc,sendfile; off: zc (--uring-features), splice (--uring-features), \
             mmap (--uring-features), mmap-zc (--uring-features)"
        ),
        "{line}"
    );
    for feature in FEATURES {
        let server = Server::start(&format!("uring:all,no-{feature}"), &[]);
        let line = features_line(&server);
        assert!(line.contains(&format!("off: {feature} (--uring-features)")), "{feature}: {line}");
        assert_serves(&server, feature);
    }
    let server = Server::start("uring:none", &[]);
    let line = features_line(&server);
    assert!(line.contains("io_uring features on: none; off: direct (--uring-features), ring-fd"), "{line}");
    assert_serves(&server, "no feature");
}

#[test]
fn uring_features_a_bad_list_is_a_usage_error_naming_the_valid_ones() {
    let (status, stderr) = common::run_duet(&["serve", "--uring-features", "no-direct,turbo"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown io_uring feature 'turbo'") && stderr.contains("ring-fd"), "{stderr}");
}

/// Direct descriptors live in the ring's file table, not the process's: holding 40
/// connections opens no descriptor; without them it opens one each.
#[test]
fn uring_features_direct_descriptors_take_no_process_descriptor() {
    if !uring_here() {
        return;
    }
    for (engine, direct) in [("uring", true), ("uring:no-direct", false)] {
        let server = Server::start(engine, &[]);
        let before = server.fd_count();
        let clients: Vec<Client> = (0..40)
            .map(|_| {
                let mut c = server.connect();
                c.send(GET);
                assert_eq!(c.read_response().status, 200);
                c
            })
            .collect();
        let held = server.fd_count() - before;
        if direct {
            assert!(held < 5, "{engine}: {held} descriptors for 40 connections");
        } else {
            assert!(held >= 40, "{engine}: {held} descriptors for 40 connections");
        }
        drop(clients);
    }
}

/// A response of at least `--uring-zc-threshold` bytes goes out zero-copy (the count is
/// logged at exit), arrives whole, and one below it does not.
#[test]
fn uring_features_large_responses_are_sent_zero_copy_and_arrive_whole() {
    if !uring_here() {
        return;
    }
    let dir = tempdir("zc");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.join("big.bin"), &body).expect("write");
    let route = format!("/big=@{}", dir.join("big.bin").display());
    for (threshold, zero_copy) in [("64KiB", true), ("1MiB", false)] {
        let mut server = Server::start(
            "uring:zc",
            &["--route", &route, "--uring-zc-threshold", threshold, "--max-cached-file", "1MiB"],
        );
        let mut c = server.connect();
        for _ in 0..3 {
            c.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
            let r = c.read_response();
            assert!(r.status == 200 && r.body == body, "threshold {threshold}: the body arrives whole");
        }
        drop(c);
        server.sigterm();
        assert!(server.wait_exit().success());
        let lines = server.stderr_lines();
        let zc = lines.iter().find(|l| l.contains("zero-copy sends"));
        match (zero_copy, zc) {
            (true, Some(line)) => {
                let sends: u64 =
                    line.split(": ").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
                assert!(sends >= 3, "three 300 KB responses, {sends} zero-copy sends: {line}");
            }
            (true, None) => panic!("no zero-copy send logged:\n{}", lines.join("\n")),
            (false, Some(line)) => panic!("threshold {threshold}: {line}"),
            (false, None) => {}
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// With incremental consumption the receive pool is 64 x 32 KiB (2 MiB) by default;
/// without it, 1024 x 16 KiB; `--uring-buffers` and `--uring-buffer-size` still win.
#[test]
fn uring_features_the_receive_pool_follows_incremental_consumption() {
    if !uring_here() {
        return;
    }
    for (engine, extra, want) in [
        ("uring", &[][..], "64 x 32768 B receive buffers (incremental)"),
        ("uring:no-inc", &[][..], "1024 x 16384 B receive buffers"),
        (
            "uring",
            &["--uring-buffers", "16", "--uring-buffer-size", "4KiB"][..],
            "16 x 4096 B receive buffers (incremental)",
        ),
    ] {
        let mut server = Server::start(engine, extra);
        assert_serves(&server, engine);
        // The worker thread logs its line after the listening line: read the log once
        // the server has exited (its stderr ended), not while the reader may lag.
        server.sigterm();
        assert!(server.wait_exit().success());
        let lines = server.stderr_lines();
        let pool = lines.iter().find(|l| l.contains("receive buffers")).expect("the worker's line");
        assert!(pool.ends_with(want), "{engine} {extra:?}: want {want:?} in {pool}");
    }
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("duet-uring-features-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The access log needs each connection's peer address, which a direct descriptor
/// cannot give: with `--access-log`, direct descriptors are off, and the line says why.
#[test]
fn uring_features_the_access_log_turns_direct_descriptors_off() {
    if !uring_here() {
        return;
    }
    let dir = tempdir("access-log");
    let log = dir.join("access.log");
    let server = Server::start("uring", &["--access-log", &log.display().to_string()]);
    let line = features_line(&server);
    assert!(
        line.contains(
            "splice (--uring-features), mmap (--uring-features), mmap-zc (--uring-features), direct (--access-log"
        ),
        "{line}"
    );
    assert_serves(&server, "with an access log");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Threads of the server process (io_uring's io-wq workers show up here).
fn threads(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", server.pid())).expect("read /proc/<pid>/task").count()
}

/// File bodies by `sendfile` from the loop: a direct descriptor gets a process fd for
/// it (`IORING_OP_FIXED_FD_INSTALL`) the first time its connection sends a file, kept
/// until the connection closes, and no thread is added. Ring splices are punted to
/// io-wq worker threads, which appear in /proc/PID/task; the chunk buffer path and the
/// sends from a file mapping (socket sends, waited for by io_uring's internal poll)
/// need neither fd nor thread.
#[test]
fn uring_features_sendfile_installs_one_fd_per_connection_and_splices_run_in_io_wq_threads() {
    if !uring_here() {
        return;
    }
    let dir = tempdir("file-paths");
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 249) as u8).collect();
    std::fs::write(dir.join("big.bin"), &body).expect("write");
    std::fs::write(dir.join("small.txt"), b"small").expect("write");
    let site = dir.display().to_string();
    for (engine, fds_each, more_threads) in [
        ("uring", true, false),
        ("uring:no-sendfile", false, false),
        ("uring:splice", false, true),
        ("uring:mmap", false, false),
        ("uring:mmap-zc", false, false),
    ] {
        let server = Server::start(engine, &["--dir", &site]);
        // The worker thread is running once it has answered.
        let mut first = server.connect();
        first.send(b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(first.read_response().body, b"small");
        let (fds, tasks) = (server.fd_count(), threads(&server));
        let clients: Vec<Client> = (0..20)
            .map(|_| {
                let mut c = server.connect();
                for _ in 0..2 {
                    c.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
                    let r = c.read_response();
                    assert!(r.status == 200 && r.body == body, "{engine}: the body arrives whole");
                }
                c
            })
            .collect();
        let held = server.fd_count() - fds;
        if fds_each {
            assert!((20..25).contains(&held), "{engine}: {held} descriptors for 20 connections");
        } else {
            // Splice pipes (two descriptors each) are pooled: 16 at most are kept.
            assert!(held <= 34, "{engine}: {held} descriptors for 20 connections");
        }
        let added = threads(&server) - tasks;
        assert_eq!(added > 0, more_threads, "{engine}: {added} threads added");
        drop(clients);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
