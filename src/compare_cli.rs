//! `duet compare`: flags and the handler. The work is done by `duet_loadtest::compare`.

use crate::arg_types::{read_paths, ByteSize, EngineChoice, Seconds};
use crate::flag_words::compare_error;
use clap::{Args, ValueEnum};
use duet_engine_uring::{Feature, Features};
use duet_loadtest::compare::{self, netns, CompareConfig, LoadWith, Peer, RatioSpec};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

/// The engines of the ladder, from the oldest I/O model to the newest.
pub const LADDER_ENGINES: [&str; 5] = ["select", "poll", "epoll-lt", "epoll", "uring"];
/// The ladder's open-loop rate, requests/s in total: far below epoll's saturation, so
/// that latency measures the server, not a queue. Measured on the 2-core VM of docs/ladder.md
/// (server on CPU 0, `duet load -t1 -c1000 --idle 9000` on CPU 1, five runs of 5 s):
/// epoll peaked at 37–53k requests/s closed loop, bound by the load thread, with the
/// server 35–42 % busy at 8–9 µs a request (its own ceiling about 116k). 5,000 is about
/// a tenth of the first and a twentieth of the second.
pub const LADDER_RATE: f64 = 5000.0;

/// The ablation's engines (`--ablation`): io_uring with its default features, then
/// without each of them in turn, then with each feature the default leaves off (zc,
/// splice, mmap, mmap-zc), then with none, and epoll to measure them against.
pub fn ablation_engines() -> Vec<String> {
    let mut engines = vec!["uring".to_string()];
    engines.extend(Features::default().iter().map(|f| format!("uring:no-{}", f.name())));
    engines
        .extend(Feature::ALL.iter().filter(|f| !Features::default().has(**f)).map(|f| format!("uring:{}", f.name())));
    engines.extend(["uring:none".to_string(), "epoll".to_string()]);
    engines
}

/// `--ablation`'s help with the rows it runs, from [`ablation_engines`] itself, so the help
/// cannot name a row the ablation does not run.
pub fn with_ablation_rows(compare: clap::Command) -> clap::Command {
    compare.mut_arg("ablation", |arg| {
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let help = match help.split_once(" (the list of rows") {
            Some((before, _)) => before.to_string(),
            None => help,
        };
        arg.help(format!("{help}: --engines {}", ablation_engines().join(",")))
    })
}

/// Checks one entry of `--engines` (its value parser, so a bad one is a usage error before
/// anything runs): an engine name of `duet serve --engine`, or `uring:FEATURES`, the
/// io_uring engine served with `--uring-features FEATURES` (items joined by `+`, since
/// commas separate the engines). A feature where an engine belongs (`uring:none,direct`)
/// is named as such.
pub fn check_engine_spec(spec: &str) -> Result<String, String> {
    let Some((engine, features)) = spec.split_once(':') else {
        if spec.trim().is_empty() || EngineChoice::from_str(spec.trim(), false).is_ok() {
            return Ok(spec.to_string());
        }
        if Features::parse(spec).is_ok() {
            return Err(format!(
                "'{spec}' is an io_uring feature, not an engine: join a row's features with + (e.g. uring:none+direct)"
            ));
        }
        let names: Vec<&str> = EngineChoice::value_variants().iter().map(|e| e.name()).collect();
        return Err(format!(
            "unknown engine '{spec}' (engines: {}; uring:FEATURES for an io_uring row)",
            names.join(", ")
        ));
    };
    if engine != "uring" {
        return Err("only the uring engine takes features (uring:FEATURES, e.g. uring:no-zc+no-bundle)".into());
    }
    Features::parse(&features.replace('+', ",")).map(|_| spec.to_string()).map_err(|e| e.to_string())
}

/// A share of the connections: `10%` or `0.1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Share(pub f64);

