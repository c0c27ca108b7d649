//! `duet`: the binary. CLI, engine selection, signals and logging; the engines do the rest.

mod arg_types;
mod cli;
mod compare_cli;
mod content;
mod flag_words;
mod generate;
mod listen;
mod load_cli;
mod output;
mod supervise;
mod uring_words;
mod watch;

use arg_types::EngineChoice;
use clap::FromArgMatches;
use cli::{Cli, Command, ServeArgs};
use duet_engine::{AccessLog, Metrics, ServeConfig, Shutdown};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

fn main() -> ExitCode {
    let cli = match cli::command().try_get_matches().and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => cli,
        Err(e) => return cli::report_clap_error(e),
    };
    match cli.command {
        Command::Load(args) => load_cli::load(args),
        Command::Compare(args) => compare_cli::compare(args),
        Command::Generate(args) => generate::generate(args, cli::command()),
        Command::Serve(args) => match serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                eprintln!("duet: error: {msg}");
                ExitCode::FAILURE
            }
        },
    }
}

fn init_logging(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        // A closed stderr (a log pipe whose reader died) must never panic a thread: the
        // signal thread logs on the way to a shutdown.
        .log_internal_errors(false)
        .init();
}

fn serve(args: ServeArgs) -> Result<(), String> {
    init_logging(args.log_level.as_deref());
    let limits = args.limits();
    limits.validate()?;
    let mut supervised = supervise::supervised()?;
    if supervised.is_none() {
        match args.processes {
            0 => return Err("--processes must be at least 1".into()),
            1 => {}
            n => return supervise::run(&args, n),
        }
    }
    let threads = match (&supervised, args.threads) {
        (Some(s), _) => s.listeners.len(),
        (None, Some(0)) => return Err("--threads must be at least 1".into()),
        (None, Some(n)) => n,
        (None, None) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };

    if let Some(path) = args.metrics.as_deref() {
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == b'?' || b == b'#' || b == b'%') {
            return Err(format!("--metrics {path}: expected a plain absolute path such as /metrics"));
        }
    }
    // Every argument is checked (and the --bind name resolved) before the first log line.
    let bind = cli::resolve_bind(&args.bind, args.port)?;

    let mut fallback = None;
    let engine = match args.engine {
        EngineChoice::Uring => {
            duet_engine_uring::probe(&args.uring_options(), threads)
                .map_err(|e| format!("io_uring engine unavailable: {}", uring_words::probe_failure(&e)))?;
            EngineChoice::Uring
        }
        EngineChoice::Auto => match duet_engine_uring::probe(&args.uring_options(), threads) {
            Ok(()) => EngineChoice::Uring,
            Err(e) => {
                fallback = Some(uring_words::probe_failure(&e));
                EngineChoice::Epoll
            }
        },
        // A readiness engine: epoll or one of its baselines.
        readiness => readiness,
    };

    let content = args.content(engine);
    let loaded = content::load(&content)?;
    if let Some(why) = fallback {
        info!("io_uring unavailable ({why}); using the epoll engine");
    }
    if !content.is_default() {
        info!("loaded {}", loaded.summary());
    }

    let mut uring = args.uring_options();
    if engine == EngineChoice::Uring {
        let mut resolved = duet_engine_uring::features(&uring);
        if args.access_log.is_some() {
            resolved.exclude(
                duet_engine_uring::Feature::Direct,
                "--access-log: a direct descriptor has no fd to read the peer address from",
            );
        }
        info!("{}", uring_words::features_line(&resolved));
        uring.features = resolved.on;
    }

    let listeners = match supervised.as_mut() {
        Some(s) => std::mem::take(&mut s.listeners),
        None => listen::bind_listeners(bind, threads, args.reuse_port)?,
    };
    let addr = listeners[0].local_addr().map_err(|e| format!("cannot read the bound address: {e}"))?;
    let access_log = match args.access_log.as_deref() {
        Some(path) => {
            Some(AccessLog::open(path).map_err(|e| format!("cannot open --access-log {}: {e}", path.display()))?)
        }
        None => None,
    };
    // Under a supervisor the pid file is the supervisor's.
    let _pid_file = args.pid_file.as_deref().filter(|_| supervised.is_none()).map(PidFile::write).transpose()?;
    raise_nofile_limit();
    let site = Arc::new(loaded.site);
    let shutdown = Shutdown::new();
    let watching = content.dir.is_some() && !args.no_watch;
    let reloader =
        Arc::new(Mutex::new(watch::Reloader::new(content, Arc::clone(&site), loaded.bodies, loaded.dir_urls)));
    spawn_signal_thread(shutdown.clone(), Arc::clone(&reloader), access_log.clone())?;
    if watching {
        watch::spawn(reloader, loaded.dirs)?;
    } else if args.no_watch {
        info!("--no-watch: changes under --dir are served after SIGHUP");
    }
    let config = ServeConfig {
        listeners,
        pin: args.pin,
        limits,
        drain_timeout: args.drain_timeout.0,
        lame_duck: args.lame_duck.0,
        metrics: args.metrics.as_deref().map(|path| match supervised.as_mut().and_then(|s| s.metrics.take()) {
            Some(group) => Metrics::in_group(path, engine.name(), threads, group),
            None => Metrics::new(path, engine.name(), threads),
        }),
        access_log,
    };
    if let Some(path) = args.metrics.as_deref() {
        info!("metrics at http://{addr}{path}");
    }
    match supervised.as_mut() {
        Some(s) => {
            info!(
                "process {} serving http://{addr} (engine {}, {})",
                s.index,
                engine.name(),
                content::count(threads, "thread")
            );
            s.ready();
        }
        None => info!("listening on http://{addr} (engine {}, {})", engine.name(), content::count(threads, "thread")),
    }
    let report = match engine.readiness() {
        Some(readiness) => duet_engine_epoll::serve(config, site, shutdown, readiness),
        None => duet_engine_uring::serve(config, site, shutdown, uring),
    }
    .map_err(|e| format!("{} engine failed: {e}", engine.name()))?;
    info!(
        "stopped: {}, {} ({})",
        content::count(report.accepted as usize, "connection"),
        content::count(report.requests as usize, "request"),
        content::count(report.errors as usize, "error")
    );
    let counters = counters_line(&report);
    info!("counters: {counters}");
    if let Some(s) = supervised.as_mut() {
        s.report(&counters);
    }
    Ok(())
}

