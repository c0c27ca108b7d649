//! `duet compare`: the same load against each engine, interleaved round by round.
//!
//! Each engine runs as its own `duet serve` child pinned to the server CPUs; the load
//! (this process's threads, or wrk, which inherits our affinity) runs on the load CPUs.
//! For every round, every scenario runs against every engine in turn (A B A B ...), so
//! drift of the machine hits all engines alike, and the figures reported are medians
//! over the rounds. Server CPU comes from /proc/PID/stat over the measured window.
//!
//! With an active share (`--active`, the ladder), each connection count is a total: that
//! share sends (open loop with a rate) and the rest stay open and idle, and a server must
//! hold them all: a run in which it closes, resets or refuses any connection is reported
//! as a failure with its reason (`FD_SETSIZE` for select), not as figures over the
//! connections it kept. An engine that cannot start is such a failure too: a row with its
//! reason, never the end of the whole comparison.

mod charts;
mod error;
pub mod netns;
mod output;
mod paired;
pub mod plan;
mod run_info;
mod server;
pub mod wrk;

pub use error::{CompareError, PeerProblem, ShareError, BUILD_FLOORS};
pub use paired::RatioSpec;
pub use run_info::RunInfo;
pub use server::{allowed_cpus, default_split, parse_cpu_list, parse_listening};

use crate::{Need, OutOfRange, Setting};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The body size served by the built-in `/` (`Hello, World!`).
pub const DEFAULT_BODY: u64 = 13;

/// Which program generates the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadWith {
    /// duet's own load generator, in this process.
    Duet,
    /// wrk, run as a child process.
    Wrk,
}

impl LoadWith {
    /// The name `--load-with` takes.
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
    /// The engines compared, by `--engine` name.
    pub engines: Vec<String>,
    /// CPUs the servers are pinned to.
    pub server_cpus: Vec<usize>,
    /// CPUs the load runs on.
    pub load_cpus: Vec<usize>,
    /// Connection counts of the matrix.
    pub connections: Vec<usize>,
    /// Pipelining depths of the matrix.
    pub depths: Vec<usize>,
    /// Response body sizes of the matrix, in bytes.
    pub body_sizes: Vec<u64>,
    /// Idle connection counts of the matrix.
    pub idle: Vec<usize>,
    /// Rounds: every scenario runs this many times against every server, interleaved.
    pub rounds: usize,
    /// Length of each measured run.
    pub duration: Duration,
    /// The load generator.
    pub load_with: LoadWith,
    /// Other servers run alongside the engines (`--peer`, `--floors`).
    pub peers: Vec<Peer>,
    /// A progress line on stderr (only when it is a terminal).
    pub progress: bool,
    /// `Some(share)`: each of `connections` is a total, of which this share (at least one
    /// connection) is active and the rest idle; `idle` must then be `[0]`. The server must
    /// hold every connection, or the run is a failure.
    pub active: Option<f64>,
    /// Open loop at this many requests per second in total over the active connections,
    /// latency measured from the intended send times (duet's load generator only).
    pub rate: Option<f64>,
    /// Load before each measured window, not measured (duet's load generator only).
    pub warmup: Duration,
    /// The file-serving rows (`--files`): the bodies are files of one generated
    /// directory that every engine serves with `--dir` (so each is streamed or cached as
    /// `serve` decides, not held as a route), and nginx serves the same directory with
    /// `sendfile on` as a peer when it is installed.
    pub files: bool,
    /// Paths each run's requests are spread over in turn, in place of the scenario's
    /// (duet's load generator only; see [`crate::Config::paths`]); empty: the scenario's.
    pub paths: Vec<String>,
    /// `Some`: the servers run in one network namespace and the load in another, joined
    /// by a veth pair (`--netns`; the namespaces are made and removed by the caller).
    pub network: Option<netns::NetPath>,
    /// `--ratio A/B`: CPU per request of A over B, paired round by round.
    pub ratios: Vec<RatioSpec>,
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
    /// Its name in the results.
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
    pub fn parse(spec: &str) -> Result<Peer, CompareError> {
        let bad = |problem| CompareError::Peer { spec: spec.to_string(), problem };
        let (name, rest) = spec.split_once('=').ok_or_else(|| bad(PeerProblem::NoEquals))?;
        let name = name.trim();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(bad(PeerProblem::NameNotWord));
        }
        let (cmd, port) = rest.rsplit_once('@').ok_or_else(|| bad(PeerProblem::NoPort))?;
        let port: u16 = port.trim().parse().ok().filter(|&p| p > 0).ok_or_else(|| bad(PeerProblem::BadPort))?;
        let argv = shell_words::split(cmd)
            .map_err(|e| bad(PeerProblem::Split { command: cmd.to_string(), why: e.to_string() }))?;
        if argv.is_empty() {
            return Err(bad(PeerProblem::NoCommand));
        }
        Ok(Peer { name: name.to_string(), argv, port, fixed_body: false })
    }

    /// The Rust floor responders for `engines` (`floor-epoll`, `floor-uring`), built as
    /// examples next to `exe` (`target/<profile>/examples/floor_<engine>`).
    pub fn floors(exe: &std::path::Path, engines: &[String]) -> Result<Vec<Peer>, CompareError> {
        let dir = exe
            .parent()
            .ok_or_else(|| CompareError::Setup("cannot locate the duet binary's directory".into()))?
            .join("examples");
        let mut peers = Vec::new();
        for engine in engines.iter().filter(|e| matches!(e.as_str(), "epoll" | "uring")) {
            let bin = dir.join(format!("floor_{engine}"));
            if !bin.is_file() {
                return Err(CompareError::FloorMissing(bin));
            }
            let port = server::free_port().map_err(CompareError::Setup)?;
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
    /// Active connections (they send requests).
    pub connections: usize,
    /// Requests pipelined per connection.
    pub depth: usize,
    /// Response body size, in bytes.
    pub body_size: u64,
    /// Idle connections, each opened and answered once before the load starts.
    pub idle: usize,
}

/// `share` if it is an active share: above 0 and at most 1 (100 %). The one check of it,
/// for the command line's parser and for [`run`].
pub fn active_share(share: f64) -> Result<f64, ShareError> {
    if share > 0.0 && share <= 1.0 {
        Ok(share)
    } else {
        Err(ShareError(share))
    }
}

/// The active connections among `total` for an active `share`: rounded, at least one.
pub fn active_of(total: usize, share: f64) -> usize {
    ((total as f64 * share).round() as usize).clamp(1, total.max(1))
}

impl Scenario {
    /// Active and idle connections together.
    pub fn total(&self) -> usize {
        self.connections + self.idle
    }

    fn path(&self) -> String {
        if self.body_size == DEFAULT_BODY {
            "/".into()
        } else {
            format!("/payload-{}", self.body_size)
        }
    }

    /// A short label for tables and logs (`c=16 d=1 13 B`).
    pub fn label(&self) -> String {
        let mut s = format!("c={} d={} {}", self.connections, self.depth, output::bytes(self.body_size as f64));
        if self.idle > 0 {
            s.push_str(&format!(" +{} idle", self.idle));
        }
        s
    }
}

/// What one run (or the median of several) measured against one engine.
///
/// Latency percentiles are NaN where the load generator did not report them (wrk with
/// pipelining); JSON shows them as null and the table as n/a.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// Requests answered per second.
    pub requests_per_sec: f64,
    /// Mean latency.
    pub mean_us: f64,
    /// Median latency.
    pub p50_us: f64,
    /// 99th percentile latency.
    pub p99_us: f64,
    /// 99.9th percentile latency.
    pub p999_us: f64,
    /// Server utime + stime per request, in microseconds.
    pub cpu_us_per_req: f64,
    /// Server CPU time over the window's wall time (1.0 = one CPU busy).
    pub cpu_util: f64,
    /// Largest server RSS seen during the window.
    pub rss_peak_bytes: f64,
    /// System calls per request answered, from duet's counters over the measured window
    /// (NaN for peers).
    pub syscalls_per_req: f64,
    /// Events (readiness events or completions) handled per wakeup, from duet's counters
    /// over the measured window (NaN for peers).
    pub events_per_wakeup: f64,
    /// Socket errors plus non-2xx/3xx responses (summed over rounds in a median).
    pub errors: u64,
}

