//! The registrations of `poll`: one `pollfd` array kept incrementally
//! (appended at registration, removed by swapping the last entry in, changed in place),
//! with each entry's token beside it and each descriptor's position in an index by
//! descriptor number, so no change costs more than O(1) and nothing is rebuilt per wait:
//! poll hands the array to the kernel as it is.

use super::Interest;
use std::os::fd::RawFd;

/// Marks a descriptor with no entry in [`Registry::pos`].
const ABSENT: u32 = u32::MAX;

#[derive(Default)]
pub(super) struct Registry {
    /// The watched descriptors. A descriptor with no interest has a negative `fd`
    /// (`!fd`), which poll skips: poll reports a hang-up or an error whatever the
    /// events asked for, and would report it at every wait.
    pub(super) fds: Vec<libc::pollfd>,
    /// The token of each entry of `fds`.
    pub(super) tokens: Vec<u64>,
    /// Position in `fds` by descriptor number.
    pos: Vec<u32>,
}

/// The pollfd `events` for `interest` (POLLRDHUP reports a peer's FIN as such).
fn events(interest: Interest) -> i16 {
    let mut events = 0;
    if interest.read {
        events |= libc::POLLIN | libc::POLLRDHUP;
    }
    if interest.write {
        events |= libc::POLLOUT;
    }
    events
}

/// The descriptor of an entry, whether it is skipped or not.
fn real_fd(entry: &libc::pollfd) -> RawFd {
    if entry.fd < 0 {
        !entry.fd
    } else {
        entry.fd
    }
}

impl Registry {
    pub(super) fn add(&mut self, fd: RawFd, token: u64, interest: Interest) {
        let Ok(index) = usize::try_from(fd) else { return };
        if self.pos.len() <= index {
            self.pos.resize(index + 1, ABSENT);
        }
        if self.pos[index] != ABSENT {
            // Registered already (cannot happen: a descriptor is removed before it is
            // closed, so its number is reused only after); keep one entry, the new one.
            self.tokens[self.pos[index] as usize] = token;
            self.set(fd, interest);
            return;
        }
        self.pos[index] = self.fds.len() as u32;
        let mut entry = libc::pollfd { fd, events: events(interest), revents: 0 };
        if interest.is_none() {
            entry.fd = !fd;
        }
        self.fds.push(entry);
        self.tokens.push(token);
    }

    /// Changes what `fd` is watched for, in place.
    pub(super) fn set(&mut self, fd: RawFd, interest: Interest) {
        let Some(at) = self.position(fd) else { return };
        let entry = &mut self.fds[at];
        entry.events = events(interest);
        entry.fd = if interest.is_none() { !fd } else { fd };
    }

    /// Forgets `fd`: the last entry takes its place.
    pub(super) fn remove(&mut self, fd: RawFd) {
        let Some(at) = self.position(fd) else { return };
        self.pos[fd as usize] = ABSENT;
        self.fds.swap_remove(at);
        self.tokens.swap_remove(at);
        if let Some(moved) = self.fds.get(at) {
            self.pos[real_fd(moved) as usize] = at as u32;
        }
    }

    fn position(&self, fd: RawFd) -> Option<usize> {
        let at = *self.pos.get(usize::try_from(fd).ok()?)?;
        (at != ABSENT).then_some(at as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(r: &Registry) -> Vec<(RawFd, i16, u64)> {
        r.fds.iter().zip(&r.tokens).map(|(e, &t)| (e.fd, e.events, t)).collect()
    }

    #[test]
    fn entries_are_appended_changed_in_place_and_swap_removed() {
        let mut r = Registry::default();
        let rd = events(Interest::READ);
        let wr = events(Interest { read: false, write: true });
        r.add(3, 30, Interest::READ);
        r.add(7, 70, Interest::READ);
        r.add(5, 50, Interest::NONE);
        assert_eq!(watched(&r), [(3, rd, 30), (7, rd, 70), (!5, 0, 50)]);
        r.set(7, Interest { read: false, write: true });
        r.set(5, Interest::READ);
        assert_eq!(watched(&r), [(3, rd, 30), (7, wr, 70), (5, rd, 50)]);
        // The last entry moves into the hole, and its index follows it.
        r.remove(3);
        assert_eq!(watched(&r), [(5, rd, 50), (7, wr, 70)]);
        r.set(5, Interest::NONE);
        assert_eq!(watched(&r), [(!5, 0, 50), (7, wr, 70)]);
        r.remove(5);
        r.remove(5); // twice: nothing to do
        r.remove(1000); // never registered
        assert_eq!(watched(&r), [(7, wr, 70)]);
        r.remove(7);
        assert!(r.fds.is_empty() && r.tokens.is_empty());
        // A reused number registers afresh.
        r.add(3, 31, Interest::READ);
        assert_eq!(watched(&r), [(3, rd, 31)]);
        // Registered twice: one entry, the new token and interest.
        r.add(3, 32, Interest { read: false, write: true });
        assert_eq!(watched(&r), [(3, wr, 32)]);
    }
}
