//! File bodies streamed from the page cache, whatever path an engine sends them by
//! (epoll's `sendfile`; io_uring's `sendfile` from the loop, ring splices, or a chunk
//! buffer, one engine line each in `per_engine!`; sends from a file mapping, with and
//! without zero copy, two more lines here): byte-exact at every size and range,
//! dropped when the file shrinks under them, whole when the file is replaced under them,
//! bounded for slow readers, and leaving nothing behind (descriptor, pipe, buffer or
//! mapping) when clients reset mid-body.

use crate::common::{self, show, Server};
use crate::{fetch, get_path, TempTree};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

macro_rules! file_body_tests {
    ($engines:ident) => {
        $engines!(
            file_bodies_are_byte_exact_across_sizes_and_ranges,
            a_file_truncated_while_streaming_drops_the_connection,
            a_file_replaced_while_streaming_is_sent_whole_from_the_old_file,
            slow_readers_of_large_files_hold_no_more_than_a_share_each,
            two_thousand_resets_mid_body_leak_no_descriptor_pipe_buffer_or_mapping,
        );
    };
}

file_body_tests!(per_engine);

/// The io_uring paths only ablation items reach: sends from a file mapping, with and
/// without zero copy.
macro_rules! mapped_paths {
    ($($tests:tt)*) => {
        engine_tests!(uring_mmap, "uring:mmap"; $($tests)*);
        engine_tests!(uring_mmap_zc, "uring:mmap-zc"; $($tests)*);
    };
}

file_body_tests!(mapped_paths);

/// The bytes of a test file of `len` bytes: no two nearby 8-byte words alike, so a
/// misplaced or repeated chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    for k in 0..len.div_ceil(8) as u64 {
        v.extend_from_slice(&k.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
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

/// Lines of the server's memory map that map `path` (a file mapped to send from).
fn mappings_of(server: &Server, path: &str) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", server.pid())).expect("read /proc/<pid>/maps");
    maps.lines().filter(|l| l.ends_with(path)).count()
}

/// The server's virtual memory size in KiB.
fn vm_size_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("read /proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with("VmSize:")).expect("VmSize line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmSize value")
}

/// Reads a response head byte by byte (so nothing of the body is taken with it).
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("read the head"), 1, "EOF in the head: {}", show(&head));
        head.push(byte[0]);
        assert!(head.len() < 4096, "no end of head: {}", show(&head));
    }
    String::from_utf8(head).expect("a text head")
}

/// Waits until the server has `want` descriptors open at most (it closes connections
/// as their resets reach it), or fails at the suite's read timeout.
fn wait_for_fds(server: &Server, want: usize, what: &str) {
    let deadline = Instant::now() + common::READ_TIMEOUT;
    loop {
        let now = server.fd_count();
        if now <= want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {now} descriptors open, expected {want} at most");
        std::thread::yield_now();
    }
}

/// Every size across the cache limit and the turn's shares (1 B to 16 MiB + 3),
/// pipelined on one connection and each fetched alone, then ranges that start, end and
/// cross share boundaries: each body is the file's bytes exactly.
fn file_bodies_are_byte_exact_across_sizes_and_ranges(engine: &str) {
    let sizes = [1usize, 4096, 65_535, 65_537, 262_144, 262_145, 1 << 20, (1 << 20) + 1, (16 << 20) + 3];
    let t = TempTree::new(&format!("bodies-{engine}"));
    let files: Vec<(String, Vec<u8>)> = sizes.iter().map(|&n| (format!("/f{n}"), pattern(n))).collect();
    for (path, body) in &files {
        t.write(&format!("site{path}"), body);
    }
    let server = Server::start(engine, &["--dir", &t.path("site"), "--max-cached-file", "1KiB"]);
    let mut c = server.connect();
    for (path, body) in &files {
        let r = fetch(&mut c, path, "");
        assert_eq!(r.status, 200, "{path}: {}", r.raw_head);
        assert!(r.body == *body, "{path}: {} bytes differ from the file's {}", r.body.len(), body.len());
    }
    // All at once: the heads and bodies of every response, in order.
    let all: Vec<u8> = files.iter().flat_map(|(path, _)| get_path(path, "")).collect();
    c.send(&all);
    for (path, body) in &files {
        let r = c.read_response();
        assert!(r.status == 200 && r.body == *body, "{path} pipelined: status {}, {} bytes", r.status, r.body.len());
    }
    let (path, body) = &files[7];
    let n = body.len();
    for (first, last) in [(0, 0), (65_530, 65_545), (262_143, 262_144), (1, n - 2), (n - 1, n - 1)] {
        let r = fetch(&mut c, path, &format!("Range: bytes={first}-{last}\r\n"));
        assert_eq!(r.status, 206, "{first}-{last}: {}", r.raw_head);
        assert!(r.body == body[first..=last], "{first}-{last}: {} bytes, not the file's", r.body.len());
    }
    let r = fetch(&mut c, path, "Range: bytes=-70000\r\n");
    assert!(r.status == 206 && r.body == body[n - 70_000..], "a suffix range: {}", r.raw_head);
}

