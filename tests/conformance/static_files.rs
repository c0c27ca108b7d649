//! Static content: `--route`, `--dir`, validators, ranges, symlinks, reloads.

use crate::common::{self, run_duet, Client, Server};
use crate::{assert_hello, assert_keeps_alive, fetch, get_path, TempTree, SECRET, SUB_A};

per_engine!(
    static_content_types,
    static_route_64k_file,
    static_etag_304,
    static_if_modified_since,
    static_index_and_redirect,
    static_dotfiles_hidden_unless_flag,
    static_traversal_refused,
    static_symlinks,
    static_ranges,
    static_head_on_file,
    static_startup_errors,
    static_sighup_reload,
);

fn static_content_types(engine: &str) {
    let t = TempTree::site(&format!("types-{engine}"));
    let json = t.write("route.json", b"[1]");
    let site = t.path("site");
    let route_file = format!("/r=@{}", json.display());
    let server = Server::start(
        engine,
        &[
            "--dir",
            &site,
            "--route",
            "/t=plain text",
            "--route",
            &route_file,
            "--route-type",
            "/blob.unknownext=text/x-blob",
        ],
    );
    let mut c = server.connect();
    for (path, ty) in [
        ("/index.html", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/data.json", "application/json"),
        ("/img.png", "image/png"),
        ("/blob.unknownext", "text/x-blob"),
        ("/noindex/b.txt", "text/plain; charset=utf-8"),
        ("/t", "text/plain; charset=utf-8"),
        ("/r", "application/json"),
    ] {
        let r = fetch(&mut c, path, "");
        assert_eq!(r.status, 200, "{path}:\n{}", r.raw_head);
        assert_eq!(r.header("content-type"), Some(ty), "{path}:\n{}", r.raw_head);
        assert_keeps_alive(&r, path);
    }
    assert!(fetch(&mut c, "/app.js", "").header("content-type").unwrap().contains("javascript"));
    assert_eq!(fetch(&mut c, "/t", "").body, b"plain text");
    assert_eq!(fetch(&mut c, "/r", "").body, b"[1]");
    let r = fetch(&mut c, "/sub/a.txt", "");
    assert_eq!(r.body, SUB_A);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").is_some_and(|e| e.starts_with('"') && e.ends_with('"')), "{}", r.raw_head);
    assert!(r.header("last-modified").is_some_and(|d| d.ends_with(" GMT")), "{}", r.raw_head);
    assert_eq!(fetch(&mut c, "/missing.txt", "").status, 404);
}

fn static_route_64k_file(engine: &str) {
    let t = TempTree::new(&format!("64k-{engine}"));
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 256) as u8).collect();
    let file = t.write("payload.bin", &data);
    let route = format!("/64k=@{}", file.display());
    let server = Server::start(engine, &["--route", &route, "--route", "/=Hello, World!"]);
    let mut c = server.connect();
    for _ in 0..3 {
        let r = fetch(&mut c, "/64k", "");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert!(r.body == data, "64 KiB body differs");
    }
    assert_hello(&fetch(&mut c, "/", ""), "--route /=Hello, World!");
}

fn static_etag_304(engine: &str) {
    let t = TempTree::site(&format!("etag-{engine}"));
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    let r = fetch(&mut c, "/style.css", "");
    let etag = r.header("etag").expect("ETag").to_string();
    let modified = r.header("last-modified").expect("Last-Modified").to_string();
    for inm in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}"), "*".to_string()] {
        c.send(&get_path("/style.css", &format!("If-None-Match: {inm}\r\n")));
        let r = c.read_head_response();
        assert_eq!(r.status, 304, "If-None-Match: {inm}\n{}", r.raw_head);
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("last-modified"), Some(modified.as_str()));
        assert_eq!(r.header("content-length"), None, "{}", r.raw_head);
        assert!(r.header("date").is_some());
        assert_keeps_alive(&r, "304");
    }
    // The connection is still framed correctly after 304s.
    let r = fetch(&mut c, "/style.css", "If-None-Match: \"stale\"\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"body{}");
    c.send(&format!("HEAD /style.css HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n").into_bytes());
    assert_eq!(c.read_head_response().status, 304);
    assert_eq!(fetch(&mut c, "/index.html", "").body, b"<h1>home</h1>");
}

