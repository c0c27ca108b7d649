//! The only unsafe code of the load generator: epoll, one sysconf call, and the CPU
//! pinning and signals of `duet compare`.
//!
//! Sockets themselves are `socket2::Socket`s (safe); epoll refers to them by raw fd,
//! which is sound because the caller keeps each socket open while it is registered and
//! closing an fd removes it from the epoll set.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub const IN: u32 = libc::EPOLLIN as u32;
pub const OUT: u32 = libc::EPOLLOUT as u32;
pub const ERR: u32 = libc::EPOLLERR as u32;
pub const HUP: u32 = libc::EPOLLHUP as u32;
pub const RDHUP: u32 = libc::EPOLLRDHUP as u32;
pub const ET: u32 = libc::EPOLLET as u32;

pub type Event = libc::epoll_event;

/// An epoll instance.
pub struct Epoll {
    fd: OwnedFd,
    /// epoll_pwait2 (Linux 5.11) gives sub-millisecond timeouts; without it they are
    /// rounded up to milliseconds.
    fine_timeouts: bool,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new fd
        // that nothing else owns, so handing it to OwnedFd is sound.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd, fine_timeouts: true })
    }

    /// Registers `fd` for `events`, tagged with `token`.
    pub fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event that outlives the call; the kernel copies it.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for events into `events` (its capacity is the maximum); `None` waits forever.
    pub fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        let max = events.capacity().min(i32::MAX as usize) as i32;
        let n = loop {
            let n = match timeout {
                Some(t) if self.fine_timeouts => {
                    let ts = libc::timespec {
                        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
                        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
                    };
                    // SAFETY: the event pointer has room for `max` events (the Vec's
                    // capacity), `ts` outlives the call, and a null sigmask means none.
                    let rc = unsafe {
                        libc::syscall(
                            libc::SYS_epoll_pwait2,
                            self.fd.as_raw_fd(),
                            events.as_mut_ptr(),
                            max,
                            &ts as *const libc::timespec,
                            std::ptr::null::<libc::sigset_t>(),
                            0usize,
                        )
                    };
                    if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                        self.fine_timeouts = false;
                        continue;
                    }
                    rc as i32
                }
                _ => {
                    let ms = match timeout {
                        None => -1,
                        Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
                    };
                    // SAFETY: the event pointer has room for `max` events (the Vec's capacity).
                    unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, ms) }
                }
            };
            if n >= 0 {
                break n as usize;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        };
        // SAFETY: the kernel initialised the first `n` entries, and n <= capacity.
        unsafe { events.set_len(n) };
        Ok(())
    }
}

/// The CPU time of process `pid` (user and system, all its threads, exited ones
/// included), read from its POSIX CPU clock: nanoseconds, where /proc/PID/stat counts
/// 10 ms ticks.
pub fn process_cpu_time(pid: u32) -> io::Result<Duration> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid writes one clockid_t into `clock`, a valid local.
    let rc = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `ts`, a valid local.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32))
}

/// Makes a later `bind` set only the source address of `fd` and leave the port to
/// `connect`, which then picks one unique for the whole 4-tuple instead of reserving
/// one for the address alone (IP_BIND_ADDRESS_NO_PORT, Linux 4.2).
pub fn bind_address_no_port(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the option value points to `one`, a c_int that outlives the call, and the
    // length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The ephemeral port range, `net.ipv4.ip_local_port_range`, as (first, last).
pub fn ephemeral_ports() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|p| p.parse::<u16>());
    match (it.next()?, it.next()?) {
        (Ok(low), Ok(high)) if low <= high => Some((low, high)),
        _ => None,
    }
}

/// Clock ticks per second, the unit of utime/stime in /proc/PID/stat.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as u64
    } else {
        100
    }
}

fn cpu_set(cpus: &[usize]) -> Result<libc::cpu_set_t, String> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c >= libc::CPU_SETSIZE as usize {
            return Err(format!("CPU {c} is out of range"));
        }
        // SAFETY: `c` is below CPU_SETSIZE, so the bit is inside `set`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    Ok(set)
}

/// Pins the calling thread (and the threads it starts from now on) to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> Result<(), String> {
    let set = cpu_set(cpus)?;
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(format!("cannot pin the load to CPUs {cpus:?}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE, so the bit is inside `set`.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Makes the child of `cmd` run on `cpus` and die with us (SIGKILL when this process
/// exits, even if it is killed).
pub fn pin_child_and_tie_to_parent(cmd: &mut std::process::Command, cpus: &[usize]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let set = cpu_set(cpus)?;
    let hook = move || {
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec and only makes two
    // async-signal-safe system calls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(hook);
    }
    Ok(())
}

/// Asks process `pid` to terminate. The caller guarantees `pid` is its own unreaped child.
pub fn sigterm(pid: u32) {
    // SAFETY: kill takes a pid and a signal number and touches no memory.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
}

/// Moves the calling thread into the network namespace `ns` (an open `/run/netns/NAME`);
/// threads it starts later, and processes it forks, are born there.
pub fn enter_netns(ns: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns takes a descriptor (valid: `ns` is borrowed for the call) and a flag.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the child of `cmd` start in the network namespace `ns` (an open
/// `/run/netns/NAME`, kept open by the hook until `cmd` is dropped).
pub fn child_in_netns(cmd: &mut std::process::Command, ns: std::fs::File) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let hook = move || {
        // SAFETY: setns takes a descriptor, open for as long as the hook (which owns it)
        // lives, and a flag.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec and makes one
    // async-signal-safe system call on a descriptor opened before the fork.
    unsafe {
        cmd.pre_exec(hook);
    }
}