impl FromStr for Share {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (num, scale) = match t.strip_suffix('%') {
            Some(pct) => (pct.trim(), 100.0),
            None => (t, 1.0),
        };
        let share =
            num.parse::<f64>().map(|n| n / scale).map_err(|_| format!("'{s}' is not a share (try 10% or 0.1)"))?;
        compare::active_share(share).map(Share).map_err(|e| e.to_string())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LoadWithArg {
    /// duet's own load generator (`duet load`).
    Duet,
    /// wrk, if installed (apt-get install wrk).
    Wrk,
}

/// Without --quick: connections 16,256, depth 1,16, body 13 B, no idle, 3 rounds of 5 s.
/// An engine that does not start, exits, or (with --active) cannot hold the connections
/// gets FAILED (reason) in its cells, and the others still run.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Engines to compare, each served by its own `duet serve --engine E`; `uring:FEATURES`
    /// is a row of its own served with `--uring-features FEATURES` (items joined by `+`, e.g.
    /// uring:no-direct, uring:none+direct) [default: epoll,uring; with --ladder:
    /// select,poll,epoll-lt,epoll,uring].
    #[arg(long, value_delimiter = ',', value_name = "ENGINE[:FEATURES],..", value_parser = check_engine_spec,
          help_heading = "Engines")]
    pub engines: Option<Vec<String>>,
    /// The io_uring ablation, interleaved as usual: io_uring with its default features,
    /// without each of them in turn, with each one the default leaves off, with none, and
    /// epoll (the list of rows is added by `with_ablation_rows`).
    #[arg(long, conflicts_with = "engines", help_heading = "Engines")]
    pub ablation: bool,
    /// Connections per scenario: all active, or with --active the total of which that
    /// share is active and the rest idle [default: 16,256; 16 with --quick; with --ladder
    /// 1000,10000,100000, 100,200 with --quick]. Past one process's open-file limit each
    /// side runs as a process group (duet serve --processes N, duet load --processes N).
    #[arg(long, value_delimiter = ',', value_name = "N,..", help_heading = "Scenario")]
    pub connections: Option<Vec<usize>>,
    /// Share of --connections that sends requests, e.g. 10% (at least one connection); the
    /// rest are opened first, answered once and then held idle. A server must hold them all:
    /// a run in which it closes, resets or refuses one is FAILED (reason), e.g. FD_SETSIZE.
    /// Replaces --idle. Prints the ladder tables (mean / p99 latency and CPU per request,
    /// one row per engine, one column per connection count) above the full table.
    #[arg(long, value_name = "SHARE", conflicts_with = "idle", help_heading = "Scenario")]
    pub active: Option<Share>,
    /// Open loop: the active connections send R requests/s in total, latency measured from
    /// each request's intended send time (coordinated omission corrected). Without it:
    /// closed loop (duet load only) [default: none; with --ladder 5000, 1000 with --quick].
    #[arg(long, value_name = "R", help_heading = "Scenario")]
    pub rate: Option<f64>,
    /// Load this long before each measured window, unmeasured [default: 0s; with --ladder 1s, 0.2s with --quick].
    #[arg(long, value_name = "DURATION", help_heading = "Load")]
    pub warmup: Option<Seconds>,
    /// The I/O ladder: --engines select,poll,epoll-lt,epoll,uring --connections
    /// 1000,10000,100000 --active 10% --rate 5000 --depth 1 --warmup 1s (each can be overridden). With --quick:
    /// 100,200 connections, 1,000 requests/s, 1 round of 0.5 s.
    #[arg(long, help_heading = "Presets")]
    pub ladder: bool,
    /// The file-serving rows: --body-size 4KiB,64KiB,256KiB,1MiB,16MiB --connections 64,256
    /// --depth 1, the bodies files of one generated directory served with --dir, and nginx
    /// (sendfile on, one worker) serving it too when installed (each can be overridden).
    /// With --quick: 64 connections, 1 round of 1 s.
    #[arg(long, conflicts_with_all = ["ladder", "floors"], help_heading = "Presets")]
    pub files: bool,
    /// Requests pipelined per connection [default: 1,16; 1 with --ladder or --files].
    #[arg(long, value_delimiter = ',', value_name = "N,..", help_heading = "Scenario")]
    pub depth: Option<Vec<usize>>,
    /// Response body sizes (13 B is the built-in `Hello, World!`; others are generated files)
    /// [default: 13; with --files 4KiB,64KiB,256KiB,1MiB,16MiB].
    #[arg(long, value_delimiter = ',', value_name = "BYTES,..", help_heading = "Scenario")]
    pub body_size: Option<Vec<ByteSize>>,
    /// Spread each run's requests over the paths in FILE, one per line, in turn (as `duet load
    /// --paths`; duet load only), in place of the scenario's path: every server must serve
    /// them.
    #[arg(long, value_name = "FILE", help_heading = "Scenario")]
    pub paths: Option<PathBuf>,
    /// Idle keep-alive connections held open on top of the active ones (duet load only; see
    /// --active) [default: 0].
    #[arg(long, value_delimiter = ',', value_name = "N,..", help_heading = "Scenario")]
    pub idle: Option<Vec<usize>>,
    /// CPUs for the servers, e.g. 0 or 0-3 [default: the first half; CPU 0 on two CPUs].
    #[arg(long, value_name = "LIST", help_heading = "Load")]
    pub server_cpus: Option<String>,
    /// CPUs for the load generator [default: the second half; CPU 1 on two CPUs].
    #[arg(long, value_name = "LIST", help_heading = "Load")]
    pub load_cpus: Option<String>,
    /// Rounds; engines alternate within each round and medians are reported [default: 3; 1
    /// with --quick].
    #[arg(long, value_name = "N", help_heading = "Load")]
    pub rounds: Option<usize>,
    /// Measured window of each run [default: 5s; 1s with --quick, 0.5s with --ladder --quick].
    #[arg(long, value_name = "DURATION", help_heading = "Load")]
    pub duration: Option<Seconds>,
    /// A small matrix that finishes in well under a minute: 1 round of 1 s, 16 connections, depth 1 and 16.
    #[arg(long, help_heading = "Presets")]
    pub quick: bool,
    /// Load generator.
    #[arg(long, value_enum, default_value_t = LoadWithArg::Duet, help_heading = "Load")]
    pub load_with: LoadWithArg,
    /// Also write results.json, results.md and SVG charts (req/s, CPU per request, latency;
    /// with --active over several connection counts also cpu_by_connections.svg) into DIR
    /// [default: print only].
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// Another server to compare, run pinned to the server CPUs, e.g.
    /// nginx="nginx -c /path/nginx.conf -g 'master_process off;'"@18083 (repeatable; CMD is
    /// split like a shell would; ready once 127.0.0.1:PORT accepts; it must serve the paths).
    #[arg(long, value_name = "NAME=CMD@PORT", help_heading = "Engines")]
    pub peer: Vec<String>,
    /// Also compare the floor responders (examples floor_epoll, floor_uring next to this
    /// binary; build them with `cargo build --release --workspace --examples`), in 13-byte scenarios.
    #[arg(long, help_heading = "Engines")]
    pub floors: bool,
    /// Also report server A's CPU µs per request over server B's, paired round by round: the
    /// median of the rounds' ratios, its 95 % interval (from 6 rounds) and their range, e.g.
    /// uring/epoll or uring/monoio (repeatable or comma-separated; names as the table shows
    /// them: an engine, a --peer, floor-epoll, floor-uring).
    #[arg(long, value_name = "A/B", value_delimiter = ',', help_heading = "Output")]
    pub ratio: Vec<String>,
    /// Print the results as JSON instead of the markdown table.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
    /// Run the servers in a network namespace of their own and the load in another, joined
    /// by a veth pair (10.77.0.1/30 and .2), in place of loopback. Needs CAP_NET_ADMIN and
    /// CAP_SYS_ADMIN; the namespaces (duet-PID-srv, duet-PID-load) are removed at the end,
    /// on error and on Ctrl-C, and a killed run's are removed at the next start.
    #[arg(long, conflicts_with_all = ["peer", "floors"], help_heading = "Network")]
    pub netns: bool,
    /// Drop this percent of the packets at random in each direction (nftables numgen in each
    /// namespace's input), e.g. 0.1 or 1.
    #[arg(long, value_name = "PERCENT", requires = "netns", value_parser = parse_loss, help_heading = "Network")]
    pub loss: Option<f64>,
    /// Add DURATION to every round trip (a netem qdisc on the server's link); exits 2 where the
    /// kernel has no sch_netem.
    #[arg(long, value_name = "DURATION", requires = "netns", help_heading = "Network")]
    pub delay: Option<Seconds>,
}

