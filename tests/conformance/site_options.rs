//! What nginx, caddy and static-web-server users expect of a static server: response
//! headers from the command line (`--header`), precompressed siblings
//! (`--precompressed`), directory listings (`--list-dirs`) and 403 on a directory
//! without index.

use crate::common::{run_duet, Server};
use crate::{assert_keeps_alive, fetch, get_path, TempTree, SECRET};

per_engine!(
    header_flag_on_every_response,
    header_flag_refuses_bad_and_managed_fields,
    precompressed_variant_served_by_accept_encoding,
    precompressed_conditional_and_range_requests,
    precompressed_refusals_and_off_by_default,
    directory_without_index_is_forbidden,
    list_dirs_lists_what_is_served,
    files_must_be_revalidated_unless_a_cache_control_header_says_otherwise,
);

const HEADERS: [&str; 4] =
    ["--header", "Cache-Control: public, max-age=3600", "--header", "Access-Control-Allow-Origin: *"];

fn assert_configured(r: &crate::common::Response, what: &str) {
    assert_eq!(r.header("cache-control"), Some("public, max-age=3600"), "{what}:\n{}", r.raw_head);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{what}:\n{}", r.raw_head);
}

fn header_flag_on_every_response(engine: &str) {
    let t = TempTree::site(&format!("hdr-{engine}"));
    let site = t.path("site");
    let mut args = vec!["--dir", &site, "--route", "/r=route"];
    args.extend(HEADERS);
    let server = Server::start(engine, &args);
    let mut c = server.connect();
    for (path, headers, status) in [
        ("/r", "", 200),
        ("/style.css", "", 200),
        ("/sub/a.txt", "Range: bytes=0-3\r\n", 206),
        ("/sub/a.txt", "Range: bytes=999-\r\n", 416),
        ("/sub", "", 301),
        ("/noindex/", "", 403),
        ("/missing", "", 404),
    ] {
        let r = fetch(&mut c, path, headers);
        assert_eq!(r.status, status, "{path}:\n{}", r.raw_head);
        assert_configured(&r, path);
        assert_keeps_alive(&r, path);
    }
    let etag = fetch(&mut c, "/style.css", "").header("etag").unwrap().to_string();
    c.send(&get_path("/style.css", &format!("If-None-Match: {etag}\r\n")));
    let r = c.read_head_response();
    assert_eq!(r.status, 304);
    assert_configured(&r, "304");
    c.send(b"OPTIONS /r HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 204);
    assert_configured(&r, "OPTIONS");
    // A rejected request's answer too.
    let mut c = server.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 400);
    assert_configured(&r, "400");
    drop(server);

    // The built-in hello site.
    let server = Server::start(engine, &HEADERS);
    let mut c = server.connect();
    let r = fetch(&mut c, "/", "");
    assert_eq!(r.body, b"Hello, World!");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"), "the hello names its charset like a route");
    assert_configured(&r, "hello");
}

