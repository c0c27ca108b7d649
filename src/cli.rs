//! Command-line interface.

use clap::{Args, Parser, Subcommand};
use duet_engine_uring::{Features, UringOptions};
use duet_http::Limits;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::arg_types::{ByteSize, EngineChoice, Seconds};

/// duet: an HTTP/1.1 server with interchangeable epoll and io_uring engines.
#[derive(Parser, Debug)]
#[command(name = "duet", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What a DURATION without a unit means, added to the help of every flag that takes one by
/// [`command`]. The units (us, ms, s, m, h) show in the defaults and the docs.
pub const DURATION_NOTE: &str = "a bare number is seconds";

/// The command line, as `--help`, the man page and the completions show it: the clap
/// definitions, with [`DURATION_NOTE`] added to the help of every flag whose value is a
/// DURATION, so that no such flag goes without it and none words it differently.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    // Before a default the text states itself (`... [default: 5s; 1s with --quick]`).
    fn noted(help: &str) -> String {
        match help.rfind(" [default:").filter(|_| help.ends_with(']')) {
            Some(at) => format!("{}; {DURATION_NOTE}{}", &help[..at], &help[at..]),
            None => format!("{help}; {DURATION_NOTE}"),
        }
    }
    fn note_durations(arg: clap::Arg) -> clap::Arg {
        if !arg.get_value_names().is_some_and(|names| names.iter().any(|n| n == "DURATION")) {
            return arg;
        }
        let help = noted(&arg.get_help().map(|h| h.to_string()).unwrap_or_default());
        let long = arg.get_long_help().map(|h| noted(&h.to_string()));
        let arg = arg.help(help);
        match long {
            Some(long) => arg.long_help(long),
            None => arg,
        }
    }
    Cli::command()
        .mut_subcommands(|sub| sub.mut_args(note_durations))
        .mut_subcommand("compare", crate::compare_cli::with_ablation_rows)
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve HTTP/1.1: --route and --dir content, or GET / answering "Hello, World!".
    Serve(ServeArgs),
    /// Generate HTTP/1.1 load and measure latency, throughput and the server's CPU.
    Load(crate::load_cli::LoadArgs),
    /// Run the same load against each engine (pinned, interleaved, medians) and compare them.
    Compare(crate::compare_cli::CompareArgs),
    /// Print the man page or shell completions, made from the same definitions as --help.
    Generate(crate::generate::GenerateArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("directory").args(["dir", "dir_arg"])))]
