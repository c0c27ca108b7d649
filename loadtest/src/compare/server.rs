//! The servers under test: `duet serve` children pinned to the server CPUs, and CPU
//! affinity helpers.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LISTENING: &str = "listening on http://";
/// Log lines kept to explain a server that fails.
const TAIL_LINES: usize = 20;
/// Warnings kept per server (the engines log one line per episode, so this is plenty).
const MAX_WARNINGS: usize = 1000;

/// What a server wrote to stderr: the last lines, and every warning or error line.
#[derive(Debug, Default)]
struct Log {
    tail: VecDeque<String>,
    warnings: Vec<String>,
}

type SharedLog = Arc<Mutex<Log>>;

/// The path `duet compare` asks its `duet serve` children to serve their counters at.
pub const METRICS_PATH: &str = "/__duet_metrics";

/// duet's counters, read from [`METRICS_PATH`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    pub syscalls: u64,
    pub wakeups: u64,
    pub events: u64,
}

/// A running server under test (`duet serve` or a peer); dropping it stops it (SIGTERM,
/// then SIGKILL).
pub struct Server {
    pub engine: String,
    pub addr: SocketAddr,
    /// Whether it serves duet's counters at [`METRICS_PATH`] (only `duet serve`).
    pub metrics: bool,
    child: Child,
    log: SharedLog,
    /// Signals that the log reader reached the end of the server's stderr.
    log_done: Option<mpsc::Receiver<()>>,
}

/// Whether a log line of `duet serve` (tracing's format) or of a peer is a warning or an
/// error, or names select's limit at whatever level it is logged.
fn is_warning(line: &str) -> bool {
    [" WARN ", " ERROR ", "[warn]", "[error]", "FD_SETSIZE"].iter().any(|mark| line.contains(mark))
}

/// Spawns `cmd` pinned to `cpus` (dying with us), with its stderr collected into a tail
/// of log lines and a list of warnings; `on_line` sees every line.
fn spawn_pinned(
    cmd: &mut Command,
    what: &str,
    cpus: &[usize],
    on_line: impl Fn(&str) + Send + 'static,
) -> Result<(Child, SharedLog, mpsc::Receiver<()>), String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    crate::sys::pin_child_and_tie_to_parent(cmd, cpus)?;
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {what}: {e}"))?;
    let Some(stderr) = child.stderr.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("no stderr pipe".into());
    };
    let log = SharedLog::default();
    let lines = Arc::clone(&log);
    let (done_tx, done_rx) = mpsc::channel();
    let spawned = std::thread::Builder::new().name("duet-compare-log".into()).spawn(move || {
        // Reads until the server exits, so its log never fills the pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            on_line(&line);
            let mut log = lines.lock().unwrap_or_else(|e| e.into_inner());
            if is_warning(&line) && log.warnings.len() < MAX_WARNINGS {
                log.warnings.push(line.clone());
            }
            if log.tail.len() == TAIL_LINES {
                log.tail.pop_front();
            }
            log.tail.push_back(line);
        }
        let _ = done_tx.send(());
    });
    if let Err(e) = spawned {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("cannot start a thread: {e}"));
    }
    Ok((child, log, done_rx))
}

/// What a compared `duet serve` serves: `--route`s and, for the file rows, a `--dir`.
pub struct Content<'a> {
    pub routes: &'a [String],
    pub dir: Option<&'a Path>,
}

/// Where a compared `duet serve` listens: its `--bind` address, and the network
/// namespace it is started in (`--netns`), if any.
pub struct Place {
    pub bind: std::net::IpAddr,
    pub netns: Option<std::fs::File>,
    /// More than 1: `duet serve --processes N`, a supervisor over N processes that each
    /// hold their share of the connections (past one process's descriptor limit).
    pub processes: u64,
}

/// How long a process group's server lets a connection wait for its first request or
/// its next one: opening 100,000 connections at once takes tens of seconds of SYN
/// retransmits, and a connection accepted early must not be closed as silent meanwhile.
const GROUP_TIMEOUT: &str = "300s";

