//! The startup probe: does io_uring work here, with everything the engine needs?
//!
//! Each failure is a [`ProbeError`] naming the cause (its `Display`: the cause and the
//! fix in the system's terms).

use crate::error::{ProbeError, MIN_KERNEL};
use crate::features::{Feature, Features, Off, Resolved};
use crate::sys::{BufGroup, BufMode, Ring, SOCKET_URING_OP_SIOCINQ};
use crate::UringOptions;
use io_uring::{cqueue, opcode, types};
use std::io;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

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
    let (buffers, _) = opts.recv_pool(false);
    sq * 64 + 4 * sq * 16 + sq * 4 + buffers as u64 * 16 + 4 * 4096
}

/// Without CAP_IPC_LOCK the kernel charges every ring to RLIMIT_MEMLOCK (per user); a
/// probe with a small ring would pass and the workers' full-size rings then fail.
fn check_memlock(opts: &UringOptions, threads: usize) -> Result<(), ProbeError> {
    let Some(limit) = memlock_bytes() else { return Ok(()) };
    let need = memlock_per_worker(opts) * threads.max(1) as u64;
    if need <= limit || has_ipc_lock() {
        return Ok(());
    }
    Err(ProbeError::Memlock { limit_kib: limit / 1024, need_kib: need.div_ceil(1024), threads })
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

fn setup_error(e: io::Error, opts: &UringOptions) -> ProbeError {
    match e.raw_os_error() {
        Some(libc::EPERM) if disabled_sysctl() == 1 => ProbeError::Restricted,
        Some(libc::EPERM) if opts.sqpoll_idle_ms.is_some() => ProbeError::SqpollRefused,
        Some(libc::EPERM) => ProbeError::Seccomp,
        Some(libc::ENOSYS) => ProbeError::NoIoUring,
        Some(libc::ENOMEM) => ProbeError::SetupNoMemory { memlock: memlock_limit() },
        Some(libc::EINVAL) => ProbeError::SetupRejected,
        _ => ProbeError::Setup(e),
    }
}

/// The names of the opcodes of `needed` that `supported` says this kernel lacks.
fn missing_ops(needed: &[(u8, &'static str)], supported: impl Fn(u8) -> bool) -> Vec<&'static str> {
    needed.iter().filter(|(code, _)| !supported(*code)).map(|(_, name)| *name).collect()
}

/// See [`crate::probe()`].
pub fn probe(opts: &UringOptions, threads: usize) -> Result<(), ProbeError> {
    if disabled_sysctl() == 2 {
        return Err(ProbeError::Disabled);
    }
    if let Some((release, version)) = kernel_release() {
        if version < MIN_KERNEL {
            return Err(ProbeError::KernelTooOld { release });
        }
    }
    if let Some(count) = opts.buf_count.filter(|&n| n == 0 || !n.is_power_of_two() || n > 32768) {
        return Err(ProbeError::BufferCount(count));
    }
    if opts.buf_size == Some(0) {
        return Err(ProbeError::BufferSize);
    }

    check_memlock(opts, threads)?;
    let mut ring = Ring::new(8, opts.sqpoll_idle_ms, false).map_err(|e| setup_error(e, opts))?;
    let probe = ring.probe().map_err(ProbeError::Opcodes)?;
    let needed = [
        (opcode::AcceptMulti::CODE, "ACCEPT"),
        (opcode::RecvMulti::CODE, "RECV"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::AsyncCancel2::CODE, "ASYNC_CANCEL"),
        (opcode::Timeout::CODE, "TIMEOUT"),
        (opcode::TimeoutUpdate::CODE, "TIMEOUT_REMOVE"),
        (opcode::Read::CODE, "READ"),
    ];
    let missing = missing_ops(&needed, |code| probe.is_supported(code));
    if !missing.is_empty() {
        return Err(ProbeError::MissingOpcodes(missing));
    }

    let group = ring.add_buf_ring(2, 64, BufMode::default()).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOMEM) => ProbeError::BufRingNoMemory { memlock: memlock_limit() },
        _ => ProbeError::BufRing(e),
    })?;

    let outcome = match check_multishot_recv(&mut ring, group) {
        Ok((4, flags)) if cqueue::more(flags) => Ok(()),
        Ok((4, _)) => Err((ProbeError::NotMultishot, true)),
        Ok((res, _)) if res < 0 => Err((ProbeError::MultishotFailed(io::Error::from_raw_os_error(-res)), true)),
        Ok(_) => Err((ProbeError::WrongData, true)),
        Err((what, settled)) => Err((ProbeError::Check(what), settled)),
    };
    // Dropping the ring closes it before it unmaps its buffers; but while the receive
    // may still be running, leak the ring rather than free memory the kernel may use.
    match outcome {
        Ok(()) => Ok(()),
        Err((e, settled)) => {
            if !settled {
                std::mem::forget(ring);
            }
            Err(e)
        }
    }
}

/// Which of the features `opts` asks for this kernel has, each checked for real on a
/// small ring of its own (see [`crate::Feature::kernel`] for the versions); the
/// others are off with the reason. Called once at start, after [`probe`] passed.
pub fn features(opts: &UringOptions) -> Resolved {
    let asked = opts.features;
    let mut on = Features::none();
    let mut off = Vec::new();
    let flat = asked.has(Feature::FlatSq);
    let ring = Ring::new(8, opts.sqpoll_idle_ms, flat);
    let mut ring = match ring {
        Ok(ring) => ring,
        Err(e) => {
            let why = format!("cannot set up a ring to probe it: {e}");
            let off = Feature::ALL
                .into_iter()
                .map(|f| (f, if asked.has(f) { Off::Kernel(why.clone()) } else { Off::Flag }))
                .collect();
            return Resolved { on, off };
        }
    };
    let supported = ring.probe().ok();
    let has_op = |code: u8| supported.as_ref().is_some_and(|p| p.is_supported(code));
    for feature in Feature::ALL {
        if !asked.has(feature) {
            off.push((feature, Off::Flag));
            continue;
        }
        let check: Result<(), String> = match feature {
            Feature::FlatSq if ring.flat_sq() => Ok(()),
            Feature::FlatSq => Err("IORING_SETUP_NO_SQARRAY refused".into()),
            Feature::RingFd => ring.register_ring_fd().map_err(|e| format!("IORING_REGISTER_RING_FDS failed: {e}")),
            Feature::Send if has_op(opcode::Send::CODE) => Ok(()),
            Feature::Send => Err("no IORING_OP_SEND".into()),
            Feature::ZeroCopy if has_op(opcode::SendZc::CODE) && has_op(opcode::SendMsgZc::CODE) => Ok(()),
            Feature::ZeroCopy => Err("no IORING_OP_SEND_ZC/SENDMSG_ZC".into()),
            Feature::Bundle if ring.has_recv_bundles() => Ok(()),
            Feature::Bundle => Err("no IORING_FEAT_RECVSEND_BUNDLE".into()),
            Feature::Incremental => check_incremental(opts),
            Feature::Direct => check_direct(&mut ring, &has_op),
            Feature::Sendfile => check_sendfile(on.has(Feature::Direct), &has_op),
            Feature::Splice if has_op(opcode::Splice::CODE) => Ok(()),
            Feature::Splice => Err("no IORING_OP_SPLICE".into()),
            Feature::Mmap if has_op(opcode::SendMsg::CODE) => Ok(()),
            Feature::Mmap => Err("no IORING_OP_SENDMSG".into()),
            Feature::MmapZc if has_op(opcode::SendMsgZc::CODE) => Ok(()),
            Feature::MmapZc => Err("no IORING_OP_SENDMSG_ZC".into()),
        };
        match check {
            Ok(()) => on = on.with(feature),
            Err(how) => off.push((feature, Off::Kernel(how))),
        }
    }
    Resolved { on, off }
}

/// A buffer ring registered with `IOU_PBUF_RING_INC` (on a ring of its own: a ring has
/// one buffer group at most).
fn check_incremental(opts: &UringOptions) -> Result<(), String> {
    let mut ring = Ring::new(8, opts.sqpoll_idle_ms, false).map_err(|e| format!("cannot set up a ring: {e}"))?;
    let mode = BufMode { incremental: true, bundles: false };
    ring.add_buf_ring(2, 64, mode).map(drop).map_err(|e| format!("IOU_PBUF_RING_INC refused: {e}"))
}

/// `sendfile(2)` from the loop: a ring poll for writability, and with direct descriptors
/// (`direct`: already resolved on, [`Feature::ALL`] lists it first) the op that gives a
/// table slot a process fd, which `sendfile` needs. Without it the engine reads files
/// through a chunk buffer, as with the feature off.
fn check_sendfile(direct: bool, has_op: &dyn Fn(u8) -> bool) -> Result<(), String> {
    if !has_op(opcode::PollAdd::CODE) {
        return Err("no IORING_OP_POLL_ADD".into());
    }
    if direct && !has_op(opcode::FixedFdInstall::CODE) {
        return Err("no IORING_OP_FIXED_FD_INSTALL to give a direct descriptor the fd sendfile needs".into());
    }
    Ok(())
}

/// Direct descriptors: a sparse file table, the opcodes used on its slots, and a socket
/// command through the ring (the drain's unread-bytes check, which cannot be an ioctl
/// without an fd).
fn check_direct(ring: &mut Ring, has_op: &dyn Fn(u8) -> bool) -> Result<(), String> {
    let needed =
        [(opcode::Close::CODE, "CLOSE"), (opcode::Shutdown::CODE, "SHUTDOWN"), (opcode::UringCmd16::CODE, "URING_CMD")];
    if let Some(name) = missing_ops(&needed, has_op).first() {
        return Err(format!("no IORING_OP_{name}"));
    }
    ring.register_files_sparse(4).map_err(|e| format!("cannot register a sparse file table: {e}"))?;
    check_unread_bytes_command(ring)
}

/// The probe's test of socket commands through the ring: on a loopback TCP connection
/// holding 4 unread bytes, `SOCKET_URING_OP_SIOCINQ` must answer 4.
fn check_unread_bytes_command(ring: &mut Ring) -> Result<(), String> {
    use io_uring::opcode;
    use std::net::{TcpListener, TcpStream};
    let pair = || -> io::Result<(TcpStream, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        Ok((client, server))
    };
    let (mut client, server) = pair().map_err(|e| format!("cannot open a loopback connection to test it: {e}"))?;
    client.write_all(b"ping").map_err(|e| format!("cannot write on a loopback connection: {e}"))?;
    // Wait until the bytes are there (peek blocks until then, 2 s at most).
    let _ = server.set_read_timeout(Some(Duration::from_secs(2)));
    let mut peeked = [0u8; 4];
    if !matches!(server.peek(&mut peeked), Ok(4)) {
        return Err("a loopback connection did not deliver 4 bytes".into());
    }
    let entry = opcode::UringCmd16::new(types::Fd(server.as_raw_fd()), SOCKET_URING_OP_SIOCINQ).build().user_data(7);
    // SAFETY: the command refers to no memory; `server` stays open until its completion
    // is reaped below, or is leaked with the ring if it never comes.
    unsafe { ring.push(&entry) }.map_err(|e| format!("cannot submit: {e}"))?;
    let server = ManuallyDrop::new(server);
    let give_up = Instant::now() + Duration::from_secs(2);
    let mut cqes = Vec::new();
    loop {
        if Instant::now() >= give_up {
            return Err("no completion for SOCKET_URING_OP_SIOCINQ within 2 s".into());
        }
        ring.submit_and_wait_timeout(1, Duration::from_millis(100)).map_err(|e| format!("io_uring_enter: {e}"))?;
        ring.reap(&mut cqes, 4);
        if let Some(cqe) = cqes.iter().find(|c| c.user_data() == 7) {
            let res = cqe.result();
            drop(ManuallyDrop::into_inner(server));
            return match res {
                4 => Ok(()),
                res if res < 0 => {
                    Err(format!("SOCKET_URING_OP_SIOCINQ failed: {}", io::Error::from_raw_os_error(-res)))
                }
                res => Err(format!("SOCKET_URING_OP_SIOCINQ answered {res} for 4 unread bytes")),
            };
        }
    }
}

/// The probe's functional test: receives "ping" through a multishot receive from
/// `group` on a socket pair. Returns the first completion's result (4 only if the
/// bytes were right) and flags. On failure, also says whether every operation
/// completed (if not, the caller must leak `ring`).
fn check_multishot_recv(ring: &mut Ring, group: BufGroup) -> Result<(i32, u32), (String, bool)> {
    let (a, mut b) = UnixStream::pair().map_err(|e| (format!("cannot create a socket pair: {e}"), true))?;
    // `a` is closed only once its receive has completed: on an unsettled failure it is
    // leaked with the ring, so the receive never names a closed (and reusable) number.
    let a = ManuallyDrop::new(a);
    let result = multishot_recv_ping(ring, group, &a, &mut b);
    if !matches!(result, Err((_, false))) {
        drop(ManuallyDrop::into_inner(a));
    }
    result
}

fn multishot_recv_ping(
    ring: &mut Ring,
    group: BufGroup,
    a: &UnixStream,
    b: &mut UnixStream,
) -> Result<(i32, u32), (String, bool)> {
    use io_uring::opcode;
    let recv = opcode::RecvMulti::new(types::Fd(a.as_raw_fd()), group.id()).build().user_data(1);
    // SAFETY: the receive names `a` and a group registered on (so owned by) `ring`.
    // This function returns before the receive's last completion only with an error
    // whose second field is false; then the caller leaks `a` and the ring, so neither
    // the socket nor the buffers go while the receive may use them.
    unsafe { ring.push(&recv) }.map_err(|e| (format!("cannot submit to io_uring: {e}"), true))?;
    let _ = b.write_all(b"ping");

    let mut first: Option<(i32, u32)> = None;
    let mut recv_done = false;
    let mut cancel_done = true;
    let mut cancel_sent = false;
    let mut cqes = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(2);
    while !(recv_done && cancel_done) {
        if Instant::now() >= give_up {
            return Err(("io_uring did not complete a receive within 2 s".into(), false));
        }
        if let Err(e) = ring.submit_and_wait_timeout(1, Duration::from_millis(100)) {
            return Err((format!("io_uring_enter failed: {e}"), false));
        }
        ring.reap(&mut cqes, 16);
        for cqe in &mut cqes {
            let buffer = cqe.take_buffer();
            let len = cqe.result().max(0) as usize;
            let mut right = None;
            if let Some(bid) = buffer {
                let mut got = Vec::new();
                let placed = ring.buffers(group).consume(bid, len, cqe.flags(), |bytes| got.extend_from_slice(bytes));
                right = Some(placed.is_ok() && got == b"ping");
            }
            if cqe.user_data() != 1 {
                cancel_done = true;
                continue;
            }
            if first.is_none() {
                let res = cqe.result();
                first = Some((if res == 4 && right != Some(true) { 0 } else { res }, cqe.flags()));
            }
            if !cqe.more() {
                recv_done = true;
            }
        }
        if first.is_some() && !recv_done && !cancel_sent {
            cancel_sent = true;
            cancel_done = false;
            let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(1)).build().user_data(2);
            // SAFETY: a cancellation refers to no memory and no fd.
            unsafe { ring.push(&cancel) }.map_err(|e| (format!("cannot submit to io_uring: {e}"), false))?;
        }
    }
    first.ok_or_else(|| ("a multishot receive completed without a result".into(), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel without `IORING_OP_FIXED_FD_INSTALL` (before 6.8) leaves sendfile off
    /// with direct descriptors, saying why (the features line logs it once), and on
    /// without them; without a ring poll it is off either way.
    #[test]
    fn sendfile_falls_back_where_the_kernel_lacks_an_op_it_needs() {
        let before_6_8 = |code: u8| code != opcode::FixedFdInstall::CODE;
        let why = check_sendfile(true, &before_6_8).expect_err("on with direct descriptors and no fd install");
        assert!(why.contains("FIXED_FD_INSTALL"), "{why}");
        assert_eq!(check_sendfile(false, &before_6_8), Ok(()));
        assert_eq!(check_sendfile(true, &|_| true), Ok(()));
        let no_poll = |code: u8| code != opcode::PollAdd::CODE;
        assert!(check_sendfile(false, &no_poll).expect_err("on without a poll").contains("POLL_ADD"));
    }

    /// On this kernel every feature is there (DUET_REQUIRE_URING says so); each one a
    /// flag turns off is off for that reason, and the others stay on.
    #[test]
    fn each_feature_asked_is_on_and_each_turned_off_says_so() {
        let all = features(&UringOptions { features: Features::all(), ..Default::default() });
        if std::env::var("DUET_REQUIRE_URING").as_deref() == Ok("1") {
            assert_eq!(all.on, Features::all(), "{all:?}");
        }
        for feature in Feature::ALL {
            let opts = UringOptions { features: Features::all().without(feature), ..Default::default() };
            let resolved = features(&opts);
            assert!(!resolved.on.has(feature));
            assert!(resolved.off.contains(&(feature, Off::Flag)), "{resolved:?}");
            assert_eq!(resolved.on, all.on.without(feature), "{resolved:?}");
        }
        let none = features(&UringOptions { features: Features::none(), ..Default::default() });
        assert_eq!(none.on, Features::none());
        assert_eq!(none.off.len(), Feature::ALL.len());
    }
}