/// A file that shrinks while its body is on the way cannot keep the length promised in
/// its head: the connection is dropped short of it, and the server serves on.
fn a_file_truncated_while_streaming_drops_the_connection(engine: &str) {
    const SIZE: usize = 32 << 20;
    let t = TempTree::new(&format!("truncated-{engine}"));
    t.write("site/big.bin", &pattern(SIZE));
    t.write("site/small.txt", b"small");
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut s = server.connect_small_rcvbuf(16 * 1024);
    s.write_all(&get_path("/big.bin", "")).expect("send the request");
    let head = read_head(&mut s);
    assert!(head.contains(&format!("Content-Length: {SIZE}\r\n")), "{head}");
    let mut first = [0u8; 4096];
    s.read_exact(&mut first).expect("the first bytes of the body");
    // The socket buffers hold a few MiB at most: most of the file is still to be sent.
    std::fs::OpenOptions::new().write(true).open(t.path("site/big.bin")).and_then(|f| f.set_len(0)).expect("truncate");
    let mut got = first.len();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        assert!(got < SIZE, "all {SIZE} bytes arrived from a file truncated to 0");
    }
    let mut c = server.connect();
    assert_eq!(fetch(&mut c, "/small.txt", "").body, b"small");
}

/// A 16 MiB file replaced by a rename while a slow reader is in its body: the site
/// swaps to the new file (served to new clients, which maps and sends it), and the slow
/// reader still gets the whole old file, byte-exact: what its sends read (an open file,
/// a mapping) is not let go under it.
fn a_file_replaced_while_streaming_is_sent_whole_from_the_old_file(engine: &str) {
    const SIZE: usize = 16 << 20;
    let t = TempTree::new(&format!("replaced-{engine}"));
    let old = pattern(SIZE);
    let new: Vec<u8> = pattern(SIZE / 2).iter().map(|b| !b).collect();
    t.write("site/big.bin", &old);
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    server.wait_for_line("for changes");
    let mut s = server.connect_small_rcvbuf(16 * 1024);
    s.write_all(&get_path("/big.bin", "")).expect("send the request");
    let head = read_head(&mut s);
    assert!(head.contains(&format!("Content-Length: {SIZE}\r\n")), "{head}");
    let mut got = vec![0u8; 4096];
    s.read_exact(&mut got).expect("the first bytes of the body");
    let tmp = t.write("site/.big.bin.tmp", &new);
    std::fs::rename(tmp, t.path("site/big.bin")).expect("rename over");
    let deadline = Instant::now() + common::READ_TIMEOUT;
    let mut c = server.connect();
    while fetch(&mut c, "/big.bin", "").body != new {
        assert!(Instant::now() < deadline, "the new file is not served");
    }
    got.resize(SIZE, 0);
    s.read_exact(&mut got[4096..]).expect("the rest of the old body");
    assert!(got == old, "the body is not the old file's bytes");
}

