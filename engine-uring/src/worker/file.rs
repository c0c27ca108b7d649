//! File streaming: a file body travels through the ring in chunks. Read the file at
//! the segment's offset into the connection's chunk buffer, send it, report the bytes
//! with `handle_sent`, repeat.

use super::conn::ConnOp;
use super::{conn_entry, Worker};
use duet_engine::ConnId;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Bytes of a streamed file read and sent per round: one chunk buffer per connection
/// that is streaming a file, none otherwise.
const FILE_CHUNK: usize = 128 * 1024;
/// Chunk buffers kept for reuse.
const CHUNK_POOL_MAX: usize = 16;

/// One connection's chunk buffer: `buf[sent..filled]` is read but not yet sent.
/// `busy` while the read or the send is in flight (then `buf` must not move or be
/// freed: it is boxed in the connection until the completion).
pub(super) struct FileChunk {
    buf: Box<[u8]>,
    pub(super) filled: usize,
    pub(super) sent: usize,
    /// Bytes the send (or the splice to the socket) in flight offers.
    pub(super) offered: usize,
    pub(super) busy: bool,
    /// With [`crate::Feature::Splice`]: the connection's pipe (then `buf` is empty), the
    /// bytes in it not yet sent, the splices in flight, and whether the last one to the
    /// socket came back short (the socket is full: poll before the next).
    pipe: Option<Pipe>,
    pub(super) in_pipe: usize,
    pub(super) splicing: u8,
    pub(super) stalled: bool,
}

/// A splice pipe: (read end, write end).
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // The two closes the fields' drops make.
        duet_engine::syscalls::count(2);
    }
}

impl FileChunk {
    fn boxed() -> Box<FileChunk> {
        FileChunk::with(vec![0u8; FILE_CHUNK].into_boxed_slice(), None)
    }

    /// A chunk with no buffer and a pipe of (asked) `size` bytes, for ring splices.
    pub(super) fn piped(size: usize) -> io::Result<Box<FileChunk>> {
        let (r, w) = crate::sys::pipe(size)?;
        Ok(FileChunk::with(Box::new([]), Some(Pipe { r, w })))
    }

    fn with(buf: Box<[u8]>, pipe: Option<Pipe>) -> Box<FileChunk> {
        Box::new(FileChunk {
            buf,
            filled: 0,
            sent: 0,
            offered: 0,
            busy: false,
            pipe,
            in_pipe: 0,
            splicing: 0,
            stalled: false,
        })
    }

    /// Whether this chunk carries a splice pipe.
    pub(super) fn has_pipe(&self) -> bool {
        self.pipe.is_some()
    }

    /// The pipe's write end (what a file is spliced into).
    pub(super) fn pipe_in(&self) -> Option<RawFd> {
        self.pipe.as_ref().map(|p| p.w.as_raw_fd())
    }

    /// The pipe's read end (what is spliced to the socket).
    pub(super) fn pipe_out(&self) -> Option<RawFd> {
        self.pipe.as_ref().map(|p| p.r.as_raw_fd())
    }
}

impl FileChunk {
    /// A read into the buffer starts: at most `len` bytes, from its start. Busy until
    /// its completion.
    pub(super) fn start_read(&mut self, len: usize) -> &mut [u8] {
        self.busy = true;
        self.filled = 0;
        self.sent = 0;
        let len = len.min(self.buf.len());
        &mut self.buf[..len]
    }

    /// A send of the next `len` unsent bytes (at most what is filled) starts. Busy until
    /// its completion.
    pub(super) fn start_send(&mut self, len: usize) -> &[u8] {
        self.busy = true;
        let end = self.filled.min(self.sent + len);
        self.offered = end - self.sent;
        &self.buf[self.sent..end]
    }
}

/// Keeps `chunk` for reuse, up to the pool's size. A pipe with bytes left in it (its
/// connection went mid-body) is closed, never reused: those bytes belong to no one.
#[allow(clippy::vec_box)]
pub(super) fn recycle(pool: &mut Vec<Box<FileChunk>>, chunk: Box<FileChunk>) {
    if pool.len() < CHUNK_POOL_MAX && chunk.in_pipe == 0 && chunk.splicing == 0 {
        pool.push(chunk);
    }
}

impl Worker {
    /// Sends the rest of connection `id`'s chunk (`sent < filled`, not busy), at most
    /// `share` bytes of it (the connection's share of the turn).
    pub(super) fn send_chunk(&mut self, id: ConnId, share: usize) -> io::Result<()> {
        let Some(e) = self.core.conns.get_mut(id) else { return Ok(()) };
        let Some(chunk) = e.io.stream.as_ref() else { return Ok(()) };
        // What is left of the chunk past the share goes next time.
        let len = (chunk.filled - chunk.sent).min(share);
        self.core.budget.spend(len);
        e.io.submit(&mut self.ring, id, ConnOp::FileSend { len })
    }

    /// Reads the next chunk of the file `file` (the front segment of connection
    /// `id`'s output, `left` bytes from `offset`) into its chunk buffer.
    pub(super) fn read_chunk(&mut self, id: ConnId, file: RawFd, offset: u64, left: usize) -> io::Result<()> {
        let Some(e) = self.core.conns.get_mut(id) else { return Ok(()) };
        e.io.stream.get_or_insert_with(|| self.chunks.pop().unwrap_or_else(FileChunk::boxed));
        e.io.submit(&mut self.ring, id, ConnOp::FileRead { file, offset, len: left })
    }

    pub(super) fn on_file_read(&mut self, id: ConnId, res: i32, more: bool) {
        let Some(e) = conn_entry(&mut self.core.conns, id, more) else { return };
        if let Some(chunk) = e.io.stream.as_mut() {
            chunk.busy = false;
            if res > 0 {
                chunk.filled = res as usize;
                chunk.sent = 0;
            } else {
                // The file shrank under us (0) or cannot be read: the promised length
                // cannot be sent, so the connection must go.
                e.io.fail();
            }
        }
        if !self.stopping {
            e.io.mark_dirty(id, &mut self.dirty);
        }
    }

    pub(super) fn on_file_send(&mut self, id: ConnId, res: i32, more: bool) {
        let Some(e) = conn_entry(&mut self.core.conns, id, more) else { return };
        if let Some(chunk) = e.io.stream.as_mut() {
            chunk.busy = false;
            if res > 0 {
                self.core.stats.bytes_written += res as u64;
                if (res as usize) < chunk.offered {
                    self.core.stats.partial_writes += 1;
                }
                chunk.sent += res as usize;
                if e.io.life.is_live() && !self.stopping {
                    e.conn.handle_sent(&mut self.core.ctx, res as usize);
                }
            } else if res != -libc::ECANCELED && !super::complete::send_again(res) {
                e.io.fail();
            }
        }
        if !self.stopping {
            e.io.mark_dirty(id, &mut self.dirty);
        }
    }
}
