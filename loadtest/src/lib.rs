//! duet-loadtest: the load generator behind `duet load`.
//!
//! A client only: it does not depend on the engine crates. Each thread runs its own
//! edge-triggered epoll loop over its share of the connections (spread evenly, the
//! remainder included), with pre-rendered request bytes and a framer that finds the end
//! of every response (Content-Length, chunked, close-delimited). Latencies go into one
//! HdrHistogram per thread, in microseconds, merged at the end.
//!
//! Closed loop (the default) sends the next batch of `depth` pipelined requests when the
//! last is answered. Open loop (`rate`) sends at fixed intended times and measures
//! latency from those times, so a server stall shows up in the percentiles instead of
//! silently slowing the client down (coordinated omission, as wrk2 corrects it); a
//! second histogram keeps the same responses timed from their actual send (wrk2 -U).
//!
//! The measured window lasts `duration`, or with `requests` (`-n`) until that many
//! requests have been sent and answered: threads claim tickets in small chunks from one
//! shared counter, so the hot path touches it about once per chunk. The report prints
//! as wrk's text or as JSON (serde) carrying the serialized histograms, which
//! [`Report::merge`] adds up exactly across runs.
//!
//! Errors are typed ([`LoadError`], [`MergeError`], [`compare::CompareError`]) and name
//! settings in this crate's terms ([`Setting`], "connections must be at least 1"), never
//! a command line's flags: `duet` words each one with the flag that sets it.

#![warn(missing_docs)]

pub mod compare;
mod error;
mod framer;
mod paths;
mod procstat;
mod progress;
pub use progress::GroupProgress;
mod report;
mod stats;
mod sys;
mod url;
mod worker;

pub use error::{HeaderProblem, LoadError, MergeError, Need, OutOfRange, Setting};
pub use framer::{FrameError, Framer, Progress};
pub use paths::{check_path, parse_paths, PathOrder, PathProblem, PathsError};
pub use report::{decode_histogram, encode_histogram, format_duration, Report, ServerUsage};
pub use stats::{latency_histogram, Errors, Stats, StatusCounts};
pub use url::{Target, UrlError};

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};
use worker::{Live, Plan, Share, Shared, Times};

/// File descriptors kept back for stdio, epoll instances and the like.
const SPARE_FDS: u64 = 64;
/// Ephemeral ports when the range cannot be read (Linux's default, 32768-60999).
const DEFAULT_EPHEMERAL_PORTS: usize = 28_232;
/// Most 127.0.0.x source addresses used (127.0.0.1 to 127.0.0.254).
const MAX_SOURCES: usize = 254;

