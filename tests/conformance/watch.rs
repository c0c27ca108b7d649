//! Serving what is on disk now: `--dir` is watched and every change is served without a
//! signal (files added, changed, removed, renamed, precompressed siblings, directories),
//! a file being written is never served as complete, `--no-watch` waits for SIGHUP, and
//! the inotify limit falls back to SIGHUP with one line.
//!
//! No sleeps as synchronisation: each test asks the server until the expected content
//! is served (bounded by `common::READ_TIMEOUT`), and checks every answer on the way.

use crate::common::{self, Response, Server};
use crate::{fetch, TempTree};
use std::io::Write;
use std::time::{Duration, Instant};

per_engine!(
    watch_serves_added_changed_and_removed_files,
    watch_follows_a_rename,
    watch_serves_a_link_added_to_a_served_file,
    watch_never_serves_a_file_rewritten_in_place_before_its_writer_closes_it,
    watch_serves_a_file_replaced_by_rename_whole,
    watch_serves_added_and_removed_directories,
    watch_applies_precompressed_siblings,
    watch_off_serves_what_was_loaded_until_sighup,
    watch_at_the_inotify_limit_falls_back_to_sighup,
    watch_reaching_the_inotify_limit_later_falls_back_to_sighup,
    serve_takes_the_directory_as_an_argument,
    watch_follows_a_dir_symlink_switched_and_reloaded,
);

