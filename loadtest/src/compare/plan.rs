//! Whether a connection count fits this machine, checked before anything starts: the
//! descriptors each process may hold (and so how many processes each side would need),
//! the system-wide file table, the ephemeral ports across the 127.0.0.x sources, and the
//! kernel memory the sockets take. What cannot fit is refused with what it would take.

/// Descriptors a process keeps beyond one per connection (listeners, epoll or ring,
/// eventfd, the spare descriptor, stdio, the load generator's reserve).
pub const SPARE_FDS: u64 = 100;
/// Kernel slab per TCP socket without queued data, rounded up from what 100,000
/// connections measured here (4.8–5.0 KiB: docs/ladder.md).
pub const SLAB_PER_SOCKET: u64 = 5 << 10;
/// The loopback sources `duet load` may spread connections over (127.0.0.1–.254).
pub const LOOPBACK_SOURCES: u64 = 254;

/// What this machine allows.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `RLIMIT_NOFILE` (hard: the soft one is raised to it) of one process.
    pub nofile: u64,
    /// `fs.file-max`: open files system-wide (`None`: unknown).
    pub file_max: Option<u64>,
    /// Ephemeral ports per source address (`net.ipv4.ip_local_port_range`).
    pub ephemeral_ports: u64,
    /// `MemAvailable` in bytes (`None`: unknown).
    pub mem_available: Option<u64>,
    /// Source addresses the load may spread its connections over: 254 on loopback
    /// (127.0.0.1–.254), 1 over `--netns` (the generator's end of the veth pair).
    pub sources: u64,
}

impl Limits {
    /// This machine's, as far as it can be read.
    pub fn here() -> Limits {
        let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
        let file_max = std::fs::read_to_string("/proc/sys/fs/file-max").ok().and_then(|t| t.trim().parse().ok());
        let ephemeral_ports =
            crate::sys::ephemeral_ports().map_or(28_232, |(low, high)| u64::from(high) - u64::from(low) + 1);
        let mem_available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map(|kib| kib * 1024)
        });
        Limits { nofile, file_max, ephemeral_ports, mem_available, sources: LOOPBACK_SOURCES }
    }
}

/// How a connection count would be held on each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Processes the server needs (1: one process holds them all).
    pub server_processes: u64,
    /// Processes the load generator needs.
    pub load_processes: u64,
}

/// The plan for `connections` under `limits`, or why they cannot fit here (one line).
pub fn plan(connections: u64, limits: Limits) -> Result<Plan, String> {
    let per_process = limits.nofile.saturating_sub(SPARE_FDS);
    if per_process == 0 {
        return Err(format!("the open-file limit ({}) leaves no room for connections", limits.nofile));
    }
    let processes = connections.div_ceil(per_process).max(1);
    let mut problems = Vec::new();
    // Both ends of every connection, and each process's own.
    let files = 2 * connections + 2 * processes * SPARE_FDS;
    if let Some(max) = limits.file_max.filter(|&max| files > max) {
        problems.push(format!("{files} open files system-wide but fs.file-max is {max}"));
    }
    // A third of the range per source keeps connect() fast (see duet load's sources);
    // past that connect() slows down but works, up to the whole range per source.
    let ports = limits.ephemeral_ports.max(1);
    let sources = limits.sources.max(1);
    if connections > sources * ports {
        let what = if sources == 1 {
            "one source address (over --netns the load has only its end of the veth pair)".to_string()
        } else {
            format!("{sources} loopback source addresses")
        };
        problems.push(format!(
            "{connections} connections from {what} need {} ephemeral ports each but there are {ports} \
             (widen net.ipv4.ip_local_port_range)",
            connections.div_ceil(sources)
        ));
    }
    let memory = 2 * connections * SLAB_PER_SOCKET;
    if let Some(available) = limits.mem_available.filter(|&a| memory > a) {
        problems.push(format!(
            "about {} MiB of kernel memory for the sockets but {} MiB is available",
            memory >> 20,
            available >> 20
        ));
    }
    if !problems.is_empty() {
        return Err(format!("{connections} connections cannot fit here: {}", problems.join("; ")));
    }
    Ok(Plan { server_processes: processes, load_processes: processes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: Limits = Limits {
        nofile: 20_000,
        file_max: Some(2_466_255),
        ephemeral_ports: 28_232,
        mem_available: Some(22 << 30),
        sources: LOOPBACK_SOURCES,
    };

    #[test]
    fn one_process_each_while_the_descriptors_fit() {
        assert_eq!(plan(19_000, HERE), Ok(Plan { server_processes: 1, load_processes: 1 }));
    }

    #[test]
    fn past_one_processes_limit_the_plan_is_a_process_group_on_each_side() {
        assert_eq!(plan(30_000, HERE), Ok(Plan { server_processes: 2, load_processes: 2 }));
        assert_eq!(plan(100_000, HERE), Ok(Plan { server_processes: 6, load_processes: 6 }));
    }

    #[test]
    fn what_cannot_fit_is_refused_with_every_reason() {
        let small = Limits { file_max: Some(150_000), mem_available: Some(512 << 20), ..HERE };
        let e = plan(100_000, small).unwrap_err();
        assert!(e.starts_with("100000 connections cannot fit here: "), "{e}");
        assert!(e.contains("fs.file-max is 150000"), "{e}");
        assert!(e.contains("MiB of kernel memory"), "{e}");
        let e = plan(8_000_000, Limits { file_max: None, mem_available: None, ..HERE }).unwrap_err();
        assert!(e.contains("254 loopback source addresses need 31497 ephemeral ports each"), "{e}");
        let unknown = Limits { file_max: None, mem_available: None, ..HERE };
        assert!(plan(100_000, unknown).is_ok(), "what cannot be read does not refuse");
    }

    #[test]
    fn over_netns_the_ports_of_one_source_address_are_all_there_is() {
        let veth = Limits { sources: 1, ..HERE };
        assert_eq!(plan(10_000, veth), Ok(Plan { server_processes: 1, load_processes: 1 }));
        assert!(plan(100_000, HERE).is_ok(), "on loopback 100,000 spread over 127.0.0.x");
        let e = plan(100_000, veth).unwrap_err();
        assert!(e.contains("from one source address (over --netns"), "{e}");
        assert!(e.contains("need 100000 ephemeral ports each but there are 28232"), "{e}");
    }
}
