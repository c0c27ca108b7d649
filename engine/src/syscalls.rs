//! Syscall counting, done inside the syscall wrappers so the count is true by
//! construction: no call site adds to a counter by hand.
//!
//! Every engine worker is one thread, so the count is kept per thread: each wrapper
//! (in this crate's `sys`/[`socket`](crate::socket) and in each engine's `sys` layer)
//! calls [`count`] once per syscall it makes, and a worker reads [`made`] at its start
//! and whenever it publishes its [`Stats`](crate::Stats): `stats.syscalls` is the
//! difference. A `const`-initialised thread-local `Cell` costs one load and one store.

use std::cell::Cell;

thread_local! {
    static MADE: Cell<u64> = const { Cell::new(0) };
}

/// Counts `n` syscalls made by this thread. Called by the syscall wrappers only.
#[inline]
pub fn count(n: u64) {
    MADE.with(|made| made.set(made.get() + n));
}

/// How many syscalls this thread has made through the counted wrappers so far.
#[inline]
pub fn made() -> u64 {
    MADE.with(Cell::get)
}

/// Closes `fd` (drops it), counting the `close`.
#[inline]
pub fn close<T>(fd: T)
where
    T: Into<std::os::fd::OwnedFd>,
{
    count(1);
    drop(fd.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_per_thread() {
        let before = made();
        count(3);
        let other = std::thread::spawn(|| {
            count(5);
            made()
        })
        .join()
        .expect("thread");
        assert_eq!(other, 5);
        assert_eq!(made() - before, 3);
    }
}
