//! Conformance suite: the real `duet serve` on an ephemeral port, checked over raw TCP,
//! against every engine.
//!
//! Every test is a plain function taking the engine name, in the module of its area.
//! Each module opens with its list of tests, `per_engine!(test_a, test_b, ...)`, which
//! makes one `#[test]` per function and engine, named `AREA::ENGINE::TEST` (for
//! example `connection::epoll::keep_alive`; run one engine with
//! `cargo test --test conformance -- ::epoll::`). The engines are listed once, in
//! [`per_engine!`]: adding an engine to the whole suite is one line there. An engine
//! that reports at start-up that it is unavailable (or not built yet) is skipped with a
//! message, unless `DUET_REQUIRE_URING=1`.
//!
//! Rules: each test starts its own server (`common::Server`, killed on drop); no sleeps
//! as synchronisation; no timing assertions; every rejection checks the status,
//! `Connection: close`, and that the server closes.

#[path = "../common/mod.rs"]
mod common;

/// The engines the whole suite runs against, one line each. Invoked by every area
/// module with its list of test functions.
macro_rules! per_engine {
    ($($tests:tt)*) => {
        engine_tests!(epoll, "epoll"; $($tests)*);
        engine_tests!(uring, "uring"; $($tests)*);
        engine_tests!(uring_plain, "uring:none"; $($tests)*);
        engine_tests!(uring_fd_sendfile, "uring:no-direct"; $($tests)*);
        engine_tests!(uring_splice, "uring:splice"; $($tests)*);
        engine_tests!(uring_read_files, "uring:no-sendfile"; $($tests)*);
        engine_tests!(epoll_lt, "epoll-lt"; $($tests)*);
        engine_tests!(poll, "poll"; $($tests)*);
        engine_tests!(select, "select"; $($tests)*);
    };
}

/// `mod $module { #[test] fn test() { super::test($engine) } ... }`, skipping (with a
/// message) when the engine is unavailable here.
macro_rules! engine_tests {
    ($module:ident, $engine:literal; $($name:ident),* $(,)?) => {
        mod $module {
            $(
                #[test]
                fn $name() {
                    if let Some(reason) = crate::common::skip_reason($engine) {
                        eprintln!("skipping {} on engine {}: {}", stringify!($name), $engine, reason);
                        return;
                    }
                    super::$name($engine);
                }
            )*
        }
    };
}

mod access_log;
mod connection;
mod echo;
mod engine_risks;
mod file_bodies;
mod metrics;
mod rejections;
mod site_options;
mod slow_readers;
mod static_files;
mod streaming;
mod strictness;
mod timeouts_shutdown;
mod watch;

use common::{show, Client, Response};

const HELLO: &[u8] = b"Hello, World!";
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
const GET_404: &[u8] = b"GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n";

// ---------------------------------------------------------------------------------
// Helpers

fn assert_hello(r: &Response, what: &str) {
    assert_eq!(r.status, 200, "{what}: expected 200, got\n{}", r.raw_head);
    assert_eq!(r.body, HELLO, "{what}: body {}", show(&r.body));
}

/// Sends `request` (a whole request, or only the bytes that prove it invalid) on a
/// fresh connection and expects `status` with `Connection: close`, then the close.
fn expect_rejected(server: &common::Server, request: &[u8], status: u16) {
    let mut c = server.connect();
    c.send(request);
    let r = c.read_response();
    assert_eq!(r.status, status, "request {} answered with\n{}", show(request), r.raw_head);
    assert!(r.says_close(), "request {}: no Connection: close in\n{}", show(request), r.raw_head);
    c.expect_closed();
}

fn assert_keeps_alive(r: &Response, what: &str) {
    assert!(!r.says_close(), "{what}: unexpected Connection: close in\n{}", r.raw_head);
}

/// The value of the sample `name` (no labels) in Prometheus text.
fn prometheus_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

// ---------------------------------------------------------------------------------
// Static files: fixtures shared by `static_files` and `streaming`

const SECRET: &[u8] = b"TOP-SECRET-OUTSIDE-THE-DIR";
const SUB_A: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

/// A directory tree under the system temp dir, removed on drop.
struct TempTree {
    dir: tempfile::TempDir,
}

impl TempTree {
    fn new(tag: &str) -> TempTree {
        TempTree { dir: tempfile::Builder::new().prefix(&format!("duet-static-{tag}-")).tempdir().unwrap() }
    }

    fn root(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, data: &[u8]) -> std::path::PathBuf {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }

    fn path(&self, rel: &str) -> String {
        self.root().join(rel).to_str().unwrap().to_string()
    }

    /// The standard site: `site/` is served; `secret.txt` lies outside it.
    fn site(tag: &str) -> TempTree {
        let t = TempTree::new(tag);
        t.write("secret.txt", SECRET);
        t.write("site/index.html", b"<h1>home</h1>");
        t.write("site/style.css", b"body{}");
        t.write("site/data.json", b"{}");
        t.write("site/app.js", b"1");
        t.write("site/img.png", b"\x89PNG");
        t.write("site/blob.unknownext", b"?");
        t.write("site/sub/index.html", b"<p>sub</p>");
        t.write("site/sub/a.txt", SUB_A);
        t.write("site/noindex/b.txt", b"b");
        t.write("site/.hidden.txt", b"hidden");
        t.write("site/.git/config", b"[core]");
        std::os::unix::fs::symlink("../secret.txt", t.root().join("site/escape.txt")).unwrap();
        std::os::unix::fs::symlink(t.root().join("secret.txt"), t.root().join("site/escape-abs.txt")).unwrap();
        std::os::unix::fs::symlink("..", t.root().join("site/up")).unwrap();
        std::os::unix::fs::symlink("sub/a.txt", t.root().join("site/inside.txt")).unwrap();
        t
    }
}

fn get_path(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n").into_bytes()
}

fn fetch(c: &mut Client, path: &str, headers: &str) -> Response {
    c.send(&get_path(path, headers));
    c.read_response()
}
