//! `duet compare`: flags and the handler. The work is done by `duet_loadtest::compare`.

use crate::cli::{ByteSize, Seconds};
use clap::{Args, ValueEnum};
use duet_loadtest::compare::{self, CompareConfig, LoadWith, Peer};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LoadWithArg {
    /// duet's own load generator (`duet load`).
    Duet,
    /// wrk, if installed (apt-get install wrk).
    Wrk,
}

/// Without --quick: connections 16,256, depth 1,16, body 13 B, no idle, 3 rounds of 5 s.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Engines to compare, each served by its own `duet serve --engine E`.
    #[arg(long, value_delimiter = ',', default_value = "epoll,uring")]
    pub engines: Vec<String>,
    /// CPUs for the servers, e.g. 0 or 0-3 [default: the first half; CPU 0 on two CPUs].
    #[arg(long, value_name = "LIST")]
    pub server_cpus: Option<String>,
    /// CPUs for the load generator [default: the second half; CPU 1 on two CPUs].
    #[arg(long, value_name = "LIST")]
    pub load_cpus: Option<String>,
    /// Active connections per scenario.
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    pub connections: Option<Vec<usize>>,
    /// Requests pipelined per connection.
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    pub depth: Option<Vec<usize>>,
    /// Response body sizes (13 B is the built-in `Hello, World!`; others are generated files).
    #[arg(long, value_delimiter = ',', value_name = "BYTES,..")]
    pub body_size: Option<Vec<ByteSize>>,
    /// Idle keep-alive connections held open on top of the active ones (duet load only).
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    pub idle: Option<Vec<usize>>,
    /// Rounds; engines alternate within each round and medians are reported.
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,
    /// Measured window of each run.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<Seconds>,
    /// A small matrix that finishes in well under a minute: 1 round of 1 s, 16 connections, depth 1 and 16.
    #[arg(long)]
    pub quick: bool,
    /// Load generator.
    #[arg(long, value_enum, default_value_t = LoadWithArg::Duet)]
    pub load_with: LoadWithArg,
    /// Also write results.json, results.md and SVG charts (req/s, CPU per request, latency) into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Another server to compare, run pinned to the server CPUs, e.g.
    /// nginx="nginx -c /path/nginx.conf -g 'master_process off;'"@18083 (repeatable; CMD is
    /// split like a shell would; ready once 127.0.0.1:PORT accepts; it must serve the paths).
    #[arg(long, value_name = "NAME=CMD@PORT")]
    pub peer: Vec<String>,
    /// Also compare the floor responders (examples floor_epoll, floor_uring next to this
    /// binary; build them with `cargo build --release --workspace --examples`), in 13-byte scenarios.
    #[arg(long)]
    pub floors: bool,
    /// Print the results as JSON instead of the markdown table.
    #[arg(long)]
    pub json: bool,
}

pub fn compare(args: CompareArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("duet: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: CompareArgs) -> Result<(), String> {
    let (default_server, default_load) = compare::default_split(&compare::allowed_cpus());
    let cpus =
        |flag: &Option<String>, default: Vec<usize>| flag.as_deref().map_or(Ok(default), compare::parse_cpu_list);
    let quick = args.quick;
    let duet_exe = std::env::current_exe().map_err(|e| format!("cannot find the duet binary: {e}"))?;
    let engines: Vec<String> = args.engines.iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
    let mut peers = args.peer.iter().map(|p| Peer::parse(p)).collect::<Result<Vec<_>, _>>()?;
    if args.floors {
        peers.extend(Peer::floors(&duet_exe, &engines)?);
    }
    let config = CompareConfig {
        duet_exe,
        engines,
        peers,
        server_cpus: cpus(&args.server_cpus, default_server)?,
        load_cpus: cpus(&args.load_cpus, default_load)?,
        connections: args.connections.unwrap_or_else(|| if quick { vec![16] } else { vec![16, 256] }),
        depths: args.depth.unwrap_or_else(|| vec![1, 16]),
        body_sizes: args.body_size.map_or_else(|| vec![compare::DEFAULT_BODY], |v| v.iter().map(|b| b.0).collect()),
        idle: args.idle.unwrap_or_else(|| vec![0]),
        rounds: args.rounds.unwrap_or(if quick { 1 } else { 3 }),
        duration: args.duration.map_or(Duration::from_secs(if quick { 1 } else { 5 }), |d| d.0),
        load_with: match args.load_with {
            LoadWithArg::Duet => LoadWith::Duet,
            LoadWithArg::Wrk => LoadWith::Wrk,
        },
        progress: std::io::stderr().is_terminal(),
    };
    let results = compare::run(config)?;
    let markdown = results.markdown();
    let json = results.json();
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for (name, text) in [("results.json", &json), ("results.md", &markdown)] {
            let path = dir.join(name);
            std::fs::write(&path, format!("{text}\n")).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        results.write_charts(dir)?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{markdown}");
    }
    Ok(())
}
