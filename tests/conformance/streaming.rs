//! Files streamed from disk: larger than the cache limits, to slow readers, in ranges,
//! pipelined, and across reloads.

use crate::common::{self, show, Client, Server};
use crate::{assert_keeps_alive, fetch, get_path, TempTree, SUB_A};

per_engine!(
    streaming_64mib_to_a_slow_reader_with_bounded_memory,
    streaming_ranges,
    streaming_head_on_a_large_file,
    streaming_pipelined_then_small_in_order,
    streaming_past_the_budget_and_routes,
    streaming_validators_and_reload,
    streaming_a_reload_closes_the_replaced_file_once_no_response_uses_it,
);

/// The byte at `i` of the test pattern: cheap to make and to check, and no two nearby
/// 8-byte words alike, so a misplaced chunk shows.
fn pattern_word(k: u64) -> [u8; 8] {
    k.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes()
}

fn pattern(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    for k in 0..len.div_ceil(8) as u64 {
        v.extend_from_slice(&pattern_word(k));
    }
    v.truncate(len);
    v
}

/// The server's resident set size in KiB.
fn vm_rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("read /proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value")
}

/// A 64 MiB file streamed to a reader with a small window that reads 4 KiB at a time:
/// every byte arrives in order, and the server's memory stays far below the file size
/// during the whole transfer.
fn streaming_64mib_to_a_slow_reader_with_bounded_memory(engine: &str) {
    use std::io::{Read, Write};
    const SIZE: usize = 64 << 20;
    let t = TempTree::new(&format!("stream64-{engine}"));
    t.write("site/big.bin", &pattern(SIZE));
    t.write("site/small.txt", b"small");
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let lines = server.stderr_lines();
    assert!(lines.iter().any(|l| l.contains("1 streamed from disk (67108864 bytes)")), "{lines:?}");
    // Warm up (first request, buffers, pools), then take the baseline.
    let mut c = server.connect();
    assert_eq!(fetch(&mut c, "/small.txt", "").body, b"small");
    let base = vm_rss_kib(&server);

    let mut s = server.connect_small_rcvbuf(16 * 1024);
    s.write_all(&get_path("/big.bin", "")).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "EOF in the head: {}", show(&head));
        head.push(byte[0]);
        assert!(head.len() < 4096, "no end of head: {}", show(&head));
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.contains(&format!("Content-Length: {SIZE}\r\n")), "{head}");

    let mut chunk = [0u8; 4096];
    let mut got = 0usize;
    let mut peak = base;
    let mut next_sample = 0usize;
    // Bytes not yet compared because they do not fill a pattern word.
    let mut partial: Vec<u8> = Vec::with_capacity(8);
    while got < SIZE {
        let n = s.read(&mut chunk[..(SIZE - got).min(4096)]).unwrap();
        assert!(n > 0, "EOF after {got} of {SIZE} bytes");
        for &b in &chunk[..n] {
            partial.push(b);
            let pos = got + partial.len();
            if partial.len() == 8 || pos == SIZE {
                let k = ((pos - 1) / 8) as u64;
                let want = &pattern_word(k)[..partial.len()];
                assert_eq!(partial, want, "bytes {}..{pos} differ", pos - partial.len());
                got = pos;
                partial.clear();
            }
        }
        if got >= next_sample {
            peak = peak.max(vm_rss_kib(&server));
            next_sample += 1 << 20;
        }
    }
    peak = peak.max(vm_rss_kib(&server));
    let growth_mib = peak.saturating_sub(base) / 1024;
    assert!(growth_mib < 32, "server RSS grew by {growth_mib} MiB (from {base} KiB to {peak} KiB) while streaming");
    // The connection is still usable.
    s.write_all(&get_path("/small.txt", "")).unwrap();
    let mut c2 = Client::from_stream(s);
    assert_eq!(c2.read_response().body, b"small");
}

