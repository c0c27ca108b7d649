//! `duet compare --netns`: the server in a network namespace of its own, the load in
//! another, joined by a veth pair, with random loss (nftables) and delay (netem) where the
//! kernel has them. The namespaces are named `duet-PID-srv` and `duet-PID-load` after the
//! comparing process, so a leftover of a killed run is recognised (its PID is gone) and
//! removed at the next start. See docs/network.md.

use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Every namespace duet creates starts with this.
pub const PREFIX: &str = "duet-";
/// The server's end of the veth pair (a /30 of the private 10/8 range).
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The load generator's end.
pub const LOAD_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const SERVER_LINK: &str = "veth-srv";
const LOAD_LINK: &str = "veth-load";
/// The capabilities `ip netns add` (a bind mount) and the veth/qdisc/nft set-up need.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// Why `--netns` cannot run. The first three are the machine's or the user's to fix
/// before anything runs (exit 2); each Display is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsError {
    /// A capability the set-up needs is missing (its name).
    NoCapability(&'static str),
    /// `--loss` without a runnable `nft`.
    NoNft,
    /// `--delay` on a kernel without `sch_netem`.
    NoNetem,
    /// A command of the set-up failed.
    Setup(String),
}

impl NetnsError {
    /// Whether this is a refusal before measuring (exit status 2) rather than a failure.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, NetnsError::Setup(_))
    }
}

impl fmt::Display for NetnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsError::NoCapability(cap) => write!(
                f,
                "--netns needs {cap} (network namespaces and veth links are privileged): run as root or grant \
                 CAP_NET_ADMIN and CAP_SYS_ADMIN"
            ),
            NetnsError::NoNft => {
                f.write_str("--loss needs nftables (nft) and it is not installed: apt-get install nftables")
            }
            NetnsError::NoNetem => f.write_str(
                "--delay needs the netem qdisc and this kernel has none (sch_netem: 'Specified qdisc kind is \
                 unknown'); see docs/network.md",
            ),
            NetnsError::Setup(why) => write!(f, "network namespace set-up: {why}"),
        }
    }
}

impl std::error::Error for NetnsError {}

/// What the path between the namespaces does to packets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairments {
    /// Percent of the packets dropped at random, in each direction.
    pub loss_percent: Option<f64>,
    /// Added to every round trip (netem on the server's link).
    pub delay: Option<Duration>,
}

/// Where the comparison runs when `--netns` is given: plain data for [`super::run`].
#[derive(Debug, Clone, PartialEq)]
pub struct NetPath {
    /// `/run/netns/duet-PID-srv`: the servers start in it.
    pub server_ns: PathBuf,
    /// `/run/netns/duet-PID-load`: the comparing thread enters it, so the load is born there.
    pub load_ns: PathBuf,
    /// What the path does to packets.
    pub impairments: Impairments,
}