impl Figures {
    /// The figures of one load run: its latency, rate and errors, and the server's CPU
    /// and memory as the load sampled them (a cell fails without those). The engine's own
    /// counters (syscalls, events per wake-up) are left NaN for the caller to fill in.
    fn of_load(report: &crate::Report) -> Result<Figures, Cell> {
        let usage = report
            .server
            .ok_or_else(|| Cell::Failed(Failure::new("no CPU figures", "the server's CPU could not be sampled")))?;
        // No response, no latency: NaN (reported as n/a and null), never 0.
        let percentile = |p: f64| report.percentile(p).map_or(f64::NAN, |us| us as f64);
        Ok(Figures {
            requests_per_sec: report.requests_per_sec(),
            mean_us: crate::report::mean(&report.stats.latency).unwrap_or(f64::NAN),
            p50_us: percentile(50.0),
            p99_us: percentile(99.0),
            p999_us: percentile(99.9),
            cpu_us_per_req: usage.cpu_us_per_req,
            cpu_util: usage.cpu_s / report.duration.as_secs_f64().max(1e-9),
            rss_peak_bytes: usage.rss_peak_bytes as f64,
            syscalls_per_req: f64::NAN,
            events_per_wakeup: f64::NAN,
            errors: report.stats.errors.socket_total() + report.stats.errors.status,
        })
    }
}

/// Reads one figure.
pub type Getter = fn(&Figures) -> f64;

/// The figures that are compared as ratios, with their JSON names.
pub const FIGURES: [(&str, Getter); 10] = [
    ("requests_per_sec", |f| f.requests_per_sec),
    ("latency_mean_us", |f| f.mean_us),
    ("latency_p50_us", |f| f.p50_us),
    ("latency_p99_us", |f| f.p99_us),
    ("latency_p999_us", |f| f.p999_us),
    ("cpu_us_per_req", |f| f.cpu_us_per_req),
    ("cpu_util", |f| f.cpu_util),
    ("rss_peak_bytes", |f| f.rss_peak_bytes),
    ("syscalls_per_req", |f| f.syscalls_per_req),
    ("events_per_wakeup", |f| f.events_per_wakeup),
];

/// The median of the finite values; NaN (not reported) when there are none.
fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    median_of_sorted(&v)
}

/// The median of `v`, sorted ascending; NaN when it is empty.
fn median_of_sorted(v: &[f64]) -> f64 {
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
            mean_us: m(|f| f.mean_us),
            p50_us: m(|f| f.p50_us),
            p99_us: m(|f| f.p99_us),
            p999_us: m(|f| f.p999_us),
            cpu_us_per_req: m(|f| f.cpu_us_per_req),
            cpu_util: m(|f| f.cpu_util),
            rss_peak_bytes: m(|f| f.rss_peak_bytes),
            syscalls_per_req: m(|f| f.syscalls_per_req),
            events_per_wakeup: m(|f| f.events_per_wakeup),
            errors: rounds.iter().map(|f| f.errors).sum(),
        }
    }
}

