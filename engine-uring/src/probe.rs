//! The startup probe: does io_uring work here, with everything the engine needs?
//!
//! Each failure becomes one line naming the cause and the fix.

use crate::sys::{check_multishot_recv, Ring};
use crate::ProbeError;
use crate::UringOptions;
use io_uring::{cqueue, opcode};
use std::io;

/// Oldest kernel with everything used: multishot receive and provided buffer rings.
const MIN_KERNEL: (u32, u32) = (6, 0);

const EPOLL_HINT: &str = "or use --engine epoll";

fn fail(msg: impl Into<String>) -> ProbeError {
    ProbeError(msg.into())
}

/// `/proc/sys/kernel/io_uring_disabled` (absent before 6.6: 0).
fn disabled_sysctl() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// The running kernel's release string and (major, minor).
fn kernel_release() -> Option<(String, (u32, u32))> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?.trim().to_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((release, (major, minor)))
}

/// The locked-memory soft limit in bytes (`None`: unlimited or unknown).
fn memlock_bytes() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max locked memory"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// True when the process has CAP_IPC_LOCK, which exempts io_uring from RLIMIT_MEMLOCK.
fn has_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Locked memory one worker's ring and buffer ring are charged (SQEs, CQEs at four
/// per SQE, the SQ index array, the buffer ring entries, and a few pages of headers).
fn memlock_per_worker(opts: &UringOptions) -> u64 {
    let sq = opts.ring_entries.next_power_of_two() as u64;
    sq * 64 + 4 * sq * 16 + sq * 4 + opts.buf_count as u64 * 16 + 4 * 4096
}

/// Without CAP_IPC_LOCK the kernel charges every ring to RLIMIT_MEMLOCK (per user); a
/// probe with a small ring would pass and the workers' full-size rings then fail.
fn check_memlock(opts: &UringOptions, threads: usize) -> Result<(), ProbeError> {
    let Some(limit) = memlock_bytes() else { return Ok(()) };
    let need = memlock_per_worker(opts) * threads.max(1) as u64;
    if need <= limit || has_ipc_lock() {
        return Ok(());
    }
    Err(fail(format!(
        "the locked-memory limit ({} KiB) is below what {threads} io_uring worker(s) need (about {} KiB): raise it \
         with `ulimit -l unlimited` (docker: --ulimit memlock=-1), or lower --uring-entries/--threads, {EPOLL_HINT}",
        limit / 1024,
        need.div_ceil(1024)
    )))
}

/// The locked-memory soft limit, as `ulimit -l` would print it.
fn memlock_limit() -> String {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .and_then(|l| l.split_whitespace().nth(3))
        .map(|soft| match soft.parse::<u64>() {
            Ok(bytes) => format!("{} KiB", bytes / 1024),
            Err(_) => soft.to_owned(),
        })
        .unwrap_or_else(|| "unknown".into())
}

fn setup_error(e: &io::Error, opts: &UringOptions) -> ProbeError {
    let sqpoll = opts.sqpoll_idle_ms.is_some();
    match e.raw_os_error() {
        Some(libc::EPERM) if disabled_sysctl() == 1 => fail(format!(
            "io_uring is restricted by sysctl kernel.io_uring_disabled=1 (only root and members of kernel.io_uring_group): \
             run `sysctl -w kernel.io_uring_disabled=0`, {EPOLL_HINT}"
        )),
        Some(libc::EPERM) if sqpoll => fail(format!(
            "io_uring_setup with SQPOLL was refused (EPERM): this kernel needs privileges for --sqpoll; drop --sqpoll, {EPOLL_HINT}"
        )),
        Some(libc::EPERM) => fail(format!(
            "io_uring_setup was refused (EPERM): a seccomp filter blocks io_uring, as Docker's and containerd's default \
             profiles do; run the container with --security-opt seccomp=unconfined (or a profile allowing io_uring_setup, \
             io_uring_enter and io_uring_register), {EPOLL_HINT}"
        )),
        Some(libc::ENOSYS) => fail(format!(
            "this kernel has no io_uring (ENOSYS: built without CONFIG_IO_URING, older than 5.1, or a sandbox such as \
             gVisor); the engine needs Linux >= {}.{}, {EPOLL_HINT}",
            MIN_KERNEL.0, MIN_KERNEL.1
        )),
        Some(libc::ENOMEM) => fail(format!(
            "cannot allocate the ring (ENOMEM): the locked-memory limit is {} (io_uring charges rings to \
             RLIMIT_MEMLOCK without CAP_IPC_LOCK); raise it with `ulimit -l unlimited` (docker: --ulimit memlock=-1), lower --uring-entries, \
             {EPOLL_HINT}",
            memlock_limit()
        )),
        Some(libc::EINVAL) => fail(format!(
            "io_uring_setup rejected every setup tried (EINVAL): the kernel is too old; the engine needs Linux >= {}.{} \
             (6.1 for DEFER_TASKRUN), {EPOLL_HINT}",
            MIN_KERNEL.0, MIN_KERNEL.1
        )),
        _ => fail(format!("io_uring_setup failed: {e}; {EPOLL_HINT}")),
    }
}