/// A report's counters as `key=value` words (the log's line, and what a supervised
/// process hands its supervisor to sum).
fn counters_line(report: &duet_engine::Stats) -> String {
    format!(
        "requests={} syscalls={} syscalls_per_request={:.2} wakeups={} events={} events_per_wakeup={:.2} \
         bytes_read={} bytes_written={} accepts={} closes={} enobufs={} partial_writes={} interest_changes={} \
         refused={}",
        report.requests,
        report.syscalls,
        report.syscalls_per_request(),
        report.wakeups,
        report.events,
        report.events_per_wakeup(),
        report.bytes_read,
        report.bytes_written,
        report.accepted,
        report.closed,
        report.enobufs,
        report.partial_writes,
        report.interest_changes,
        report.refused,
    )
}

/// `--pid-file`: holds this process's id while the server runs; removed on the way out.
struct PidFile(std::path::PathBuf);

impl PidFile {
    fn write(path: &std::path::Path) -> Result<PidFile, String> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write --pid-file {}: {e}", path.display()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            warn!("cannot remove --pid-file {}: {e}", self.0.display());
        }
    }
}

fn reopen(log: &AccessLog) {
    match log.reopen() {
        Ok(()) => info!("SIGHUP: reopened the access log {}", log.target()),
        Err(e) => warn!("SIGHUP: cannot reopen the access log {}: {e}; still writing to the old file", log.target()),
    }
}

fn raise_nofile_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => info!("open file limit: {n}"),
        Err(e) => warn!("cannot raise the open file limit: {e}"),
    }
}

/// SIGINT/SIGTERM: the first asks for a graceful shutdown, the second exits at once.
/// SIGHUP: reopen `--access-log` (after a rotation), reload `--route` and `--dir` and
/// swap the site; a failed reload keeps the site being served, a failed reopen the log
/// file in use.
fn spawn_signal_thread(
    shutdown: Shutdown,
    reloader: Arc<Mutex<watch::Reloader>>,
    access_log: Option<Arc<AccessLog>>,
) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("duet-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                if sig == SIGHUP {
                    // Standard output is not reopened.
                    if let Some(log) = access_log.as_ref().filter(|log| log.target() != "-") {
                        reopen(log);
                    }
                    reloader.lock().unwrap_or_else(|e| e.into_inner()).reload_all();
                    continue;
                }
                seen += 1;
                if seen == 1 {
                    shutdown.trigger();
                    info!("shutting down: finishing in-flight requests (signal again to stop at once)");
                } else {
                    warn!("second signal: exiting now");
                    std::process::exit(128 + sig);
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}