fn parse_loss(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%').trim();
    match t.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!("'{s}' is not a percent above 0 and at most 100 (e.g. 0.1 or 1)")),
    }
}

/// The body sizes of `--files`: a small file, the cache limit, and the sizes that
/// `sendfile` serves in one, a few and many shares of a turn.
pub const FILES_BODY_SIZES: [u64; 5] = [4 << 10, 64 << 10, 256 << 10, 1 << 20, 16 << 20];

/// What each flag left out means, for the plain comparison, `--quick`, `--ladder`,
/// `--files` and their `--quick`: the one place of the defaults the flags' help texts state.
#[derive(Debug, PartialEq)]
struct Defaults {
    engines: &'static [&'static str],
    connections: &'static [usize],
    depths: &'static [usize],
    body_sizes: &'static [u64],
    rounds: usize,
    duration: Duration,
    warmup: Duration,
    active: Option<f64>,
    rate: Option<f64>,
}

impl Defaults {
    fn new(ladder: bool, files: bool, quick: bool) -> Defaults {
        let plain = Defaults {
            engines: &["epoll", "uring"],
            connections: &[16, 256],
            depths: &[1, 16],
            body_sizes: &[compare::DEFAULT_BODY],
            rounds: 3,
            duration: Duration::from_secs(5),
            warmup: Duration::ZERO,
            active: None,
            rate: None,
        };
        let ladder_full = Defaults {
            engines: &LADDER_ENGINES,
            connections: &[1000, 10_000, 100_000],
            depths: &[1],
            warmup: Duration::from_secs(1),
            active: Some(0.1),
            rate: Some(LADDER_RATE),
            ..plain
        };
        let files_full = Defaults { connections: &[64, 256], depths: &[1], body_sizes: &FILES_BODY_SIZES, ..plain };
        match (ladder, quick) {
            (false, false) if files => files_full,
            (false, true) if files => {
                Defaults { connections: &[64], rounds: 1, duration: Duration::from_secs(1), ..files_full }
            }
            (false, false) => plain,
            (false, true) => Defaults { connections: &[16], rounds: 1, duration: Duration::from_secs(1), ..plain },
            (true, false) => ladder_full,
            (true, true) => Defaults {
                connections: &[100, 200],
                rounds: 1,
                duration: Duration::from_millis(500),
                warmup: Duration::from_millis(200),
                rate: Some(1000.0),
                ..ladder_full
            },
        }
    }
}