/// Why an engine has no figures in a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A few words for the table, e.g. `FD_SETSIZE` or `did not start`.
    pub reason: String,
    /// The whole story, for the notes under the table and the JSON.
    pub detail: String,
}

impl Failure {
    fn new(reason: &str, detail: impl Into<String>) -> Failure {
        Failure { reason: reason.to_string(), detail: detail.into() }
    }
}

/// The reason for the table when a server lost connections, from what it logged
/// meanwhile, and the line that says so (the first warning when none names a cause).
pub fn loss_reason(warnings: &[String]) -> (&'static str, Option<&str>) {
    let find = |needles: &[&str]| warnings.iter().find(|w| needles.iter().any(|n| w.contains(n)));
    if let Some(line) = find(&["FD_SETSIZE"]) {
        ("FD_SETSIZE", Some(line))
    } else if let Some(line) = find(&["out of file descriptors", "Too many open files"]) {
        ("out of descriptors", Some(line))
    } else {
        ("lost connections", warnings.first().map(String::as_str))
    }
}

/// One engine in one scenario: its figures, or why it has none.
#[derive(Debug, Clone)]
pub struct EngineResult {
    /// The engine (or peer) name.
    pub engine: String,
    /// The rounds measured (none when it failed).
    pub rounds: Vec<Figures>,
    /// The median over the rounds.
    pub median: Figures,
    /// Why it has no figures, if it failed.
    pub failed: Option<Failure>,
}

/// One scenario, every engine.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// The scenario.
    pub scenario: Scenario,
    /// Processes on each side: 1, or the size of the process groups its connections
    /// needed (`duet serve --processes N` against `duet load --processes N`).
    pub processes: u64,
    /// Each engine's (and peer's) result, in the configured order.
    pub engines: Vec<EngineResult>,
}

impl ScenarioResult {
    /// The result of engine (or peer) `name`.
    pub fn engine(&self, name: &str) -> Option<&EngineResult> {
        self.engines.iter().find(|e| e.engine == name)
    }

    /// The median figures of `name`, when it ran and did not fail.
    pub fn figures(&self, name: &str) -> Option<&Figures> {
        self.engine(name).filter(|e| e.failed.is_none()).map(|e| &e.median)
    }

    /// uring / epoll for each figure, when both engines ran (None where epoll's is 0).
    pub fn ratios(&self) -> Option<Vec<(&'static str, Option<f64>)>> {
        let (u, e) = (self.figures("uring")?, self.figures("epoll")?);
        Some(
            FIGURES
                .iter()
                .map(|(name, get)| {
                    let (a, b) = (get(u), get(e));
                    (*name, if b > 0.0 && a.is_finite() && b.is_finite() { Some(a / b) } else { None })
                })
                .collect(),
        )
    }
}

/// A whole comparison.
#[derive(Debug, Clone)]
pub struct Results {
    /// What the comparison was asked to do.
    pub config: CompareConfig,
    /// The machine, the build and the command line.
    pub run: RunInfo,
    /// Every scenario, in matrix order.
    pub scenarios: Vec<ScenarioResult>,
}

impl Results {
    /// The results as Markdown tables.
    pub fn markdown(&self) -> String {
        output::markdown(self)
    }

    /// The results as JSON.
    pub fn json(&self) -> String {
        output::json(self)
    }

    /// Reads what [`Results::json`] wrote back, for drawing its charts again: the figures as
    /// measured, the configuration as far as the charts need it.
    pub fn from_json(name: &str, text: &str) -> Result<Results, String> {
        output::from_json(name, text)
    }

    /// Writes requests_per_sec.svg, cpu_us_per_req.svg and latency.svg into `dir`, and
    /// with an active share and several connection counts cpu_by_connections.svg.
    pub fn write_charts(&self, dir: &std::path::Path) -> Result<Vec<PathBuf>, String> {
        charts::write(self, dir)
    }
}