impl Server {
    /// Starts `exe serve --engine ENGINE --port 0 --metrics METRICS_PATH` on `cpus` and
    /// waits for its listening line. `engine` is as `--engines` names it: `uring:FEATURES`
    /// adds `--uring-features FEATURES` (see [`serve_engine_args`]). What it serves and
    /// where it listens are in `content` and `place`.
    pub fn start(
        exe: &Path,
        engine: &str,
        threads: usize,
        cpus: &[usize],
        content: Content,
        place: Place,
    ) -> Result<Server, String> {
        let (Content { routes, dir }, Place { bind, netns, processes }) = (content, place);
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .args(serve_engine_args(engine))
            .arg("--bind")
            .arg(bind.to_string())
            .args(["--port", "0", "--metrics", METRICS_PATH])
            .arg("--threads")
            .arg(threads.to_string())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        for r in routes {
            cmd.arg("--route").arg(r);
        }
        if processes > 1 {
            cmd.arg("--processes").arg(processes.to_string());
            cmd.args(["--header-timeout", GROUP_TIMEOUT, "--keepalive-timeout", GROUP_TIMEOUT]);
        }
        if let Some(dir) = dir {
            cmd.arg("--dir").arg(dir);
        }
        if let Some(ns) = netns {
            crate::sys::child_in_netns(&mut cmd, ns);
        }
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let (child, log, log_done) = spawn_pinned(&mut cmd, &exe.display().to_string(), cpus, move |line| {
            if let Some(addr) = parse_listening(line) {
                let _ = tx.lock().map(|tx| tx.send(addr));
            }
        })?;
        let mut server = Server {
            engine: engine.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: true,
            child,
            log,
            log_done: Some(log_done),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => {
                server.addr = addr;
                Ok(server)
            }
            Err(_) => {
                server.wait_for_exit();
                Err(format!("the {engine} server did not start: {}", server.log_tail()))
            }
        }
    }

    /// Starts a peer: `argv` on `cpus`, ready once 127.0.0.1:`port` accepts connections.
    pub fn start_peer(name: &str, argv: &[String], port: u16, cpus: &[usize]) -> Result<Server, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if accepts(addr) {
            return Err(format!("peer {name}: port {port} is already in use by another program"));
        }
        let (program, args) = argv.split_first().ok_or_else(|| format!("peer {name}: empty command"))?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        let (child, log, log_done) = spawn_pinned(&mut cmd, &format!("peer {name} ({program})"), cpus, |_| {})?;
        let mut server =
            Server { engine: name.to_string(), addr, metrics: false, child, log, log_done: Some(log_done) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if accepts(addr) {
                return Ok(server);
            }
            match server.child.try_wait() {
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Ok(None) => return Err(format!("peer {name} did not accept on port {port} within 30 s")),
                Ok(Some(status)) => {
                    server.wait_for_log();
                    return Err(format!("peer {name} exited ({status}) before accepting: {}", server.log_tail()));
                }
                Err(e) => return Err(format!("cannot check peer {name}: {e}")),
            }
        }
    }

    /// Gives a failed server a moment to exit and its log thread to collect the last lines.
    fn wait_for_exit(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !matches!(self.child.try_wait(), Ok(None)) {
            self.wait_for_log();
        }
    }

    /// Waits (at most 5 s) until the log reader has seen the end of the server's stderr.
    fn wait_for_log(&mut self) {
        // A peer's own children may hold the pipe open: do not wait for them forever.
        if let Some(done) = self.log_done.take() {
            let _ = done.recv_timeout(Duration::from_secs(5));
        }
    }

    /// duet's counters from [`METRICS_PATH`].
    pub fn counters(&self) -> Result<Counters, String> {
        let text = fetch(self.addr, METRICS_PATH)
            .map_err(|e| format!("cannot read the {} server's counters: {e}", self.engine))?;
        parse_counters(&text).map_err(|name| format!("the {} server's counters have no {name}", self.engine))
    }

    /// How many warnings the server has logged so far: a position in its warnings.
    pub fn warnings_logged(&self) -> usize {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).warnings.len()
    }

    /// The warnings logged from position `from` up to `to` (or the latest).
    pub fn warnings(&self, from: usize, to: Option<usize>) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let to = to.unwrap_or(log.warnings.len()).min(log.warnings.len());
        log.warnings.get(from.min(to)..to).unwrap_or_default().to_vec()
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
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let t = &log.tail;
        let errors: Vec<&str> = t.iter().filter(|l| l.contains("error")).map(String::as_str).collect();
        if errors.is_empty() {
            t.iter().map(String::as_str).collect::<Vec<_>>().join(" | ")
        } else {
            errors.join(" | ")
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s) and waits (at most 5 s more)
    /// until its log has been read to the end, so [`Server::warnings`] is complete.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // The child is ours and not yet reaped, so its pid names no other process.
            crate::sys::sigterm(self.child.id());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        self.wait_for_log();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `duet serve` arguments for an engine as `--engines` names it: `ENGINE`, or
/// `ENGINE:FEATURES` with the features joined by `+` (commas separate the engines), which
/// becomes `--engine ENGINE --uring-features FEATURES` with commas.
pub fn serve_engine_args(engine: &str) -> Vec<String> {
    match engine.split_once(':') {
        Some((name, features)) => {
            vec!["--engine".into(), name.into(), "--uring-features".into(), features.replace('+', ",")]
        }
        None => vec!["--engine".into(), engine.into()],
    }
}