fn static_if_modified_since(engine: &str) {
    let t = TempTree::site(&format!("ims-{engine}"));
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    let r = fetch(&mut c, "/data.json", "");
    let modified = r.header("last-modified").unwrap().to_string();
    c.send(&get_path("/data.json", &format!("If-Modified-Since: {modified}\r\n")));
    let r = c.read_head_response();
    assert_eq!(r.status, 304, "{}", r.raw_head);
    let r = fetch(&mut c, "/data.json", "If-Modified-Since: Thu, 01 Jan 1970 00:00:01 GMT\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"{}");
    let r = fetch(&mut c, "/data.json", "If-Modified-Since: not a date\r\n");
    assert_eq!(r.status, 200);
    // If-None-Match that does not match wins over a satisfied If-Modified-Since.
    let r = fetch(&mut c, "/data.json", &format!("If-None-Match: \"x\"\r\nIf-Modified-Since: {modified}\r\n"));
    assert_eq!(r.status, 200);
}

fn static_index_and_redirect(engine: &str) {
    let t = TempTree::site(&format!("index-{engine}"));
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    assert_eq!(fetch(&mut c, "/", "").body, b"<h1>home</h1>");
    assert_eq!(fetch(&mut c, "/?q=1", "").body, b"<h1>home</h1>");
    assert_eq!(fetch(&mut c, "/sub/", "").body, b"<p>sub</p>");
    let r = fetch(&mut c, "/sub", "");
    assert_eq!(r.status, 301, "{}", r.raw_head);
    assert_eq!(r.header("location"), Some("/sub/"));
    assert_keeps_alive(&r, "301");
    let r = fetch(&mut c, "/sub?a=1&b=2", "");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/sub/?a=1&b=2"));
    let r = fetch(&mut c, "/noindex", "");
    assert_eq!(r.header("location"), Some("/noindex/"));
    assert_eq!(fetch(&mut c, "/noindex/", "").status, 403, "a directory without index is forbidden, as in nginx");
    assert_eq!(fetch(&mut c, "/noindex/b.txt", "").body, b"b");
}

fn static_dotfiles_hidden_unless_flag(engine: &str) {
    let t = TempTree::site(&format!("dot-{engine}"));
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    for path in ["/.hidden.txt", "/.git/config", "/.git", "/.git/"] {
        let r = fetch(&mut c, path, "");
        assert_eq!(r.status, 404, "{path}:\n{}", r.raw_head);
    }
    drop(server);
    let server = Server::start(engine, &["--dir", &t.path("site"), "--dotfiles"]);
    let mut c = server.connect();
    assert_eq!(fetch(&mut c, "/.hidden.txt", "").body, b"hidden");
    assert_eq!(fetch(&mut c, "/.git/config", "").body, b"[core]");
}

fn static_traversal_refused(engine: &str) {
    let t = TempTree::site(&format!("trav-{engine}"));
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    for target in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%2fsecret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/%c0%ae%c0%ae%c0%afsecret.txt",
        "/%00../secret.txt",
        "/index.html%00",
        "/escape.txt",
        "/escape-abs.txt",
        "/up/secret.txt",
        "/up/site/index.html",
        "/sub/./a.txt",
        "//secret.txt",
    ] {
        let mut c = server.connect();
        c.send(&get_path(target, ""));
        let r = c.read_response();
        assert!(matches!(r.status, 400 | 404), "{target} answered\n{}", r.raw_head);
        assert!(!r.body.windows(SECRET.len()).any(|w| w == SECRET), "{target} leaked the secret");
        assert!(!r.body.windows(SUB_A.len()).any(|w| w == SUB_A), "{target} served a file");
    }
}

fn static_symlinks(engine: &str) {
    let t = TempTree::site(&format!("link-{engine}"));
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    assert_eq!(fetch(&mut c, "/inside.txt", "").body, SUB_A, "a symlink inside --dir is served");
    assert_eq!(fetch(&mut c, "/escape.txt", "").status, 404);
    let lines = server.stderr_lines();
    assert!(lines.iter().any(|l| l.contains("escape.txt") && l.contains("outside")), "{lines:?}");
}