/// Runs the comparison. Each error's Display is one line; an engine that fails (does
/// not start, exits, or cannot hold the connections) is a result, not an error.
pub fn run(mut config: CompareConfig) -> Result<Results, CompareError> {
    // The date is when the comparison started.
    let run = RunInfo::collect();
    if config.engines.is_empty() {
        return Err(CompareError::NoEngines);
    }
    for list in [&config.connections, &config.depths] {
        if list.is_empty() || list.contains(&0) {
            return Err(CompareError::ZeroConnectionsOrDepth);
        }
    }
    if config.body_sizes.is_empty() || config.idle.is_empty() {
        return Err(CompareError::NoBodySizesOrIdle);
    }
    let names = config.servers();
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(CompareError::NamedTwice(name.clone()));
        }
    }
    if config.peers.iter().any(|p| p.fixed_body) && !config.body_sizes.contains(&DEFAULT_BODY) {
        return Err(CompareError::FloorsNeedDefaultBody);
    }
    if config.rounds == 0 {
        return Err(OutOfRange::new(Setting::Rounds, Need::AtLeastOne).into());
    }
    if config.duration.is_zero() {
        return Err(OutOfRange::new(Setting::Duration, Need::MoreThanZero).into());
    }
    if let Some(share) = config.active {
        active_share(share).map_err(CompareError::Active)?;
        if config.idle.iter().any(|&i| i > 0) {
            return Err(CompareError::ActiveWithIdle);
        }
    }
    if let Some(r) = config.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(OutOfRange::new(Setting::Rate, Need::PositiveRate).into());
        }
    }
    if config.load_with == LoadWith::Wrk {
        if config.idle.iter().any(|&i| i > 0) {
            return Err(CompareError::NeedsDuetLoad(Setting::Idle));
        }
        if config.active.is_some() {
            return Err(CompareError::NeedsDuetLoad(Setting::Active));
        }
        if config.rate.is_some() {
            return Err(CompareError::NeedsDuetLoad(Setting::Rate));
        }
        if !config.warmup.is_zero() {
            return Err(CompareError::NeedsDuetLoad(Setting::Warmup));
        }
        if !config.paths.is_empty() {
            return Err(CompareError::NeedsDuetLoad(Setting::Paths));
        }
        if !wrk::available() {
            return Err(CompareError::WrkMissing);
        }
    }

    let mut scenarios = Vec::new();
    for &body_size in &config.body_sizes {
        for &idle in &config.idle {
            for &connections in &config.connections {
                for &depth in &config.depths {
                    let scenario = match config.active {
                        Some(share) => {
                            let active = active_of(connections, share);
                            Scenario { connections: active, depth, body_size, idle: connections - active }
                        }
                        None => Scenario { connections, depth, body_size, idle },
                    };
                    scenarios.push(scenario);
                }
            }
        }
    }
    // How many processes each side of each scenario needs (one, until the connections
    // pass one process's descriptor limit: then a process group on each side).
    // A scenario that cannot fit at all is a failed cell when others can run (the
    // ladder's 100,000 on a small machine), the error when none can.
    let one_each = plan::Plan { server_processes: 1, load_processes: 1 };
    let planned: Vec<Result<plan::Plan, String>> = match config.load_with {
        LoadWith::Duet => {
            let mut limits = plan::Limits::here();
            if config.network.is_some() {
                limits.sources = 1;
            }
            scenarios.iter().map(|s| plan_scenario(s.total(), config.load_cpus.len(), limits)).collect()
        }
        LoadWith::Wrk => vec![Ok(one_each); scenarios.len()],
    };
    if let Some(Err(why)) = planned.iter().find(|p| p.is_err()).filter(|_| planned.iter().all(Result::is_err)) {
        return Err(CompareError::Setup(why.clone()));
    }
    let plans: Vec<plan::Plan> = planned.iter().map(|p| *p.as_ref().unwrap_or(&one_each)).collect();
    let cannot_fit: Vec<Option<Failure>> =
        planned.into_iter().map(|p| p.err().map(|why| Failure::new("cannot fit here", why))).collect();

    // Payload files and wrk scripts, removed at the end.
    let tmp = tempfile::Builder::new().prefix("duet-compare-").tempdir().map_err(|e| {
        CompareError::Setup(format!("cannot create a temporary directory in {}: {e}", std::env::temp_dir().display()))
    })?;
    let mut routes = Vec::new();
    let mut sizes: Vec<u64> = config.body_sizes.iter().copied().filter(|&s| s != DEFAULT_BODY).collect();
    sizes.sort_unstable();
    sizes.dedup();
    // With `files`, one directory of payload-N files served with --dir; else routes.
    let files_dir = tmp.path().join("files");
    let dir = config.files.then_some(files_dir.as_path());
    if !sizes.is_empty() {
        // Any --route replaces the built-in site, so keep `/` answering as it does by default.
        routes.push("/=Hello, World!".to_string());
    }
    if dir.is_some() {
        std::fs::create_dir_all(&files_dir)
            .map_err(|e| CompareError::Setup(format!("cannot create {}: {e}", files_dir.display())))?;
    }
    for size in sizes {
        let path = match dir {
            Some(dir) => dir.join(format!("payload-{size}")),
            None => tmp.path().join(format!("payload-{size}.bin")),
        };
        std::fs::write(&path, vec![b'x'; size as usize])
            .map_err(|e| CompareError::Setup(format!("cannot write {}: {e}", path.display())))?;
        if dir.is_none() {
            routes.push(format!("/payload-{size}=@{}", path.display()));
        }
    }
    if let Some(dir) = dir {
        if let Some(nginx) = server::nginx_files_peer(tmp.path(), dir).map_err(CompareError::Setup)? {
            if !config.servers().contains(&nginx.name) {
                config.peers.push(nginx);
            }
        }
    }
    let names = config.servers();
    let mut scripts = Vec::new();
    if config.load_with == LoadWith::Wrk {
        for &d in &config.depths {
            scripts.push((d, wrk::write_script(tmp.path(), d).map_err(CompareError::Setup)?));
        }
    }

    let mut bind = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut server_ns = None;
    if let Some(net) = &config.network {
        if !config.peers.is_empty() {
            return Err(CompareError::Setup("peers cannot be run in a network namespace: leave them out".into()));
        }
        let open = |path: &std::path::Path| {
            std::fs::File::open(path).map_err(|e| CompareError::Setup(format!("cannot open {}: {e}", path.display())))
        };
        server_ns = Some(open(&net.server_ns)?);
        // The load threads (and wrk, and the counters' reads) are born in this thread's
        // namespace, so the only path to the servers is the veth pair.
        crate::sys::enter_netns(&open(&net.load_ns)?)
            .map_err(|e| CompareError::Setup(format!("cannot enter {}: {e}", net.load_ns.display())))?;
        bind = std::net::IpAddr::V4(netns::SERVER_ADDR);
    }
    // One server per engine and process count the plans need (select never as a group:
    // see `group_skip`); the peers run as their command says, once each.
    let mut group_sizes: Vec<u64> =
        plans.iter().zip(&cannot_fit).filter(|(_, c)| c.is_none()).map(|(p, _)| p.server_processes).collect();
    group_sizes.sort_unstable();
    group_sizes.dedup();
    let mut contenders = Vec::new();
    for (column, engine) in config.engines.iter().enumerate() {
        for &processes in &group_sizes {
            if group_skip(engine, false, processes).is_some() {
                continue;
            }
            let ns = match &server_ns {
                Some(file) => {
                    Some(file.try_clone().map_err(|e| CompareError::Setup(format!("cannot dup a descriptor: {e}")))?)
                }
                None => None,
            };
            let server = server::Server::start(
                &config.duet_exe,
                engine,
                config.server_cpus.len(),
                &config.server_cpus,
                server::Content { routes: &routes, dir },
                server::Place { bind, netns: ns, processes },
            );
            contenders.push(Contender::new(engine, column, processes, server));
        }
    }
    for (i, peer) in config.peers.iter().enumerate() {
        let server = server::Server::start_peer(&peer.name, &peer.argv, peer.port, &config.server_cpus);
        contenders.push(Contender::new(&peer.name, config.engines.len() + i, 0, server));
    }
    // Load threads (and wrk) inherit this thread's affinity.
    server::pin_current_thread(&config.load_cpus).map_err(CompareError::Setup)?;

    let columns = names.len();
    let fixed_body =
        |column: usize| column >= config.engines.len() && config.peers[column - config.engines.len()].fixed_body;
    let mut rounds: Vec<Vec<Vec<Figures>>> = vec![vec![Vec::new(); columns]; scenarios.len()];
    let mut failed: Vec<Vec<Option<Failure>>> = vec![vec![None; columns]; scenarios.len()];
    // Cells that lost connections, classified once their server's log is complete:
    // (scenario, column, contender, the server's warnings from, to).
    let mut losses: Vec<(usize, usize, usize, usize, Option<usize>)> = Vec::new();
    let runs_per_round = scenarios
        .iter()
        .map(|sc| (0..columns).filter(|&c| !fixed_body(c) || sc.body_size == DEFAULT_BODY).count())
        .sum();
    let mut progress =
        Progress::new(config.progress && std::io::stderr().is_terminal(), &config, scenarios.len(), runs_per_round);
    for round in 0..config.rounds {
        for (si, scenario) in scenarios.iter().enumerate() {
            let group = plans[si];
            for (ei, name) in names.iter().enumerate() {
                if fixed_body(ei) && scenario.body_size != DEFAULT_BODY {
                    continue;
                }
                if let Some(why) = &cannot_fit[si] {
                    failed[si][ei].get_or_insert_with(|| why.clone());
                    progress.done();
                    continue;
                }
                if let Some(why) = group_skip(name, fixed_body(ei), group.server_processes) {
                    failed[si][ei].get_or_insert(why);
                    progress.done();
                    continue;
                }
                let Some(ci) = contenders
                    .iter()
                    .position(|c| c.column == ei && (c.processes == 0 || c.processes == group.server_processes))
                else {
                    return Err(CompareError::Setup(format!(
                        "no {name} server was started for {} processes",
                        group.server_processes
                    )));
                };
                let contender = &mut contenders[ci];
                let server = match &mut contender.server {
                    Ok(server) if failed[si][ei].is_none() => server,
                    Ok(_) => {
                        progress.done();
                        continue;
                    }
                    Err(why) => {
                        failed[si][ei] = Some(why.clone());
                        progress.done();
                        continue;
                    }
                };
                progress.show(round, si, scenario, &contender.name);
                let warnings_from = server.warnings_logged();
                // The previous loss on this server ends where this run starts.
                for loss in losses.iter_mut().filter(|l| l.2 == ci && l.4.is_none()) {
                    loss.4 = Some(warnings_from);
                }
                let url = format!("http://{}{}", server.addr, scenario.path());
                let outcome = match config.load_with {
                    LoadWith::Duet if group.load_processes > 1 => {
                        measure_duet_group(&url, scenario, &config, server, group.load_processes, tmp.path())
                    }
                    LoadWith::Duet => measure_duet(&url, scenario, &config, server),
                    LoadWith::Wrk => {
                        let script = &scripts
                            .iter()
                            .find(|(d, _)| *d == scenario.depth)
                            .ok_or_else(|| CompareError::Setup("no wrk script".into()))?
                            .1;
                        measure_wrk(&url, scenario, &config, script, server)
                    }
                };
                let exited = server.check_alive().err();
                match (outcome, exited) {
                    (_, Some(why)) => {
                        let failure = Failure::new("server exited", why);
                        failed[si][ei] = Some(failure.clone());
                        contender.server = Err(failure);
                    }
                    (Ok(figures), None) => rounds[si][ei].push(figures),
                    (Err(Cell::Failed(failure)), None) => failed[si][ei] = Some(failure),
                    (Err(Cell::Lost(detail)), None) => {
                        failed[si][ei] = Some(Failure::new("lost connections", detail));
                        losses.push((si, ei, ci, warnings_from, None));
                    }
                }
                progress.done();
            }
        }
    }
    progress.clear();
    for contender in &mut contenders {
        if let Ok(server) = &mut contender.server {
            server.stop();
        }
    }
    for (si, ei, ci, from, to) in losses {
        if let (Ok(server), Some(failure)) = (&contenders[ci].server, &mut failed[si][ei]) {
            let warnings = server.warnings(from, to);
            let (reason, line) = loss_reason(&warnings);
            failure.reason = reason.to_string();
            if let Some(line) = line {
                failure.detail.push_str(&format!("; the server logged: {}", line.trim()));
            }
        }
    }
    for contender in &contenders {
        if let Err(why) = &contender.server {
            eprintln!("duet: warning: {}: {} (FAILED in the table)", contender.name, why.detail);
        }
    }
    drop(contenders);

    let scenarios = scenarios
        .into_iter()
        .zip(plans.iter().zip(rounds.into_iter().zip(failed)))
        .map(|(scenario, (plan, (per_engine, failures)))| ScenarioResult {
            scenario,
            processes: plan.server_processes.max(plan.load_processes),
            engines: names
                .iter()
                .zip(per_engine.into_iter().zip(failures))
                .filter(|(_, (rounds, failed))| !rounds.is_empty() || failed.is_some())
                .map(|(engine, (rounds, failed))| match failed {
                    Some(failure) => EngineResult {
                        engine: engine.clone(),
                        rounds: Vec::new(),
                        median: Figures::default(),
                        failed: Some(failure),
                    },
                    None => EngineResult {
                        engine: engine.clone(),
                        median: Figures::median_of(&rounds),
                        rounds,
                        failed: None,
                    },
                })
                .collect(),
        })
        .collect();
    Ok(Results { config, run, scenarios })
}

