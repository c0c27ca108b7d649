//! The header of an in-flight send: the `msghdr` and `iovec`s the kernel reads until
//! the send's last completion, pointing at a connection's output segments.

use super::{on_sock, Mapping, Target};
use duet_http::OutBuf;
use io_uring::squeue;
use std::io::IoSlice;
use std::ptr;
use std::sync::Arc;

/// Most segments one send carries; the rest goes in the next send.
pub const MAX_IOV: usize = 16;

/// The `msghdr` and `iovec`s of one in-flight `sendmsg`, boxed so their address is
/// stable while the kernel may read them.
pub struct SendHeader {
    msg: libc::msghdr,
    iov: [libc::iovec; MAX_IOV],
    /// Bytes the loaded segments hold.
    total: usize,
    /// The result of a zero-copy send whose notification has not come yet: the bytes
    /// are reported sent (and the segments released) only then.
    zc_result: Option<i32>,
    /// The file mapping the last iovec points into, if any: held here, with the header,
    /// until the send's last completion (the notification of a zero-copy send), so the
    /// mapping outlives every read the kernel makes of it.
    mapping: Option<Arc<Mapping>>,
}

/// A zero-copy send's notification result: the kernel copied the data after all (on
/// loopback it must: the receiver gets the pages).
pub const IORING_NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;
/// `zc_flags`: report in the notification whether the data was copied.
const IORING_SEND_ZC_REPORT_USAGE: u16 = 1 << 3;

impl SendHeader {
    /// An empty header.
    pub fn boxed() -> Box<SendHeader> {
        let empty = libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 };
        // SAFETY: msghdr is a plain C struct for which all-zero bytes are a valid
        // value (null pointers, zero lengths).
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        Box::new(SendHeader { msg, iov: [empty; MAX_IOV], total: 0, zc_result: None, mapping: None })
    }

    /// Points the header at the unsent segments of `out`, at most `max` bytes of them
    /// (the connection's share of the turn: it has one send in flight at most); returns
    /// how many bytes they hold.
    pub fn load(&mut self, out: &OutBuf, max: usize) -> usize {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let n = out.fill_max(&mut slices, max);
        let mut total = 0;
        for (iov, slice) in self.iov.iter_mut().zip(&slices[..n]) {
            iov.iov_base = slice.as_ptr() as *mut libc::c_void;
            iov.iov_len = slice.len();
            total += slice.len();
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = n as _;
        self.total = total;
        self.zc_result = None;
        self.mapping = None;
        total
    }

    /// Appends `len` bytes of `mapping` at `addr` (from [`Mapping::range`]) after what
    /// [`SendHeader::load`] put in, and keeps the mapping until [`SendHeader::release`];
    /// returns the new total. False (nothing appended) when the iovecs are full.
    pub fn push_mapped(&mut self, mapping: Arc<Mapping>, addr: *const u8, len: usize) -> Option<usize> {
        let n = self.msg.msg_iovlen;
        if n >= MAX_IOV || len == 0 {
            return None;
        }
        self.iov[n] = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: len };
        self.msg.msg_iovlen = n + 1;
        self.total += len;
        self.mapping = Some(mapping);
        Some(self.total)
    }

    /// The iovecs loaded.
    pub fn iovecs(&self) -> usize {
        self.msg.msg_iovlen
    }

    /// Whether the header names a file mapping.
    pub fn is_mapped(&self) -> bool {
        self.mapping.is_some()
    }

    /// The send is over (its last completion reaped) or never went: drops what it held
    /// (the mapping: unmapped here if nothing else holds it). Done before a header is
    /// pooled, so a pooled header pins no file.
    pub fn release(&mut self) {
        self.mapping = None;
    }

    /// Keeps a zero-copy send's result until its notification.
    pub fn set_zc_result(&mut self, res: i32) {
        self.zc_result = Some(res);
    }

    /// The result kept by [`SendHeader::set_zc_result`].
    pub fn zc_result(&self) -> Option<i32> {
        self.zc_result
    }

    /// Bytes offered by the last [`SendHeader::load`].
    pub fn total(&self) -> usize {
        self.total
    }

    /// The entry that sends what the header holds to `target` (MSG_NOSIGNAL: a closed
    /// peer is an error, not a SIGPIPE): a plain `send` when it is one segment and
    /// `plain_send` allows (the kernel then copies no `msghdr` and no iovec array), a
    /// `sendmsg` otherwise.
    ///
    /// With `zero_copy` it is `SEND_ZC`/`SENDMSG_ZC`: the kernel sends from the segments
    /// themselves and posts a second completion (`IORING_CQE_F_NOTIF`) once it no longer
    /// uses them; until then they must stay unchanged, so the caller reports the bytes
    /// sent only at that notification.
    pub fn entry(&self, target: Target, plain_send: bool, zero_copy: bool) -> squeue::Entry {
        use io_uring::opcode::{Send, SendMsg, SendMsgZc, SendZc};
        let nosignal = libc::MSG_NOSIGNAL;
        let usage = IORING_SEND_ZC_REPORT_USAGE;
        if plain_send && self.msg.msg_iovlen == 1 {
            let (buf, len) = (self.iov[0].iov_base as *const u8, self.iov[0].iov_len as u32);
            if zero_copy {
                return on_sock!(target, t => SendZc::new(t, buf, len).flags(nosignal).zc_flags(usage).build());
            }
            return on_sock!(target, t => Send::new(t, buf, len).flags(nosignal).build());
        }
        if zero_copy {
            return on_sock!(target, t => SendMsgZc::new(t, &self.msg).flags(nosignal as u32).ioprio(usage).build());
        }
        on_sock!(target, t => SendMsg::new(t, &self.msg).flags(nosignal as u32).build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A send offers at most the share it is given: a 4 MiB response goes out in
    /// share-sized sends, in order.
    #[test]
    fn a_send_offers_at_most_the_connections_share() {
        use duet_engine::MIN_WRITE_SHARE;
        const FULL_SHARE: usize = 256 * 1024;
        use duet_http::{Connection, Context, Limits, Site};
        use std::time::{Instant, SystemTime};
        let body: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let site = Site::builder().route("/big", "application/octet-stream", bytes::Bytes::from(body.clone())).build();
        let mut ctx = Context::new(std::sync::Arc::new(site), Limits::default(), Instant::now(), SystemTime::now());
        let mut conn = Connection::new(&ctx);
        conn.handle_input(&mut ctx, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut header = SendHeader::boxed();
        let mut sends = 0;
        let mut sent = Vec::new();
        while let Some(out) = conn.poll_output() {
            let share = if sends % 2 == 0 { FULL_SHARE } else { MIN_WRITE_SHARE };
            let total = header.load(out, share);
            assert!(total > 0 && total <= share, "send {sends} offers {total} bytes of a {share}-byte share");
            for iov in &header.iov[..header.msg.msg_iovlen] {
                // SAFETY: `load` pointed these iovecs at segments `out` holds unchanged
                // until `handle_sent` below; nothing is sent, only read here.
                sent.extend_from_slice(unsafe { std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len) });
            }
            conn.handle_sent(&mut ctx, total);
            sends += 1;
        }
        assert!(sends > 2 * (4 << 20) / (FULL_SHARE + MIN_WRITE_SHARE), "{sends} sends");
        assert!(sent.ends_with(&body), "the body arrives whole and in order");
    }
}
