//! `duet compare`: the same load against each engine, interleaved round by round.
//!
//! Each engine runs as its own `duet serve` child pinned to the server CPUs; the load
//! (this process's threads, or wrk, which inherits our affinity) runs on the load CPUs.
//! For every round, every scenario runs against every engine in turn (A B A B ...), so
//! drift of the machine hits all engines alike, and the figures reported are medians
//! over the rounds. Server CPU comes from /proc/PID/stat over the measured window.

mod charts;
mod output;
mod server;
pub mod wrk;

pub use server::{allowed_cpus, default_split, parse_cpu_list, parse_listening, split_command};

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The body size served by the built-in `/` (`Hello, World!`).
pub const DEFAULT_BODY: u64 = 13;

/// Which program generates the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadWith {
    Duet,
    Wrk,
}

impl LoadWith {
    pub fn name(self) -> &'static str {
        match self {
            LoadWith::Duet => "duet",
            LoadWith::Wrk => "wrk",
        }
    }
}

/// Everything `duet compare` was asked to do.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    /// The `duet` binary whose `serve` is compared.
    pub duet_exe: PathBuf,
    pub engines: Vec<String>,
    pub server_cpus: Vec<usize>,
    pub load_cpus: Vec<usize>,
    pub connections: Vec<usize>,
    pub depths: Vec<usize>,
    pub body_sizes: Vec<u64>,
    pub idle: Vec<usize>,
    pub rounds: usize,
    pub duration: Duration,
    pub load_with: LoadWith,
    /// Other servers run alongside the engines (`--peer`, `--floors`).
    pub peers: Vec<Peer>,
    /// A progress line on stderr (only when it is a terminal).
    pub progress: bool,
}

impl CompareConfig {
    /// The engines, then the peers: every column of the comparison.
    pub fn servers(&self) -> Vec<String> {
        self.engines.iter().cloned().chain(self.peers.iter().map(|p| p.name.clone())).collect()
    }
}

/// A server that is not `duet serve`, compared alongside the engines (`--peer`, `--floors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Where it listens on 127.0.0.1; it is ready once this port accepts.
    pub port: u16,
    /// It answers only the 13-byte `Hello, World!` (the floors): it runs in the
    /// scenarios with that body size only.
    pub fixed_body: bool,
}

impl Peer {
    /// `NAME=CMD@PORT`, CMD split like a shell would (quotes and backslashes, no expansions).
    pub fn parse(spec: &str) -> Result<Peer, String> {
        let bad = |why: &str| format!("--peer '{spec}': {why} (expected NAME=CMD@PORT)");
        let (name, rest) = spec.split_once('=').ok_or_else(|| bad("no '='"))?;
        let name = name.trim();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(bad("the name must be a word"));
        }
        let (cmd, port) = rest.rsplit_once('@').ok_or_else(|| bad("no '@PORT'"))?;
        let port: u16 = port.trim().parse().ok().filter(|&p| p > 0).ok_or_else(|| bad("bad port"))?;
        let argv = split_command(cmd).map_err(|e| bad(&e))?;
        if argv.is_empty() {
            return Err(bad("no command"));
        }
        Ok(Peer { name: name.to_string(), argv, port, fixed_body: false })
    }

    /// The Rust floor responders for `engines` (`floor-epoll`, `floor-uring`), built as
    /// examples next to `exe` (`target/<profile>/examples/floor_<engine>`).
    pub fn floors(exe: &std::path::Path, engines: &[String]) -> Result<Vec<Peer>, String> {
        let dir = exe.parent().ok_or("cannot locate the duet binary's directory")?.join("examples");
        let mut peers = Vec::new();
        for engine in engines.iter().filter(|e| matches!(e.as_str(), "epoll" | "uring")) {
            let bin = dir.join(format!("floor_{engine}"));
            if !bin.is_file() {
                return Err(format!(
                    "--floors: {} is missing; build the floors with: cargo build --release --workspace --examples",
                    bin.display()
                ));
            }
            let port = server::free_port()?;
            peers.push(Peer {
                name: format!("floor-{engine}"),
                argv: vec![bin.display().to_string(), port.to_string()],
                port,
                fixed_body: true,
            });
        }
        Ok(peers)
    }
}