/// A server of the comparison: an engine (in one process, or a process group) or a
/// peer, running or failed for good.
struct Contender {
    name: String,
    /// Its column in the results (several servers of one engine share it, one per
    /// process count).
    column: usize,
    /// `duet serve --processes` (1: one process); 0 for a peer, which runs as given.
    processes: u64,
    server: Result<server::Server, Failure>,
}

impl Contender {
    fn new(name: &str, column: usize, processes: u64, server: Result<server::Server, String>) -> Contender {
        Contender {
            name: name.to_string(),
            column,
            processes,
            server: server.map_err(|e| Failure::new("did not start", e)),
        }
    }
}

/// Why server `name` does not run where the plan is a group of `processes`, if it does
/// not: select cannot watch a descriptor numbered FD_SETSIZE (1024) or above, so no
/// process of a group could hold its share; a floor is one process by design. Other
/// peers run as their command says (nginx: `worker_processes` and
/// `worker_rlimit_nofile`); one that cannot hold the connections fails as lost.
fn group_skip(name: &str, fixed_body: bool, processes: u64) -> Option<Failure> {
    if processes <= 1 {
        return None;
    }
    if name == "select" {
        return Some(Failure::new(
            "FD_SETSIZE",
            format!(
                "not run: these connections need a group of {processes} processes here, and select cannot watch \
                 descriptors of FD_SETSIZE (1024) or above in any of them"
            ),
        ));
    }
    if fixed_body {
        return Some(Failure::new(
            "one process only",
            format!("not run: the floors are one process, and these connections need {processes} here"),
        ));
    }
    None
}