/// Everything `duet load` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    /// The URL every request goes to (`http://host:port/path`).
    pub url: String,
    /// Connections kept open, spread over the threads.
    pub connections: usize,
    /// Client threads, each with its own epoll loop.
    pub threads: usize,
    /// Length of the measured window, unless `requests` is set.
    pub duration: Duration,
    /// `-n`: the measured window ends once this many requests have been sent and
    /// answered (or have failed), instead of after `duration`.
    pub requests: Option<u64>,
    /// A connect, or a request with no progress, for this long counts as a timeout
    /// (the connection is reopened); also the connect check's limit.
    pub timeout: Duration,
    /// Extra request header lines, `Name: value`.
    pub headers: Vec<String>,
    /// The request method.
    pub method: String,
    /// Paths to spread the requests over (origin form: `/a.html`, `/b?x=1`) in place of the
    /// URL's path; empty: the URL's path only.
    pub paths: Vec<String>,
    /// How each request picks one of `paths`.
    pub path_order: PathOrder,
    /// Keep each connection open for the next request (HTTP/1.1's default). Off: every
    /// request says `Connection: close` and goes on a new connection, opened when the last
    /// response arrives (as `hey -disable-keepalive`, `oha --disable-keepalive` and `ab`
    /// without `-k` do); [`Stats::connects`] counts them.
    pub keepalive: bool,
    /// The request body, with a Content-Length added unless `headers` has one.
    pub body: Option<Vec<u8>>,
    /// Requests pipelined per connection.
    pub depth: usize,
    /// Open loop at this many requests per second in total.
    pub rate: Option<f64>,
    /// Extra connections that make one request and then stay idle.
    pub idle: usize,
    /// Load before the measured window that is not counted.
    pub warmup: Duration,
    /// The server's process, sampled for CPU and memory during the window.
    pub server_pid: Option<u32>,
    /// Draw a live progress bar on stderr while running (when stderr is a terminal).
    pub progress: bool,
    /// Write the live counts to stderr instead, as `progress WINDOW REQUESTS ERRORS` lines
    /// every 100 ms (WINDOW 1 once the measured window is open), for a parent process
    /// that draws one bar over several ([`GroupProgress`]).
    pub progress_lines: bool,
    /// Stop the run at the first connection the server closes, resets or refuses (or
    /// that cannot connect), instead of reconnecting it: for a caller that needs the
    /// server to hold every connection, and counts [`Report::lost`] as a failure.
    pub stop_on_loss: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: String::new(),
            connections: 10,
            threads: 2,
            duration: Duration::from_secs(10),
            requests: None,
            timeout: Duration::from_secs(2),
            headers: Vec::new(),
            method: "GET".into(),
            paths: Vec::new(),
            path_order: PathOrder::RoundRobin,
            keepalive: true,
            body: None,
            depth: 1,
            rate: None,
            idle: 0,
            warmup: Duration::ZERO,
            server_pid: None,
            progress: false,
            progress_lines: false,
            stop_on_loss: false,
        }
    }
}

/// A checked configuration, ready to run.
#[derive(Debug)]
pub struct Prepared {
    config: Config,
    target: Target,
    addr: SocketAddr,
    request: Vec<u8>,
    /// With `paths`: the request of each path, in their order (empty: only `request`).
    by_path: Vec<Vec<u8>>,
    /// Source addresses the connections are spread over (empty: the kernel's choice).
    sources: Vec<IpAddr>,
}

impl Prepared {
    /// Where the requests go.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The configuration it was prepared from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// wrk's opening lines.
    pub fn header_text(&self) -> String {
        let c = &self.config;
        let length = match c.requests {
            Some(n) => format!("{n} requests"),
            None => report::format_duration(c.duration),
        };
        let mut s =
            format!("Running {length} test @ {}\n  {} threads and {} connections", c.url, c.threads, c.connections);
        if c.idle > 0 {
            s.push_str(&format!(" (+{} idle)", c.idle));
        }
        if c.depth > 1 {
            s.push_str(&format!(", depth {}", c.depth));
        }
        if let Some(r) = c.rate {
            s.push_str(&format!(", {r} requests/s open loop"));
        }
        if !c.keepalive {
            s.push_str(", a new connection per request");
        }
        if !c.paths.is_empty() {
            let order = match c.path_order {
                PathOrder::RoundRobin => "in turn".to_string(),
                PathOrder::Random(seed) => format!("at random (seed {seed})"),
            };
            s.push_str(&format!(", {} paths {order}", c.paths.len()));
        }
        if let (Some(first), Some(last)) = (self.sources.first(), self.sources.last()) {
            s.push_str(&format!(", from {first} to {last}"));
        }
        s.push('\n');
        s
    }
}

impl Prepared {
    /// Makes this run process `index` of `processes` running side by side towards the
    /// same target with `total` connections (and idle ones) among them: when the total
    /// needs several loopback sources (see `sources_for`), each process takes its own
    /// of them (at least one each), so that no source address carries more than its
    /// third of the ephemeral ports across the processes.
    pub fn share_sources(&mut self, index: usize, processes: usize, total: usize) {
        let ports = sys::ephemeral_ports().map_or(DEFAULT_EPHEMERAL_PORTS, |(low, high)| usize::from(high - low) + 1);
        let all = sources_for(self.addr, total, ports);
        if all.is_empty() || processes <= 1 {
            return;
        }
        let count = all.len().max(processes).min(MAX_SOURCES);
        self.sources = (0..count)
            .filter(|k| k % processes == index % processes)
            .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, (k + 1) as u8)))
            .collect();
    }
}