pub fn compare(args: CompareArgs) -> ExitCode {
    let network = if args.netns {
        let impairments = netns::Impairments { loss_percent: args.loss, delay: args.delay.map(|d| d.0) };
        match start_netns(impairments) {
            Ok(made) => Some(made),
            Err(e) => {
                eprintln!("duet: error: {e}");
                return ExitCode::from(if e.is_refusal() { 2 } else { 1 });
            }
        }
    } else {
        None
    };
    let path = network.as_ref().map(|(n, imp)| n.path(*imp));
    let result = run(args, path);
    // Removed here, before the exit status is returned (the guard's drop).
    drop(network);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("duet: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Checks what `--netns` needs, removes a killed run's namespaces, arms the signal path
/// that removes ours, and makes them.
fn start_netns(impairments: netns::Impairments) -> Result<(netns::Netns, netns::Impairments), netns::NetnsError> {
    netns::preflight(&impairments)?;
    for name in netns::remove_leftovers() {
        eprintln!("duet: removed the network namespace {name} of a duet compare that is gone");
    }
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| netns::NetnsError::Setup(format!("cannot handle signals: {e}")))?;
    std::thread::Builder::new()
        .name("duet-netns-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                // The servers die with this process (PR_SET_PDEATHSIG); the namespaces
                // would not, so they go first.
                netns::remove(std::process::id());
                eprintln!("duet: interrupted; the network namespaces are removed");
                std::process::exit(128 + signal);
            }
        })
        .map_err(|e| netns::NetnsError::Setup(format!("cannot start a thread: {e}")))?;
    Ok((netns::Netns::create(&impairments)?, impairments))
}

