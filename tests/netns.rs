//! `duet compare --netns`: the namespaces it makes are gone after a normal run, after
//! SIGINT mid-run and after a failed start; a killed run's are removed at the next start;
//! without CAP_NET_ADMIN, `--delay` without netem and `--loss` without nft are one line and
//! exit 2. Skipped (with the reason printed) when this process cannot make namespaces or
//! `ip` is missing.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// A short run: one engine, few connections, a third of a second.
const SHORT: [&str; 9] = ["--quick", "--engines", "epoll", "--connections", "4", "--depth", "1", "--duration", "0.3s"];

/// Kills the child when the test ends, passed or not (its servers die with it, and the
/// next run removes its namespaces).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn capability(bit: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Why namespaces cannot be made here, if they cannot.
fn skip_reason() -> Option<&'static str> {
    if !capability(12) || !capability(21) {
        return Some("not privileged (CAP_NET_ADMIN and CAP_SYS_ADMIN needed)");
    }
    if !runs("ip", &["-V"]) {
        return Some("no ip command (iproute2)");
    }
    None
}

macro_rules! require_netns {
    () => {
        if let Some(reason) = skip_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

fn namespaces_of(pid: u32) -> Vec<String> {
    let prefix = format!("duet-{pid}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn start(args: &[&str]) -> Guard {
    let mut cmd = common::duet_command();
    cmd.arg("compare").args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    Guard(cmd.spawn().expect("start duet compare"))
}

/// Waits for the run to end; its status, stdout and stderr.
fn finish(guard: &mut Guard) -> (ExitStatus, String, String) {
    let (mut out, mut err) = (guard.0.stdout.take().unwrap(), guard.0.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "duet compare did not finish within {RUN_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

#[test]
fn the_namespaces_are_gone_after_a_normal_run_that_went_over_the_veth_pair() {
    require_netns!();
    let mut args = vec!["--netns", "--json"];
    args.extend(SHORT);
    let mut guard = start(&args);
    let pid = guard.0.id();
    let (status, out, err) = finish(&mut guard);
    assert!(status.success(), "{status}: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    let cell = &v["scenarios"][0]["engines"]["epoll"]["median"];
    assert!(cell["requests_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{cell}");
    assert_eq!(v["network"]["server_addr"], "10.77.0.1", "{}", v["network"]);
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
}

#[test]
fn sigint_mid_run_removes_the_namespaces() {
    require_netns!();
    let mut guard =
        start(&["--netns", "--engines", "epoll", "--connections", "4", "--depth", "1", "--duration", "60s"]);
    let pid = guard.0.id();
    // Mid-run: the server is up inside its namespace.
    let srv = format!("duet-{pid}-srv");
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let inside = Command::new("ip").args(["netns", "pids", &srv]).output().map(|o| o.stdout).unwrap_or_default();
        if !inside.is_empty() {
            break;
        }
        assert!(guard.0.try_wait().unwrap().is_none(), "duet compare ended before its server started");
        assert!(Instant::now() < deadline, "no server in {srv} within {RUN_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill takes a pid (our unreaped child) and a signal number.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
    let (status, _, err) = finish(&mut guard);
    assert_eq!(status.code(), Some(130), "{status}: {err}");
    assert!(err.contains("interrupted; the network namespaces are removed"), "{err}");
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
}

#[test]
fn a_failed_start_removes_the_namespaces() {
    require_netns!();
    // Refused after the namespaces are made: more connections than one process may hold.
    let mut guard = start(&["--netns", "--engines", "epoll", "--connections", "10000000", "--depth", "1"]);
    let pid = guard.0.id();
    let (status, _, err) = finish(&mut guard);
    assert_eq!(status.code(), Some(1), "{status}: {err}");
    assert!(err.contains("10000000 connections"), "{err}");
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
}

/// Over the veth pair the load has one source address, so the plan counts the ephemeral
/// ports of one address: 30,000 connections, which loopback spreads over 127.0.0.x, are
/// refused here with that reason (and the namespaces removed).
#[test]
fn over_netns_the_plan_counts_one_source_address() {
    require_netns!();
    let mut guard = start(&["--netns", "--engines", "epoll", "--connections", "30000", "--depth", "1"]);
    let pid = guard.0.id();
    let (status, _, err) = finish(&mut guard);
    let ports = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let range: Vec<u64> = ports.split_whitespace().filter_map(|p| p.parse().ok()).collect();
    if range.len() == 2 && range[1] - range[0] + 1 >= 30_000 {
        eprintln!("skipped: the ephemeral port range ({ports}) holds 30,000 from one address");
        return;
    }
    assert_eq!(status.code(), Some(1), "{status}: {err}");
    assert!(err.contains("from one source address (over --netns"), "{err}");
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
}

#[test]
fn a_killed_runs_namespace_is_removed_at_the_next_start() {
    require_netns!();
    // A pid that is gone: a child that has exited and been reaped.
    let mut dead = Command::new("true").spawn().expect("run true");
    let dead_pid = dead.id();
    dead.wait().expect("wait for true");
    let name = format!("duet-{dead_pid}-srv");
    assert!(runs("ip", &["netns", "add", &name]), "cannot add {name}");
    let mut guard = start(&["--netns", "--engines", "epoll", "--connections", "10000000", "--depth", "1"]);
    let (_, _, err) = finish(&mut guard);
    let left = namespaces_of(dead_pid);
    if !left.is_empty() {
        let _ = runs("ip", &["netns", "del", &name]);
    }
    assert_eq!(left, Vec::<String>::new(), "{err}");
}

#[test]
fn delay_without_netem_is_refused_with_one_line_and_exit_2() {
    require_netns!();
    let mut args = vec!["--netns", "--delay", "1ms"];
    args.extend(SHORT);
    let mut guard = start(&args);
    let pid = guard.0.id();
    let (status, _, err) = finish(&mut guard);
    if status.success() {
        eprintln!("this kernel has sch_netem: --delay ran (refusal not tested)");
    } else {
        assert_eq!(status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("--delay needs the netem qdisc"), "{err}");
    }
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
}

#[test]
fn loss_runs_with_nft_and_is_refused_without_it() {
    require_netns!();
    let mut args = vec!["--netns", "--loss", "1"];
    args.extend(SHORT);
    let mut guard = start(&args);
    let pid = guard.0.id();
    let (status, out, err) = finish(&mut guard);
    if runs("nft", &["--version"]) {
        assert!(status.success(), "{status}: {err}");
        assert!(out.contains("| c=4 d=1 13 B | epoll |"), "{out}");
    } else {
        eprintln!("no nft: only the refusal is tested");
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.contains("--loss needs nftables"), "{err}");
    }
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
}

#[test]
fn without_cap_net_admin_it_says_so_and_exits_2() {
    let (program, prefix): (String, Vec<&str>) = if !capability(12) {
        (common::duet_bin().to_string(), Vec::new())
    } else if runs("setpriv", &["--version"]) {
        ("setpriv".to_string(), vec!["--inh-caps=-all", "--bounding-set=-net_admin", common::duet_bin()])
    } else {
        eprintln!("skipped: privileged and no setpriv to drop CAP_NET_ADMIN");
        return;
    };
    let mut cmd = Command::new(program);
    cmd.args(prefix).args(["compare", "--netns", "--quick"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut guard = Guard(cmd.spawn().expect("start duet compare"));
    let pid = guard.0.id();
    let (status, out, err) = finish(&mut guard);
    assert_eq!(status.code(), Some(2), "{status}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--netns needs CAP_NET_ADMIN"), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(Path::new("/run/netns").join(format!("duet-{pid}-srv")).metadata().is_err());
}