fn static_ranges(engine: &str) {
    let t = TempTree::site(&format!("range-{engine}"));
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    t.write("site/big.bin", &big);
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    for (range, first, last) in [
        ("bytes=0-9", 0, 9),
        ("bytes=10-", 10, 25),
        ("bytes=-5", 21, 25),
        ("bytes=3-1000", 3, 25),
        ("bytes=-99", 0, 25),
    ] {
        let r = fetch(&mut c, "/sub/a.txt", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 206, "{range}:\n{}", r.raw_head);
        assert_eq!(r.body, &SUB_A[first..=last], "{range}");
        let want = format!("bytes {first}-{last}/26");
        assert_eq!(r.header("content-range"), Some(want.as_str()), "{range}");
    }
    let r = fetch(&mut c, "/big.bin", "Range: bytes=5000-99998\r\n");
    assert_eq!(r.status, 206);
    assert!(r.body == big[5000..99999], "large range body differs");
    for range in ["bytes=26-", "bytes=100-200", "bytes=-0"] {
        let r = fetch(&mut c, "/sub/a.txt", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 416, "{range}:\n{}", r.raw_head);
        assert_eq!(r.header("content-range"), Some("bytes */26"));
        assert_keeps_alive(&r, "416");
    }
    let r = fetch(&mut c, "/sub/a.txt", "Range: bytes=0-1,4-5\r\n");
    assert_eq!(r.status, 200, "multiple ranges: the whole file");
    assert_eq!(r.body, SUB_A);
    let etag = fetch(&mut c, "/sub/a.txt", "").header("etag").unwrap().to_string();
    assert_eq!(fetch(&mut c, "/sub/a.txt", &format!("Range: bytes=0-1\r\nIf-Range: {etag}\r\n")).status, 206);
    assert_eq!(fetch(&mut c, "/sub/a.txt", "Range: bytes=0-1\r\nIf-Range: \"old\"\r\n").status, 200);
}