/// A directory where `big.bin` (100 000 bytes) is streamed and `a.txt` is cached.
fn streamed_site(engine: &str, tag: &str, extra: &[&str]) -> (TempTree, Server, Vec<u8>) {
    let t = TempTree::new(&format!("{tag}-{engine}"));
    let big = pattern(100_000);
    t.write("site/big.bin", &big);
    t.write("site/a.txt", SUB_A);
    let mut args = vec!["--dir".to_string(), t.path("site"), "--max-cached-file".into(), "1KiB".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(engine, &args);
    (t, server, big)
}

fn streaming_ranges(engine: &str) {
    let (_t, server, big) = streamed_site(engine, "srange", &[]);
    let mut c = server.connect();
    for (range, first, last) in [
        ("bytes=0-9", 0, 9),
        ("bytes=99990-", 99_990, 99_999),
        ("bytes=-5", 99_995, 99_999),
        ("bytes=5000-99998", 5000, 99_998),
        ("bytes=-200000", 0, 99_999),
        ("bytes=12345-12345", 12_345, 12_345),
    ] {
        let r = fetch(&mut c, "/big.bin", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 206, "{range}:\n{}", r.raw_head);
        let want = format!("bytes {first}-{last}/100000");
        assert_eq!(r.header("content-range"), Some(want.as_str()), "{range}");
        assert!(r.body == big[first..=last], "{range}: body differs");
        assert_keeps_alive(&r, range);
    }
    for range in ["bytes=100000-", "bytes=200000-300000", "bytes=-0"] {
        let r = fetch(&mut c, "/big.bin", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 416, "{range}:\n{}", r.raw_head);
        assert_eq!(r.header("content-range"), Some("bytes */100000"));
        assert_keeps_alive(&r, "416");
    }
    let r = fetch(&mut c, "/big.bin", "Range: bytes=0-1,4-5\r\n");
    assert_eq!(r.status, 200, "multiple ranges: the whole file");
    assert!(r.body == big);
    let etag = r.header("etag").unwrap().to_string();
    let r = fetch(&mut c, "/big.bin", &format!("Range: bytes=10-19\r\nIf-Range: {etag}\r\n"));
    assert_eq!((r.status, r.body.as_slice()), (206, &big[10..20]));
    assert_eq!(fetch(&mut c, "/big.bin", "Range: bytes=0-1\r\nIf-Range: \"old\"\r\n").status, 200);
}

fn streaming_head_on_a_large_file(engine: &str) {
    const SIZE: usize = 8 << 20; // over the default --max-cached-file (4 MiB)
    let t = TempTree::new(&format!("shead-{engine}"));
    t.write("site/large.bin", &pattern(SIZE));
    t.write("site/a.txt", SUB_A);
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    c.send(b"HEAD /large.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(SIZE.to_string().as_str()));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.header("etag").is_some() && r.header("last-modified").is_some());
    // No body followed: the next response starts right away.
    assert_eq!(fetch(&mut c, "/a.txt", "").body, SUB_A);
    c.send(b"HEAD /large.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n");
    assert_eq!(c.read_head_response().status, 200, "HEAD ignores Range");
    let r = fetch(&mut c, "/large.bin", "");
    assert!(r.body == pattern(SIZE), "the streamed body differs");
}

/// Ten pipelined requests for a streamed file, then a cached one, in one write: all
/// answered in order (parsing pauses after a few file responses and resumes).
fn streaming_pipelined_then_small_in_order(engine: &str) {
    let (_t, server, big) = streamed_site(engine, "spipe", &[]);
    let mut c = server.connect();
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.extend(get_path("/big.bin", if i == 3 { "Range: bytes=-10\r\n" } else { "" }));
    }
    batch.extend(get_path("/a.txt", ""));
    batch.extend(get_path("/missing", ""));
    c.send(&batch);
    let rs = c.read_responses(12);
    for (i, r) in rs[..10].iter().enumerate() {
        if i == 3 {
            assert_eq!((r.status, r.body.as_slice()), (206, &big[99_990..]));
        } else {
            assert_eq!(r.status, 200, "{i}:\n{}", r.raw_head);
            assert!(r.body == big, "response {i}: body differs");
        }
        assert_keeps_alive(r, "pipelined streamed file");
    }
    assert_eq!(rs[10].body, SUB_A);
    assert_eq!(rs[11].status, 404);
}

/// Past --cache-budget files stream too; an `@FILE` route over the cap streams; the log
/// says how many bodies are cached and how many streamed.
fn streaming_past_the_budget_and_routes(engine: &str) {
    let t = TempTree::new(&format!("sbudget-{engine}"));
    let files: Vec<(String, Vec<u8>)> =
        (0..6).map(|i| (format!("f{i}.bin"), pattern(600 + i * 1000).split_off(i))).collect();
    for (name, data) in &files {
        t.write(&format!("site/{name}"), data);
    }
    let route_data = pattern(300_000);
    let route_file = t.write("route.bin", &route_data);
    let route = format!("/r=@{}", route_file.display());
    let server = Server::start(
        engine,
        &["--dir", &t.path("site"), "--route", &route, "--max-cached-file", "100KiB", "--cache-budget", "3000B"],
    );
    let lines = server.stderr_lines();
    assert!(
        lines.iter().any(|l| l.contains("6 files and 1 route: 2 bodies cached") && l.contains("5 streamed from disk")),
        "{lines:?}"
    );
    let mut c = server.connect();
    for (name, data) in &files {
        let r = fetch(&mut c, &format!("/{name}"), "");
        assert_eq!(r.status, 200, "{name}");
        assert!(r.body == *data, "{name}: body differs");
    }
    let r = fetch(&mut c, "/r", "");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.body == route_data, "the streamed route differs");
    c.send(b"HEAD /r HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_head_response().header("content-length"), Some("300000"));
    assert_eq!(fetch(&mut c, "/f0.bin", "").body, files[0].1);
}

/// ETag/304 and If-Modified-Since on a streamed file; a reload re-opens the file and
/// serves its new content.
fn streaming_validators_and_reload(engine: &str) {
    let (t, server, big) = streamed_site(engine, "sval", &[]);
    let mut c = server.connect();
    let r = fetch(&mut c, "/big.bin", "");
    assert!(r.body == big);
    let etag = r.header("etag").expect("ETag").to_string();
    let modified = r.header("last-modified").expect("Last-Modified").to_string();
    for cond in [format!("If-None-Match: {etag}\r\n"), format!("If-Modified-Since: {modified}\r\n")] {
        c.send(&get_path("/big.bin", &cond));
        let r = c.read_head_response();
        assert_eq!(r.status, 304, "{cond}{}", r.raw_head);
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("content-length"), None);
    }
    assert_eq!(fetch(&mut c, "/a.txt", "").body, SUB_A, "framing intact after 304s");

    // Replace the file (a new inode) and reload: the new content is streamed.
    let new = pattern(150_000).split_off(7);
    let tmp = t.write("big.tmp", &new);
    std::fs::rename(&tmp, t.root().join("site/big.bin")).unwrap();
    server.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + common::READ_TIMEOUT;
    loop {
        let r = fetch(&mut c, "/big.bin", "");
        assert_eq!(r.status, 200);
        if r.body == new {
            assert_ne!(r.header("etag"), Some(etag.as_str()));
            break;
        }
        assert!(r.body == big, "neither the old nor the new file");
        assert!(std::time::Instant::now() < deadline, "the new file was not served after SIGHUP");
    }
}