/// The source addresses for `connections` to `addr`. The kernel picks a connection's
/// source port by walking the ephemeral range from an offset and checking each port for
/// the 4-tuple; once about half the range is in use towards one destination, every
/// connect walks thousands of ports (quadratic set-up: seconds for 15,000 connections).
/// To a loopback IPv4 target, connections are therefore spread round-robin over
/// 127.0.0.1, 127.0.0.2, ... with at most a third of the range each; elsewhere (and for
/// fewer connections) the kernel chooses.
fn sources_for(addr: SocketAddr, connections: usize, ephemeral_ports: usize) -> Vec<IpAddr> {
    let per_source = (ephemeral_ports / 3).max(1);
    let needed = connections.div_ceil(per_source);
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() && needed > 1 => {
            (1..=needed.min(MAX_SOURCES) as u8).map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))).collect()
        }
        _ => Vec::new(),
    }
}

/// Checks the configuration, raises RLIMIT_NOFILE, resolves the host and makes sure a
/// server is listening. Each error's Display is one line.
pub fn prepare(mut config: Config) -> Result<Prepared, LoadError> {
    let target = Target::parse(&config.url).map_err(LoadError::Url)?;
    let out_of_range = |setting, need| Err(LoadError::OutOfRange(OutOfRange::new(setting, need)));
    if config.connections == 0 {
        return out_of_range(Setting::Connections, Need::AtLeastOne);
    }
    if config.threads == 0 {
        return out_of_range(Setting::Threads, Need::AtLeastOne);
    }
    if config.depth == 0 {
        return out_of_range(Setting::Depth, Need::AtLeastOne);
    }
    if config.duration.is_zero() && config.requests.is_none() {
        return out_of_range(Setting::Duration, Need::MoreThanZero);
    }
    if config.requests == Some(0) {
        return out_of_range(Setting::Requests, Need::AtLeastOne);
    }
    if config.timeout.is_zero() {
        return out_of_range(Setting::Timeout, Need::MoreThanZero);
    }
    if let Some(r) = config.rate {
        if !(r.is_finite() && r > 0.0) {
            return out_of_range(Setting::Rate, Need::PositiveRate);
        }
    }
    if !config.keepalive {
        if config.depth > 1 {
            return Err(LoadError::NeedsKeepAlive(Setting::Depth));
        }
        if config.idle > 0 {
            return Err(LoadError::NeedsKeepAlive(Setting::Idle));
        }
    }
    for path in &config.paths {
        check_path(path).map_err(|problem| LoadError::BadPath { path: path.clone(), problem })?;
    }
    config.threads = config.threads.min(config.connections);
    config.method = config.method.to_ascii_uppercase();
    if config.method.is_empty() || !config.method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_') {
        return Err(LoadError::BadMethod(config.method));
    }

    let needed = (config.connections + config.idle) as u64 + SPARE_FDS + config.threads as u64;
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    if needed > limit {
        return Err(LoadError::TooFewFiles { connections: config.connections, idle: config.idle, needed, limit });
    }

    if let Some(pid) = config.server_pid {
        procstat::sample(pid, sys::clock_ticks_per_sec()).map_err(|why| LoadError::ServerProcess { pid, why })?;
    }

    let request = render_request(&config, &target, &target.path)?;
    let by_path = config.paths.iter().map(|path| render_request(&config, &target, path)).collect::<Result<_, _>>()?;
    let addr = connect_check(&target, config.timeout).map_err(LoadError::Connect)?;
    let ports = sys::ephemeral_ports().map_or(DEFAULT_EPHEMERAL_PORTS, |(low, high)| usize::from(high - low) + 1);
    let sources = sources_for(addr, config.connections + config.idle, ports);
    Ok(Prepared { config, target, addr, request, by_path, sources })
}