fn header_flag_refuses_bad_and_managed_fields(engine: &str) {
    for (value, needle) in [
        ("X-Bad Name: v", "token"),
        ("X-Injected: a\r\nSet-Cookie: b", "control characters"),
        ("no colon", "Name: value"),
        ("Content-Length: 5", "sets Content-Length itself"),
        ("transfer-encoding: chunked", "sets Transfer-Encoding itself"),
        ("Connection: close", "sets Connection itself"),
        ("Date: today", "sets Date itself"),
        ("Content-Type: text/html", "--route-type"),
    ] {
        let serve = crate::common::serve_args(engine);
        let mut args: Vec<&str> = serve.iter().map(String::as_str).collect();
        args.extend(["--port", "0", "--header", value]);
        let (status, stderr) = run_duet(&args);
        assert!(!status.success(), "--header {value:?} started; stderr:\n{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("duet: error:")).collect();
        assert_eq!(lines.len(), 1, "--header {value:?}: expected one error line, got:\n{stderr}");
        assert!(lines[0].contains("--header") && lines[0].contains(needle), "--header {value:?}: {stderr}");
        assert!(!stderr.contains("listening on"), "{stderr}");
    }
    for flag in ["--list-dirs", "--precompressed"] {
        let serve = crate::common::serve_args(engine);
        let mut args: Vec<&str> = serve.iter().map(String::as_str).collect();
        args.extend(["--port", "0", flag]);
        let (status, stderr) = run_duet(&args);
        assert!(!status.success(), "{flag} without --dir started");
        assert!(stderr.contains("--dir"), "{flag}: {stderr}");
    }
}

const PLAIN: &[u8] = b"the identity body, not compressed at all";
const GZ: &[u8] = b"\x1f\x8b fake gzip bytes";
const BR: &[u8] = b"fake brotli bytes";

/// `site/p.txt` with `.gz` and `.br` siblings, `site/g.js` with only `.gz`.
fn precompressed_tree(tag: &str) -> TempTree {
    let t = TempTree::site(tag);
    t.write("site/p.txt", PLAIN);
    t.write("site/p.txt.gz", GZ);
    t.write("site/p.txt.br", BR);
    t.write("site/g.js", PLAIN);
    t.write("site/g.js.gz", GZ);
    t
}

fn precompressed_variant_served_by_accept_encoding(engine: &str) {
    let t = precompressed_tree(&format!("pre-{engine}"));
    // Cached in memory, then streamed from disk: both answer alike.
    let site = t.path("site");
    for extra in [&[][..], &["--max-cached-file", "1B"][..]] {
        let mut args = vec!["--dir", &site, "--precompressed"];
        args.extend(extra);
        let server = Server::start(engine, &args);
        let mut c = server.connect();
        let id = fetch(&mut c, "/p.txt", "");
        assert_eq!(id.body, PLAIN, "{extra:?}");
        assert_eq!(id.header("content-encoding"), None);
        assert_eq!(id.header("vary"), Some("Accept-Encoding"), "{extra:?}:\n{}", id.raw_head);
        for (ae, body, coding) in [
            ("gzip, deflate, br", BR, Some("br")),
            ("gzip", GZ, Some("gzip")),
            ("br;q=0.5, gzip;q=0.9", GZ, Some("gzip")),
            ("br;q=0, gzip", GZ, Some("gzip")),
            ("deflate", PLAIN, None),
        ] {
            let r = fetch(&mut c, "/p.txt", &format!("Accept-Encoding: {ae}\r\n"));
            assert_eq!(r.status, 200, "{ae}:\n{}", r.raw_head);
            assert_eq!(r.body, body, "{ae} {extra:?}");
            assert_eq!(r.header("content-encoding"), coding, "{ae}:\n{}", r.raw_head);
            assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"), "{ae}");
            assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{ae}");
            assert!(r.header("last-modified").is_some());
            let etag = r.header("etag").unwrap();
            assert_eq!(etag == id.header("etag").unwrap(), coding.is_none(), "{ae}: the variant has its own ETag");
            assert_keeps_alive(&r, ae);
        }
        // Only the variants that exist; the siblings are still files of their own.
        let r = fetch(&mut c, "/g.js", "Accept-Encoding: br\r\n");
        assert_eq!((r.body.as_slice(), r.header("content-encoding")), (PLAIN, None));
        let r = fetch(&mut c, "/g.js", "Accept-Encoding: br, gzip\r\n");
        assert_eq!((r.body.as_slice(), r.header("content-encoding")), (GZ, Some("gzip")));
        let r = fetch(&mut c, "/p.txt.gz", "Accept-Encoding: gzip\r\n");
        assert_eq!((r.body.as_slice(), r.header("content-encoding")), (GZ, None));
        // A file without variants does not vary.
        let r = fetch(&mut c, "/style.css", "Accept-Encoding: gzip\r\n");
        assert_eq!((r.header("vary"), r.header("content-encoding")), (None, None));
        // HEAD: the variant's head, no body.
        c.send(b"HEAD /p.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\n\r\n");
        let r = c.read_head_response();
        assert_eq!(r.header("content-encoding"), Some("br"));
        assert_eq!(r.header("content-length"), Some(BR.len().to_string().as_str()));
        assert_eq!(fetch(&mut c, "/sub/a.txt", "").status, 200, "framing intact after HEAD");
    }
}

fn precompressed_conditional_and_range_requests(engine: &str) {
    let t = precompressed_tree(&format!("precond-{engine}"));
    let server = Server::start(engine, &["--dir", &t.path("site"), "--precompressed"]);
    let mut c = server.connect();
    let gz = fetch(&mut c, "/p.txt", "Accept-Encoding: gzip\r\n");
    let gz_etag = gz.header("etag").unwrap().to_string();
    let id_etag = fetch(&mut c, "/p.txt", "").header("etag").unwrap().to_string();
    c.send(&get_path("/p.txt", &format!("Accept-Encoding: gzip\r\nIf-None-Match: {gz_etag}\r\n")));
    let r = c.read_head_response();
    assert_eq!(r.status, 304, "{}", r.raw_head);
    assert_eq!(r.header("etag"), Some(gz_etag.as_str()));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    // The identity's ETag does not validate the variant, nor the reverse.
    let r = fetch(&mut c, "/p.txt", &format!("Accept-Encoding: gzip\r\nIf-None-Match: {id_etag}\r\n"));
    assert_eq!((r.status, r.body.as_slice()), (200, GZ));
    let r = fetch(&mut c, "/p.txt", &format!("If-None-Match: {gz_etag}\r\n"));
    assert_eq!((r.status, r.body.as_slice()), (200, PLAIN));
    // Ranges are of the variant's bytes.
    let r = fetch(&mut c, "/p.txt", "Accept-Encoding: gzip\r\nRange: bytes=2-5\r\n");
    assert_eq!(r.status, 206, "{}", r.raw_head);
    assert_eq!(r.body, &GZ[2..=5]);
    assert_eq!(r.header("content-range"), Some(format!("bytes 2-5/{}", GZ.len()).as_str()));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let r = fetch(&mut c, "/p.txt", &format!("Accept-Encoding: gzip\r\nRange: bytes=0-1\r\nIf-Range: {id_etag}\r\n"));
    assert_eq!((r.status, r.body.as_slice()), (200, GZ), "If-Range with the identity's ETag");
    let r = fetch(&mut c, "/p.txt", "Accept-Encoding: br\r\nRange: bytes=999-\r\n");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-encoding"), None, "the 416 body is not br");
    assert_keeps_alive(&r, "416");
}

fn precompressed_refusals_and_off_by_default(engine: &str) {
    let t = precompressed_tree(&format!("prerefuse-{engine}"));
    let server = Server::start(engine, &["--dir", &t.path("site"), "--precompressed"]);
    let mut c = server.connect();
    for ae in ["identity;q=0", "*;q=0", "br;q=0, gzip;q=0, identity;q=0"] {
        let r = fetch(&mut c, "/p.txt", &format!("Accept-Encoding: {ae}\r\n"));
        assert_eq!(r.status, 406, "{ae}:\n{}", r.raw_head);
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        assert_keeps_alive(&r, ae);
    }
    for (ae, body) in [("identity;q=0, gzip", GZ), ("*;q=0, identity", PLAIN), ("gzip;q=0", PLAIN)] {
        let r = fetch(&mut c, "/p.txt", &format!("Accept-Encoding: {ae}\r\n"));
        assert_eq!((r.status, r.body.as_slice()), (200, body), "{ae}");
    }
    drop(server);
    // Off by default: the siblings are plain files, nothing varies.
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    let r = fetch(&mut c, "/p.txt", "Accept-Encoding: gzip, br\r\n");
    assert_eq!((r.body.as_slice(), r.header("content-encoding"), r.header("vary")), (PLAIN, None, None));
    assert_eq!(fetch(&mut c, "/p.txt.gz", "").body, GZ);
}

fn directory_without_index_is_forbidden(engine: &str) {
    let t = TempTree::site(&format!("forbid-{engine}"));
    t.write("site/empty/.keep", b"");
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    for path in ["/noindex/", "/empty/"] {
        let r = fetch(&mut c, path, "");
        assert_eq!(r.status, 403, "{path}:\n{}", r.raw_head);
        assert_keeps_alive(&r, path);
    }
    assert_eq!(fetch(&mut c, "/noindex", "").header("location"), Some("/noindex/"));
    assert_eq!(fetch(&mut c, "/sub/", "").body, b"<p>sub</p>", "an index is still served");
    // The root without index.html.
    std::fs::remove_file(t.path("site/index.html")).unwrap();
    drop(server);
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    assert_eq!(fetch(&mut server.connect(), "/", "").status, 403);
}

fn list_dirs_lists_what_is_served(engine: &str) {
    let t = TempTree::site(&format!("list-{engine}"));
    t.write("site/noindex/we<ird> & \"name\".txt", b"weird");
    t.write("site/noindex/deeper/x.txt", b"x");
    t.write("site/noindex/.secret", b"dot");
    std::os::unix::fs::symlink(t.path("secret.txt"), t.root().join("site/noindex/out.txt")).unwrap();
    let server = Server::start(engine, &["--dir", &t.path("site"), "--list-dirs"]);
    let mut c = server.connect();
    let r = fetch(&mut c, "/noindex/", "");
    assert_eq!(r.status, 200, "{}", r.raw_head);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = r.body_str();
    let links: Vec<&str> = html.split("href=\"").skip(1).map(|s| &s[..s.find('"').unwrap()]).collect();
    assert_eq!(links, ["../", "b.txt", "deeper/", "we%3Cird%3E%20%26%20%22name%22.txt"], "{html}");
    assert!(html.contains(">we&lt;ird&gt; &amp; &quot;name&quot;.txt</a>"), "{html}");
    assert!(!html.contains("secret") && !html.contains("out.txt"), "dotfiles and escaping links not listed: {html}");
    // Every link works.
    for link in &links[1..] {
        let r = fetch(&mut c, &format!("/noindex/{link}"), "");
        assert_eq!(r.status, 200, "{link}:\n{}", r.raw_head);
    }
    assert_eq!(fetch(&mut c, "/noindex/we%3Cird%3E%20%26%20%22name%22.txt", "").body, b"weird");
    assert!(fetch(&mut c, "/noindex/deeper/", "").body_str().contains("href=\"x.txt\""));
    // A directory with an index serves the index; nothing leaks from outside.
    assert_eq!(fetch(&mut c, "/sub/", "").body, b"<p>sub</p>");
    for path in ["/noindex/../../", "/noindex/%2e%2e/%2e%2e/", "/up/"] {
        let r = fetch(&mut c, path, "");
        assert!(!r.body.windows(SECRET.len()).any(|w| w == SECRET), "{path} leaked");
        assert!(!r.body_str().contains("secret.txt"), "{path} listed outside --dir:\n{}", r.body_str());
    }
}

/// Files under --dir say `Cache-Control: no-cache` (content changes on disk while
/// served; the validators make a revalidation a 304), so no cache guesses a lifetime;
/// routes and error answers do not; a `--header` Cache-Control replaces it, never
/// joins it.
fn files_must_be_revalidated_unless_a_cache_control_header_says_otherwise(engine: &str) {
    let t = TempTree::site(&format!("cc-{engine}"));
    let site = t.path("site");
    let server = Server::start(engine, &["--dir", &site, "--route", "/r=route"]);
    let mut c = server.connect();
    let r = fetch(&mut c, "/style.css", "");
    assert_eq!(r.header("cache-control"), Some("no-cache"), "{}", r.raw_head);
    let etag = r.header("etag").expect("validators with no-cache").to_string();
    for (headers, status) in [
        (format!("If-None-Match: {etag}\r\n"), 304),
        ("Range: bytes=0-1\r\n".to_string(), 206),
        ("Range: bytes=999-\r\n".to_string(), 416),
    ] {
        c.send(&get_path("/style.css", &headers));
        let r = if status == 304 { c.read_head_response() } else { c.read_response() };
        assert_eq!(r.status, status, "{}", r.raw_head);
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{status}:\n{}", r.raw_head);
    }
    assert_eq!(fetch(&mut c, "/sub/", "").header("cache-control"), Some("no-cache"), "an index.html");
    for (path, status) in [("/r", 200), ("/missing", 404), ("/sub", 301)] {
        let r = fetch(&mut c, path, "");
        assert_eq!(r.status, status, "{}", r.raw_head);
        assert_eq!(r.header("cache-control"), None, "not a file:\n{}", r.raw_head);
    }
    drop(server);
    let server = Server::start(engine, &["--dir", &site, "--header", "cache-control: public, max-age=60"]);
    let r = fetch(&mut server.connect(), "/style.css", "");
    assert_eq!(r.header_all("cache-control"), ["public, max-age=60"], "{}", r.raw_head);
}