/// One cell of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    pub connections: usize,
    pub depth: usize,
    pub body_size: u64,
    pub idle: usize,
}

impl Scenario {
    fn path(&self) -> String {
        if self.body_size == DEFAULT_BODY {
            "/".into()
        } else {
            format!("/payload-{}", self.body_size)
        }
    }

    pub fn label(&self) -> String {
        let mut s = format!("c={} d={} {}", self.connections, self.depth, output::bytes(self.body_size as f64));
        if self.idle > 0 {
            s.push_str(&format!(" +{} idle", self.idle));
        }
        s
    }
}

/// What one run (or the median of several) measured against one engine.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Server utime + stime per request, in microseconds.
    pub cpu_us_per_req: f64,
    /// Server CPU time over the window's wall time (1.0 = one CPU busy).
    pub cpu_util: f64,
    /// Largest server RSS seen during the window.
    pub rss_peak_bytes: f64,
    /// System calls per request answered, from duet's counters over the run (NaN for peers).
    pub syscalls_per_req: f64,
    /// Latency percentiles are NaN where the load generator did not report them (wrk with
    /// pipelining); JSON shows them as null and the table as n/a.
    /// Socket errors plus non-2xx/3xx responses (summed over rounds in a median).
    pub errors: u64,
}

/// The figures that are compared as ratios, with their JSON names.
/// Reads one figure.
pub type Getter = fn(&Figures) -> f64;

pub const FIGURES: [(&str, Getter); 8] = [
    ("requests_per_sec", |f| f.requests_per_sec),
    ("latency_p50_us", |f| f.p50_us),
    ("latency_p99_us", |f| f.p99_us),
    ("latency_p999_us", |f| f.p999_us),
    ("cpu_us_per_req", |f| f.cpu_us_per_req),
    ("cpu_util", |f| f.cpu_util),
    ("rss_peak_bytes", |f| f.rss_peak_bytes),
    ("syscalls_per_req", |f| f.syscalls_per_req),
];

/// The median of the finite values; NaN (not reported) when there are none.
fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Figures {
    /// The median of each figure on its own; errors are summed.
    pub fn median_of(rounds: &[Figures]) -> Figures {
        let m = |get: fn(&Figures) -> f64| median(rounds.iter().map(get).collect());
        Figures {
            requests_per_sec: m(|f| f.requests_per_sec),
            p50_us: m(|f| f.p50_us),
            p99_us: m(|f| f.p99_us),
            p999_us: m(|f| f.p999_us),
            cpu_us_per_req: m(|f| f.cpu_us_per_req),
            cpu_util: m(|f| f.cpu_util),
            rss_peak_bytes: m(|f| f.rss_peak_bytes),
            syscalls_per_req: m(|f| f.syscalls_per_req),
            errors: rounds.iter().map(|f| f.errors).sum(),
        }
    }
}

/// One engine in one scenario.
#[derive(Debug, Clone)]
pub struct EngineResult {
    pub engine: String,
    pub rounds: Vec<Figures>,
    pub median: Figures,
}

/// One scenario, every engine.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub engines: Vec<EngineResult>,
}

impl ScenarioResult {
    pub fn engine(&self, name: &str) -> Option<&EngineResult> {
        self.engines.iter().find(|e| e.engine == name)
    }

    /// uring / epoll for each figure, when both engines ran (None where epoll's is 0).
    pub fn ratios(&self) -> Option<Vec<(&'static str, Option<f64>)>> {
        let (u, e) = (self.engine("uring")?, self.engine("epoll")?);
        Some(
            FIGURES
                .iter()
                .map(|(name, get)| {
                    let (a, b) = (get(&u.median), get(&e.median));
                    (*name, if b > 0.0 && a.is_finite() && b.is_finite() { Some(a / b) } else { None })
                })
                .collect(),
        )
    }
}