pub struct ServeArgs {
    /// Serve the files under DIR (the same as --dir DIR).
    #[arg(value_name = "DIR")]
    pub dir_arg: Option<PathBuf>,
    /// I/O engine.
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto, help_heading = "Listening")]
    pub engine: EngineChoice,
    /// Address to listen on: an IP address or a host name (resolved at start, IPv4 first).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR", value_parser = bind_address, help_heading = "Listening")]
    pub bind: String,
    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, default_value_t = 8080, value_name = "N", help_heading = "Listening")]
    pub port: u16,
    /// Worker threads, each with its own loop and SO_REUSEPORT listener [default: CPUs available].
    #[arg(long, value_name = "N", help_heading = "Listening")]
    pub threads: Option<usize>,
    /// Share the port with other processes started with --reuse-port (the kernel spreads
    /// connections over all of them). Without it, a port another process listens on is
    /// an error, and a later --reuse-port process that binds it is never handed a
    /// connection.
    #[arg(long, help_heading = "Listening")]
    pub reuse_port: bool,
    /// Serve with N processes under a supervisor (nginx's master/worker shape), each with
    /// --threads threads [default: 1 each], its own descriptor limit and engine, all on
    /// listeners the supervisor binds. It forwards SIGTERM/SIGINT and SIGHUP, restarts a
    /// process that dies, and on SIGUSR2 replaces every process without a client error.
    /// 1: no supervisor.
    #[arg(long, default_value_t = 1, value_name = "N", help_heading = "Listening")]
    pub processes: usize,
    /// Pin worker thread i to the i-th CPU this process may run on (its affinity mask),
    /// wrapping around when there are more workers than CPUs.
    #[arg(long, help_heading = "Listening")]
    pub pin: bool,
    /// Write the server's process id to PATH once it listens (for `kill -HUP $(cat PATH)`);
    /// removed when the server exits cleanly.
    #[arg(long, value_name = "PATH", help_heading = "Listening")]
    pub pid_file: Option<PathBuf>,
    /// Serve a fixed response at PATH: `PATH=TEXT` (text/plain) or `PATH=@FILE` (type from
    /// the extension; `@@` starts a literal `@`). Repeatable; wins over --dir.
    #[arg(long = "route", value_name = "PATH=TEXT|@FILE", help_heading = "Content")]
    pub routes: Vec<String>,
    /// Answer at PATH with what was received: POST, PUT, PATCH and DELETE get their body
    /// back (with its Content-Type), GET and HEAD the request line and header fields.
    /// Repeatable; wins over --route and --dir.
    #[arg(long = "echo", value_name = "PATH", help_heading = "Content")]
    pub echoes: Vec<String>,
    /// Override the Content-Type of a path served by --route or --dir. Repeatable.
    #[arg(long = "route-type", value_name = "PATH=MIME", help_heading = "Content")]
    pub route_types: Vec<String>,
    /// Serve the files under DIR: into memory, or kept open and streamed from disk when
    /// over --max-cached-file or past --cache-budget. Changes are served as they happen
    /// (see --no-watch).
    #[arg(long, value_name = "DIR", help_heading = "Content")]
    pub dir: Option<PathBuf>,
    /// With --dir: watch DIR (inotify, one watch per directory) and serve each change once
    /// its writes settle. The default.
    #[arg(long, overrides_with = "no_watch", help_heading = "Content")]
    pub watch: bool,
    /// With --dir: load DIR at start and on SIGHUP only.
    #[arg(long, overrides_with = "watch", help_heading = "Content")]
    pub no_watch: bool,
    /// With --dir: serve files and directories whose name starts with a dot.
    #[arg(long, help_heading = "Content")]
    pub dotfiles: bool,
    /// With --dir: serve a `FILE.br` or `FILE.gz` next to FILE, in place of FILE, to
    /// clients whose Accept-Encoding allows it (br first at equal weight).
    #[arg(long, requires = "directory", help_heading = "Content")]
    pub precompressed: bool,
    /// With --dir: answer a directory without index.html with an HTML list of what it
    /// serves (without it: 403 Forbidden).
    #[arg(long, requires = "directory", help_heading = "Content")]
    pub list_dirs: bool,
    /// Add a header field to every response (routes, files, redirects, errors; not --echo
    /// or --metrics answers), e.g.
    /// 'Cache-Control: max-age=3600' (which replaces the files' default, no-cache).
    /// Repeatable. Fields duet sets itself are refused.
    #[arg(long = "header", value_name = "'NAME: VALUE'", help_heading = "Content")]
    pub headers: Vec<String>,
    /// Largest file held in memory; larger files are streamed from disk (the page cache)
    /// per request [default: 64KiB]
    #[arg(long, value_name = "BYTES", help_heading = "Content")]
    pub max_cached_file: Option<ByteSize>,
    /// Total size of the files and routes held in memory; files past it are streamed from disk.
    #[arg(long, default_value = "256MiB", value_name = "BYTES", help_heading = "Content")]
    pub cache_budget: ByteSize,
    /// Largest request head (request line + headers): 414/431 beyond.
    #[arg(long, default_value = "8KiB", value_name = "BYTES", help_heading = "Limits and timeouts")]
    pub max_head_size: ByteSize,
    /// Most header fields in a request (431 beyond; at most 256).
    #[arg(long, default_value_t = 64, value_name = "N", help_heading = "Limits and timeouts")]
    pub max_headers: usize,
    /// Largest request body read (discarded, or echoed by --echo); 413 beyond.
    #[arg(long, default_value = "1MiB", value_name = "BYTES", help_heading = "Limits and timeouts")]
    pub max_body_size: ByteSize,
    /// Time allowed from a request's first byte to the end of its head (408 after),
    /// and the longest pause while reading a body.
    #[arg(long, default_value = "10s", value_name = "DURATION", help_heading = "Limits and timeouts")]
    pub header_timeout: Seconds,
    /// Time allowed from the end of a request's head to the end of its body (408 after).
    #[arg(long, default_value = "60s", value_name = "DURATION", help_heading = "Limits and timeouts")]
    pub body_timeout: Seconds,
    /// How long an idle keep-alive connection is kept.
    #[arg(long, default_value = "60s", value_name = "DURATION", help_heading = "Limits and timeouts")]
    pub keepalive_timeout: Seconds,
    /// How long queued output may make no progress before the connection is dropped.
    #[arg(long, default_value = "60s", value_name = "DURATION", help_heading = "Limits and timeouts")]
    pub send_timeout: Seconds,
    /// Queued output per connection above which it stops reading (pipelining backpressure).
    #[arg(long, default_value = "256KiB", value_name = "BYTES", help_heading = "Limits and timeouts")]
    pub max_output: ByteSize,
    /// How long a graceful shutdown waits for in-flight requests.
    #[arg(long, default_value = "10s", value_name = "DURATION", help_heading = "Limits and timeouts")]
    pub drain_timeout: Seconds,
    /// The first part of a graceful shutdown (at most --drain-timeout) in which idle
    /// keep-alive connections stay open and their next request is answered with
    /// `Connection: close`: a request already on the wire is answered, not cut off.
    #[arg(long, default_value = "2s", value_name = "DURATION", help_heading = "Limits and timeouts")]
    pub lame_duck: Seconds,
    /// io_uring: submission queue entries per ring.
    #[arg(long, default_value_t = 4096, value_name = "N", help_heading = "io_uring")]
    pub uring_entries: u32,
    /// io_uring: the optional features to use where the kernel has them, a comma-separated
    /// list applied left to right from the default set: default, all, none, NAME (add) or
    /// no-NAME (remove), with names direct, ring-fd, flat-sq, send, bundle, zc, inc,
    /// sendfile, splice, mmap, mmap-zc. The default is all but zc, splice, mmap and
    /// mmap-zc. One log line at start says which are on and why each other one is off.
    #[arg(long, default_value = "default", value_name = "LIST", value_parser = uring_features, help_heading = "io_uring")]
    pub uring_features: Features,
    /// io_uring: buffers in the provided buffer ring (a power of two up to 32768; checked
    /// whatever --engine says, so a bad value is never a silent fall-back to epoll)
    /// [default: 64 with incremental consumption (inc), 1024 without]
    #[arg(long, value_name = "N", value_parser = uring_buffers, help_heading = "io_uring")]
    pub uring_buffers: Option<u16>,
    /// io_uring: size of each provided buffer [default: 32KiB with inc, 16KiB without]
    #[arg(long, value_name = "BYTES", help_heading = "io_uring")]
    pub uring_buffer_size: Option<ByteSize>,
    /// io_uring: with feature zc, sends of at least this many bytes are zero-copy.
    #[arg(long, default_value = "64KiB", value_name = "BYTES", help_heading = "io_uring")]
    pub uring_zc_threshold: ByteSize,
    /// io_uring: let a kernel thread poll the submission queue, idling after MS milliseconds.
    #[arg(long, value_name = "MS", num_args = 0..=1, default_missing_value = "1000", help_heading = "io_uring")]
    pub sqpoll: Option<u32>,
    /// Append a line per response to PATH (`-`: standard output) in nginx's combined format
    /// plus the request time; off by default. Reopened on SIGHUP (log rotation).
    #[arg(long, value_name = "PATH|-", help_heading = "Logging and metrics")]
    pub access_log: Option<PathBuf>,
    /// Serve the engine counters in Prometheus text format at PATH (e.g. /metrics); off by
    /// default. A --route or file at the same path wins.
    #[arg(long, value_name = "PATH", help_heading = "Logging and metrics")]
    pub metrics: Option<String>,
    /// Log level (error, warn, info, debug, trace, or a RUST_LOG-style filter); overrides RUST_LOG.
    #[arg(long, value_name = "LEVEL", help_heading = "Logging and metrics")]
    pub log_level: Option<String>,
}

