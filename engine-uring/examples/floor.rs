//! Floor: the smallest io_uring HTTP responder, the Rust counterpart of
//! `../shared/bench/floor_uring.c`: multishot accept, multishot receive into a provided
//! buffer ring, one fire-and-forget send per receive. No parsing: one fixed response
//! per `\r\n\r\n` (tracked across receives). It measures what the kernel costs, so the
//! overhead of duet's HTTP layer shows as a ratio.
//!
//! `cargo run --release -p duet-engine-uring --example floor_uring -- 18082`

use io_uring::types::{BufRingEntry, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};
use std::alloc::Layout;
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};

const RESP: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: f\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
const NBUF: u16 = 4096;
const BSZ: usize = 4096;
const BGID: u16 = 1;
/// Most responses one receive can ask for (a request end takes at least 4 bytes, one
/// more may complete a match carried from the previous receive).
const MAX_BATCH: usize = BSZ / 4 + 1;
const ACC: u64 = 1;
const RCV: u64 = 2;
const SND: u64 = 3;

fn ud(kind: u64, fd: i32) -> u64 {
    (kind << 32) | fd as u32 as u64
}

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

/// Queues `entry`, submitting first when the submission queue is full.
fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every entry of this program refers only to memory that lives until
        // the process exits (the leaked response run, the leaked buffer ring and its
        // buffers) and to fds it closes only after their receive's last completion.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

fn recv(fd: i32) -> squeue::Entry {
    opcode::RecvMulti::new(Fd(fd), BGID).build().user_data(ud(RCV, fd))
}

fn main() -> io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(18082);
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    let lfd = listener.as_raw_fd();
    let mut ring: IoUring =
        IoUring::builder().setup_single_issuer().setup_defer_taskrun().setup_cqsize(65536).build(4096)?;

    // The provided buffer ring: page-aligned entries, and the buffers; both leaked (they
    // must outlive every receive, and the program never stops).
    let layout = Layout::from_size_align(NBUF as usize * std::mem::size_of::<BufRingEntry>(), 4096)
        .map_err(|_| io::Error::other("bad layout"))?;
    // SAFETY: the layout has a non-zero size.
    let entries = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>();
    if entries.is_null() {
        return Err(io::Error::other("out of memory"));
    }
    let bufs: &'static mut [u8] = Box::leak(vec![0u8; NBUF as usize * BSZ].into_boxed_slice());
    let base = bufs.as_mut_ptr();
    // SAFETY: `entries` is the page-aligned, zeroed start of the ring (so its tail, in
    // entry 0, is initialized).
    let tail = unsafe { &*BufRingEntry::tail(entries).cast::<AtomicU16>() };
    // Writes buffer `bid` at ring position `pos`.
    let add = |pos: u16, bid: u16| {
        // SAFETY: `pos & (NBUF - 1)` is inside the ring; the kernel reads only entries
        // between its head and the published tail, and this one is past the tail. Only
        // addr/len/bid are written (entry 0's tail field is left alone).
        unsafe {
            let e = &mut *entries.add((pos & (NBUF - 1)) as usize);
            e.set_addr(base.add(bid as usize * BSZ) as u64);
            e.set_len(BSZ as u32);
            e.set_bid(bid);
        }
    };
    for bid in 0..NBUF {
        add(bid, bid);
    }
    // SAFETY: the ring memory is page-aligned, NBUF entries long, and leaked (never
    // freed) so it outlives the registration.
    unsafe { ring.submitter().register_buf_ring_with_flags(entries as u64, NBUF, BGID, 0) }?;
    let mut tail_pos = NBUF;
    tail.store(tail_pos, Ordering::Release);

    // Every batch of responses is a prefix of one immutable run: sends in flight can
    // never see it change.
    let run: &'static [u8] = Box::leak(RESP.repeat(MAX_BATCH).into_boxed_slice());
    let mut state = vec![0u8; 65536];
    let one: libc::c_int = 1;
    push(&mut ring, &opcode::AcceptMulti::new(Fd(lfd)).build().user_data(ud(ACC, lfd)))?;
    eprintln!("floor (io_uring) listening on http://127.0.0.1:{port}");

    let mut cqes: Vec<cqueue::Entry> = Vec::with_capacity(1024);
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) => {}
            Err(e) => return Err(e),
        }
        cqes.clear();
        cqes.extend(ring.completion());
        for cqe in &cqes {
            let kind = cqe.user_data() >> 32;
            let fd = cqe.user_data() as u32 as i32;
            let res = cqe.result();
            let more = cqueue::more(cqe.flags());
            match kind {
                ACC => {
                    if res >= 0 {
                        // SAFETY: `one` is a live c_int and its size is passed.
                        unsafe {
                            libc::setsockopt(
                                res,
                                libc::IPPROTO_TCP,
                                libc::TCP_NODELAY,
                                (&one as *const libc::c_int).cast(),
                                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                            )
                        };
                        if res as usize >= state.len() {
                            state.resize(res as usize + 1, 0);
                        }
                        state[res as usize] = 0;
                        push(&mut ring, &recv(res))?;
                    }
                    if !more {
                        push(&mut ring, &opcode::AcceptMulti::new(Fd(lfd)).build().user_data(ud(ACC, lfd)))?;
                    }
                }
                RCV => {
                    if res <= 0 {
                        if res == -libc::ENOBUFS {
                            push(&mut ring, &recv(fd))?;
                        } else if !more {
                            // SAFETY: this was the receive's last completion; the fd is
                            // ours and not used again (a send in flight fails with EBADF).
                            unsafe { libc::close(fd) };
                        }
                        continue;
                    }
                    let Some(bid) = cqueue::buffer_select(cqe.flags()) else { continue };
                    // SAFETY: the completion hands buffer `bid` to us with `res` bytes
                    // written; the kernel does not touch it until it is re-added below.
                    let data = unsafe { std::slice::from_raw_parts(base.add(bid as usize * BSZ), res as usize) };
                    let k = count_ends(&mut state[fd as usize], data);
                    add(tail_pos, bid);
                    tail_pos = tail_pos.wrapping_add(1);
                    tail.store(tail_pos, Ordering::Release);
                    if k > 0 {
                        let out = &run[..k * RESP.len()];
                        let send = opcode::Send::new(Fd(fd), out.as_ptr(), out.len() as u32)
                            .flags(libc::MSG_NOSIGNAL)
                            .build()
                            .user_data(ud(SND, fd));
                        push(&mut ring, &send)?;
                    }
                    if !more {
                        push(&mut ring, &recv(fd))?;
                    }
                }
                _ => {}
            }
        }
    }
}
