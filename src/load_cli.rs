//! `duet load`: flags and the handler. The work is done by `duet_loadtest`.

use crate::arg_types::{read_paths, Seconds};
use crate::flag_words::{load_error, merge_error};
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

/// Set in a `duet load --processes N` child: `INDEX/N`.
const SHARE: &str = "DUET_LOAD_SHARE";

/// Flags follow wrk's where wrk has them (and ab's `-n`).
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Target, `http://HOST[:PORT][/PATH]` (https is not supported). Needed unless --merge.
    #[arg(required_unless_present = "merge")]
    pub url: Option<String>,
    /// Connections kept busy, spread evenly over the threads.
    #[arg(short, long, default_value_t = 10, value_name = "N", help_heading = "Load")]
    pub connections: usize,
    /// Load threads, each with its own event loop (at most one per connection).
    #[arg(short, long, default_value_t = 2, value_name = "N", help_heading = "Load")]
    pub threads: usize,
    /// Length of the measured window.
    #[arg(short, long, default_value = "10s", value_name = "DURATION", help_heading = "Load")]
    pub duration: Seconds,
    /// Stop after COUNT requests in total instead of after a duration (like ab -n): the
    /// run ends once each has been answered or has failed (a failed connect counts as one).
    #[arg(short = 'n', long = "requests", value_name = "COUNT", conflicts_with = "duration",
          value_parser = clap::value_parser!(u64).range(1..), help_heading = "Load")]
    pub requests: Option<u64>,
    /// A request with no progress for this long counts as a timeout (the connection is reopened).
    #[arg(long, default_value = "2s", value_name = "DURATION", help_heading = "Load")]
    pub timeout: Seconds,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER", help_heading = "Request")]
    pub headers: Vec<String>,
    /// Request method.
    #[arg(short, long, default_value = "GET", help_heading = "Request")]
    pub method: String,
    /// Spread the requests over the paths in FILE, one per line (`/a.html`, `/b?x=1`), in
    /// place of the URL's path: in turn, or at random with --seed.
    #[arg(long, value_name = "FILE", help_heading = "Request")]
    pub paths: Option<PathBuf>,
    /// With --paths: pick each request's path at random, from a generator seeded with N (the
    /// same N and --threads repeat the same sequence).
    #[arg(long, value_name = "N", requires = "paths", help_heading = "Request")]
    pub seed: Option<u64>,
    /// Request body (sent with Content-Length).
    #[arg(long, conflicts_with = "body_file", help_heading = "Request")]
    pub body: Option<String>,
    /// Request body read from a file.
    #[arg(long, value_name = "PATH", help_heading = "Request")]
    pub body_file: Option<PathBuf>,
    /// Print the latency distribution as wrk2 --latency does: summary percentiles and the
    /// detailed HdrHistogram spectrum; with --rate, the uncorrected latency beside it (wrk2 -U).
    #[arg(long, help_heading = "Report")]
    pub latency: bool,
    /// Open a new connection for each request, sending `Connection: close` (as hey, oha and ab
    /// without -k do); the report counts the connections opened.
    #[arg(long, conflicts_with_all = ["depth", "idle"], help_heading = "Load")]
    pub disable_keepalive: bool,
    /// Requests pipelined per connection round trip.
    #[arg(long, default_value_t = 1, value_name = "N", help_heading = "Load")]
    pub depth: usize,
    /// Open loop at R requests/s in total, latency measured from the intended send time
    /// (corrects coordinated omission, like wrk2 -R). Without it: closed loop.
    #[arg(short = 'R', long, value_name = "R", help_heading = "Load")]
    pub rate: Option<f64>,
    /// Extra keep-alive connections that make one request each and then stay idle.
    #[arg(long, default_value_t = 0, value_name = "N", help_heading = "Load")]
    pub idle: usize,
    /// Run this long first, then reset the counters before the measured window.
    #[arg(long, default_value = "0s", value_name = "DURATION", help_heading = "Load")]
    pub warmup: Seconds,
    /// Sample this process and every process below it (a supervisor's group, nginx's workers) over
    /// the measured window: CPU time (all threads), CPU per request, peak RSS, summed.
    #[arg(long, value_name = "PID", help_heading = "Report")]
    pub server_pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long, help_heading = "Report")]
    pub json: bool,
    /// Run as N processes side by side (past one process's descriptor limit), each with
    /// its share of the connections, idle connections, threads, rate and -n; their
    /// results are merged exactly (as --merge does) into one report.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub processes: usize,
    /// Read these `--json` outputs (of runs side by side, say from several machines) and
    /// print their combined report: counts added, latency histograms merged exactly.
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with_all = [
        "url", "connections", "threads", "duration", "requests", "timeout", "headers", "method", "body",
        "body_file", "depth", "rate", "idle", "warmup", "server_pid", "paths", "seed", "disable_keepalive",
    ], help_heading = "Report")]
    pub merge: Vec<PathBuf>,
}

