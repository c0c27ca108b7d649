//! `duet load`: flags and the handler. The work is done by `duet_loadtest`.

use crate::arg_types::{read_paths, Seconds};
use crate::flag_words::{load_error, merge_error};
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Sample this process over the measured window: CPU time (all threads), CPU per request, peak RSS.
    #[arg(long, value_name = "PID", help_heading = "Report")]
    pub server_pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long, help_heading = "Report")]
    pub json: bool,
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

fn run(args: LoadArgs) -> Result<(), String> {
    if !args.merge.is_empty() {
        return merge(&args);
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
        progress: std::io::stderr().is_terminal(),
        stop_on_loss: false,
    };
    let prepared = duet_loadtest::prepare(config).map_err(|e| load_error(&e))?;
    if !args.json {
        print!("{}", prepared.header_text());
    }
    let report = duet_loadtest::run(prepared).map_err(|e| load_error(&e))?;
    if report.server_went_away {
        eprintln!("duet: warning: --server-pid process went away during the run; its figures cover less");
    }
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text(args.latency));
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
        println!("{}", report.json());
    } else {
        print!("{}{}", report.merged_header_text(), report.text(args.latency));
    }
    Ok(())
}
