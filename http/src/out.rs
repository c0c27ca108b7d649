//! Output queues: small owned header bytes plus shared bodies that are never copied,
//! and file ranges that the engine streams from disk.

use bytes::Bytes;
use std::fs::File;
use std::io::IoSlice;
use std::sync::Arc;

/// Bodies up to this size are copied next to their headers: one segment is cheaper
/// than a reference count and an extra iovec.
pub(crate) const INLINE_BODY_MAX: usize = 4096;

/// A segment spliced between owned bytes.
#[derive(Debug)]
enum Spliced {
    /// A shared body in memory.
    Memory(Bytes),
    /// `len` bytes of `file` from `offset`, sent by the engine from disk.
    File { file: Arc<File>, offset: u64, len: usize },
}

impl Spliced {
    fn len(&self) -> usize {
        match self {
            Spliced::Memory(b) => b.len(),
            Spliced::File { len, .. } => *len,
        }
    }
}

/// One batch of responses: owned bytes with shared bodies and file ranges spliced in at
/// offsets.
///
/// An engine sends it in order: [`OutBuf::fill`] gives the in-memory segments up to the
/// first unsent file segment; when nothing in memory is left before it,
/// [`OutBuf::front_file`] gives that file segment. Bytes sent either way are reported
/// alike (`Connection::handle_sent`).
///
/// # Segments never point into the `Connection`
///
/// Every segment [`OutBuf::fill`] gives points into heap storage: this buffer's own
/// `Vec`, or a body's shared `Bytes`. None points into the bytes of the `OutBuf` value
/// or of the [`Connection`](crate::Connection) that queues it (which holds its
/// `OutBuf`s in a `Box`), so a segment stays where it is, with the same bytes, when the
/// `Connection` value moves. Engines rely on this: an iovec of a send in flight (an
/// io_uring `sendmsg`, a partial `writev` retried) is kept while the engine's slab of
/// connections grows and moves them, until [`Connection::handle_sent`](crate::Connection::handle_sent).
/// So no inline storage for output: no small-array optimisation in this struct or in
/// `Connection`, no body bytes kept in either by value. `tests/output_segments.rs`
/// fails if that changes.
#[derive(Debug, Default)]
pub struct OutBuf {
    data: Vec<u8>,
    /// `(offset in data, segment)`: the segment goes before `data[offset..]`.
    shared: Vec<(usize, Spliced)>,
    total: usize,
    sent: usize,
    /// File segments not completely sent (0 keeps the memory-only path free of any
    /// file accounting).
    files_unsent: usize,
    /// Bytes of file segments not yet sent.
    file_bytes_unsent: usize,
}

impl OutBuf {
    pub(crate) fn push_owned(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.total += bytes.len();
    }

    pub(crate) fn push_shared(&mut self, body: &Bytes) {
        if body.len() <= INLINE_BODY_MAX {
            self.push_owned(body);
        } else {
            self.shared.push((self.data.len(), Spliced::Memory(body.clone())));
            self.total += body.len();
        }
    }

    /// Queues `len` bytes of `file` from `offset`, to be sent from disk by the engine.
    pub(crate) fn push_file(&mut self, file: &Arc<File>, offset: u64, len: usize) {
        if len == 0 {
            return;
        }
        self.shared.push((self.data.len(), Spliced::File { file: Arc::clone(file), offset, len }));
        self.total += len;
        self.files_unsent += 1;
        self.file_bytes_unsent += len;
    }

    /// Bytes still to send (file bytes included).
    pub fn remaining(&self) -> usize {
        self.total - self.sent
    }

    /// Whether a file segment is still to send, at the front or behind memory ones: an
    /// engine that sends file bodies from its loop may then send the bytes before it
    /// there too.
    pub fn has_file(&self) -> bool {
        self.files_unsent > 0
    }

    /// Bytes still to send that are held in memory (file segments excluded): what
    /// counts toward the output cap.
    pub(crate) fn memory_remaining(&self) -> usize {
        self.remaining() - self.file_bytes_unsent
    }

    /// File segments not completely sent.
    pub(crate) fn files_unsent(&self) -> usize {
        self.files_unsent
    }