/// 48 clients with small receive windows ask for a 16 MiB file and read only its head:
/// the server sends each what its socket takes and waits. It holds no more than a
/// share of the turn per reader meanwhile (`sendfile` and splices hold no user memory;
/// a chunk buffer is 128 KiB), and once they go, no descriptor (pipe) of theirs.
fn slow_readers_of_large_files_hold_no_more_than_a_share_each(engine: &str) {
    const READERS: usize = 48;
    const SIZE: usize = 16 << 20;
    let t = TempTree::new(&format!("slow-files-{engine}"));
    t.write("site/big.bin", &pattern(SIZE));
    t.write("site/small.txt", b"small");
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let mut c = server.connect();
    assert_eq!(fetch(&mut c, "/small.txt", "").body, b"small");
    let (fds, base) = (server.fd_count(), vm_rss_kib(&server));
    let mut readers: Vec<TcpStream> = (0..READERS).map(|_| server.connect_small_rcvbuf(4096)).collect();
    for s in &mut readers {
        s.write_all(&get_path("/big.bin", "")).expect("send the request");
    }
    for s in &mut readers {
        let head = read_head(s);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    }
    // Every body has started; a fresh client is still answered.
    assert_eq!(fetch(&mut c, "/small.txt", "").body, b"small");
    let growth_kib = vm_rss_kib(&server).saturating_sub(base);
    assert!(
        growth_kib < (READERS as u64) * 160,
        "{READERS} slow readers grew the server by {growth_kib} KiB (from {base} KiB)"
    );
    // Each reader holds its socket, and a pipe (two descriptors) on the splice path.
    let held = server.fd_count();
    assert!(held <= fds + 3 * READERS, "{held} descriptors open for {READERS} readers (from {fds})");
    drop(readers);
    // The pools keep 16 chunks (with a pipe each on the splice path) for reuse.
    wait_for_fds(&server, fds + 32, "after the slow readers left");
}

/// 2,000 clients ask for a 1 MiB file, read part of the body and reset the connection:
/// afterwards the server has no more descriptors open than before (sockets, installed
/// fds, pipes; the pools hold 16 chunks at most), no more mappings of the file (one per
/// worker on the mapped paths, none on the others), its memory has not grown with
/// them, and it serves on.
fn two_thousand_resets_mid_body_leak_no_descriptor_pipe_buffer_or_mapping(engine: &str) {
    const SIZE: usize = 1 << 20;
    let t = TempTree::new(&format!("resets-{engine}"));
    let body = pattern(SIZE);
    t.write("site/big.bin", &body);
    let server = Server::start(engine, &["--dir", &t.path("site")]);
    let reset_mid_body = || {
        let mut s = server.connect_small_rcvbuf(16 * 1024);
        s.write_all(&get_path("/big.bin", "")).expect("send the request");
        read_head(&mut s);
        let mut part = [0u8; 1024];
        s.read_exact(&mut part).expect("part of the body");
        // SO_LINGER 0: close sends a reset, not a FIN.
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt reads one `linger` from the pointer for the call.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER");
    };
    let fds = server.fd_count();
    // Warm up the pools and the slab, then take the memory baseline.
    for _ in 0..50 {
        reset_mid_body();
    }
    let mut c = server.connect();
    assert!(fetch(&mut c, "/big.bin", "").body == body);
    drop(c);
    // The pools keep 16 chunks (with a pipe each on the splice path) for reuse.
    wait_for_fds(&server, fds + 32, "after the warm-up");
    let (rss, vm) = (vm_rss_kib(&server), vm_size_kib(&server));
    let mapped = mappings_of(&server, "/site/big.bin");
    for _ in 0..2000 {
        reset_mid_body();
    }
    wait_for_fds(&server, fds + 32, "after 2,000 resets mid-body");
    let grown = vm_rss_kib(&server).saturating_sub(rss);
    assert!(grown < 16 * 1024, "the server grew by {grown} KiB over 2,000 resets (from {rss} KiB)");
    let now = mappings_of(&server, "/site/big.bin");
    assert!(now <= mapped, "{now} mappings of the file after 2,000 resets, {mapped} before");
    // A mapping per reset would add 2 GiB.
    let vm_grown = vm_size_kib(&server).saturating_sub(vm);
    assert!(vm_grown < 64 * 1024, "the server's address space grew by {vm_grown} KiB over 2,000 resets");
    let mut c = server.connect();
    assert!(fetch(&mut c, "/big.bin", "").body == body, "served after the resets");
}