/// Resolves the host and opens (and closes) one connection, so that a server that is
/// not there is one clear error instead of a run full of connect errors.
fn connect_check(target: &Target, timeout: Duration) -> Result<SocketAddr, String> {
    let authority = target.authority();
    let addrs: Vec<SocketAddr> =
        authority.to_socket_addrs().map_err(|e| format!("cannot resolve {}: {e}", target.host))?.collect();
    let mut last_err = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(_) => return Ok(*addr),
            Err(e) => last_err = Some((addr, e)),
        }
    }
    match last_err {
        Some((addr, e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(format!("cannot connect to {addr}: connection refused (is the server running on that port?)"))
        }
        Some((addr, e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            Err(format!("cannot connect to {addr}: timed out after {:?}", timeout))
        }
        Some((addr, e)) => Err(format!("cannot connect to {addr}: {e}")),
        None => Err(format!("cannot resolve {}: no addresses", target.host)),
    }
}

/// The bytes of one request for `path` (the target's, or one of `--paths`).
fn render_request(config: &Config, target: &Target, path: &str) -> Result<Vec<u8>, LoadError> {
    let mut head = format!("{} {path} HTTP/1.1\r\n", config.method);
    let has = |name: &str| {
        config.headers.iter().any(|h| h.split_once(':').is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name)))
    };
    if !has("host") {
        head.push_str(&format!("Host: {}\r\n", target.host_header()));
    }
    for h in &config.headers {
        let bad = |problem| Err(LoadError::BadHeader { header: h.clone(), problem });
        let Some((name, value)) = h.split_once(':') else {
            return bad(HeaderProblem::NoColon);
        };
        let name = name.trim();
        if name.is_empty() || name.bytes().any(|b| !(b.is_ascii_graphic()) || b == b':') {
            return bad(HeaderProblem::BadName);
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n') {
            return bad(HeaderProblem::LineBreak);
        }
        head.push_str(&format!("{name}: {}\r\n", value.trim()));
    }
    if !config.keepalive && !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    if let Some(body) = &config.body {
        if !has("content-length") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    if let Some(body) = &config.body {
        request.extend_from_slice(body);
    }
    Ok(request)
}

/// The edges of the measured window, as the main thread crosses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Every connection is set up (the idle ones opened and answered once); the load
    /// starts when the callback returns (so a caller can hold processes side by side
    /// until all of them are set up).
    SetUp,
    /// The window opens (after the warm-up), just after the server's first CPU sample.
    WindowStart,
    /// The window closes, just before the server's last CPU sample.
    WindowEnd,
}

/// Runs the load and returns the merged measurements. `Err` is a fatal condition (such
/// as a server that does not speak HTTP), as one line.
pub fn run(prepared: Prepared) -> Result<Report, LoadError> {
    run_marked(prepared, &mut |_| {})
}

