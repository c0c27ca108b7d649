//! Output queues: small owned header bytes plus shared bodies that are never copied.

use bytes::Bytes;
use std::io::IoSlice;

/// Bodies up to this size are copied next to their headers: one segment is cheaper
/// than a reference count and an extra iovec.
pub(crate) const INLINE_BODY_MAX: usize = 4096;

/// One batch of responses: owned bytes with shared bodies spliced in at offsets.
#[derive(Debug, Default)]
pub struct OutBuf {
    data: Vec<u8>,
    /// `(offset in data, body)`: the body goes before `data[offset..]`.
    shared: Vec<(usize, Bytes)>,
    total: usize,
    sent: usize,
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
            self.shared.push((self.data.len(), body.clone()));
            self.total += body.len();
        }
    }

    /// Bytes still to send.
    pub fn remaining(&self) -> usize {
        self.total - self.sent
    }

    pub(crate) fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.remaining());
        self.sent = (self.sent + n).min(self.total);
    }

    fn clear(&mut self) {
        self.data.clear();
        self.shared.clear();
        self.total = 0;
        self.sent = 0;
    }

    /// Fills `iov` with the unsent segments in order; returns how many were filled.
    pub fn fill<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let mut skip = self.sent;
        let mut n = 0;
        let mut push = |slice: &'a [u8], n: &mut usize| -> bool {
            if skip >= slice.len() {
                skip -= slice.len();
                return true;
            }
            if *n == iov.len() {
                return false;
            }
            iov[*n] = IoSlice::new(&slice[skip..]);
            skip = 0;
            *n += 1;
            true
        };
        let mut pos = 0;
        for (offset, body) in &self.shared {
            if !push(&self.data[pos..*offset], &mut n) || !push(body, &mut n) {
                return n;
            }
            pos = *offset;
        }
        push(&self.data[pos..], &mut n);
        n
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