impl ServeArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_head: self.max_head_size.0 as usize,
            max_headers: self.max_headers,
            max_body: self.max_body_size.0,
            header_timeout: self.header_timeout.0,
            body_timeout: self.body_timeout.0,
            keepalive_timeout: self.keepalive_timeout.0,
            send_timeout: self.send_timeout.0,
            max_output: self.max_output.0 as usize,
            ..Limits::default()
        }
    }

    /// What to serve, for `engine` (the one resolved from `--engine`).
    pub fn content(&self, engine: EngineChoice) -> crate::content::ContentConfig {
        crate::content::ContentConfig {
            routes: self.routes.clone(),
            route_types: self.route_types.clone(),
            dir: self.dir.clone().or_else(|| self.dir_arg.clone()),
            dotfiles: self.dotfiles,
            precompressed: self.precompressed,
            list_dirs: self.list_dirs,
            headers: self.headers.clone(),
            max_cached_file: self.max_cached_file.map_or_else(|| engine.default_max_cached_file(), |b| b.0),
            cache_budget: self.cache_budget.0,
            echoes: self.echoes.clone(),
        }
    }

    pub fn uring_options(&self) -> UringOptions {
        UringOptions {
            ring_entries: self.uring_entries,
            buf_count: self.uring_buffers,
            buf_size: self.uring_buffer_size.map(|b| b.0.min(u32::MAX as u64) as u32),
            sqpoll_idle_ms: self.sqpoll,
            features: self.uring_features,
            zc_threshold: self.uring_zc_threshold.0.min(usize::MAX as u64) as usize,
        }
    }
}