    pub(crate) fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.remaining());
        let from = self.sent;
        self.sent = (self.sent + n).min(self.total);
        if self.files_unsent == 0 {
            return;
        }
        // Account the file bytes in `from..self.sent`.
        let to = self.sent;
        let mut pos = 0; // stream position of the next segment
        let mut data_pos = 0;
        for (offset, seg) in &self.shared {
            pos += offset - data_pos;
            data_pos = *offset;
            if pos >= to {
                break;
            }
            let end = pos + seg.len();
            if let Spliced::File { .. } = seg {
                let overlap = end.min(to).saturating_sub(pos.max(from));
                self.file_bytes_unsent -= overlap;
                if overlap > 0 && end <= to {
                    self.files_unsent -= 1;
                }
            }
            pos = end;
        }
    }

    fn clear(&mut self) {
        self.data.clear();
        self.shared.clear();
        self.total = 0;
        self.sent = 0;
        self.files_unsent = 0;
        self.file_bytes_unsent = 0;
    }

    /// Fills `iov` with the unsent in-memory segments in order, stopping before the
    /// first unsent file segment; returns how many were filled. Zero while output
    /// remains means a file segment is at the front: see [`OutBuf::front_file`].
    pub fn fill<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        self.fill_max(iov, usize::MAX)
    }

    /// Like [`OutBuf::fill`], but the filled segments hold at most `max` bytes (the
    /// last one is cut short): an engine's write budget for one connection in one
    /// turn. Zero only when `max` is zero or a file segment is at the front.
    pub fn fill_max<'a>(&'a self, iov: &mut [IoSlice<'a>], max: usize) -> usize {
        let mut cursor = Cursor { skip: self.sent, left: max, n: 0 };
        let mut pos = 0;
        for (offset, seg) in &self.shared {
            if !cursor.take(&self.data[pos..*offset], iov) {
                return cursor.n;
            }
            pos = *offset;
            let more = match seg {
                Spliced::Memory(body) => cursor.take(body, iov),
                // Sent by the engine from disk: the iovecs stop before an unsent one.
                Spliced::File { len, .. } if cursor.skip >= *len => {
                    cursor.skip -= len;
                    true
                }
                Spliced::File { .. } => false,
            };
            if !more {
                return cursor.n;
            }
        }
        cursor.take(&self.data[pos..], iov);
        cursor.n
    }

    /// The file segment at the front of the unsent output, if nothing in memory comes
    /// before it: `(file, offset in the file, bytes left in this segment)`. The engine
    /// sends from it with positional I/O (`sendfile(sock, file, &mut offset, ..)`,
    /// `splice`, or `pread` + send) and reports what it sent with
    /// `Connection::handle_sent`, as for memory segments.
    pub fn front_file(&self) -> Option<(&File, u64, usize)> {
        if self.files_unsent == 0 {
            return None;
        }
        let mut skip = self.sent;
        let mut pos = 0;
        for (offset, seg) in &self.shared {
            let before = offset - pos;
            if skip < before {
                return None; // owned bytes first
            }
            skip -= before;
            pos = *offset;
            let len = seg.len();
            if skip < len {
                return match seg {
                    Spliced::Memory(_) => None,
                    Spliced::File { file, offset, len } => Some((&**file, offset + skip as u64, len - skip)),
                };
            }
            skip -= len;
        }
        None
    }

    /// The first file segment with bytes still to send, wherever it is (in-memory bytes
    /// may come before it): `(file, offset in the file of its first unsent byte, bytes
    /// left in it)`. An engine that sends a file body from a mapping of the file puts it
    /// right after what [`OutBuf::fill_max`] gave when that stopped at a file segment
    /// (neither the iovecs nor `max` used up, output left): then it is this one.
    pub fn first_unsent_file(&self) -> Option<(&Arc<File>, u64, usize)> {
        if self.files_unsent == 0 {
            return None;
        }
        let mut skip = self.sent;
        let mut pos = 0;
        for (offset, seg) in &self.shared {
            skip = skip.saturating_sub(offset - pos);
            pos = *offset;
            let len = seg.len();
            if skip < len {
                if let Spliced::File { file, offset, len } = seg {
                    return Some((file, offset + skip as u64, len - skip));
                }
            }
            skip = skip.saturating_sub(len);
        }
        None
    }
}

/// Where [`OutBuf::fill_max`] is: sent bytes still to skip, bytes it may still add,
/// and iovecs filled.
struct Cursor {
    skip: usize,
    left: usize,
    n: usize,
}

impl Cursor {
    /// Puts the unsent part of `slice` (after skipping the sent bytes), at most `left`
    /// bytes of it, into the next iovec; false when the iovecs or the bytes allowed are
    /// used up.
    fn take<'a>(&mut self, slice: &'a [u8], iov: &mut [IoSlice<'a>]) -> bool {
        if self.skip >= slice.len() {
            self.skip -= slice.len();
            return true;
        }
        if self.n == iov.len() || self.left == 0 {
            return false;
        }
        let rest = &slice[self.skip..];
        let part = &rest[..rest.len().min(self.left)];
        iov[self.n] = IoSlice::new(part);
        self.skip = 0;
        self.left -= part.len();
        self.n += 1;
        true
    }
}