/// Why a cell has no figures.
enum Cell {
    Failed(Failure),
    /// The server did not hold every connection (its reason comes from its log later).
    Lost(String),
}

/// File descriptors the load generator keeps for itself beyond one per connection.
const CLIENT_SPARE_FDS: usize = 64;

/// How `connections` are held: one load process and one server process each while
/// they fit one process's open-file limit (raised to the hard limit here), else a
/// process group on each side ([`plan::plan`]: the system-wide file table, the
/// ephemeral ports across the sources and the kernel memory are checked too). What
/// cannot fit at all is the error.
fn plan_scenario(connections: usize, threads: usize, limits: plan::Limits) -> Result<plan::Plan, String> {
    let plan = plan::plan(connections as u64, limits)?;
    // One load process keeps a few descriptors more than the plan's spare per process.
    let needed = (connections + CLIENT_SPARE_FDS + threads) as u64;
    if plan.load_processes == 1 && needed > limits.nofile {
        return Ok(plan::Plan { server_processes: 2, load_processes: 2 });
    }
    Ok(plan)
}

/// The figures of one run with duet's load generator, the server's counters read over
/// the measured window.
fn measure_duet(
    url: &str,
    scenario: &Scenario,
    config: &CompareConfig,
    server: &server::Server,
) -> Result<Figures, Cell> {
    let must_hold = config.active.is_some();
    let load = crate::Config {
        url: url.to_string(),
        connections: scenario.connections,
        threads: config.load_cpus.len(),
        duration: config.duration,
        depth: scenario.depth,
        idle: scenario.idle,
        rate: config.rate,
        warmup: config.warmup,
        server_pid: Some(server.pid()),
        timeout: Duration::from_secs(5),
        progress: false,
        stop_on_loss: must_hold,
        paths: config.paths.clone(),
        ..crate::Config::default()
    };
    let load_failed = |e: crate::LoadError| Cell::Failed(Failure::new("load failed", e.to_string()));
    let prepared = crate::prepare(load).map_err(load_failed)?;
    let (mut before, mut after) = (None, None);
    let report = crate::run_marked(prepared, &mut |mark| {
        if server.metrics {
            match mark {
                crate::Mark::SetUp => {}
                crate::Mark::WindowStart => before = server.counters().ok(),
                crate::Mark::WindowEnd => after = server.counters().ok(),
            }
        }
    })
    .map_err(load_failed)?;
    if report.server_went_away {
        eprintln!("duet: warning: the server process went away during the run; its figures cover less");
    }
    if must_hold && (report.lost > 0 || report.idle_held < scenario.idle) {
        return Err(Cell::Lost(format!(
            "{} connection(s) closed, reset or refused by the server (or not connected); {} of {} idle \
             connections held",
            report.lost, report.idle_held, scenario.idle
        )));
    }
    let mut figures = Figures::of_load(&report)?;
    if let (Some(a), Some(b)) = (before, after) {
        per_window(&mut figures, &a, &b);
    }
    Ok(figures)
}

