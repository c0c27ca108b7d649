//! Floor: the smallest edge-triggered epoll HTTP responder, the Rust counterpart of
//! `../shared/bench/floor_epoll.c`. No parsing: one fixed response per `\r\n\r\n`
//! (tracked across reads), one `send` per read. It measures what the kernel costs, so
//! the overhead of duet's HTTP layer shows as a ratio.
//!
//! `cargo run --release -p duet-engine-epoll --example floor_epoll -- 18081`

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};

const RESP: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: f\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

/// Counts request ends (`\r\n\r\n`) in `buf`, carrying the partial match in `st`.
fn count_ends(st: &mut u8, buf: &[u8]) -> usize {
    let mut k = 0;
    for &ch in buf {
        *st = match (*st, ch) {
            (0 | 2, b'\r') => *st + 1,
            (1, b'\n') => 2,
            (3, b'\n') => {
                k += 1;
                0
            }
            (_, b'\r') => 1,
            _ => 0,
        };
    }
    k
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn main() -> io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(18081);
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    let lfd = listener.as_raw_fd();
    // SAFETY: no pointer arguments; the result is checked.
    let ep = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: lfd as u64 };
    // SAFETY: `ev` is a valid epoll_event for the call.
    check(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, lfd, &mut ev) })?;
    eprintln!("floor (epoll) listening on http://127.0.0.1:{port}");

    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let mut buf = vec![0u8; 65536];
    let mut out: Vec<u8> = Vec::with_capacity(65536 * 2);
    // Partial "\r\n\r\n" match per fd.
    let mut tail = vec![0u8; 65536];
    let one: libc::c_int = 1;
    loop {
        // SAFETY: `events` is writable for its length.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        for ev in &events[..n.max(0) as usize] {
            let fd = ev.u64 as RawFd;
            if fd == lfd {
                loop {
                    // SAFETY: null address pointers are allowed by accept4.
                    let c =
                        unsafe { libc::accept4(lfd, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_NONBLOCK) };
                    if c < 0 {
                        break;
                    }
                    if c as usize >= tail.len() {
                        tail.resize(c as usize + 1, 0);
                    }
                    // SAFETY: `one` is a live c_int and its size is passed.
                    unsafe {
                        libc::setsockopt(
                            c,
                            libc::IPPROTO_TCP,
                            libc::TCP_NODELAY,
                            (&one as *const libc::c_int).cast(),
                            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                        )
                    };
                    let mut e = libc::epoll_event {
                        events: (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLRDHUP) as u32,
                        u64: c as u64,
                    };
                    // SAFETY: `e` is a valid epoll_event for the call.
                    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, c, &mut e) };
                    tail[c as usize] = 0;
                }
                continue;
            }
            loop {
                // SAFETY: `buf` is writable for its length.
                let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if r == 0 || (r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN)) {
                    // SAFETY: the fd is ours and not used again (epoll drops it on close).
                    unsafe { libc::close(fd) };
                    break;
                }
                if r < 0 {
                    break;
                }
                let r = r as usize;
                let k = count_ends(&mut tail[fd as usize], &buf[..r]);
                out.clear();
                for _ in 0..k {
                    out.extend_from_slice(RESP);
                }
                if !out.is_empty() {
                    // SAFETY: `out` is readable for its length.
                    unsafe { libc::send(fd, out.as_ptr().cast(), out.len(), libc::MSG_NOSIGNAL) };
                }
                if r < buf.len() {
                    break;
                }
            }
        }
    }
}
