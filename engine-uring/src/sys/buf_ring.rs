//! Provided-buffer rings: the receive buffers the kernel picks from, owned by the
//! [`Ring`] they are registered on, and given back one [`BufId`] at a time.

#[cfg(doc)]
use super::Ring;
use duet_engine::syscalls;
use io_uring::types;
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};

/// `io_uring_buf_reg.flags`: consume each buffer incrementally (6.12).
pub(super) const IOU_PBUF_RING_INC: u16 = 2;
/// A completion's buffer is only partly used: later completions continue in it.
pub const IORING_CQE_F_BUF_MORE: u32 = 1 << 4;

/// A buffer group registered on a [`Ring`] by [`Ring::add_buf_ring`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufGroup(pub(super) u16);

impl BufGroup {
    /// The group id a receive selects from.
    pub fn id(self) -> u16 {
        self.0
    }
}

/// A provided buffer a completion handed to the engine. Neither `Clone` nor `Copy`:
/// the only way to end it is [`BufRing::consume`], which gives the buffer back to the
/// kernel, so one completion's buffer is given back once. Dropping it instead leaks
/// the buffer (the ring shrinks by one); debug builds panic to catch that.
#[must_use = "a provided buffer must go back to its ring with BufRing::consume"]
#[derive(Debug)]
pub struct BufId(pub(super) u16);

impl BufId {
    fn into_raw(self) -> u16 {
        let bid = self.0;
        std::mem::forget(self);
        bid
    }
}

impl Drop for BufId {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            debug_assert!(false, "provided buffer {} dropped without going back to its ring", self.0);
        }
    }
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `populate`: fault every page in now (MAP_POPULATE), so the receive path never
    /// faults and the pool is a fixed cost from the start rather than growing as the
    /// ring cycles through its buffers.
    fn new(len: usize, populate: bool) -> io::Result<Mapping> {
        syscalls::count(1);
        // SAFETY: an anonymous private mapping with no address hint touches no existing
        // memory; the result is checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if populate { libc::MAP_POPULATE } else { 0 },
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        syscalls::count(1);
        // SAFETY: `ptr`/`len` are exactly what mmap returned, unmapped once. The owning
        // `BufRing` was either never registered (dropped by a failed `add_buf_ring`) or is
        // dropped by `Ring::drop` after the ring fd is closed with no operation in flight
        // (it leaks them otherwise), so the kernel no longer uses this memory.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// How the kernel consumes a buffer ring, and so how a receive completion is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufMode {
    /// `IOU_PBUF_RING_INC`: a receive takes only the bytes it needs from the head
    /// buffer; the next one continues where it stopped (`IORING_CQE_F_BUF_MORE` while
    /// the buffer is not used up).
    pub incremental: bool,
    /// Receive bundles: one completion's bytes may span several buffers, which follow
    /// the named one in ring order.
    pub bundles: bool,
}

impl BufMode {
    /// Completions are read by walking the ring from its head: where a completion's
    /// data starts, and which buffers follow, is known only from the order in which the
    /// kernel consumes the ring.
    fn walked(self) -> bool {
        self.incremental || self.bundles
    }
}

/// A receive completion's buffers did not match the ring as the engine tracks it: its
/// bytes cannot be placed, and the connection must go.
#[derive(Debug, PartialEq, Eq)]
pub struct Untracked;

/// A provided-buffer ring: `count` buffers of `size` bytes the kernel picks from
/// for multishot receives, owned by the [`Ring`] it is registered on. A buffer is the
/// engine's from the completion that names it (a [`BufId`]) until
/// [`BufRing::consume`] hands it back.
///
/// The kernel always takes buffers from the head of the ring, in ring order, under the
/// ring's lock; completions are reaped in the order it posted them. So, when
/// completions are walked ([`BufMode::walked`]), the engine's copy of the head (and,
/// with incremental consumption, of the bytes used in the head buffer) says where each
/// completion's bytes are; the buffer id a completion names is checked against it.
pub struct BufRing {
    /// `count` `io_uring_buf` entries; the tail overlays `resv` of entry 0.
    entries: Mapping,
    buffers: Mapping,
    count: u16,
    size: u32,
    /// Our copy of the tail; published to the kernel after each recycle.
    tail: u16,
    mode: BufMode,
    /// The buffer written at each ring position (walked mode).
    order: Box<[u16]>,
    /// The kernel's head, as the completions walked so far show it.
    head: u16,
    /// Bytes of the head buffer the kernel has used (incremental mode).
    used: u32,
}