/// `--uring-features`: see [`Features::parse`].
fn uring_features(s: &str) -> Result<Features, String> {
    Features::parse(s).map_err(|e| e.to_string())
}

/// `--uring-buffers`: the kernel's provided buffer ring takes a power of two entries,
/// at most 32768.
fn uring_buffers(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(n) if n.is_power_of_two() && n <= 32768 => Ok(n),
        _ => Err(format!("'{s}' is not a power of two between 1 and 32768 (try 1024)")),
    }
}

/// `--bind`: an IP address, or a host name resolved at start. What looks like an address
/// but is not one (`999.1.1.1`, `1.2.3`, `::g`) is said to be that, rather than becoming a
/// failed name lookup.
fn bind_address(s: &str) -> Result<String, String> {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(s.to_string());
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("not an IPv4 address (four numbers from 0 to 255, e.g. 127.0.0.1)".into());
    }
    if s.contains(':') {
        return Err("not an IPv6 address (e.g. ::1; no brackets, no port)".into());
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        return Err("not an IP address or a host name".into());
    }
    Ok(s.to_string())
}

/// The address `--bind HOST --port PORT` names: an IP address as given, or the first
/// IPv4 address a host name resolves to (else its first address). One line when it
/// does not resolve.
pub fn resolve_bind(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| format!("--bind {host}: cannot resolve the name: {e}"))?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("--bind {host}: the name has no address"))
}