/// A whole comparison.
#[derive(Debug, Clone)]
pub struct Results {
    pub config: CompareConfig,
    pub scenarios: Vec<ScenarioResult>,
}

impl Results {
    pub fn markdown(&self) -> String {
        output::markdown(self)
    }

    pub fn json(&self) -> String {
        output::json(self)
    }

    /// Writes requests_per_sec.svg, cpu_us_per_req.svg and latency.svg into `dir`.
    pub fn write_charts(&self, dir: &std::path::Path) -> Result<Vec<PathBuf>, String> {
        charts::write(self, dir)
    }
}

/// Temporary payload files and wrk scripts, removed at the end.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the comparison. Errors are one line for the user.
pub fn run(config: CompareConfig) -> Result<Results, String> {
    if config.engines.is_empty() {
        return Err("--engines needs at least one engine".into());
    }
    for list in [&config.connections, &config.depths] {
        if list.is_empty() || list.contains(&0) {
            return Err("--connections and --depth need values of at least 1".into());
        }
    }
    if config.body_sizes.is_empty() || config.idle.is_empty() {
        return Err("--body-size and --idle need at least one value".into());
    }
    let names = config.servers();
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(format!("'{name}' is named twice among the engines and peers"));
        }
    }
    if config.peers.iter().any(|p| p.fixed_body) && !config.body_sizes.contains(&DEFAULT_BODY) {
        return Err(format!("the floors answer only the {DEFAULT_BODY}-byte body: add --body-size {DEFAULT_BODY}"));
    }
    if config.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    if config.duration.is_zero() {
        return Err("--duration must be more than 0".into());
    }
    if config.load_with == LoadWith::Wrk {
        if config.idle.iter().any(|&i| i > 0) {
            return Err("--idle needs --load-with duet (wrk cannot hold idle connections)".into());
        }
        if !wrk::available() {
            return Err("wrk is not installed: install it (apt-get install wrk) or use --load-with duet".into());
        }
    }

    let mut scenarios = Vec::new();
    for &body_size in &config.body_sizes {
        for &idle in &config.idle {
            for &connections in &config.connections {
                for &depth in &config.depths {
                    scenarios.push(Scenario { connections, depth, body_size, idle });
                }
            }
        }
    }

    let tmp = TempDir(std::env::temp_dir().join(format!("duet-compare-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0).map_err(|e| format!("cannot create {}: {e}", tmp.0.display()))?;
    let mut routes = Vec::new();
    let mut sizes: Vec<u64> = config.body_sizes.iter().copied().filter(|&s| s != DEFAULT_BODY).collect();
    sizes.sort_unstable();
    sizes.dedup();
    if !sizes.is_empty() {
        // Any --route replaces the built-in site, so keep `/` answering as it does by default.
        routes.push("/=Hello, World!".to_string());
    }
    for size in sizes {
        let path = tmp.0.join(format!("payload-{size}.bin"));
        std::fs::write(&path, vec![b'x'; size as usize])
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        routes.push(format!("/payload-{size}=@{}", path.display()));
    }
    let mut scripts = Vec::new();
    if config.load_with == LoadWith::Wrk {
        for &d in &config.depths {
            scripts.push((d, wrk::write_script(&tmp.0, d)?));
        }
    }

    let mut servers = Vec::new();
    for engine in &config.engines {
        let s =
            server::Server::start(&config.duet_exe, engine, config.server_cpus.len(), &config.server_cpus, &routes)?;
        servers.push(s);
    }
    for peer in &config.peers {
        servers.push(server::Server::start_peer(
            &peer.name,
            &peer.argv,
            peer.port,
            &config.server_cpus,
            peer.fixed_body,
        )?);
    }
    // Load threads (and wrk) inherit this thread's affinity.
    server::pin_current_thread(&config.load_cpus)?;

    let mut rounds: Vec<Vec<Vec<Figures>>> = vec![vec![Vec::new(); servers.len()]; scenarios.len()];
    let runs_per_round = scenarios
        .iter()
        .map(|sc| servers.iter().filter(|s| !s.fixed_body || sc.body_size == DEFAULT_BODY).count())
        .sum();
    let mut progress =
        Progress::new(config.progress && std::io::stderr().is_terminal(), &config, scenarios.len(), runs_per_round);
    for round in 0..config.rounds {
        for (si, scenario) in scenarios.iter().enumerate() {
            for (ei, server) in servers.iter_mut().enumerate() {
                if server.fixed_body && scenario.body_size != DEFAULT_BODY {
                    continue;
                }
                progress.show(round, si, scenario, &server.engine);
                let before = if server.metrics { Some(server.counters()?) } else { None };
                let url = format!("http://{}{}", server.addr, scenario.path());
                let figures = match config.load_with {
                    LoadWith::Duet => measure_duet(&url, scenario, &config, server.pid()),
                    LoadWith::Wrk => {
                        let script = &scripts.iter().find(|(d, _)| *d == scenario.depth).ok_or("no wrk script")?.1;
                        wrk::measure(&url, scenario, config.load_cpus.len(), config.duration, script, server.pid())
                    }
                };
                server.check_alive()?;
                let mut figures = figures.map_err(|e| format!("{} ({}): {e}", server.engine, scenario.label()))?;
                figures.syscalls_per_req = match before {
                    Some((syscalls, requests)) => {
                        let (syscalls_after, requests_after) = server.counters()?;
                        let requests = requests_after.saturating_sub(requests);
                        if requests > 0 {
                            syscalls_after.saturating_sub(syscalls) as f64 / requests as f64
                        } else {
                            f64::NAN
                        }
                    }
                    None => f64::NAN,
                };
                rounds[si][ei].push(figures);
                progress.done();
            }
        }
    }
    progress.clear();
    drop(servers);

    let scenarios = scenarios
        .into_iter()
        .zip(rounds)
        .map(|(scenario, per_engine)| ScenarioResult {
            scenario,
            engines: names
                .iter()
                .zip(per_engine)
                .filter(|(_, rounds)| !rounds.is_empty())
                .map(|(engine, rounds)| EngineResult {
                    engine: engine.clone(),
                    median: Figures::median_of(&rounds),
                    rounds,
                })
                .collect(),
        })
        .collect();
    Ok(Results { config, scenarios })
}

fn measure_duet(url: &str, scenario: &Scenario, config: &CompareConfig, pid: u32) -> Result<Figures, String> {
    let load = crate::Config {
        url: url.to_string(),
        connections: scenario.connections,
        threads: config.load_cpus.len(),
        duration: config.duration,
        depth: scenario.depth,
        idle: scenario.idle,
        server_pid: Some(pid),
        timeout: Duration::from_secs(5),
        progress: false,
        ..crate::Config::default()
    };
    let report = crate::run(crate::prepare(load)?)?;
    let server = report.server.ok_or("the server's CPU could not be sampled")?;
    let percentile = |p: f64| {
        if report.stats.latency.is_empty() {
            0.0
        } else {
            report.stats.latency.value_at_quantile(p / 100.0) as f64
        }
    };
    Ok(Figures {
        requests_per_sec: report.requests_per_sec(),
        p50_us: percentile(50.0),
        p99_us: percentile(99.0),
        p999_us: percentile(99.9),
        cpu_us_per_req: server.cpu_us_per_req,
        cpu_util: server.cpu_s / report.duration.as_secs_f64().max(1e-9),
        rss_peak_bytes: server.rss_peak_bytes as f64,
        syscalls_per_req: f64::NAN,
        errors: report.stats.errors.socket_total() + report.stats.errors.status,
    })
}

/// The progress line on stderr: scenario, round, engine and the time left.
struct Progress {
    enabled: bool,
    total_runs: usize,
    done_runs: usize,
    scenarios: usize,
    rounds: usize,
    run_time: Duration,
    start: Instant,
}

impl Progress {
    fn new(enabled: bool, config: &CompareConfig, scenarios: usize, runs_per_round: usize) -> Progress {
        Progress {
            enabled,
            total_runs: runs_per_round * config.rounds,
            done_runs: 0,
            scenarios,
            rounds: config.rounds,
            run_time: config.duration,
            start: Instant::now(),
        }
    }

    fn show(&self, round: usize, scenario_index: usize, scenario: &Scenario, engine: &str) {
        if !self.enabled {
            return;
        }
        let per_run = if self.done_runs > 0 { self.start.elapsed() / self.done_runs as u32 } else { self.run_time };
        let left = per_run * (self.total_runs - self.done_runs) as u32;
        let width = 20;
        let filled = width * self.done_runs / self.total_runs.max(1);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K[{}{}] round {}/{} scenario {}/{} ({}) {engine}, ~{}s left",
            "#".repeat(filled),
            "-".repeat(width - filled),
            round + 1,
            self.rounds,
            scenario_index + 1,
            self.scenarios,
            scenario.label(),
            left.as_secs()
        );
        let _ = err.flush();
    }

    fn done(&mut self) {
        self.done_runs += 1;
    }

    fn clear(&self) {
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(rps: f64, errors: u64) -> Figures {
        Figures { requests_per_sec: rps, p50_us: rps / 10.0, errors, ..Figures::default() }
    }

    #[test]
    fn medians_are_per_figure_and_errors_add_up() {
        let m = Figures::median_of(&[fig(3.0, 1), fig(1.0, 0), fig(2.0, 2)]);
        assert_eq!(m.requests_per_sec, 2.0);
        assert_eq!(m.errors, 3);
        assert_eq!(Figures::median_of(&[fig(1.0, 0), fig(2.0, 0)]).requests_per_sec, 1.5);
        assert_eq!(Figures::median_of(&[fig(f64::NAN, 0), fig(2.0, 0)]).requests_per_sec, 2.0);
        assert!(Figures::median_of(&[fig(f64::NAN, 0)]).requests_per_sec.is_nan());
    }

    #[test]
    fn ratios_are_uring_over_epoll() {
        let s = Scenario { connections: 1, depth: 1, body_size: 13, idle: 0 };
        let r = ScenarioResult {
            scenario: s,
            engines: vec![
                EngineResult { engine: "epoll".into(), rounds: vec![], median: fig(100.0, 0) },
                EngineResult { engine: "uring".into(), rounds: vec![], median: fig(150.0, 0) },
            ],
        };
        let ratios = r.ratios().unwrap();
        assert_eq!(ratios[0], ("requests_per_sec", Some(1.5)));
        assert_eq!(ratios[4], ("cpu_us_per_req", None));
        assert!(ScenarioResult { scenario: s, engines: vec![] }.ratios().is_none());
    }

    #[test]
    fn peers_parse_from_name_command_and_port() {
        let p = Peer::parse("nginx=nginx -c /b/nginx.conf -g 'master_process off;'@18083").unwrap();
        assert_eq!(p.name, "nginx");
        assert_eq!(p.argv, ["nginx", "-c", "/b/nginx.conf", "-g", "master_process off;"]);
        assert_eq!(p.port, 18083);
        assert!(!p.fixed_body);
        // The last '@' separates the port, so the command may contain one.
        assert_eq!(Peer::parse("x=srv --at a@b@80").unwrap().argv, ["srv", "--at", "a@b"]);
        for bad in ["nginx", "nginx=nginx", "=nginx@80", "n=nginx@0", "n=nginx@http", "n=@80", "n='x@80"] {
            assert!(Peer::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_floors_say_how_to_build_them() {
        let e = Peer::floors(std::path::Path::new("/nonexistent/duet"), &["epoll".into()]).unwrap_err();
        assert!(e.contains("cargo build --release --workspace --examples"), "{e}");
        assert!(Peer::floors(std::path::Path::new("/nonexistent/duet"), &["other".into()]).unwrap().is_empty());
    }
}
