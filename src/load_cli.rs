//! `duet load`: flags and the handler. The work is done by `duet_loadtest`.

use crate::cli::Seconds;
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags follow wrk's where wrk has them.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Target, http://HOST[:PORT][/PATH] (https is not supported).
    pub url: String,
    /// Connections kept busy, spread evenly over the threads.
    #[arg(short, long, default_value_t = 10, value_name = "N")]
    pub connections: usize,
    /// Load threads, each with its own event loop (at most one per connection).
    #[arg(short, long, default_value_t = 2, value_name = "N")]
    pub threads: usize,
    /// Length of the measured window.
    #[arg(short, long, default_value = "10s", value_name = "DURATION")]
    pub duration: Seconds,
    /// A request with no progress for this long counts as a timeout (the connection is reopened).
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub timeout: Seconds,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Request body (sent with Content-Length).
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Request body read from a file.
    #[arg(long, value_name = "PATH")]
    pub body_file: Option<PathBuf>,
    /// Print the latency percentile table.
    #[arg(long)]
    pub latency: bool,
    /// Requests pipelined per connection round trip.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub depth: usize,
    /// Open loop at R requests/s in total, latency measured from the intended send time
    /// (corrects coordinated omission, like wrk2 -R). Without it: closed loop.
    #[arg(short = 'R', long, value_name = "R")]
    pub rate: Option<f64>,
    /// Extra keep-alive connections that make one request each and then stay idle.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub idle: usize,
    /// Run this long first, then reset the counters before the measured window.
    #[arg(long, default_value = "0s", value_name = "DURATION")]
    pub warmup: Seconds,
    /// Sample this process over the measured window: CPU time (all threads), CPU per request, peak RSS.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
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
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) => Some(b.clone().into_bytes()),
        (None, Some(path)) => {
            Some(std::fs::read(path).map_err(|e| format!("cannot read --body-file {}: {e}", path.display()))?)
        }
        (None, None) => None,
    };
    let config = duet_loadtest::Config {
        url: args.url,
        connections: args.connections,
        threads: args.threads,
        duration: args.duration.0,
        timeout: args.timeout.0,
        headers: args.headers,
        method: args.method,
        body,
        depth: args.depth,
        rate: args.rate,
        idle: args.idle,
        warmup: args.warmup.0,
        server_pid: args.server_pid,
        progress: !args.json && std::io::stdout().is_terminal(),
        stop_on_loss: false,
    };
    let prepared = duet_loadtest::prepare(config)?;
    if !args.json {
        print!("{}", prepared.header_text());
    }
    let report = duet_loadtest::run(prepared)?;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text(args.latency));
    }
    Ok(())
}