/// A per-thread stack of output buffers, so a connection holds one only while it has
/// something to send and no request allocates.
#[derive(Debug, Default)]
pub struct BufPool {
    // Boxed on purpose: connections hold `Option<Box<OutBuf>>` (one pointer each), and
    // the pool hands the same boxes back and forth without moving the buffers.
    #[allow(clippy::vec_box)]
    free: Vec<Box<OutBuf>>,
}

/// Buffers kept for reuse; more are freed.
const POOL_MAX: usize = 512;
/// A buffer that grew beyond this is freed rather than kept.
const POOL_KEEP_CAPACITY: usize = 64 * 1024;

impl BufPool {
    pub(crate) fn take(&mut self) -> Box<OutBuf> {
        self.free.pop().unwrap_or_default()
    }

    pub(crate) fn give(&mut self, mut buf: Box<OutBuf>) {
        if self.free.len() < POOL_MAX && buf.data.capacity() <= POOL_KEEP_CAPACITY {
            buf.clear();
            self.free.push(buf);
        }
    }

    /// Buffers currently pooled.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// True when nothing is pooled.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(buf: &OutBuf, max: usize) -> Vec<u8> {
        let mut iov = vec![IoSlice::new(&[]); max];
        let n = buf.fill(&mut iov);
        iov[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn segments_follow_order_and_skip_sent_bytes() {
        let big = Bytes::from(vec![b'x'; INLINE_BODY_MAX + 1]);
        let mut b = OutBuf::default();
        b.push_owned(b"head1");
        b.push_shared(&big);
        b.push_owned(b"head2");
        let mut want = b"head1".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"head2");
        assert_eq!(collect(&b, 8), want);
        for cut in 0..want.len() {
            let mut c = OutBuf::default();
            c.push_owned(b"head1");
            c.push_shared(&big);
            c.push_owned(b"head2");
            c.advance(cut);
            assert_eq!(collect(&c, 8), want[cut..]);
            assert_eq!(c.remaining(), want.len() - cut);
        }
    }

    fn temp_file(tag: &str, data: &[u8]) -> Arc<File> {
        let path = std::env::temp_dir().join(format!("duet-out-{}-{tag}", std::process::id()));
        std::fs::write(&path, data).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        Arc::new(file)
    }