/// SIGHUP after the streamed file was replaced: a response already streaming it gets
/// all of the old content, new requests get the new one, and the old file is closed
/// (its inode freed, nothing `(deleted)` left in /proc/PID/fd) once that response is
/// done — also by the workers that served nothing since the reload (eight workers, two
/// connections and one signal: at least five workers have nothing to do).
fn streaming_a_reload_closes_the_replaced_file_once_no_response_uses_it(engine: &str) {
    use std::io::{Read, Write};
    // More than socket buffers hold, so the first response is still streaming when
    // the file is replaced.
    const SIZE: usize = 16 << 20;
    let t = TempTree::new(&format!("reload-close-{engine}"));
    let old = pattern(SIZE);
    let path = t.write("site/big.bin", &old);
    let server = Server::start_with_threads(engine, 8, &["--dir", &t.path("site"), "--max-cached-file", "1KiB"]);
    let mut slow = server.connect_small_rcvbuf(16 * 1024);
    slow.write_all(&get_path("/big.bin", "")).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(slow.read(&mut byte).unwrap(), 1, "EOF in the head: {}", show(&head));
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).contains(&format!("Content-Length: {SIZE}\r\n")));

    let gone = common::InodeGone::watch(&path);
    std::fs::remove_file(&path).unwrap();
    let new = b"the new content".to_vec();
    t.write("site/big.bin", &new);
    server.signal(libc::SIGHUP);
    // The reload runs on the server's signal thread; ask until the new file is served
    // (bounded).
    let mut c = server.connect();
    let deadline = std::time::Instant::now() + common::READ_TIMEOUT;
    while fetch(&mut c, "/big.bin", "").body != new {
        assert!(std::time::Instant::now() < deadline, "the new file was not served after SIGHUP");
    }
    drop(c);
    // The response in flight keeps the old file to its end.
    let mut body = vec![0u8; SIZE];
    slow.read_exact(&mut body).expect("the rest of the old file");
    assert!(body == old, "the response in flight changed content");
    drop(slow);
    let freed = gone.wait(common::READ_TIMEOUT);
    let open = open_files(&server, "big.bin");
    assert!(freed && open.is_empty(), "the replaced file is still open after its last response: {open:?}");
}

/// The server's descriptors whose target names `needle`.
fn open_files(server: &Server, needle: &str) -> Vec<String> {
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid())).expect("read /proc/<pid>/fd");
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.contains(needle))
        .collect()
}
