//! File bodies sent straight from a shared read-only mapping of the file
//! ([`Feature::Mmap`](crate::Feature::Mmap), [`Feature::MmapZc`](crate::Feature::MmapZc)):
//! one `sendmsg` through the ring carries the response head and the body's share, the
//! body's iovec pointing into the mapping. One copy (page cache to socket buffer), or
//! none with the zero-copy send, instead of the chunk buffer's two.
//!
//! What holds the mapping, and for how long:
//! - the worker's [`MapCache`] maps each file once (keyed by its `Arc<File>`, a clone of
//!   which it keeps so the key cannot be reused by another file) and drops its entry
//!   once nothing else holds the file (the site that served it was replaced, and no
//!   response still sends it);
//! - a send that names the mapping holds an `Arc` of it in its header
//!   ([`SendHeader::push_mapped`]) until the send's last completion (a zero-copy send's
//!   notification); only then may the unmap come. So a file replaced on disk (a watched
//!   `--dir` swaps the site) or dropped from the cache is never unmapped under a send.
//!
//! The engine never reads the mapping (see `sys::mmap`): a file truncated under it makes
//! the kernel's copy fail with `EFAULT`, the send fails, and the connection is dropped,
//! as on the other paths. A connection offers at most its share of the turn per send,
//! so a slow reader pins no more than that (with zero copy, in pinned pages).

use super::Worker;
use crate::sys::{Mapping, SendHeader, MAX_IOV};
use crate::Feature;
use duet_engine::ConnId;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::Arc;
use tracing::warn;

/// Mappings kept at most; past that, those no send uses are dropped first.
const MAP_CACHE_MAX: usize = 1024;
/// Hits between two sweeps of entries whose file nothing else holds (misses sweep too).
const SWEEP_EVERY: u32 = 4096;

/// One worker's mappings, one per file.
#[derive(Default)]
pub(super) struct MapCache {
    /// By the address of the file's `Arc` (stable while the clone here holds it).
    maps: HashMap<usize, (Arc<File>, Arc<Mapping>)>,
    hits: u32,
}

impl MapCache {
    /// The mapping of `file`, covering at least its first `end` bytes: the cached one, or
    /// a new one (a range past the cached mapping's end maps the file again; sends of the
    /// old mapping keep it until they complete).
    fn get(&mut self, file: &Arc<File>, end: usize) -> io::Result<Arc<Mapping>> {
        let key = Arc::as_ptr(file) as usize;
        if let Some((_, map)) = self.maps.get(&key).filter(|(_, m)| m.len() >= end) {
            let map = Arc::clone(map);
            self.hits += 1;
            if self.hits >= SWEEP_EVERY {
                self.sweep();
            }
            return Ok(map);
        }
        self.sweep();
        let map = Arc::new(Mapping::of(file, end)?);
        self.maps.insert(key, (Arc::clone(file), Arc::clone(&map)));
        Ok(map)
    }

    /// Drops the entries of files nothing else holds (their site is gone and no response
    /// sends them); past [`MAP_CACHE_MAX`], also those no send uses now. A mapping a send
    /// still names lives on in that send's header.
    fn sweep(&mut self) {
        self.hits = 0;
        self.maps.retain(|_, (file, _)| Arc::strong_count(file) > 1);
        if self.maps.len() >= MAP_CACHE_MAX {
            self.maps.retain(|_, (_, map)| Arc::strong_count(map) > 1);
        }
    }

    /// Files mapped now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.maps.len()
    }
}

/// What [`Worker::mapped_send`] did.
pub(super) enum MapStep {
    /// A send is in flight (or the connection is gone).
    Sent,
    /// No file body is in the output: the ordinary send serves it.
    NoFile,
    /// The file could not be mapped: this worker uses the next path from now on.
    Refused,
}

impl Worker {
    /// Starts connection `id`'s next send when its output holds a file body: the
    /// in-memory bytes before the file (the head) and, in the same `sendmsg`, the file's
    /// next bytes from its mapping, at most `share` bytes in all. With `zero_copy` a
    /// send that names the mapping is `SENDMSG_ZC`.
    pub(super) fn mapped_send(&mut self, id: ConnId, share: usize, zero_copy: bool) -> io::Result<MapStep> {
        let Some(e) = self.core.conns.get_mut(id) else { return Ok(MapStep::Sent) };
        let Some(out) = e.conn.poll_output().filter(|out| out.has_file()) else { return Ok(MapStep::NoFile) };
        let mut header = self.headers.pop().unwrap_or_else(SendHeader::boxed);
        let head = header.load(out, share);
        // `load` stops short of the share and of the output, with iovecs to spare, only
        // at a file segment: the first unsent one, which goes next in the same send.
        if header.iovecs() < MAX_IOV && head < share && head < out.remaining() {
            if let Some((file, offset, left)) = out.first_unsent_file() {
                let end = usize::try_from(offset).unwrap_or(usize::MAX).saturating_add(left);
                match self.maps.get(file, end) {
                    Ok(map) => {
                        if let Some((addr, len)) = map.range(offset, left.min(share - head)) {
                            header.push_mapped(map, addr, len);
                        }
                    }
                    Err(err) => {
                        self.headers.push(header);
                        warn_no_map(&err);
                        self.mmap_refused = true;
                        return Ok(MapStep::Refused);
                    }
                }
            }
        }
        let total = header.total();
        self.core.budget.spend(total);
        let plain = self.features.has(Feature::Send);
        let zero_copy = if header.is_mapped() {
            zero_copy
        } else {
            self.features.has(Feature::ZeroCopy) && total >= self.zc_threshold
        };
        e.io.submit(&mut self.ring, id, super::ConnOp::Send { header, plain, zero_copy })?;
        Ok(MapStep::Sent)
    }
}

#[cold]
fn warn_no_map(err: &io::Error) {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| {
        warn!("cannot map a file body ({err}); this worker sends file bodies by the next path from now on")
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(tag: &str, len: usize) -> Arc<File> {
        let path = std::env::temp_dir().join(format!("duet-mapcache-{}-{tag}", std::process::id()));
        std::fs::write(&path, vec![1u8; len]).expect("write");
        let file = File::open(&path).expect("open");
        let _ = std::fs::remove_file(&path);
        Arc::new(file)
    }

    /// A file is mapped once and its mapping reused; once nothing else holds the file,
    /// the next miss drops its entry, but a mapping a send still holds stays mapped.
    #[test]
    fn a_file_is_mapped_once_and_dropped_when_no_one_holds_it() {
        let mut cache = MapCache::default();
        let (a, b) = (temp_file("a", 8192), temp_file("b", 4096));
        let first = cache.get(&a, 8192).expect("map a");
        let again = cache.get(&a, 100).expect("a again");
        assert!(Arc::ptr_eq(&first, &again), "one mapping per file");
        assert_eq!(cache.len(), 1);
        let longer = cache.get(&a, 16_384).expect("a range past the mapping");
        assert!(longer.len() >= 16_384 && !Arc::ptr_eq(&first, &longer));
        drop(a); // the site is gone; `first` is still held, as by a send in flight
        cache.get(&b, 4096).expect("map b");
        assert_eq!(cache.len(), 1, "a's entry went at the miss");
        assert_eq!(first.len(), 8192, "a send's mapping lives on");
    }
}