/// [`run`], calling `on_mark` at the edges of the measured window (from the calling
/// thread), so that a caller can read the server's own counters over the same window.
/// An aborted run still calls both.
pub fn run_marked(prepared: Prepared, on_mark: &mut dyn FnMut(Mark)) -> Result<Report, LoadError> {
    let Prepared { config, target, addr, request, by_path, sources } = prepared;
    let threads = config.threads;
    let plan = Plan {
        addr,
        batch: request.repeat(config.depth),
        request_len: request.len(),
        depth: config.depth,
        head_request: config.method == "HEAD",
        by_path,
        path_order: config.path_order,
        keepalive: config.keepalive,
        timeout: config.timeout,
        interval: config.rate.map(|r| Duration::from_secs_f64(config.connections as f64 / r)),
        total_connections: config.connections,
        stop_on_loss: config.stop_on_loss,
        sources,
        ticket_chunk: ticket_chunk(config.requests.unwrap_or(0), config.connections),
    };
    let (finished, finished_rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        plan,
        tickets: config.requests.map(AtomicU64::new),
        finished,
        times: OnceLock::new(),
        ready: Barrier::new(threads + 1),
        go: Barrier::new(threads + 1),
        abort: Default::default(),
        fatal: Mutex::new(None),
        live: (0..threads).map(|_| Live::default()).collect(),
    });

    let mut handles = Vec::with_capacity(threads);
    let (mut first_active, mut first_idle) = (0, config.connections);
    for t in 0..threads {
        let share = Share {
            thread: t,
            first_active,
            first_idle,
            active: even_share(config.connections, threads, t),
            idle: even_share(config.idle, threads, t),
        };
        first_active += share.active;
        first_idle += share.idle;
        let shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name(format!("duet-load-{t}"))
            .spawn(move || worker::run(shared, share))
            .map_err(|e| LoadError::Run(format!("cannot start a load thread: {e}")))?;
        handles.push(handle);
    }

    shared.ready.wait();
    on_mark(Mark::SetUp);
    let start = Instant::now();
    // Under -n the window ends when the threads are done; the end is only a backstop.
    let window = if config.requests.is_some() { Duration::from_secs(86_400 * 365) } else { config.duration };
    let times = Times { start, measure_start: start + config.warmup, end: start + config.warmup + window };
    let _ = shared.times.set(times);
    shared.go.wait();

    let ticks = sys::clock_ticks_per_sec();
    let mut progress = progress::Progress::new(config.progress, &config, start);
    sleep_until(times.measure_start, &shared, &mut progress);
    // The window the threads measure opens at `times.measure_start` (they switch there),
    // not when this thread wakes: an open-loop schedule starts from it, so a window read
    // from a late wake-up would be shorter than the schedule it holds.
    let measure_start = times.measure_start;
    progress.window_opens(measure_start);
    let first = config.server_pid.and_then(|pid| procstat::sample(pid, ticks).ok());
    on_mark(Mark::WindowStart);
    let mut rss_peak = first.map_or(0, |s| s.rss_bytes);
    let mut server_gone = false;
    let mut finished = 0;
    loop {
        let now = Instant::now();
        if now >= times.end || finished == threads || shared.abort.load(Ordering::Relaxed) {
            break;
        }
        // A thread that is done (under -n, or one that failed) wakes this at once, so
        // the window closes when the last request does.
        match finished_rx.recv_timeout((times.end - now).min(Duration::from_millis(100))) {
            Ok(_) => finished += 1,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(pid) = config.server_pid {
            match procstat::sample(pid, ticks) {
                Ok(s) => rss_peak = rss_peak.max(s.rss_bytes),
                Err(_) => server_gone = true,
            }
        }
        progress.update(&shared);
    }
    on_mark(Mark::WindowEnd);
    let last = config.server_pid.and_then(|pid| procstat::sample(pid, ticks).ok());
    let measured = measure_start.elapsed();
    drop(progress);

    let mut stats = Stats::new();
    let mut idle_held = 0;
    let mut lost = 0;
    for h in handles {
        match h.join() {
            Ok(outcome) => {
                stats.merge(&outcome.stats);
                idle_held += outcome.idle_held;
                lost += outcome.lost;
            }
            Err(_) => return Err(LoadError::Run("a load thread panicked".into())),
        }
    }
    if let Some(msg) = shared.fatal.lock().ok().and_then(|mut m| m.take()) {
        return Err(LoadError::Run(msg));
    }
    let server = match (first, last) {
        (Some(a), Some(b)) => {
            let cpu_s = (b.cpu_s - a.cpu_s).max(0.0);
            Some(ServerUsage {
                cpu_s,
                cpu_us_per_req: if stats.requests > 0 { cpu_s * 1e6 / stats.requests as f64 } else { f64::NAN },
                rss_peak_bytes: rss_peak.max(b.rss_bytes),
                rss_hwm_bytes: b.hwm_bytes,
            })
        }
        _ => None,
    };
    Ok(Report {
        config,
        target,
        stats,
        duration: measured,
        server,
        server_went_away: server_gone,
        idle_held,
        lost,
        runs: 1,
    })
}