pub fn load(args: LoadArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("duet: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut args: LoadArgs) -> Result<(), String> {
    if !args.merge.is_empty() {
        return merge(&args);
    }
    let share = match std::env::var(SHARE) {
        Ok(v) => Some(
            v.split_once('/')
                .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
                .filter(|&(i, n)| i < n)
                .ok_or_else(|| format!("{SHARE}={v}: not INDEX/N"))?,
        ),
        Err(_) => None,
    };
    match (share, args.processes) {
        (None, 0) => return Err("--processes must be at least 1".into()),
        (None, 1) => {}
        (None, n) => return run_processes(&args, n),
        (Some((index, n)), _) => take_share(&mut args, index, n)?,
    }
    // clap requires the URL unless --merge is given.
    let Some(url) = args.url else {
        return Err("a URL is needed (see duet load --help)".into());
    };
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) => Some(b.clone().into_bytes()),
        (None, Some(path)) => {
            Some(std::fs::read(path).map_err(|e| format!("cannot read --body-file {}: {e}", path.display()))?)
        }
        (None, None) => None,
    };
    let paths = match &args.paths {
        Some(file) => read_paths(file)?,
        None => Vec::new(),
    };
    let config = duet_loadtest::Config {
        url,
        connections: args.connections,
        threads: args.threads,
        duration: args.duration.0,
        requests: args.requests,
        timeout: args.timeout.0,
        headers: args.headers,
        method: args.method,
        paths,
        path_order: args.seed.map_or(duet_loadtest::PathOrder::RoundRobin, duet_loadtest::PathOrder::Random),
        keepalive: !args.disable_keepalive,
        body,
        depth: args.depth,
        rate: args.rate,
        idle: args.idle,
        warmup: args.warmup.0,
        server_pid: args.server_pid,
        progress: share.is_none() && std::io::stderr().is_terminal(),
        progress_lines: share.is_some() && std::env::var_os(PROGRESS_LINES).is_some(),
        stop_on_loss: false,
    };
    let mut prepared = duet_loadtest::prepare(config).map_err(|e| load_error(&e))?;
    if let Some((index, n)) = share {
        let total = std::env::var(SHARE_TOTAL).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        prepared.share_sources(index, n, total);
    }
    if !args.json {
        crate::output::print(&prepared.header_text())?;
    }
    // A `--processes` child holds its load until every process is set up: one still
    // opening its connections would overflow the accept queues under the others'
    // measured windows (seconds of SYN retransmits in their latency).
    let report = duet_loadtest::run_marked(prepared, &mut |mark| {
        if share.is_some() && mark == duet_loadtest::Mark::SetUp {
            eprintln!("{SET_UP}");
            // "go", or the end of stdin (the parent is gone or gave up waiting).
            let _ = std::io::stdin().lines().next();
        }
    })
    .map_err(|e| load_error(&e))?;
    if report.server_went_away {
        eprintln!("duet: warning: --server-pid process went away during the run; its figures cover less");
    }
    if args.json {
        crate::output::print(&format!("{}\n", report.json()))?;
    } else {
        crate::output::print(&report.text(args.latency))?;
    }
    Ok(())
}

/// The line a `duet load --processes N` child writes once its connections are set up;
/// the parent answers `go` on its stdin once every child has.
const SET_UP: &str = "duet-load: set up";

/// Set in a `duet load --processes N` child: every process's connections and idle ones.
const SHARE_TOTAL: &str = "DUET_LOAD_TOTAL";
/// Set in a `duet load --processes N` child whose parent draws the progress bar: write
/// the counts as lines (`Config::progress_lines`).
const PROGRESS_LINES: &str = "DUET_LOAD_PROGRESS_LINES";

/// Share `index` of `n` of `total` (the first `total % n` shares have one more).
fn share_of(total: usize, index: usize, n: usize) -> usize {
    total / n + usize::from(index < total % n)
}

/// In child `index` of `n`: its share of the run. Its report is JSON, for the parent.
fn take_share(args: &mut LoadArgs, index: usize, n: usize) -> Result<(), String> {
    args.connections = share_of(args.connections, index, n);
    args.idle = share_of(args.idle, index, n);
    args.threads = share_of(args.threads, index, n).max(1);
    args.rate = args.rate.map(|r| r / n as f64);
    args.requests = args.requests.map(|r| r / n as u64 + u64::from((index as u64) < r % n as u64));
    if args.requests == Some(0) {
        return Err(format!("-n is smaller than --processes {n}"));
    }
    // The server's CPU is sampled once, by the first process, over its window.
    if index > 0 {
        args.server_pid = None;
    }
    args.json = true;
    Ok(())
}