/// See [`crate::probe()`].
pub fn probe(opts: &UringOptions, threads: usize) -> Result<(), ProbeError> {
    if disabled_sysctl() == 2 {
        return Err(fail(format!(
            "io_uring is disabled by sysctl kernel.io_uring_disabled=2: run `sysctl -w kernel.io_uring_disabled=0`, \
             {EPOLL_HINT}"
        )));
    }
    if let Some((release, version)) = kernel_release() {
        if version < MIN_KERNEL {
            return Err(fail(format!(
                "kernel {release} is too old: the io_uring engine needs Linux >= {}.{} (multishot receive with provided \
                 buffer rings; 6.1 for DEFER_TASKRUN); upgrade the kernel, {EPOLL_HINT}",
                MIN_KERNEL.0, MIN_KERNEL.1
            )));
        }
    }
    if opts.buf_count == 0 || !opts.buf_count.is_power_of_two() || opts.buf_count > 32768 {
        return Err(fail(format!("--uring-buffers {} must be a power of two between 1 and 32768", opts.buf_count)));
    }
    if opts.buf_size == 0 {
        return Err(fail("--uring-buffer-size must be above 0"));
    }

    check_memlock(opts, threads)?;
    let mut ring = Ring::new(8, opts.sqpoll_idle_ms).map_err(|e| setup_error(&e, opts))?;
    let probe = ring
        .probe()
        .map_err(|e| fail(format!("cannot probe io_uring opcodes ({e}): the kernel is too old; {EPOLL_HINT}")))?;
    let needed = [
        (opcode::AcceptMulti::CODE, "ACCEPT"),
        (opcode::RecvMulti::CODE, "RECV"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::AsyncCancel2::CODE, "ASYNC_CANCEL"),
        (opcode::Timeout::CODE, "TIMEOUT"),
        (opcode::TimeoutUpdate::CODE, "TIMEOUT_REMOVE"),
        (opcode::Read::CODE, "READ"),
    ];
    let missing: Vec<&str> =
        needed.iter().filter(|(code, _)| !probe.is_supported(*code)).map(|(_, name)| *name).collect();
    if !missing.is_empty() {
        return Err(fail(format!(
            "this kernel's io_uring lacks {} (needs Linux >= {}.{}), {EPOLL_HINT}",
            missing.join(", "),
            MIN_KERNEL.0,
            MIN_KERNEL.1
        )));
    }

    let group = ring.add_buf_ring(2, 64).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOMEM) => fail(format!(
            "cannot register a provided buffer ring (ENOMEM): the locked-memory limit is {}; raise it with \
             `ulimit -l unlimited`, {EPOLL_HINT}",
            memlock_limit()
        )),
        _ => fail(format!(
            "cannot register a provided buffer ring ({e}): needs Linux >= {}.{}, {EPOLL_HINT}",
            MIN_KERNEL.0, MIN_KERNEL.1
        )),
    })?;

    let outcome = match check_multishot_recv(&mut ring, group) {
        Ok((4, flags)) if cqueue::more(flags) => Ok(()),
        Ok((4, _)) => Err((
            format!(
                "this kernel's receive is not multishot (needs Linux >= {}.{}), {EPOLL_HINT}",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
            true,
        )),
        Ok((res, _)) if res < 0 => Err((
            format!(
                "multishot receive with a provided buffer ring failed ({}): needs Linux >= {}.{}, {EPOLL_HINT}",
                io::Error::from_raw_os_error(-res),
                MIN_KERNEL.0,
                MIN_KERNEL.1
            ),
            true,
        )),
        Ok(_) => Err((format!("a multishot receive returned wrong data, {EPOLL_HINT}"), true)),
        Err(e) => Err(e),
    };
    // Dropping the ring closes it before it unmaps its buffers; but while the receive
    // may still be running, leak the ring rather than free memory the kernel may use.
    match outcome {
        Ok(()) => Ok(()),
        Err((msg, settled)) => {
            if !settled {
                std::mem::forget(ring);
            }
            Err(fail(msg))
        }
    }
}
