//! The io_uring engine's errors and feature report, worded with this binary's flags:
//! the engine's library returns typed values and names no flag.

use duet_engine_uring::{Features, Off, ProbeError, Resolved};

/// What every probe failure can fall back to.
const EPOLL_HINT: &str = "or use --engine epoll";

/// One line for a failed probe: the cause and the fix, in this binary's flags.
pub fn probe_failure(e: &ProbeError) -> String {
    match e {
        ProbeError::BufferCount(count) => format!("--uring-buffers {count} must be a power of two between 1 and 32768"),
        ProbeError::BufferSize => "--uring-buffer-size must be above 0".into(),
        ProbeError::SqpollRefused => format!(
            "io_uring_setup with SQPOLL was refused (EPERM): this kernel needs privileges for --sqpoll; drop --sqpoll, \
             {EPOLL_HINT}"
        ),
        ProbeError::Memlock { .. } => format!("{e}, or lower --uring-entries/--threads, {EPOLL_HINT}"),
        ProbeError::SetupNoMemory { .. } => format!("{e}, lower --uring-entries, {EPOLL_HINT}"),
        ProbeError::Setup(_) | ProbeError::Opcodes(_) => format!("{e}; {EPOLL_HINT}"),
        // A check that could not run to the end says what went wrong, and no more.
        ProbeError::Check(_) => e.to_string(),
        _ => format!("{e}, {EPOLL_HINT}"),
    }
}

/// The one log line of the probed features: which are on, which are off and why.
pub fn features_line(resolved: &Resolved) -> String {
    let on = if resolved.on == Features::none() { "none".into() } else { resolved.on.to_string() };
    let mut line = format!("io_uring features on: {on}");
    if !resolved.off.is_empty() {
        let off: Vec<String> = resolved
            .off
            .iter()
            .map(|(f, why)| match why {
                Off::Flag => format!("{} (--uring-features)", f.name()),
                Off::Kernel(how) => format!("{} ({how}; needs Linux {})", f.name(), f.kernel()),
                Off::Excluded(why) => format!("{} ({why})", f.name()),
            })
            .collect();
        line.push_str("; off: ");
        line.push_str(&off.join(", "));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_engine_uring::Feature;

    #[test]
    fn the_features_line_names_each_feature_off_and_why() {
        let resolved = Resolved {
            on: Features::none().with(Feature::Direct),
            off: vec![
                (Feature::ZeroCopy, Off::Flag),
                (Feature::Bundle, Off::Kernel("no IORING_FEAT_RECVSEND_BUNDLE".into())),
                (Feature::Incremental, Off::Excluded("--other needs it off")),
            ],
        };
        assert_eq!(
            features_line(&resolved),
            "io_uring features on: direct; off: zc (--uring-features), bundle (no IORING_FEAT_RECVSEND_BUNDLE; \
             needs Linux 6.10), inc (--other needs it off)"
        );
    }

    #[test]
    fn a_probe_failure_names_the_flags_that_fix_it() {
        let memlock = ProbeError::Memlock { limit_kib: 64, need_kib: 300, threads: 2 };
        assert_eq!(
            probe_failure(&memlock),
            "the locked-memory limit (64 KiB) is below what 2 io_uring worker(s) need (about 300 KiB): raise it with \
             `ulimit -l unlimited` (docker: --ulimit memlock=-1), or lower --uring-entries/--threads, or use --engine \
             epoll"
        );
        assert_eq!(
            probe_failure(&ProbeError::BufferCount(1000)),
            "--uring-buffers 1000 must be a power of two between 1 and 32768"
        );
        assert_eq!(
            probe_failure(&ProbeError::Disabled),
            "io_uring is disabled by sysctl kernel.io_uring_disabled=2: run `sysctl -w kernel.io_uring_disabled=0`, \
             or use --engine epoll"
        );
        assert_eq!(
            probe_failure(&ProbeError::Setup(std::io::Error::from_raw_os_error(libc::EIO))),
            format!("io_uring_setup failed: {}; or use --engine epoll", std::io::Error::from_raw_os_error(libc::EIO))
        );
    }
}