/// `--processes N`: runs N copies of this command as child processes, each with its
/// share, and prints the merged report. Errors are one line.
fn run_processes(args: &LoadArgs, n: usize) -> Result<(), String> {
    if args.connections < n {
        return Err(format!("--processes {n} needs at least {n} connections (-c), one per process"));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path to start it again: {e}"))?;
    let total = args.connections + args.idle;
    let draw = std::io::stderr().is_terminal();
    let mut children = Vec::with_capacity(n);
    // Each child's stdin: "go" once every child is set up (or has ended).
    let mut gates: Vec<Option<std::process::ChildStdin>> = Vec::with_capacity(n);
    let mut set_up = vec![false; n];
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Option<String>)>();
    let mut readers = Vec::with_capacity(n);
    for index in 0..n {
        let mut cmd = Command::new(&exe);
        cmd.args(std::env::args_os().skip(1))
            .env(SHARE, format!("{index}/{n}"))
            .env(SHARE_TOTAL, total.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if draw {
            cmd.env(PROGRESS_LINES, "1");
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot start load process {index}: {e}"))?;
        // Its stderr line by line (progress lines and anything else), then None at its end.
        if let Some(stderr) = child.stderr.take() {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = tx.send((index, Some(line)));
                }
                let _ = tx.send((index, None));
            }));
        }
        // Its report, read as it comes: a report larger than the pipe must not block it.
        let stdout = child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = std::io::Read::read_to_end(&mut out, &mut text);
                text
            })
        });
        gates.push(child.stdin.take());
        children.push((child, stdout));
    }
    drop(tx);
    let config = duet_loadtest::Config {
        url: args.url.clone().unwrap_or_default(),
        duration: args.duration.0,
        requests: args.requests,
        warmup: args.warmup.0,
        ..duet_loadtest::Config::default()
    };
    let mut bar = duet_loadtest::GroupProgress::new(draw, &config, n);
    let mut stderr_text = vec![Vec::<String>::new(); n];
    // Until every child's stderr has ended (the child has exited).
    for (index, line) in rx {
        match line {
            Some(line) if line == SET_UP => set_up[index] = true,
            Some(line) => {
                if !bar.line(index, &line) {
                    stderr_text[index].push(line);
                }
            }
            // Ended: it will not hold the others back.
            None => set_up[index] = true,
        }
        if set_up.iter().all(|&s| s) {
            for gate in gates.iter_mut() {
                if let Some(mut stdin) = gate.take() {
                    use std::io::Write;
                    let _ = stdin.write_all(b"go\n");
                }
            }
        }
    }
    drop(bar);
    for r in readers {
        let _ = r.join();
    }
    let mut reports = Vec::with_capacity(n);
    let mut failure = None;
    let mut warnings: Vec<String> = Vec::new();
    for (index, (mut child, stdout)) in children.into_iter().enumerate() {
        let status = child.wait().map_err(|e| format!("cannot wait for load process {index}: {e}"))?;
        let stdout = stdout.and_then(|t| t.join().ok()).unwrap_or_default();
        let lines = &stderr_text[index];
        if !status.success() {
            // Every process fails alike (a refused connect, say): its line once.
            let line = lines.iter().find(|l| !l.trim().is_empty()).map_or("", |l| l.trim());
            let line = line.strip_prefix("duet: error: ").unwrap_or(line);
            failure.get_or_insert_with(|| format!("load process {index} of {n} failed: {line}"));
            continue;
        }
        for line in lines.iter().filter(|l| !l.trim().is_empty()) {
            if !warnings.iter().any(|w| w == line) {
                warnings.push(line.clone());
            }
        }
        let name = format!("load process {index}");
        reports.push(duet_loadtest::Report::from_json(&name, &String::from_utf8_lossy(&stdout))?);
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    for w in warnings {
        eprintln!("{w}");
    }
    let first_server = reports.first().and_then(|r| r.server);
    let mut report = duet_loadtest::Report::merge(reports).map_err(|e| merge_error(&e))?;
    // One run, in N processes: the same report as a run in one process.
    report.runs = 1;
    report.server = first_server
        .map(|s| duet_loadtest::ServerUsage { cpu_us_per_req: s.cpu_s * 1e6 / report.stats.requests as f64, ..s });
    if args.json {
        crate::output::print(&format!("{}\n", report.json()))?;
    } else {
        let c = &report.config;
        let length = match args.requests {
            Some(n) => format!("{n} requests"),
            None => duet_loadtest::format_duration(args.duration.0),
        };
        crate::output::print(&format!(
            "Running {length} test @ {} in {n} processes\n  {} threads and {} connections\n",
            c.url, c.threads, c.connections
        ))?;
        crate::output::print(&report.text(args.latency))?;
    }
    Ok(())
}

/// `--merge`: the combined report of several `--json` outputs.
fn merge(args: &LoadArgs) -> Result<(), String> {
    let mut reports = Vec::with_capacity(args.merge.len());
    for path in &args.merge {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {name}: {e}"))?;
        reports.push(duet_loadtest::Report::from_json(&name, &text)?);
    }
    let report = duet_loadtest::Report::merge(reports).map_err(|e| merge_error(&e))?;
    if args.json {
        crate::output::print(&format!("{}\n", report.json()))?;
    } else {
        crate::output::print(&format!("{}{}", report.merged_header_text(), report.text(args.latency)))?;
    }
    Ok(())
}