    /// Sends everything as an engine would, `max` bytes at most per send, reading file
    /// segments with positional reads.
    fn drain(buf: &mut OutBuf, max: usize) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut out = Vec::new();
        while buf.remaining() > 0 {
            let mem = collect(buf, 16);
            let n = if mem.is_empty() {
                let (file, offset, left) = buf.front_file().expect("a file at the front");
                let mut chunk = vec![0; left.min(max)];
                file.read_exact_at(&mut chunk, offset).unwrap();
                out.extend_from_slice(&chunk);
                chunk.len()
            } else {
                assert!(buf.front_file().is_none());
                let n = mem.len().min(max);
                out.extend_from_slice(&mem[..n]);
                n
            };
            buf.advance(n);
        }
        assert_eq!((buf.files_unsent(), buf.memory_remaining()), (0, 0));
        assert!(!buf.has_file(), "every file segment sent");
        out
    }

    #[test]
    fn file_segments_keep_their_place_between_memory_segments() {
        let file_data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let file = temp_file("order", &file_data);
        let big = Bytes::from(vec![b'x'; INLINE_BODY_MAX + 1]);
        let build = || {
            let mut b = OutBuf::default();
            b.push_owned(b"head1");
            b.push_file(&file, 100, 5000);
            b.push_owned(b"head2");
            b.push_shared(&big);
            b.push_file(&file, 0, 3);
            b.push_file(&file, 9000, 1000);
            b.push_owned(b"tail");
            b
        };
        let mut want = b"head1".to_vec();
        want.extend_from_slice(&file_data[100..5100]);
        want.extend_from_slice(b"head2");
        want.extend_from_slice(&big);
        want.extend_from_slice(&file_data[..3]);
        want.extend_from_slice(&file_data[9000..]);
        want.extend_from_slice(b"tail");
        let b = build();
        assert_eq!(b.remaining(), want.len());
        assert_eq!(b.files_unsent(), 3);
        assert_eq!(b.memory_remaining(), want.len() - 6003);
        // fill stops before the first file; nothing of the file is at the front yet,
        // but one is to come.
        assert_eq!(collect(&b, 16), b"head1");
        assert!(b.has_file());
        assert!(b.front_file().is_none());
        for max in [1, 2, 3, 7, 100, 4096, 5003, usize::MAX] {
            assert_eq!(drain(&mut build(), max), want, "max {max}");
        }
    }

    #[test]
    fn advance_across_boundaries_gives_the_right_file_range() {
        let file = temp_file("ranges", &[7u8; 64]);
        let mut b = OutBuf::default();
        b.push_owned(b"ab");
        b.push_file(&file, 10, 20);
        b.push_owned(b"cd");
        b.push_file(&file, 40, 5);
        let first = |b: &OutBuf| b.first_unsent_file().map(|(_, o, l)| (o, l));
        // The first unsent file, wherever it is: behind memory bytes too.
        assert_eq!(first(&b), Some((10, 20)));
        b.advance(1);
        assert!(b.front_file().is_none());
        assert_eq!(first(&b), Some((10, 20)));
        b.advance(3); // "b" and 2 file bytes
        let (_, offset, left) = b.front_file().unwrap();
        assert_eq!((offset, left), (12, 18));
        assert_eq!(first(&b), Some((12, 18)));
        assert_eq!((b.files_unsent(), b.memory_remaining()), (2, 2));
        b.advance(19); // the rest of the first file and "c"
        assert!(b.front_file().is_none());
        assert_eq!(first(&b), Some((40, 5)), "the second file, behind \"d\"");
        assert_eq!(collect(&b, 4), b"d");
        assert_eq!((b.files_unsent(), b.memory_remaining()), (1, 1));
        b.advance(3); // "d" and 2 bytes of the second file
        assert_eq!(b.front_file().map(|(_, o, l)| (o, l)), Some((42, 3)));
        b.advance(3);
        assert_eq!((b.remaining(), b.files_unsent()), (0, 0));
        assert!(b.front_file().is_none() && first(&b).is_none());
        assert_eq!(b.fill(&mut [IoSlice::new(&[])]), 0);
    }

    #[test]
    fn empty_file_segments_are_dropped_and_clear_resets_the_counts() {
        let file = temp_file("empty", b"abc");
        let mut b = OutBuf::default();
        b.push_file(&file, 0, 0);
        assert_eq!((b.remaining(), b.files_unsent()), (0, 0));
        b.push_file(&file, 1, 2);
        assert_eq!(b.front_file().map(|(_, o, l)| (o, l)), Some((1, 2)));
        b.clear();
        assert_eq!((b.remaining(), b.files_unsent(), b.memory_remaining()), (0, 0, 0));
        assert!(b.front_file().is_none());
    }

    #[test]
    fn fill_max_gives_a_prefix_of_at_most_max_bytes() {
        let big = Bytes::from((0..INLINE_BODY_MAX + 100).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
        let build = || {
            let mut b = OutBuf::default();
            b.push_owned(b"head1");
            b.push_shared(&big);
            b.push_owned(b"head2");
            b.push_shared(&big);
            b
        };
        let mut want = b"head1".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"head2");
        want.extend_from_slice(&big);
        for cut in [0, 3, 5, 6, 4000, want.len() - 1] {
            for max in [0, 1, 4, 5, 6, 100, INLINE_BODY_MAX, want.len(), usize::MAX] {
                let mut b = build();
                b.advance(cut);
                let mut iov = vec![IoSlice::new(&[]); 8];
                let n = b.fill_max(&mut iov, max);
                let got: Vec<u8> = iov[..n].iter().flat_map(|s| s.iter().copied()).collect();
                let end = want.len().min(cut.saturating_add(max));
                assert_eq!(got, want[cut..end], "cut {cut} max {max}");
                assert!(iov[..n].iter().all(|s| !s.is_empty()), "no empty iovec (cut {cut} max {max})");
            }
        }
    }

    #[test]
    fn fill_stops_at_iovec_capacity() {
        let big = Bytes::from(vec![b'x'; INLINE_BODY_MAX + 1]);
        let mut b = OutBuf::default();
        b.push_owned(b"a");
        b.push_shared(&big);
        b.push_owned(b"b");
        let mut iov = [IoSlice::new(&[]); 2];
        assert_eq!(b.fill(&mut iov), 2);
        assert_eq!(&*iov[0], b"a");
    }
}
