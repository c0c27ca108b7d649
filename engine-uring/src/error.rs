//! Why io_uring cannot be used here: a typed [`ProbeError`]. Its `Display` names the
//! cause and the fix in the system's terms (a sysctl, a limit, a kernel version); a
//! program adds what its own options can do about it (the `duet` binary words that with
//! its flags).

use std::fmt;
use std::io;

/// The oldest kernel with everything the engine uses (multishot receive and provided
/// buffer rings), as (major, minor).
pub const MIN_KERNEL: (u32, u32) = (6, 0);

/// Why io_uring cannot be used here, as [`crate::probe()`] found it.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProbeError {
    /// `kernel.io_uring_disabled=2`: io_uring is off for everyone.
    Disabled,
    /// `kernel.io_uring_disabled=1`: only root and `kernel.io_uring_group` may use it.
    Restricted,
    /// The running kernel (this release) is older than [`MIN_KERNEL`].
    KernelTooOld {
        /// `uname -r`.
        release: String,
    },
    /// [`crate::UringOptions::buf_count`] is not a power of two between 1 and 32768.
    BufferCount(u16),
    /// [`crate::UringOptions::buf_size`] is zero.
    BufferSize,
    /// The locked-memory limit is below what the workers' rings need.
    Memlock {
        /// The limit, in KiB.
        limit_kib: u64,
        /// What the workers need, in KiB (about).
        need_kib: u64,
        /// How many workers.
        threads: usize,
    },
    /// `io_uring_setup` with SQPOLL was refused (`EPERM`): this kernel wants privileges
    /// for it.
    SqpollRefused,
    /// `io_uring_setup` was refused (`EPERM`): a seccomp filter blocks io_uring.
    Seccomp,
    /// The kernel has no io_uring (`ENOSYS`).
    NoIoUring,
    /// The ring could not be allocated (`ENOMEM`); the locked-memory limit, as
    /// `ulimit -l` prints it.
    SetupNoMemory {
        /// The limit, as `ulimit -l` prints it.
        memlock: String,
    },
    /// `io_uring_setup` rejected every setup tried (`EINVAL`).
    SetupRejected,
    /// `io_uring_setup` failed otherwise.
    Setup(io::Error),
    /// The opcodes could not be probed.
    Opcodes(io::Error),
    /// The kernel lacks these opcodes.
    MissingOpcodes(Vec<&'static str>),
    /// A provided buffer ring could not be registered (`ENOMEM`); the locked-memory
    /// limit, as `ulimit -l` prints it.
    BufRingNoMemory {
        /// The limit, as `ulimit -l` prints it.
        memlock: String,
    },
    /// A provided buffer ring could not be registered.
    BufRing(io::Error),
    /// A multishot receive completed without staying armed.
    NotMultishot,
    /// A multishot receive from a provided buffer ring failed.
    MultishotFailed(io::Error),
    /// A multishot receive delivered the wrong bytes.
    WrongData,
    /// A functional check could not run to the end (what went wrong is said).
    Check(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = MIN_KERNEL;
        match self {
            ProbeError::Disabled => f.write_str(
                "io_uring is disabled by sysctl kernel.io_uring_disabled=2: run `sysctl -w kernel.io_uring_disabled=0`",
            ),
            ProbeError::Restricted => f.write_str(
                "io_uring is restricted by sysctl kernel.io_uring_disabled=1 (only root and members of \
                 kernel.io_uring_group): run `sysctl -w kernel.io_uring_disabled=0`",
            ),
            ProbeError::KernelTooOld { release } => write!(
                f,
                "kernel {release} is too old: the io_uring engine needs Linux >= {major}.{minor} (multishot receive \
                 with provided buffer rings; 6.1 for DEFER_TASKRUN); upgrade the kernel"
            ),
            ProbeError::BufferCount(count) => {
                write!(f, "{count} receive buffers: the count must be a power of two between 1 and 32768")
            }
            ProbeError::BufferSize => f.write_str("the receive buffer size must be above 0"),
            ProbeError::Memlock { limit_kib, need_kib, threads } => write!(
                f,
                "the locked-memory limit ({limit_kib} KiB) is below what {threads} io_uring worker(s) need (about \
                 {need_kib} KiB): raise it with `ulimit -l unlimited` (docker: --ulimit memlock=-1)"
            ),
            ProbeError::SqpollRefused => f.write_str(
                "io_uring_setup with SQPOLL was refused (EPERM): this kernel needs privileges for submission-queue \
                 polling",
            ),
            ProbeError::Seccomp => f.write_str(
                "io_uring_setup was refused (EPERM): a seccomp filter blocks io_uring, as Docker's and containerd's \
                 default profiles do; run the container with --security-opt seccomp=unconfined (or a profile \
                 allowing io_uring_setup, io_uring_enter and io_uring_register)",
            ),
            ProbeError::NoIoUring => write!(
                f,
                "this kernel has no io_uring (ENOSYS: built without CONFIG_IO_URING, older than 5.1, or a sandbox \
                 such as gVisor); the engine needs Linux >= {major}.{minor}"
            ),
            ProbeError::SetupNoMemory { memlock } => write!(
                f,
                "cannot allocate the ring (ENOMEM): the locked-memory limit is {memlock} (io_uring charges rings to \
                 RLIMIT_MEMLOCK without CAP_IPC_LOCK); raise it with `ulimit -l unlimited` (docker: --ulimit \
                 memlock=-1)"
            ),
            ProbeError::SetupRejected => write!(
                f,
                "io_uring_setup rejected every setup tried (EINVAL): the kernel is too old; the engine needs Linux >= \
                 {major}.{minor} (6.1 for DEFER_TASKRUN)"
            ),
            ProbeError::Setup(e) => write!(f, "io_uring_setup failed: {e}"),
            ProbeError::Opcodes(e) => write!(f, "cannot probe io_uring opcodes ({e}): the kernel is too old"),
            ProbeError::MissingOpcodes(names) => {
                write!(f, "this kernel's io_uring lacks {} (needs Linux >= {major}.{minor})", names.join(", "))
            }
            ProbeError::BufRingNoMemory { memlock } => write!(
                f,
                "cannot register a provided buffer ring (ENOMEM): the locked-memory limit is {memlock}; raise it with \
                 `ulimit -l unlimited`"
            ),
            ProbeError::BufRing(e) => {
                write!(f, "cannot register a provided buffer ring ({e}): needs Linux >= {major}.{minor}")
            }
            ProbeError::NotMultishot => {
                write!(f, "this kernel's receive is not multishot (needs Linux >= {major}.{minor})")
            }
            ProbeError::MultishotFailed(e) => {
                write!(f, "multishot receive with a provided buffer ring failed ({e}): needs Linux >= {major}.{minor}")
            }
            ProbeError::WrongData => f.write_str("a multishot receive returned wrong data"),
            ProbeError::Check(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for ProbeError {}