/// The counters in duet's Prometheus text; `Err` names the first one missing.
fn parse_counters(text: &str) -> Result<Counters, &'static str> {
    let get = |name: &'static str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or(name)
    };
    Ok(Counters {
        requests: get("duet_requests_total")?,
        syscalls: get("duet_syscalls_total")?,
        wakeups: get("duet_wakeups_total")?,
        events: get("duet_events_total")?,
    })
}

/// Whether something accepts TCP connections at `addr`.
fn accepts(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// nginx as the file-serving peer (`--files`), when `nginx` is on the PATH (or in
/// /usr/sbin): one worker in one process (`master_process off`, so its CPU is the process
/// started), `sendfile on`, serving `root` on a free port, with its configuration and
/// pid file written into `tmp`. `None` when nginx is not installed.
pub fn nginx_files_peer(tmp: &Path, root: &Path) -> Result<Option<super::Peer>, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file());
    let Some(nginx) = found else { return Ok(None) };
    let port = free_port()?;
    let conf = tmp.join("nginx-files.conf");
    let text = format!(
        "# duet compare --files: nginx with sendfile, one worker, the same files.\n\
         worker_processes 1;\ndaemon off;\npid {tmp}/nginx.pid;\nerror_log {tmp}/nginx.err warn;\n\
         events {{ worker_connections 19000; use epoll; }}\n\
         http {{\n  access_log off;\n  server_tokens off;\n  sendfile on;\n  keepalive_timeout 120s;\n  \
         keepalive_requests 1000000000;\n  client_body_temp_path {tmp};\n  \
         server {{ listen 127.0.0.1:{port} reuseport backlog=4096; root {root}; }}\n}}\n",
        tmp = tmp.display(),
        root = root.display(),
    );
    std::fs::write(&conf, text).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    let argv = [nginx.display().to_string(), "-c".into(), conf.display().to_string(), "-g".into()]
        .into_iter()
        .chain(["master_process off;".to_string()])
        .collect();
    Ok(Some(super::Peer { name: "nginx".into(), argv, port, fixed_body: false }))
}

/// A free loopback port (bound and released: another program may take it meanwhile).
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// `GET path` over a fresh connection; the body of a 200 response.
fn fetch(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Error, Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
            });
            if let Some(len) = length {
                if buf.len() >= end + 4 + len {
                    if !head.starts_with("HTTP/1.1 200") {
                        return Err(Error::other(head.lines().next().unwrap_or("").to_string()));
                    }
                    return Ok(String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned());
                }
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed before the whole response"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The address in `... listening on http://127.0.0.1:PORT (engine epoll, 1 threads)`, the
/// line `duet serve` logs once it listens. The one parser of that line in the repository:
/// the integration tests' harness uses it too.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(LISTENING)? + LISTENING.len()..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    rest[..end].trim_end_matches('/').parse().ok()
}

pub use crate::sys::{allowed_cpus, pin_current_thread};

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
    fn a_row_with_features_serves_them_with_commas() {
        assert_eq!(serve_engine_args("epoll"), ["--engine", "epoll"]);
        assert_eq!(serve_engine_args("uring:none"), ["--engine", "uring", "--uring-features", "none"]);
        assert_eq!(
            serve_engine_args("uring:no-zc+no-bundle"),
            ["--engine", "uring", "--uring-features", "no-zc,no-bundle"]
        );
    }

    #[test]
    fn warnings_are_told_from_other_log_lines() {
        assert!(is_warning("2026-11-28T09:50:22Z  WARN out of file descriptors (...)"));
        assert!(is_warning("2026-11-28T09:50:22Z ERROR accept failed"));
        assert!(is_warning("2026/11/28 09:50:22 [warn] 12#12: worker_connections are not enough"));
        assert!(is_warning("2026-11-28T09:50:22Z  INFO select cannot watch descriptor 1024 >= FD_SETSIZE (1024)"));
        assert!(!is_warning("2026-11-28T09:50:22Z  INFO listening on http://127.0.0.1:8080"));
    }

    #[test]
    fn counters_are_read_from_the_metrics_text() {
        let text = "# HELP duet_requests_total Requests.\nduet_requests_total 10\nduet_syscalls_total 25\n\
                    duet_wakeups_total 4\nduet_events_total 12\nduet_syscalls_per_request 2.5\n";
        assert_eq!(parse_counters(text), Ok(Counters { requests: 10, syscalls: 25, wakeups: 4, events: 12 }));
        assert_eq!(parse_counters("duet_requests_total 1\n"), Err("duet_syscalls_total"));
    }

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