/// Whether this process has capability `bit` effective (`CapEff` of /proc/self/status).
fn has_capability(bit: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// Refuses, before anything runs, what cannot work: a missing capability, `--loss`
/// without `nft`.
pub fn preflight(impairments: &Impairments) -> Result<(), NetnsError> {
    for (bit, name) in [(CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")] {
        if !has_capability(bit) {
            return Err(NetnsError::NoCapability(name));
        }
    }
    if impairments.loss_percent.is_some() {
        let runs = Command::new("nft").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !runs.is_ok_and(|s| s.success()) {
            return Err(NetnsError::NoNft);
        }
    }
    Ok(())
}

/// The namespaces of the comparing process `pid`: the server's and the load's.
pub fn names(pid: u32) -> [String; 2] {
    [format!("{PREFIX}{pid}-srv"), format!("{PREFIX}{pid}-load")]
}

/// Runs `ip ARGS`, its stderr as the error.
fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args), None)
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<(), String> {
    let shown = format!("{cmd:?}").replace('"', "");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {shown}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| format!("cannot write to {shown}: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("cannot run {shown}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(format!("{shown} failed: {}", err.trim().replace('\n', "; ")))
}

/// Removes the namespaces of `pid` (those that exist); quiet, for every exit path.
pub fn remove(pid: u32) {
    for name in names(pid) {
        if std::path::Path::new("/run/netns").join(&name).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// Removes every `duet-PID-*` namespace whose process is gone (a run that was killed
/// with SIGKILL); returns their names.
pub fn remove_leftovers() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            && ip(&["netns", "del", &name]).is_ok()
        {
            removed.push(name);
        }
    }
    removed
}

/// The namespaces of this process, removed when dropped (see also [`remove`] for the
/// signal path).
#[derive(Debug)]
pub struct Netns {
    pid: u32,
}

impl Netns {
    /// Creates both namespaces, the veth pair between them with its addresses, and the
    /// impairments. On any error what was created is removed.
    pub fn create(impairments: &Impairments) -> Result<Netns, NetnsError> {
        let netns = Netns { pid: std::process::id() };
        netns.build(impairments)?;
        Ok(netns)
    }

    fn build(&self, impairments: &Impairments) -> Result<(), NetnsError> {
        let [srv, load] = names(self.pid);
        let setup = NetnsError::Setup;
        ip(&["netns", "add", &srv]).map_err(setup)?;
        ip(&["netns", "add", &load]).map_err(setup)?;
        ip(&["-n", &load, "link", "add", LOAD_LINK, "type", "veth", "peer", "name", SERVER_LINK, "netns", &srv])
            .map_err(setup)?;
        for (ns, link, addr) in [(&srv, SERVER_LINK, SERVER_ADDR), (&load, LOAD_LINK, LOAD_ADDR)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", link]).map_err(setup)?;
            ip(&["-n", ns, "link", "set", link, "up"]).map_err(setup)?;
            ip(&["-n", ns, "link", "set", "lo", "up"]).map_err(setup)?;
        }
        if let Some(delay) = impairments.delay {
            let us = format!("{}us", delay.as_micros());
            let added = run(
                Command::new("tc").args([
                    "-n",
                    &srv,
                    "qdisc",
                    "add",
                    "dev",
                    SERVER_LINK,
                    "root",
                    "netem",
                    "delay",
                    &us,
                ]),
                None,
            );
            if let Err(why) = added {
                return Err(if why.contains("qdisc kind is unknown") { NetnsError::NoNetem } else { setup(why) });
            }
        }
        if let Some(percent) = impairments.loss_percent {
            // Dropped on input in each namespace, so each direction loses like a wire: a
            // drop on output is told to the sender's TCP as a local error (EPERM), not lost.
            let threshold = (percent * 100.0).round() as u32;
            let rules = format!(
                "table inet duet_loss {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
                 numgen random mod 10000 < {threshold} drop\n  }}\n}}\n"
            );
            for ns in [&srv, &load] {
                run(Command::new("ip").args(["netns", "exec", ns, "nft", "-f", "-"]), Some(&rules)).map_err(setup)?;
            }
        }
        Ok(())
    }

    /// The plain data [`super::run`] needs.
    pub fn path(&self, impairments: Impairments) -> NetPath {
        let [srv, load] = names(self.pid);
        NetPath {
            server_ns: PathBuf::from("/run/netns").join(srv),
            load_ns: PathBuf::from("/run/netns").join(load),
            impairments,
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove(self.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_named_after_the_process() {
        assert_eq!(names(42), ["duet-42-srv".to_string(), "duet-42-load".to_string()]);
    }

    #[test]
    fn refusals_exit_before_measuring_and_set_up_failures_do_not() {
        assert!(NetnsError::NoCapability("CAP_NET_ADMIN").is_refusal());
        assert!(NetnsError::NoNft.is_refusal() && NetnsError::NoNetem.is_refusal());
        assert!(!NetnsError::Setup("x".into()).is_refusal());
        assert!(NetnsError::NoCapability("CAP_NET_ADMIN").to_string().starts_with("--netns needs CAP_NET_ADMIN"));
    }
}