/// `-n`: how many tickets a thread claims at a time. Large enough that the shared
/// counter is touched about once per many requests, small enough that with a small
/// `-n` every thread still gets its part.
fn ticket_chunk(requests: u64, connections: usize) -> u64 {
    (requests / (connections as u64 * 4).max(1)).clamp(1, 64)
}

/// Share `t` of `total` spread over `parts`: the remainder goes to the first ones.
fn even_share(total: usize, parts: usize, t: usize) -> usize {
    total / parts + usize::from(t < total % parts)
}

fn sleep_until(when: Instant, shared: &Shared, progress: &mut progress::Progress) {
    loop {
        let now = Instant::now();
        if now >= when || shared.abort.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep((when - now).min(Duration::from_millis(100)));
        progress.update(shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A server on 127.0.0.1 that hands each accepted connection (and its peer address)
    /// to `handle` on its own thread; it lives until the test process ends.
    fn test_server(handle: fn(TcpStream, SocketAddr)) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            while let Ok((stream, peer)) = listener.accept() {
                std::thread::spawn(move || handle(stream, peer));
            }
        });
        url
    }

    /// Answers every request head with an empty 200, and closes at EOF.
    fn answer(mut stream: TcpStream) {
        let mut buf = [0u8; 4096];
        let mut pending = Vec::new();
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                pending.drain(..end + 4);
                if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").is_err() {
                    return;
                }
            }
        }
    }

    fn quick(url: String) -> Config {
        Config { url, connections: 1, threads: 1, duration: Duration::from_millis(300), ..Config::default() }
    }

    #[test]
    fn a_lost_connection_stops_the_run_when_asked() {
        // The server reads the request, then closes without answering: every connection is lost.
        let url = test_server(|mut stream, _| {
            let _ = stream.read(&mut [0u8; 1024]);
        });
        let report = run(prepare(Config { stop_on_loss: true, ..quick(url.clone()) }).unwrap()).unwrap();
        assert_eq!(report.lost, 1, "the first loss ends the run");
        assert_eq!(report.stats.requests, 0);
        // Without it the connection is reopened and lost again and again.
        let report = run(prepare(quick(url)).unwrap()).unwrap();
        assert!(report.lost > 1, "{}", report.lost);
    }

    #[test]
    fn a_request_count_ends_the_run_after_exactly_that_many_responses() {
        let url = test_server(|stream, _| answer(stream));
        let counted = |rate, warmup| Config {
            connections: 5,
            threads: 2,
            requests: Some(1003),
            rate,
            warmup,
            ..quick(url.clone())
        };
        for (rate, warmup) in
            [(None, Duration::ZERO), (Some(5000.0), Duration::ZERO), (None, Duration::from_millis(200))]
        {
            let report = run(prepare(counted(rate, warmup)).unwrap()).unwrap();
            assert_eq!(report.stats.requests, 1003, "rate {rate:?}, warm-up {warmup:?}");
            assert_eq!(report.stats.status.class(200), 1003, "warm-up responses are not counted");
            assert_eq!(report.stats.latency.len(), 1003);
            assert_eq!(report.stats.uncorrected.len(), if rate.is_some() { 1003 } else { 0 });
            assert!(!report.stats.rate_samples.is_empty(), "a short window still has a Req/Sec figure");
        }
    }

    #[test]
    fn a_request_count_ends_even_when_the_server_goes_away() {
        // Accepts two connections, answers one request on each, then stops listening:
        // reconnects are refused, and each refused connect uses up one of the count.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            // The connection check of prepare, then the run's two.
            let _ = listener.accept();
            for _ in 0..2 {
                if let Ok((mut stream, _)) = listener.accept() {
                    std::thread::spawn(move || {
                        let _ = stream.read(&mut [0u8; 1024]);
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
                    });
                }
            }
        });
        let config = Config { connections: 2, requests: Some(50), ..quick(url) };
        let prepared = prepare(config).unwrap();
        // A watchdog, so that a regression fails here instead of hanging the suite.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(run(prepared));
        });
        let report = rx.recv_timeout(Duration::from_secs(60)).expect("the count ends the run").unwrap();
        assert!(report.stats.requests <= 2, "{:?}", report.stats);
        // Each attempt that failed (a refused connect, or a read cut short when the
        // server went away) used one of the count too.
        assert!(report.stats.requests + report.stats.errors.socket_total() >= 50, "{:?}", report.stats);
    }

    #[test]
    fn connections_bind_the_chosen_source_addresses() {
        static PEERS: Mutex<Vec<IpAddr>> = Mutex::new(Vec::new());
        let url = test_server(|stream, peer| {
            PEERS.lock().unwrap().push(peer.ip());
            answer(stream);
        });
        let mut prepared = prepare(Config { connections: 4, ..quick(url) }).unwrap();
        let sources: Vec<IpAddr> = vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()];
        prepared.sources = sources.clone();
        let report = run(prepared).unwrap();
        assert!(report.stats.requests > 0 && report.lost == 0, "{:?}", report.stats);
        // prepare's connection check comes from the kernel's choice, 127.0.0.1; the four
        // connections of the run take the two sources in turn.
        let peers = PEERS.lock().unwrap().clone();
        assert_eq!(peers.len(), 5, "{peers:?}");
        assert_eq!(peers.iter().filter(|p| **p == IpAddr::from([127, 0, 0, 1])).count(), 1, "{peers:?}");
        for source in &sources {
            assert_eq!(peers.iter().filter(|p| *p == source).count(), 2, "round-robin: {peers:?}");
        }
    }

    #[test]
    fn connections_are_spread_with_the_remainder() {
        let shares: Vec<usize> = (0..3).map(|t| even_share(10, 3, t)).collect();
        assert_eq!(shares, [4, 3, 3]);
        assert_eq!((0..4).map(|t| even_share(2, 4, t)).sum::<usize>(), 2);
    }

    #[test]
    fn many_loopback_connections_are_spread_over_source_addresses() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(sources_for(local, 9_000, 28_232).is_empty(), "a third of the range fits one address");
        let spread = sources_for(local, 19_000, 28_232);
        let want: Vec<IpAddr> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(spread, want);
        assert_eq!(sources_for(local, 100_000, 28_232).len(), 11);
        assert_eq!(sources_for(local, 10_000_000, 28_232).len(), MAX_SOURCES);
        assert!(sources_for("10.0.0.1:80".parse().unwrap(), 100_000, 28_232).is_empty());
        assert!(sources_for("[::1]:80".parse().unwrap(), 100_000, 28_232).is_empty());
    }

    #[test]
    fn requests_are_rendered_once_and_well_formed() {
        let target = Target::parse("http://127.0.0.1:8080/x?y").unwrap();
        let config = Config {
            headers: vec!["Accept: */*".into()],
            method: "POST".into(),
            body: Some(b"abc".to_vec()),
            ..Config::default()
        };
        let r = render_request(&config, &target, &target.path).unwrap();
        assert_eq!(
            r,
            b"POST /x?y HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\nContent-Length: 3\r\n\r\nabc".to_vec()
        );
        let config = Config { headers: vec!["host: example".into()], ..Config::default() };
        let r = render_request(&config, &target, &target.path).unwrap();
        assert_eq!(r, b"GET /x?y HTTP/1.1\r\nhost: example\r\n\r\n".to_vec());
        let config = Config { headers: vec!["no colon".into()], ..Config::default() };
        assert!(render_request(&config, &target, &target.path).is_err());
    }
}