fn run(args: CompareArgs, network: Option<netns::NetPath>) -> Result<(), String> {
    let (default_server, default_load) = compare::default_split(&compare::allowed_cpus());
    let cpus =
        |flag: &Option<String>, default: Vec<usize>| flag.as_deref().map_or(Ok(default), compare::parse_cpu_list);
    let d = Defaults::new(args.ladder, args.files, args.quick);
    let duet_exe = std::env::current_exe().map_err(|e| format!("cannot find the duet binary: {e}"))?;
    let engines: Vec<String> = match &args.engines {
        Some(list) => list.iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect(),
        None if args.ablation => ablation_engines(),
        None => d.engines.iter().map(|e| e.to_string()).collect(),
    };
    let mut peers =
        args.peer.iter().map(|p| Peer::parse(p)).collect::<Result<Vec<_>, _>>().map_err(|e| compare_error(&e))?;
    if args.floors {
        peers.extend(Peer::floors(&duet_exe, &engines).map_err(|e| compare_error(&e))?);
    }
    let mut config = CompareConfig {
        duet_exe,
        engines,
        peers,
        server_cpus: cpus(&args.server_cpus, default_server)?,
        load_cpus: cpus(&args.load_cpus, default_load)?,
        connections: args.connections.unwrap_or_else(|| d.connections.to_vec()),
        depths: args.depth.unwrap_or_else(|| d.depths.to_vec()),
        body_sizes: args.body_size.map_or_else(|| d.body_sizes.to_vec(), |v| v.iter().map(|b| b.0).collect()),
        idle: args.idle.unwrap_or_else(|| vec![0]),
        rounds: args.rounds.unwrap_or(d.rounds),
        duration: args.duration.map_or(d.duration, |s| s.0),
        load_with: match args.load_with {
            LoadWithArg::Duet => LoadWith::Duet,
            LoadWithArg::Wrk => LoadWith::Wrk,
        },
        progress: std::io::stderr().is_terminal(),
        active: args.active.map(|s| s.0).or(d.active),
        rate: args.rate.or(d.rate),
        warmup: args.warmup.map_or(d.warmup, |s| s.0),
        files: args.files,
        paths: match &args.paths {
            Some(file) => read_paths(file)?,
            None => Vec::new(),
        },
        network,
        ratios: Vec::new(),
    };
    let servers = config.servers();
    config.ratios = args.ratio.iter().map(|r| RatioSpec::parse(r, &servers)).collect::<Result<_, _>>()?;
    let results = compare::run(config).map_err(|e| compare_error(&e))?;
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
        crate::output::print(&format!("{json}\n"))?;
    } else {
        crate::output::print(&markdown)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_a_percent_above_0_and_at_most_100() {
        assert_eq!(parse_loss("0.1"), Ok(0.1));
        assert_eq!(parse_loss("1%"), Ok(1.0));
        for bad in ["0", "-1", "101", "x", "NaN"] {
            assert!(parse_loss(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shares_parse_as_percent_or_fraction() {
        assert_eq!("10%".parse::<Share>(), Ok(Share(0.1)));
        assert_eq!(" 2.5 % ".parse::<Share>(), Ok(Share(0.025)));
        assert_eq!("0.1".parse::<Share>(), Ok(Share(0.1)));
        assert_eq!("100%".parse::<Share>(), Ok(Share(1.0)));
        for bad in ["0", "0%", "101%", "1.5", "-10%", "ten", "%", "NaN"] {
            assert!(bad.parse::<Share>().is_err(), "{bad}");
        }
        assert_eq!("1.5".parse::<Share>(), Err("150% is not a share above 0 and at most 100%".to_string()));
    }

    /// The defaults the flags' help texts and docs/compare.md state, for each preset.
    #[test]
    fn each_preset_has_the_documented_defaults() {
        let plain = Defaults::new(false, false, false);
        assert_eq!(
            (plain.engines, plain.connections, plain.depths),
            (&["epoll", "uring"][..], &[16, 256][..], &[1, 16][..])
        );
        assert_eq!((plain.rounds, plain.duration, plain.warmup), (3, Duration::from_secs(5), Duration::ZERO));
        assert_eq!((plain.active, plain.rate), (None, None));
        let quick = Defaults::new(false, false, true);
        assert_eq!((quick.connections, quick.depths), (&[16][..], &[1, 16][..]));
        assert_eq!((quick.rounds, quick.duration), (1, Duration::from_secs(1)));
        let ladder = Defaults::new(true, false, false);
        assert_eq!(
            (ladder.engines, ladder.connections, ladder.depths),
            (&LADDER_ENGINES[..], &[1000, 10_000, 100_000][..], &[1][..])
        );
        assert_eq!(
            (ladder.rounds, ladder.duration, ladder.warmup),
            (3, Duration::from_secs(5), Duration::from_secs(1))
        );
        assert_eq!((ladder.active, ladder.rate), (Some(0.1), Some(5000.0)));
        let files = Defaults::new(false, true, false);
        assert_eq!(
            (files.engines, files.connections, files.depths, files.body_sizes),
            (&["epoll", "uring"][..], &[64, 256][..], &[1][..], &[4096, 65536, 262_144, 1 << 20, 16 << 20][..])
        );
        assert_eq!((files.rounds, files.duration), (3, Duration::from_secs(5)));
        let files_quick = Defaults::new(false, true, true);
        assert_eq!((files_quick.connections, files_quick.rounds), (&[64][..], 1));
        assert_eq!(Defaults::new(true, true, false), Defaults::new(true, false, false), "--ladder wins");
        let ladder_quick = Defaults::new(true, false, true);
        assert_eq!((ladder_quick.engines, ladder_quick.connections), (&LADDER_ENGINES[..], &[100, 200][..]));
        assert_eq!((ladder_quick.rounds, ladder_quick.duration), (1, Duration::from_millis(500)));
        assert_eq!(
            (ladder_quick.warmup, ladder_quick.active, ladder_quick.rate),
            (Duration::from_millis(200), Some(0.1), Some(1000.0))
        );
    }

    #[test]
    fn the_ablation_is_the_default_then_each_one_off_then_each_other_one_on_then_none_then_epoll() {
        assert_eq!(
            ablation_engines(),
            [
                "uring",
                "uring:no-direct",
                "uring:no-ring-fd",
                "uring:no-flat-sq",
                "uring:no-send",
                "uring:no-bundle",
                "uring:no-inc",
                "uring:no-sendfile",
                "uring:zc",
                "uring:splice",
                "uring:mmap",
                "uring:mmap-zc",
                "uring:none",
                "epoll",
            ]
        );
        for spec in ablation_engines() {
            assert_eq!(check_engine_spec(&spec), Ok(spec.clone()), "{spec}");
        }
    }

    #[test]
    fn engines_are_known_names_and_only_uring_takes_features() {
        for good in ["epoll", "uring", "uring:all", "uring:none+direct", "uring:no-zc+no-bundle", "select", "epoll-lt"]
        {
            assert_eq!(check_engine_spec(good).as_deref(), Ok(good), "{good}");
        }
        let err = check_engine_spec("epoll:none").unwrap_err();
        assert!(err.contains("only the uring engine takes features"), "{err}");
        let err = check_engine_spec("uring:turbo").unwrap_err();
        assert!(err.contains("unknown io_uring feature 'turbo'"), "{err}");
        for bad in ["uring:", "uring:no-direct+", ":none"] {
            assert!(check_engine_spec(bad).is_err(), "{bad}");
        }
        // `--engines uring:none,direct` reaches here as two entries.
        let err = check_engine_spec("direct").unwrap_err();
        assert!(err.contains("'direct' is an io_uring feature") && err.contains("uring:none+direct"), "{err}");
        let err = check_engine_spec("foo").unwrap_err();
        assert!(err.starts_with("unknown engine 'foo' (engines: auto, epoll, uring, epoll-lt, poll, select"), "{err}");
    }
}
