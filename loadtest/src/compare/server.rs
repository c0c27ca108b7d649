//! The servers under test: `duet serve` children pinned to the server CPUs, and CPU
//! affinity helpers.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LISTENING: &str = "listening on http://";
/// Log lines kept to explain a server that fails.
const TAIL_LINES: usize = 20;

/// A running `duet serve`; dropping it stops the server (SIGTERM, then SIGKILL).
pub struct Server {
    pub engine: String,
    pub addr: SocketAddr,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts `exe serve --engine ENGINE --port 0` on `cpus` and waits for its listening line.
    pub fn start(
        exe: &Path,
        engine: &str,
        threads: usize,
        cpus: &[usize],
        routes: &[String],
    ) -> Result<Server, String> {
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--engine", engine, "--bind", "127.0.0.1", "--port", "0", "--threads"])
            .arg(threads.to_string())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for r in routes {
            cmd.arg("--route").arg(r);
        }
        let set = cpu_set(cpus)?;
        let hook = move || {
            // SAFETY: `set` is a valid cpu_set_t of the size passed.
            if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The server dies with us, even if we are killed.
            // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
            Ok(())
        };
        // SAFETY: the hook runs in the child between fork and exec and only makes two
        // async-signal-safe system calls on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(hook);
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        let lines = Arc::clone(&tail);
        std::thread::Builder::new()
            .name("duet-compare-log".into())
            .spawn(move || {
                // Reads until the server exits, so its log never fills the pipe.
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = parse_listening(&line) {
                        let _ = tx.send(addr);
                    }
                    let mut t = lines.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        let mut server =
            Server { engine: engine.to_string(), addr: SocketAddr::from(([127, 0, 0, 1], 0)), child, tail };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => {
                server.addr = addr;
                Ok(server)
            }
            Err(_) => {
                // Give the log thread a moment to collect the last lines of a failed start.
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline && matches!(server.child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(50));
                let hint = if engine == "epoll" { "" } else { " (to compare without it: --engines epoll)" };
                Err(format!("the {engine} server did not start: {}{hint}", server.log_tail()))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if the server has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("the {} server exited ({status}): {}", self.engine, self.log_tail())),
            Err(e) => Err(format!("cannot check the {} server: {e}", self.engine)),
        }
    }

    fn log_tail(&self) -> String {
        let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let errors: Vec<&str> = t.iter().filter(|l| l.contains("error")).map(String::as_str).collect();
        if errors.is_empty() {
            t.iter().map(String::as_str).collect::<Vec<_>>().join(" | ")
        } else {
            errors.join(" | ")
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill takes a pid and a signal number; the child is ours and not yet reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The address in `... listening on http://127.0.0.1:PORT (engine epoll, 1 threads)`.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(LISTENING)? + LISTENING.len()..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    rest[..end].trim_end_matches('/').parse().ok()
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

/// Server and load CPUs: one each on two CPUs, halves on more, shared on one.
pub fn default_split(cpus: &[usize]) -> (Vec<usize>, Vec<usize>) {
    match cpus.len() {
        0 => (vec![0], vec![0]),
        1 => (cpus.to_vec(), cpus.to_vec()),
        n => {
            let (a, b) = cpus.split_at(n / 2);
            (a.to_vec(), b.to_vec())
        }
    }
}

/// `0`, `0-3`, `0,2,4-5`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("'{s}' is not a CPU list (try 0 or 0-3 or 0,2)");
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_and_defaults() {
        assert_eq!(parse_cpu_list("0").unwrap(), [0]);
        assert_eq!(parse_cpu_list("0-2,5").unwrap(), [0, 1, 2, 5]);
        assert!(parse_cpu_list("2-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert_eq!(default_split(&[0, 1]), (vec![0], vec![1]));
        assert_eq!(default_split(&[0, 1, 2, 3]), (vec![0, 1], vec![2, 3]));
        assert_eq!(default_split(&[3]), (vec![3], vec![3]));
    }

    #[test]
    fn listening_line() {
        let l = "2026-01-01T00:00:00Z  INFO listening on http://127.0.0.1:4321 (engine epoll, 1 threads)";
        assert_eq!(parse_listening(l), Some("127.0.0.1:4321".parse().unwrap()));
        assert_eq!(parse_listening("nothing"), None);
    }
}