/// The figures of one run with `duet load --processes N` (connections past one
/// process's descriptor limit): the generator as N child processes on the load CPUs,
/// their reports merged exactly. The server is sampled (its whole process tree) by the
/// first of them over its window; syscalls and events per wakeup are not reported,
/// since the generator's window is not marked to this process.
fn measure_duet_group(
    url: &str,
    scenario: &Scenario,
    config: &CompareConfig,
    server: &server::Server,
    processes: u64,
    tmp: &std::path::Path,
) -> Result<Figures, Cell> {
    let failed = |what: &str, why: String| Cell::Failed(Failure::new(what, why));
    let mut cmd = std::process::Command::new(&config.duet_exe);
    cmd.arg("load")
        .arg(url)
        .arg("--processes")
        .arg(processes.to_string())
        .arg("-c")
        .arg(scenario.connections.to_string())
        .arg("--idle")
        .arg(scenario.idle.to_string())
        .arg("-t")
        .arg(config.load_cpus.len().max(processes as usize).to_string())
        .arg("--depth")
        .arg(scenario.depth.to_string())
        .arg("-d")
        .arg(format!("{}ms", config.duration.as_millis().max(1)))
        .arg("--warmup")
        .arg(format!("{}ms", config.warmup.as_millis()))
        // Opening the connections of a group takes SYN retransmits (the accept queues
        // overflow): the set-up window is the longer of 10 s and this.
        .args(["--timeout", "30s", "--json"])
        .arg("--server-pid")
        .arg(server.pid().to_string())
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(rate) = config.rate {
        cmd.arg("-R").arg(rate.to_string());
    }
    if !config.paths.is_empty() {
        let file = tmp.join("paths.txt");
        std::fs::write(&file, config.paths.join("\n"))
            .map_err(|e| failed("load failed", format!("cannot write {}: {e}", file.display())))?;
        cmd.arg("--paths").arg(file);
    }
    crate::sys::pin_child_and_tie_to_parent(&mut cmd, &config.load_cpus).map_err(|e| failed("load failed", e))?;
    let out = cmd.output().map_err(|e| failed("load failed", format!("cannot start duet load: {e}")))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        return Err(failed("load failed", format!("duet load --processes {processes}: {line}")));
    }
    let report = crate::Report::from_json("duet load", &String::from_utf8_lossy(&out.stdout))
        .map_err(|e| failed("load failed", e))?;
    if report.lost > 0 || report.idle_held < scenario.idle {
        return Err(Cell::Lost(format!(
            "{} connection(s) closed, reset or refused by the server (or not connected); {} of {} idle \
             connections held (load in {processes} processes)",
            report.lost, report.idle_held, scenario.idle
        )));
    }
    Figures::of_load(&report)
}

/// Syscalls per request and events per wakeup from two readings of duet's counters (NaN
/// where the window saw no requests or no wakeups).
fn per_window(figures: &mut Figures, a: &server::Counters, b: &server::Counters) {
    let ratio = |num: u64, den: u64| if den > 0 { num as f64 / den as f64 } else { f64::NAN };
    let requests = b.requests.saturating_sub(a.requests);
    figures.syscalls_per_req = ratio(b.syscalls.saturating_sub(a.syscalls), requests);
    figures.events_per_wakeup = ratio(b.events.saturating_sub(a.events), b.wakeups.saturating_sub(a.wakeups));
}