impl BufRing {
    pub(super) fn new(count: u16, size: u32, mode: BufMode) -> io::Result<BufRing> {
        if count == 0 || !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{count} receive buffers: the count must be a power of two between 1 and 32768"),
            ));
        }
        if size == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the receive buffer size must be above 0"));
        }
        // Zeroed by mmap, so every entry is initialized (BufRingEntry::tail needs that).
        let entries = Mapping::new(count as usize * std::mem::size_of::<types::BufRingEntry>(), true)?;
        let buffers = Mapping::new(count as usize * size as usize, true)?;
        let order = vec![0; if mode.walked() { count as usize } else { 0 }].into_boxed_slice();
        let mut ring_bufs = BufRing { entries, buffers, count, size, tail: 0, mode, order, head: 0, used: 0 };
        for bid in 0..count {
            ring_bufs.write_entry(bid);
        }
        Ok(ring_bufs)
    }

    /// The address of the ring's entries, for its registration.
    pub(super) fn entries_addr(&self) -> u64 {
        self.entries.ptr as u64
    }

    fn base(&self) -> *mut types::BufRingEntry {
        self.entries.ptr.cast()
    }

    /// Writes the entry for `bid` at our tail and advances it (not yet published).
    fn write_entry(&mut self, bid: u16) {
        let idx = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `idx < count`, so the entry is inside the mapping, which is aligned
        // for `BufRingEntry`. The kernel reads an entry's addr/len/bid only between its
        // head and the published tail; this one is past the published tail (the ring
        // never holds more than `count` buffers and `bid` is not in it), so nothing
        // reads those fields concurrently. On entry 0 the reference also spans `resv`,
        // which is the ring's tail: the kernel may read it at any time, so it is never
        // written through this reference (the setters write addr/len/bid only) and only
        // `publish` writes it, atomically, after this reference is gone.
        let entry = unsafe { &mut *self.base().add(idx) };
        entry.set_addr(self.buffers.ptr.wrapping_add(bid as usize * self.size as usize) as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        if let Some(at) = self.order.get_mut(idx) {
            *at = bid;
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the written entries visible to the kernel.
    pub(super) fn publish(&self) {
        // SAFETY: the base is the page-aligned first entry of the ring, initialized
        // (zeroed by mmap, then written), as `BufRingEntry::tail` requires. The tail is a
        // naturally aligned u16 the kernel reads with acquire ordering, and it is only
        // ever accessed atomically from this side.
        let tail = unsafe { &*types::BufRingEntry::tail(self.base()).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// `len` bytes of buffer `bid` from byte `from`.
    ///
    /// Only for a buffer the kernel has handed over by a completion and not been given
    /// back yet (or, incremental, the part a completion said it wrote), within the
    /// buffer.
    fn bytes(&self, bid: u16, from: u32, len: usize) -> &[u8] {
        debug_assert!(bid < self.count && from as usize + len <= self.size as usize);
        // SAFETY: `bid < count` and `from + len <= size` (callers cut `len` to the
        // buffer), so the range is inside the buffer mapping. The caller passes only
        // bytes a reaped completion says the kernel wrote: the kernel is done with them
        // and will not write them again until the buffer is recycled, which needs
        // `&mut self`, so not while this slice lives.
        unsafe {
            std::slice::from_raw_parts(self.buffers.ptr.add(bid as usize * self.size as usize + from as usize), len)
        }
    }

    /// Hands the `len` bytes a receive completion carries to `f`, in order (one call per
    /// buffer they span), and gives back to the kernel every buffer the completion
    /// finished. `first` is the buffer the completion names; `flags` its flags.
    /// A completion without data (`len` 0) delivers nothing.
    ///
    /// Errors when `first` is not a buffer of this ring or, walking, is not where the
    /// ring says the kernel's head is (the bytes cannot be placed).
    pub fn consume(&mut self, first: BufId, len: usize, flags: u32, mut f: impl FnMut(&[u8])) -> Result<(), Untracked> {
        let bid = first.into_raw();
        if bid >= self.count {
            return Err(Untracked);
        }
        if !self.mode.walked() {
            // One buffer per completion, used from its start and given back whole.
            if len > 0 {
                f(self.bytes(bid, 0, len.min(self.size as usize)));
            }
            self.write_entry(bid);
            self.publish();
            return Ok(());
        }
        if len == 0 {
            // Nothing was written. Incremental: the kernel did not move its head. Whole
            // buffers: it may have consumed this one; if it did, the next completion's
            // buffer shows it, and `catch_up` gives this one back then.
            return Ok(());
        }
        self.catch_up(bid)?;
        let mask = self.count - 1;
        let mut left = len;
        loop {
            let at = self.order[usize::from(self.head & mask)];
            let from = if self.mode.incremental { self.used } else { 0 };
            let take = left.min((self.size - from) as usize);
            f(self.bytes(at, from, take));
            left -= take;
            // A buffer the bytes go past is used up; the last one is kept by the kernel
            // if it said so (incremental), and is done otherwise.
            let done = !self.mode.incremental || left > 0 || flags & IORING_CQE_F_BUF_MORE == 0;
            if done {
                self.head = self.head.wrapping_add(1);
                self.used = 0;
                self.write_entry(at);
            } else {
                self.used += take as u32;
            }
            if left == 0 {
                break;
            }
            if !self.mode.bundles || self.head == self.tail {
                self.publish();
                return Err(Untracked);
            }
        }
        self.publish();
        Ok(())
    }

    /// Moves our head to the position of `bid`, the buffer the kernel's head is at:
    /// buffers before it were consumed by completions without data and are free.
    fn catch_up(&mut self, bid: u16) -> Result<(), Untracked> {
        let mask = self.count - 1;
        let queued = self.tail.wrapping_sub(self.head);
        let skip =
            (0..queued).find(|&k| self.order[usize::from(self.head.wrapping_add(k) & mask)] == bid).ok_or(Untracked)?;
        for _ in 0..skip {
            let at = self.order[usize::from(self.head & mask)];
            self.head = self.head.wrapping_add(1);
            self.used = 0;
            self.write_entry(at);
        }
        Ok(())
    }

    /// How many buffers the ring holds.
    pub fn count(&self) -> u16 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_ring::ring;
    use super::super::Ring;
    use super::*;
    use io_uring::opcode;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    /// One socket pair's multishot receive on a ring, read as the worker reads it.
    struct Receiver {
        local: UnixStream,
        peer: UnixStream,
        user_data: u64,
        armed: bool,
        got: Vec<u8>,
        /// The largest completion seen, and whether one said the buffer goes on.
        largest: usize,
        buf_more_seen: bool,
        eof: bool,
    }

    impl Receiver {
        fn new(user_data: u64) -> Receiver {
            let (local, peer) = UnixStream::pair().expect("socket pair");
            Receiver {
                local,
                peer,
                user_data,
                armed: false,
                got: Vec::new(),
                largest: 0,
                buf_more_seen: false,
                eof: false,
            }
        }

        fn arm(&mut self, ring: &mut Ring, group: BufGroup, bundles: bool) {
            let fd = types::Fd(self.local.as_raw_fd());
            let entry = if bundles {
                opcode::RecvMultiBundle::new(fd, group.id()).build()
            } else {
                opcode::RecvMulti::new(fd, group.id()).build()
            };
            // SAFETY: the receive writes only into `group`'s buffers, owned by `ring`;
            // `drain` reaps its last completion before the socket or the ring goes.
            unsafe { ring.push(&entry.user_data(self.user_data)) }.expect("push");
            self.armed = true;
        }
    }

    /// Reaps completions into `receivers` until each has `want[i]` bytes (or its EOF),
    /// re-arming a receive that ended (ENOBUFS) as the worker does.
    fn receive(ring: &mut Ring, group: BufGroup, mode: BufMode, receivers: &mut [Receiver], want: &[usize]) {
        let give_up = Instant::now() + Duration::from_secs(5);
        let mut cqes = Vec::new();
        while receivers.iter().zip(want).any(|(r, &w)| r.got.len() < w && !r.eof) {
            assert!(Instant::now() < give_up, "receiving timed out");
            for r in receivers.iter_mut().filter(|r| !r.armed && !r.eof) {
                r.arm(ring, group, mode.bundles);
            }
            ring.submit_and_wait_timeout(1, Duration::from_millis(100)).expect("enter");
            ring.reap(&mut cqes, 64);
            for cqe in &mut cqes {
                let r = receivers.iter_mut().find(|r| r.user_data == cqe.user_data()).expect("ours");
                let (res, flags) = (cqe.result(), cqe.flags());
                if !cqe.more() {
                    r.armed = false;
                }
                if let Some(bid) = cqe.take_buffer() {
                    let got = &mut r.got;
                    ring.buffers(group)
                        .consume(bid, res.max(0) as usize, flags, |b| got.extend_from_slice(b))
                        .expect("placed");
                }
                r.largest = r.largest.max(res.max(0) as usize);
                r.buf_more_seen |= flags & IORING_CQE_F_BUF_MORE != 0;
                if res == 0 {
                    r.eof = true;
                } else if res < 0 {
                    assert_eq!(-res, libc::ENOBUFS, "receive failed");
                }
            }
        }
    }

    /// Cancels what is armed and reaps until nothing is in flight.
    fn drain(ring: &mut Ring, group: BufGroup) {
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(999);
        // SAFETY: a cancellation refers to no memory and no fd.
        unsafe { ring.push(&cancel) }.expect("push");
        let mut cqes = Vec::new();
        while ring.in_flight() > 0 {
            ring.submit_and_wait_timeout(1, Duration::from_millis(100)).expect("enter");
            ring.reap(&mut cqes, 64);
            for cqe in &mut cqes {
                if let Some(bid) = cqe.take_buffer() {
                    let _ = ring.buffers(group).consume(bid, cqe.result().max(0) as usize, cqe.flags(), |_| ());
                }
            }
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Sends `writes` one at a time (each received before the next) and returns what the
    /// receive delivered, with the receiver's observations.
    fn stream_through(mode: BufMode, count: u16, size: u32, writes: &[usize]) -> Option<Receiver> {
        let mut ring = ring(64)?;
        let group = ring.add_buf_ring(count, size, mode).expect("buffer ring");
        let mut r = [Receiver::new(1)];
        let mut sent = Vec::new();
        for (i, &len) in writes.iter().enumerate() {
            let data = pattern(len, i as u8);
            r[0].peer.write_all(&data).expect("write");
            sent.extend_from_slice(&data);
            receive(&mut ring, group, mode, &mut r, &[sent.len()]);
        }
        drain(&mut ring, group);
        let [r] = r;
        assert_eq!(r.got, sent, "{mode:?}: the bytes arrive whole and in order");
        Some(r)
    }

    #[test]
    fn incremental_buffers_serve_many_small_receives_and_are_given_back() {
        let mode = BufMode { incremental: true, bundles: false };
        // 2 buffers of 16 bytes carry 200 bytes: each is reused many times.
        let Some(r) = stream_through(mode, 2, 16, &[5; 40]) else { return };
        assert!(r.buf_more_seen, "no completion left its buffer to the next one");
    }

    #[test]
    fn a_bundle_spans_several_buffers_in_ring_order() {
        for incremental in [false, true] {
            let mode = BufMode { incremental, bundles: true };
            // A write larger than a buffer, between small ones, and more than the whole
            // pool in all.
            let Some(r) = stream_through(mode, 4, 8, &[3, 20, 5, 30, 1, 7, 24]) else { return };
            assert!(r.largest > 8, "{mode:?}: no completion spanned two buffers (largest {})", r.largest);
        }
    }

    #[test]
    fn whole_buffers_are_used_once_each() {
        let Some(_) = stream_through(BufMode::default(), 4, 8, &[5, 8, 3, 8, 1]) else { return };
    }

    /// A receive that ends at EOF does not confuse where the next one's bytes are, in any
    /// mode: another connection's bytes still arrive whole.
    #[test]
    fn an_eof_between_receives_keeps_the_ring_in_step() {
        let modes = [(false, false), (true, false), (false, true), (true, true)];
        for mode in modes.map(|(incremental, bundles)| BufMode { incremental, bundles }) {
            let Some(mut ring) = ring(64) else { return };
            let group = ring.add_buf_ring(4, 16, mode).expect("buffer ring");
            let mut rs = [Receiver::new(1), Receiver::new(2)];
            let mut sent = Vec::new();
            for round in 0..6u8 {
                let data = pattern(11, round);
                rs[1].peer.write_all(&data).expect("write");
                sent.extend_from_slice(&data);
                if round == 2 {
                    rs[0].peer.write_all(b"bye").expect("write");
                    rs[0].peer.shutdown(std::net::Shutdown::Write).expect("shutdown");
                }
                let want = [if round >= 2 { 3 } else { 0 }, sent.len()];
                receive(&mut ring, group, mode, &mut rs, &want);
            }
            // Wait for the EOF too.
            while !rs[0].eof {
                receive(&mut ring, group, mode, &mut rs, &[usize::MAX, 0]);
            }
            drain(&mut ring, group);
            assert_eq!(rs[0].got, b"bye", "{mode:?}");
            assert_eq!(rs[1].got, sent, "{mode:?}");
        }
    }
}