/// Help and version go to stdout (exit 0); a usage error is clap's full text on stderr
/// (what is wrong, suggestions, possible values, the usage line), exit 2, with its hint
/// naming the subcommand: `try 'duet load --help'` rather than `try '--help'`.
pub fn report_clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) || !e.use_stderr() {
        e.exit();
    }
    let subcommand = std::env::args().skip(1).find(|a| matches!(a.as_str(), "serve" | "load" | "compare" | "generate"));
    let text = e.render().to_string();
    let text = match subcommand {
        Some(sub) => text.replace("try '--help'", &format!("try 'duet {sub} --help'")),
        None => text.replace("try '--help'", "try 'duet --help'"),
    };
    eprint!("{text}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `-x` / `--name` in `worded` is a flag of `duet SUBCOMMAND`.
    fn assert_flags_exist(subcommand: &str, worded: &[String]) {
        use clap::CommandFactory;
        let cli = Cli::command();
        let sub = cli.find_subcommand(subcommand).expect("a subcommand");
        let known = |token: &str| match token.strip_prefix("--") {
            Some(long) => sub.get_arguments().any(|a| a.get_long() == Some(long)),
            None => token.chars().nth(1).is_some_and(|c| sub.get_arguments().any(|a| a.get_short() == Some(c))),
        };
        let mut flags = 0;
        for line in worded {
            for token in line.split(|c: char| c.is_whitespace() || "(),:".contains(c)) {
                // `ulimit -Hn` and `cargo build --release` name other programs' flags.
                let other_program = ["-Hn", "--release", "--workspace", "--examples"].contains(&token);
                if token.starts_with('-') && token.len() > 1 && !other_program {
                    assert!(known(token), "{token} is not a flag of duet {subcommand}: {line}");
                    flags += 1;
                }
            }
        }
        assert!(flags >= worded.len(), "most messages name a flag: {worded:?}");
    }

    #[test]
    fn library_errors_are_worded_with_flags_that_exist() {
        assert_flags_exist("load", &crate::flag_words::load_samples());
        assert_flags_exist("compare", &crate::flag_words::compare_samples());
    }

    #[test]
    fn uring_buffers_must_be_a_power_of_two() {
        assert_eq!(uring_buffers("1024"), Ok(1024));
        assert_eq!(uring_buffers("1"), Ok(1));
        assert_eq!(uring_buffers("32768"), Ok(32768));
        for bad in ["1000", "0", "65535", "65536", "x"] {
            assert!(uring_buffers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bind_says_what_looks_like_an_address_but_is_not_one() {
        for good in ["127.0.0.1", "0.0.0.0", "::1", "::", "localhost", "my-host.example"] {
            assert_eq!(bind_address(good).as_deref(), Ok(good));
        }
        for ipv4ish in ["999.1.1.1", "1.2.3", "256.0.0.1", "1.2.3.4.5", "127.1"] {
            assert!(bind_address(ipv4ish).unwrap_err().starts_with("not an IPv4 address"), "{ipv4ish}");
        }
        for ipv6ish in ["::g", "[::1]", "127.0.0.1:80", "1:2:3:4:5:6:7:8:9"] {
            assert!(bind_address(ipv6ish).unwrap_err().starts_with("not an IPv6 address"), "{ipv6ish}");
        }
        for junk in ["", "a b", "host/name", "host*"] {
            assert_eq!(bind_address(junk), Err("not an IP address or a host name".to_string()), "{junk:?}");
        }
    }

    #[test]
    fn bind_takes_addresses_and_host_names() {
        assert_eq!(resolve_bind("0.0.0.0", 80), Ok("0.0.0.0:80".parse().unwrap()));
        assert_eq!(resolve_bind("::1", 80), Ok("[::1]:80".parse().unwrap()));
        assert!(resolve_bind("localhost", 80).is_ok_and(|a| a.ip().is_loopback() && a.port() == 80));
        let err = resolve_bind("no-such-host.invalid", 80).unwrap_err();
        assert!(err.starts_with("--bind no-such-host.invalid: cannot resolve") && !err.contains('\n'), "{err}");
    }

    /// `compare --loss` and `--delay` need `--netns`.
    #[test]
    fn loss_and_delay_need_netns() {
        let cli = command();
        for flags in [&["--loss", "1"][..], &["--delay", "1ms"][..]] {
            let err = cli.clone().try_get_matches_from(["duet", "compare"].iter().chain(flags)).unwrap_err();
            assert!(err.to_string().contains("--netns"), "{err}");
        }
    }

    /// `--uring-features`' help names every feature and what the default leaves off.
    #[test]
    fn the_uring_features_help_names_every_feature_and_the_default() {
        let cli = command();
        let serve = cli.find_subcommand("serve").expect("serve");
        let arg = serve.get_arguments().find(|a| a.get_id() == "uring_features").expect("--uring-features");
        let help = arg.get_long_help().or(arg.get_help()).expect("help").to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let names: Vec<&str> = duet_engine_uring::Feature::ALL.iter().map(|f| f.name()).collect();
        assert!(help.contains(&names.join(", ")), "{help}");
        let off: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !duet_engine_uring::Features::default().to_string().split(',').any(|d| d == *n))
            .collect();
        let (last, first) = off.split_last().expect("features off by default");
        assert!(help.contains(&format!("all but {} and {last}", first.join(", "))), "{help}");
    }

    /// `--ablation`'s help lists the rows it runs, in order.
    #[test]
    fn the_ablation_help_names_the_rows_it_runs() {
        let cli = command();
        let compare = cli.find_subcommand("compare").expect("compare");
        let ablation = compare.get_arguments().find(|a| a.get_id() == "ablation").expect("--ablation");
        let help = ablation.get_long_help().or(ablation.get_help()).expect("help").to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(help.contains(&crate::compare_cli::ablation_engines().join(",")), "{help}");
    }
}
