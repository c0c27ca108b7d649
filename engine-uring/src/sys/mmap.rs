//! A shared read-only mapping of a file, for sends straight from the page cache
//! ([`crate::Feature::Mmap`]).
//!
//! Soundness rests on one rule: **user space never reads the mapping**. No `&[u8]` is
//! ever made of it; only its address goes into an iovec, and only the kernel reads it,
//! inside a send. A file truncated on disk leaves pages of the mapping past its new end:
//! a user read of one would raise SIGBUS, while the kernel's copy (or page pin, for a
//! zero-copy send) of one fails with `EFAULT`, which drops the connection like any
//! other failed send.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// A `PROT_READ`, `MAP_SHARED` mapping of a whole file, unmapped on drop.
///
/// Whatever names its memory in flight (a send header's iovec) holds an `Arc` of it, so
/// the unmap comes after the last completion that names it.
pub struct Mapping {
    addr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is only an address range that Rust never dereferences (the kernel
// reads it inside sends); unmapping it from another thread is as sound as from this one.
unsafe impl Send for Mapping {}
// SAFETY: as above: no `&self` method reads or writes the memory.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `file` whole, and at least `min_len` bytes (a mapping may run past the end of
    /// the file: those pages fault, which the kernel turns into `EFAULT` in a send).
    pub fn of(file: &File, min_len: usize) -> io::Result<Mapping> {
        duet_engine::syscalls::count(1);
        let size = file.metadata()?.len();
        let len = usize::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?.max(min_len);
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        duet_engine::syscalls::count(1);
        // SAFETY: a fresh mapping at an address the kernel picks (no fixed address, so no
        // existing memory is replaced); the descriptor is borrowed, so open for the call
        // (the mapping keeps its own reference to the file). The memory is never read by
        // user space (module docs), so a page that faults cannot raise SIGBUS here.
        let addr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let addr = NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Mapping { addr, len })
    }

    /// The mapped length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The address of byte `offset` and how many of the `want` bytes from there lie in
    /// the mapping: what an iovec of a send names. Never dereferenced by user space.
    pub fn range(&self, offset: u64, want: usize) -> Option<(*const u8, usize)> {
        let offset = usize::try_from(offset).ok().filter(|&o| o < self.len)?;
        let len = want.min(self.len - offset);
        // `wrapping_add`: an address computation only, inside the mapping.
        Some((self.addr.as_ptr().wrapping_add(offset).cast_const(), len))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        duet_engine::syscalls::count(1);
        // SAFETY: `addr`/`len` are exactly what mmap returned and nothing else unmaps it;
        // whatever named it in a send held an `Arc` of this mapping until that send's last
        // completion (the zero-copy notification included), so no operation reads it now.
        unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) };
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range is clipped to the mapping, and one starting past it is none; a mapping is
    /// at least `min_len` long even past the end of the file.
    #[test]
    fn a_range_stays_inside_the_mapping() {
        let path = std::env::temp_dir().join(format!("duet-mmap-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 10_000]).expect("write");
        let file = File::open(&path).expect("open");
        let _ = std::fs::remove_file(&path);
        let map = Mapping::of(&file, 0).expect("map");
        assert_eq!(map.len(), 10_000);
        let (start, n) = map.range(0, 1 << 20).expect("from 0");
        assert_eq!(n, 10_000);
        let (at, n) = map.range(9_000, 4096).expect("near the end");
        assert_eq!((at as usize - start as usize, n), (9_000, 1_000));
        assert!(map.range(10_000, 1).is_none());
        assert_eq!(Mapping::of(&file, 1 << 20).expect("longer").len(), 1 << 20);
    }
}