/// The figures of one wrk run, the server's counters read around it.
fn measure_wrk(
    url: &str,
    scenario: &Scenario,
    config: &CompareConfig,
    script: &std::path::Path,
    server: &server::Server,
) -> Result<Figures, Cell> {
    let before = if server.metrics { server.counters().ok() } else { None };
    let mut figures = wrk::measure(url, scenario, config.load_cpus.len(), config.duration, script, server.pid())
        .map_err(|e| Cell::Failed(Failure::new("load failed", e)))?;
    let after = if server.metrics { server.counters().ok() } else { None };
    if let (Some(a), Some(b)) = (before, after) {
        per_window(&mut figures, &a, &b);
    }
    Ok(figures)
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

/// Results to test the tables and charts with.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    pub fn config(engines: &[&str], connections: &[usize], active: Option<f64>) -> CompareConfig {
        CompareConfig {
            duet_exe: "duet".into(),
            engines: engines.iter().map(|e| e.to_string()).collect(),
            server_cpus: vec![0],
            load_cpus: vec![1],
            connections: connections.to_vec(),
            depths: vec![1],
            body_sizes: vec![13],
            idle: vec![0],
            rounds: 1,
            duration: Duration::from_secs(1),
            load_with: LoadWith::Duet,
            peers: Vec::new(),
            progress: false,
            active,
            rate: Some(5000.0),
            warmup: Duration::from_secs(1),
            files: false,
            paths: Vec::new(),
            network: None,
            ratios: Vec::new(),
        }
    }

    pub fn run_info() -> RunInfo {
        RunInfo {
            kernel: "6.1.0-test".into(),
            cpu_model: "Test CPU @ 3.00GHz".into(),
            cpus: 2,
            version: "0.1.0".into(),
            commit: "abc1234".into(),
            date: "2026-11-28T13:00:00Z".into(),
            command: "duet compare --ladder --out 'my results'".into(),
        }
    }

    fn ok(engine: &str, mean_us: f64, p99_us: f64) -> EngineResult {
        let median = Figures { mean_us, p99_us, cpu_us_per_req: 12.5, requests_per_sec: 5000.0, ..Figures::default() };
        EngineResult { engine: engine.into(), rounds: vec![median], median, failed: None }
    }

    fn failed(engine: &str, reason: &str, detail: &str) -> EngineResult {
        EngineResult {
            engine: engine.into(),
            rounds: vec![],
            median: Figures::default(),
            failed: Some(Failure::new(reason, detail)),
        }
    }

    /// select holds 1,000 connections but not 10,000; poll never starts; epoll holds both.
    pub fn ladder() -> Results {
        let scenario =
            |total: usize| Scenario { connections: total / 10, depth: 1, body_size: 13, idle: total - total / 10 };
        let no_poll = "the poll server did not start: invalid value 'poll'";
        Results {
            config: config(&["select", "poll", "epoll"], &[1000, 10_000], Some(0.1)),
            run: run_info(),
            scenarios: vec![
                ScenarioResult {
                    scenario: scenario(1000),
                    processes: 1,
                    engines: vec![
                        ok("select", 15_200.0, 45_000.0),
                        failed("poll", "did not start", no_poll),
                        ok("epoll", 800.0, 2000.0),
                    ],
                },
                ScenarioResult {
                    scenario: scenario(10_000),
                    processes: 1,
                    engines: vec![
                        failed(
                            "select",
                            "FD_SETSIZE",
                            "9000 connections lost; the server logged: ... FD_SETSIZE (1024)",
                        ),
                        failed("poll", "did not start", no_poll),
                        ok("epoll", 1200.0, 4000.0),
                    ],
                },
            ],
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
            processes: 1,
            engines: vec![
                EngineResult { engine: "epoll".into(), rounds: vec![], median: fig(100.0, 0), failed: None },
                EngineResult { engine: "uring".into(), rounds: vec![], median: fig(150.0, 0), failed: None },
            ],
        };
        let ratios = r.ratios().unwrap();
        assert_eq!(ratios[0], ("requests_per_sec", Some(1.5)));
        assert_eq!(ratios[5], ("cpu_us_per_req", None));
        assert!(ScenarioResult { scenario: s, processes: 1, engines: vec![] }.ratios().is_none());
        // A failed engine has no figures, so no ratio.
        let mut failed = r.clone();
        failed.engines[1].failed = Some(Failure::new("did not start", "no io_uring"));
        assert!(failed.figures("uring").is_none() && failed.figures("epoll").is_some());
        assert!(failed.ratios().is_none());
    }

    #[test]
    fn the_active_share_is_rounded_and_never_zero() {
        assert_eq!(active_of(1000, 0.1), 100);
        assert_eq!(active_of(19_000, 0.1), 1900);
        assert_eq!(active_of(5, 0.1), 1);
        assert_eq!(active_of(15, 0.1), 2);
        assert_eq!(active_of(3, 1.0), 3);
        let s = Scenario { connections: active_of(1000, 0.1), depth: 1, body_size: 13, idle: 900 };
        assert_eq!(s.total(), 1000);
    }

    #[test]
    fn lost_connections_are_named_from_the_server_log() {
        let lines = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let select =
            "2026-01-01T00:00:00Z  WARN select cannot watch descriptor 1024 >= FD_SETSIZE (1024); use poll or epoll";
        let other = "x  WARN something else";
        assert_eq!(loss_reason(&lines(&[other, select])), ("FD_SETSIZE", Some(select)));
        let emfile = "x  WARN out of file descriptors (Too many open files (os error 24)): closing new connections";
        assert_eq!(loss_reason(&lines(&[other, emfile])), ("out of descriptors", Some(emfile)));
        assert_eq!(loss_reason(&lines(&[other])), ("lost connections", Some(other)));
        assert_eq!(loss_reason(&[]), ("lost connections", None));
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
        // The command splits as a POSIX shell would, without expansions.
        let argv = |cmd: &str| Peer::parse(&format!("x={cmd}@80")).unwrap().argv;
        assert_eq!(argv("  nginx   -g 'master_process off;' "), ["nginx", "-g", "master_process off;"]);
        assert_eq!(argv(r#"a "b \"c\" \d" e\ f ''"#), ["a", r#"b "c" \d"#, "e f", ""]);
        assert!(Peer::parse("n=srv \"x@80").unwrap_err().to_string().contains("missing closing quote"));
        for bad in ["nginx", "nginx=nginx", "=nginx@80", "n=nginx@0", "n=nginx@http", "n=@80", "n='x@80"] {
            assert!(Peer::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_floors_say_how_to_build_them() {
        let e = Peer::floors(std::path::Path::new("/nonexistent/duet"), &["epoll".into()]).unwrap_err().to_string();
        assert!(e.contains("cargo build --release --workspace --examples"), "{e}");
        assert!(Peer::floors(std::path::Path::new("/nonexistent/duet"), &["other".into()]).unwrap().is_empty());
    }
}