/// Asks for `path` until `done` holds for the answer, which it returns; every answer
/// before must pass `allowed`. Panics (with the server's log) after the deadline.
fn ask_until(
    server: &Server,
    path: &str,
    headers: &str,
    done: impl Fn(&Response) -> bool,
    allowed: impl Fn(&Response) -> bool,
    what: &str,
) -> Response {
    let deadline = Instant::now() + common::READ_TIMEOUT;
    let mut c = server.connect();
    loop {
        let r = fetch(&mut c, path, headers);
        if done(&r) {
            return r;
        }
        assert!(allowed(&r), "{what}: unexpected answer for {path}:\n{}{}", r.raw_head, r.body_str());
        assert!(
            Instant::now() < deadline,
            "{what}: not served within {:?}; last answer:\n{}{}\nstderr:\n{}",
            common::READ_TIMEOUT,
            r.raw_head,
            r.body_str(),
            server.stderr_lines().join("\n")
        );
        // Not a synchronisation: it only keeps this loop from taking a CPU from the
        // server's watcher thread on a busy machine.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asks until `path` answers `status` with `body` (any body when `None`).
fn wait_for(server: &Server, path: &str, status: u16, body: Option<&[u8]>) -> Response {
    let what = format!("{path} -> {status}");
    ask_until(server, path, "", |r| r.status == status && body.is_none_or(|b| r.body == b), |_| true, &what)
}

/// Waits until the server's log has a line with `needle`.
fn wait_for_log(server: &Server, needle: &str) {
    server.wait_for_line(needle);
}

fn watch_serves_added_changed_and_removed_files(engine: &str) {
    let t = TempTree::new(&format!("watch-acr-{engine}"));
    t.write("site/a.txt", b"first");
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    wait_for_log(&server, "for changes");
    assert_eq!(fetch(&mut server.connect(), "/a.txt", "").body, b"first");

    t.write("site/new.txt", b"a new file");
    wait_for(&server, "/new.txt", 200, Some(b"a new file"));
    t.write("site/a.txt", b"second, longer");
    let r = wait_for(&server, "/a.txt", 200, Some(b"second, longer"));
    assert_eq!(r.header("content-length"), Some("14"));
    std::fs::remove_file(t.path("site/new.txt")).unwrap();
    wait_for(&server, "/new.txt", 404, None);
    // One line per change set, each naming what changed.
    let lines = server.wait_for_line("watch: applied 1 removed");
    let applied: Vec<&String> = lines.iter().filter(|l| l.contains("watch: applied")).collect();
    assert_eq!(applied.len(), 3, "{lines:?}");
    assert!(applied[0].contains("1 added (+") && applied[0].contains("new.txt"), "{}", applied[0]);
    assert!(applied[1].contains("1 changed (~") && applied[1].contains("a.txt"), "{}", applied[1]);
    assert!(applied[2].contains("1 removed (-") && applied[2].contains("new.txt"), "{}", applied[2]);
}

fn watch_follows_a_rename(engine: &str) {
    let t = TempTree::new(&format!("watch-mv-{engine}"));
    t.write("site/a.txt", b"moving");
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    wait_for_log(&server, "for changes");
    std::fs::rename(t.path("site/a.txt"), t.path("site/b.txt")).unwrap();
    wait_for(&server, "/b.txt", 200, Some(b"moving"));
    assert_eq!(fetch(&mut server.connect(), "/a.txt", "").status, 404);
}

/// A symlink to a file already served changes no file, but adds a path.
fn watch_serves_a_link_added_to_a_served_file(engine: &str) {
    let t = TempTree::new(&format!("watch-ln-{engine}"));
    t.write("site/a.txt", b"linked");
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    wait_for_log(&server, "for changes");
    std::os::unix::fs::symlink("a.txt", t.root().join("site/link.txt")).unwrap();
    wait_for(&server, "/link.txt", 200, Some(b"linked"));
    std::fs::remove_file(t.root().join("site/link.txt")).unwrap();
    wait_for(&server, "/link.txt", 404, None);
    assert_eq!(fetch(&mut server.connect(), "/a.txt", "").body, b"linked");
}

/// A file rewritten in place (truncated, then written in two parts): until its writer
/// closes it, duet keeps serving the old version, even when another change is applied
/// meanwhile; then the whole new version.
fn watch_never_serves_a_file_rewritten_in_place_before_its_writer_closes_it(engine: &str) {
    const OLD: &[u8] = b"<p>the old page</p>";
    const NEW: &[u8] = b"<p>the new page, written in two parts</p>";
    let t = TempTree::new(&format!("watch-inplace-{engine}"));
    let page = t.write("site/page.html", OLD);
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    wait_for_log(&server, "for changes");

    let mut writer = std::fs::File::create(&page).unwrap(); // truncates
    writer.write_all(&NEW[..10]).unwrap();
    // Another change, applied while the page is half written: its change set includes
    // the page's events, which came first.
    t.write("site/marker.txt", b"m");
    wait_for(&server, "/marker.txt", 200, Some(b"m"));
    let r = fetch(&mut server.connect(), "/page.html", "");
    assert_eq!(r.body, OLD, "a half-written file was served:\n{}", r.raw_head);

    writer.write_all(&NEW[10..]).unwrap();
    drop(writer);
    ask_until(&server, "/page.html", "", |r| r.body == NEW, |r| r.body == OLD, "the rewritten page");
}

/// A file replaced by a rename (written under a hidden name, then moved into place):
/// every answer is the whole old or the whole new file, also for a streamed one.
fn watch_serves_a_file_replaced_by_rename_whole(engine: &str) {
    let old: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let new: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let t = TempTree::new(&format!("watch-rename-{engine}"));
    t.write("site/data.bin", &old);
    t.write("site/small.bin", &old[..1000]);
    // data.bin is streamed from disk, small.bin is in memory.
    let server = Server::start(engine, &["--dir", &t.path("site"), "--max-cached-file", "64KiB"]);
    wait_for_log(&server, "for changes");
    for (name, old, new) in [("data.bin", &old[..], &new[..]), ("small.bin", &old[..1000], &new[..2000])] {
        let tmp = t.write(&format!("site/.{name}.tmp"), new);
        std::fs::rename(tmp, t.path(&format!("site/{name}"))).unwrap();
        let path = format!("/{name}");
        let r = ask_until(&server, &path, "", |r| r.body == new, |r| r.body == old, name);
        assert_eq!(r.header("content-length"), Some(new.len().to_string().as_str()));
    }
}

fn watch_serves_added_and_removed_directories(engine: &str) {
    let t = TempTree::new(&format!("watch-dirs-{engine}"));
    t.write("site/index.html", b"home");
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    wait_for_log(&server, "for changes");
    t.write("site/docs/deep/x.txt", b"x");
    wait_for(&server, "/docs/deep/x.txt", 200, Some(b"x"));
    assert_eq!(fetch(&mut server.connect(), "/docs", "").status, 301);
    // The new directory is watched too.
    t.write("site/docs/deep/y.txt", b"y");
    wait_for(&server, "/docs/deep/y.txt", 200, Some(b"y"));
    t.write("site/docs/index.html", b"docs");
    wait_for(&server, "/docs/", 200, Some(b"docs"));
    std::fs::remove_dir_all(t.path("site/docs")).unwrap();
    wait_for(&server, "/docs/deep/x.txt", 404, None);
    assert_eq!(fetch(&mut server.connect(), "/docs", "").status, 404);
    assert_eq!(fetch(&mut server.connect(), "/", "").body, b"home");
}

fn watch_applies_precompressed_siblings(engine: &str) {
    let t = TempTree::new(&format!("watch-gz-{engine}"));
    t.write("site/app.js", b"plain javascript");
    let server = Server::start(engine, &["--dir", &t.path("site"), "--precompressed"]);
    wait_for_log(&server, "for changes");
    let gzip = "Accept-Encoding: gzip\r\n";
    assert_eq!(fetch(&mut server.connect(), "/app.js", gzip).header("content-encoding"), None);
    t.write("site/app.js.gz", b"\x1f\x8bGZIPPED");
    let r = ask_until(
        &server,
        "/app.js",
        gzip,
        |r| r.header("content-encoding") == Some("gzip"),
        |r| r.body == b"plain javascript",
        "a new .gz sibling",
    );
    assert_eq!(r.body, b"\x1f\x8bGZIPPED");
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    std::fs::remove_file(t.path("site/app.js.gz")).unwrap();
    ask_until(
        &server,
        "/app.js",
        gzip,
        |r| r.header("content-encoding").is_none(),
        |r| r.body == b"\x1f\x8bGZIPPED",
        "a removed .gz sibling",
    );
}

/// `--no-watch` serves what it loaded until SIGHUP. A watching server on the same
/// directory shows when the change has been seen (no timing guess).
fn watch_off_serves_what_was_loaded_until_sighup(engine: &str) {
    let t = TempTree::new(&format!("watch-off-{engine}"));
    t.write("site/a.txt", b"loaded");
    let off = Server::start(engine, &["--dir", &t.path("site"), "--no-watch"]);
    let on = Server::start(engine, &["--dir", &t.path("site")]);
    wait_for_log(&on, "for changes");
    assert!(off.stderr_lines().iter().any(|l| l.contains("--no-watch")), "{:?}", off.stderr_lines());
    assert!(!off.stderr_lines().iter().any(|l| l.contains("for changes")), "{:?}", off.stderr_lines());
    t.write("site/a.txt", b"edited");
    t.write("site/b.txt", b"added");
    wait_for(&on, "/b.txt", 200, Some(b"added"));
    wait_for(&on, "/a.txt", 200, Some(b"edited"));
    let mut c = off.connect();
    assert_eq!(fetch(&mut c, "/a.txt", "").body, b"loaded");
    assert_eq!(fetch(&mut c, "/b.txt", "").status, 404);
    off.signal(libc::SIGHUP);
    wait_for(&off, "/b.txt", 200, Some(b"added"));
    assert_eq!(fetch(&mut c, "/a.txt", "").body, b"edited");
}

/// More directories than inotify watches (simulated: raising or filling the real
/// `fs.inotify.max_user_watches` needs root or breaks the user's other processes): one
/// line says so, the server serves what it loaded, and SIGHUP still reloads.
fn watch_at_the_inotify_limit_falls_back_to_sighup(engine: &str) {
    let t = TempTree::new(&format!("watch-limit-{engine}"));
    t.write("site/a.txt", b"loaded");
    t.write("site/sub/b.txt", b"b");
    t.write("site/sub/deeper/c.txt", b"c");
    let server = Server::start_with_env(engine, &[("DUET_TEST_MAX_WATCHES", "2")], &["--dir", &t.path("site")]);
    let lines = server.stderr_lines();
    let limit: Vec<&String> = lines.iter().filter(|l| l.contains("inotify watch limit")).collect();
    assert_eq!(limit.len(), 1, "{lines:?}");
    assert!(limit[0].contains("3 directories need 3 watches"), "{}", limit[0]);
    assert!(limit[0].contains("fs.inotify.max_user_watches = 2"), "{}", limit[0]);
    assert!(limit[0].contains("changes are served after SIGHUP"), "{}", limit[0]);
    assert!(!lines.iter().any(|l| l.contains("for changes")), "{lines:?}");
    let mut c = server.connect();
    assert_eq!(fetch(&mut c, "/sub/deeper/c.txt", "").body, b"c");
    t.write("site/a.txt", b"edited");
    server.signal(libc::SIGHUP);
    wait_for(&server, "/a.txt", 200, Some(b"edited"));
}

/// The limit reached by a directory created later: one line, the watcher stops, what
/// is served stays served, and SIGHUP reloads.
fn watch_reaching_the_inotify_limit_later_falls_back_to_sighup(engine: &str) {
    let t = TempTree::new(&format!("watch-limit-later-{engine}"));
    t.write("site/a.txt", b"a");
    t.write("site/sub/b.txt", b"b");
    let server = Server::start_with_env(engine, &[("DUET_TEST_MAX_WATCHES", "2")], &["--dir", &t.path("site")]);
    wait_for_log(&server, "for changes");
    t.write("site/more/c.txt", b"c");
    wait_for_log(&server, "inotify watch limit");
    let mut c = server.connect();
    assert_eq!(fetch(&mut c, "/sub/b.txt", "").body, b"b");
    assert_eq!(fetch(&mut c, "/a.txt", "").body, b"a");
    t.write("site/a.txt", b"edited");
    server.signal(libc::SIGHUP);
    wait_for(&server, "/a.txt", 200, Some(b"edited"));
    wait_for(&server, "/more/c.txt", 200, Some(b"c"));
    let limit = server.stderr_lines().iter().filter(|l| l.contains("inotify watch limit")).count();
    assert_eq!(limit, 1, "{:?}", server.stderr_lines());
}

/// `duet serve DIR`, as `python -m http.server` and miniserve take it; watched too.
fn serve_takes_the_directory_as_an_argument(engine: &str) {
    let t = TempTree::new(&format!("watch-arg-{engine}"));
    t.write("site/index.html", b"positional");
    let server = Server::start(engine, &[&t.path("site")]);
    assert_eq!(fetch(&mut server.connect(), "/", "").body, b"positional");
    wait_for_log(&server, "for changes");
    t.write("site/index.html", b"edited");
    wait_for(&server, "/", 200, Some(b"edited"));
}

/// A deploy that switches a `--dir` symlink to a new release and sends SIGHUP: the new
/// release is served, and from then on watched (its changes served without a signal).
fn watch_follows_a_dir_symlink_switched_and_reloaded(engine: &str) {
    let t = TempTree::new(&format!("watch-switch-{engine}"));
    t.write("releases/1/index.html", b"release 1");
    t.write("releases/2/index.html", b"release 2");
    std::os::unix::fs::symlink("releases/1", t.root().join("current")).unwrap();
    let server = Server::start(engine, &["--dir", &t.path("current")]);
    wait_for_log(&server, "for changes");
    assert_eq!(fetch(&mut server.connect(), "/", "").body, b"release 1");
    // A change applied: the watcher's first walk (through the old link) is done.
    t.write("releases/1/index.html", b"release 1, edited");
    wait_for(&server, "/", 200, Some(b"release 1, edited"));
    std::os::unix::fs::symlink("releases/2", t.root().join("current.new")).unwrap();
    std::fs::rename(t.root().join("current.new"), t.root().join("current")).unwrap();
    server.signal(libc::SIGHUP);
    wait_for(&server, "/", 200, Some(b"release 2"));
    t.write("releases/2/index.html", b"release 2, edited");
    wait_for(&server, "/", 200, Some(b"release 2, edited"));
}