fn static_head_on_file(engine: &str) {
    let t = TempTree::site(&format!("head-{engine}"));
    let big = vec![b'z'; 300_000];
    t.write("site/big.bin", &big);
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    c.send(b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("300000"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").is_some());
    // No body followed: the next response starts right away.
    let r = fetch(&mut c, "/sub/a.txt", "");
    assert_eq!(r.body, SUB_A);
    let r = fetch(&mut c, "/big.bin", "");
    assert_eq!(r.body.len(), big.len());
}

fn static_startup_errors(engine: &str) {
    let t = TempTree::site(&format!("errors-{engine}"));
    let big = t.write("big.bin", &vec![0u8; 64 * 1024]);
    let missing = t.path("missing-dir");
    let site = t.path("site");
    let big_route = format!("/big=@{}", big.display());
    let missing_route = format!("/m=@{}", t.path("missing.bin"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--dir", &missing], "missing-dir"),
        (vec!["--route", &missing_route], "missing.bin"),
        (vec!["--route", "no-equals-sign"], "--route"),
        (vec!["--route", "relative=x"], "must start with /"),
        (vec!["--route-type", "/nothing=text/plain"], "--route-type"),
    ];
    for (extra, needle) in cases {
        let serve = crate::common::serve_args(engine);
        let mut args: Vec<&str> = serve.iter().map(String::as_str).collect();
        args.extend(["--port", "0", "--threads", "1"]);
        args.extend(&extra);
        let (status, stderr) = run_duet(&args);
        assert!(!status.success(), "{extra:?} started; stderr:\n{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("duet: error:")).collect();
        assert_eq!(lines.len(), 1, "{extra:?}: expected one error line, got:\n{stderr}");
        assert!(lines[0].contains(needle), "{extra:?}: the error should mention {needle}: {stderr}");
        assert!(!stderr.contains("listening on"), "{extra:?} claims to listen:\n{stderr}");
    }
    // Files over the limits are streamed, not refused (served in `streaming_*`).
    let server = Server::start(
        engine,
        &["--dir", &site, "--route", &big_route, "--max-cached-file", "10B", "--cache-budget", "20B"],
    );
    let lines = server.stderr_lines();
    assert!(lines.iter().any(|l| l.contains("streamed from disk")), "{lines:?}");
}

/// SIGHUP swaps the whole site while a keep-alive client keeps asking: every response
/// is a complete, valid answer from the old or the new site, the connection survives,
/// and a failed reload keeps the site being served.
fn static_sighup_reload(engine: &str) {
    let t = TempTree::site(&format!("hup-{engine}"));
    t.write("site/v.txt", b"version one");
    let route = t.write("route.txt", b"route one");
    let route_arg = format!("/r=@{}", route.display());
    // --no-watch: what changes here is applied by the signal alone, all at once.
    let server = Server::start(
        engine,
        &["--dir", &t.path("site"), "--no-watch", "--route", &route_arg, "--max-cached-file", "1KiB"],
    );
    let mut c = server.connect();
    let batch = |c: &mut Client| -> (Vec<u8>, Vec<u8>) {
        c.send(&[get_path("/v.txt", ""), get_path("/r", ""), get_path("/sub/a.txt", "")].concat());
        let rs = c.read_responses(3);
        for r in &rs {
            assert_eq!(r.status, 200, "{}", r.raw_head);
            assert_keeps_alive(r, "during reload");
        }
        assert_eq!(rs[2].body, SUB_A);
        (rs[0].body.clone(), rs[1].body.clone())
    };
    assert_eq!(batch(&mut c), (b"version one".to_vec(), b"route one".to_vec()));
    let old_etag = fetch(&mut c, "/v.txt", "").header("etag").unwrap().to_string();

    t.write("site/v.txt", b"version two!");
    t.write("route.txt", b"route two!");
    t.write("site/new.txt", b"new file");
    server.signal(libc::SIGHUP);
    // The reload runs on the server's signal thread; poll with requests (bounded).
    let deadline = std::time::Instant::now() + common::READ_TIMEOUT;
    let mut switched = false;
    while std::time::Instant::now() < deadline {
        let (v, r) = batch(&mut c);
        match (v.as_slice(), r.as_slice()) {
            (b"version one", b"route one") => continue,
            (b"version two!", b"route two!") => {
                switched = true;
                break;
            }
            other => panic!("a response mixed the sites or was corrupt: {other:?}"),
        }
    }
    assert!(switched, "the new content was not served after SIGHUP; stderr:\n{}", server.stderr_lines().join("\n"));
    assert_eq!(fetch(&mut c, "/new.txt", "").body, b"new file");
    let r = fetch(&mut c, "/v.txt", &format!("If-None-Match: {old_etag}\r\n"));
    assert_eq!(r.status, 200, "the old ETag no longer matches");
    // The log line follows the swap; it may reach us a little after the new content.
    let deadline = std::time::Instant::now() + common::READ_TIMEOUT;
    let mut logged = false;
    while !logged && std::time::Instant::now() < deadline {
        assert_eq!(batch(&mut c), (b"version two!".to_vec(), b"route two!".to_vec()));
        logged = server.stderr_lines().iter().any(|l| l.contains("reloaded"));
    }
    assert!(logged, "the reload was not logged:\n{}", server.stderr_lines().join("\n"));

    // A reload that fails (the --route file is gone) keeps the current site.
    t.write("site/later.txt", b"later");
    std::fs::remove_file(&route).unwrap();
    server.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + common::READ_TIMEOUT;
    let mut logged = false;
    while !logged && std::time::Instant::now() < deadline {
        assert_eq!(batch(&mut c), (b"version two!".to_vec(), b"route two!".to_vec()));
        logged = server.stderr_lines().iter().any(|l| l.contains("reload failed") && l.contains("route.txt"));
    }
    assert!(logged, "the failed reload was not logged:\n{}", server.stderr_lines().join("\n"));
    assert_eq!(batch(&mut c), (b"version two!".to_vec(), b"route two!".to_vec()));
    assert_eq!(fetch(&mut c, "/later.txt", "").status, 404);
}
