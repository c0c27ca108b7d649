//! `duet serve --processes N`: a supervisor over N server processes, nginx's master and
//! workers in shape (docs/processes.md says where it differs).
//!
//! The supervisor binds every listener itself, `N × threads` of them (with the same
//! probe and check as one process: see `listen`), and hands each process its share as
//! inherited descriptors. The listening sockets therefore outlive any one process: a
//! process that dies leaves its connections waiting in the accept queue for its
//! replacement, and on `SIGUSR2` a fresh set of processes starts accepting on the very
//! same sockets before the old set drains, so not one connection is refused or reset.
//!
//! A child learns what it is from the environment: [`LISTEN_FDS`] names its listeners,
//! [`STATUS_FD`] the pipe on which it says `ready` once it serves and, at its end, its
//! counters; [`PROCESS`] its index. It runs with the very arguments the supervisor got
//! (re-executing the binary at the path it was started from, so a binary replaced on
//! disk is picked up by `SIGUSR2`, as nginx's binary upgrade does); `--processes` and
//! `--pid-file` are the supervisor's and a child ignores them.

use crate::cli::ServeArgs;
use crate::{cli, listen};
use duet_engine::GroupCounters;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// The descriptors of a child's listeners, comma-separated.
pub const LISTEN_FDS: &str = "DUET_LISTEN_FDS";
/// The write end of a child's status pipe.
pub const STATUS_FD: &str = "DUET_STATUS_FD";
/// A child's index (0-based), for its logs.
pub const PROCESS: &str = "DUET_PROCESS";
/// The group's shared counters for `--metrics`: `FD,SLOTS,FIRST` (the memory, how many
/// worker slots it has, this child's first).
pub const METRICS: &str = "DUET_METRICS";

/// A process that dies sooner than this after it started counts toward giving up.
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// Consecutive early deaths of one process after which the supervisor gives up.
const MAX_EARLY_DEATHS: u32 = 5;
/// The first restart delay after an early death; doubled per further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest restart delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a fresh process may take to say it serves.
const START_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------
// The child's side.

/// What a supervised process was handed.
#[derive(Debug)]
pub struct Supervised {
    /// Its index among the supervisor's processes.
    pub index: usize,
    /// Its listeners, one per worker thread.
    pub listeners: Vec<TcpListener>,
    /// The group's counters, for `--metrics`.
    pub metrics: Option<GroupCounters>,
    status: File,
}

/// This process's hand-over from a supervisor, if it is a supervised child.
pub fn supervised() -> Result<Option<Supervised>, String> {
    let Ok(fds) = std::env::var(LISTEN_FDS) else { return Ok(None) };
    let bad = |what: &str| format!("{what}: this process was not started by a duet supervisor as it expects");
    let index = std::env::var(PROCESS).ok().and_then(|v| v.parse().ok()).ok_or_else(|| bad(PROCESS))?;
    let status = std::env::var(STATUS_FD).ok().and_then(|v| v.parse().ok()).ok_or_else(|| bad(STATUS_FD))?;
    let mut listeners = Vec::new();
    for fd in fds.split(',') {
        let fd: RawFd = fd.parse().map_err(|_| bad(LISTEN_FDS))?;
        let socket = socket2::Socket::from(adopt_fd(fd).ok_or_else(|| bad(LISTEN_FDS))?);
        if !socket.is_listener().unwrap_or(false) {
            return Err(bad(LISTEN_FDS));
        }
        // Not handed on to anything this process might start.
        socket.set_cloexec(true).map_err(|e| format!("{LISTEN_FDS}: {e}"))?;
        listeners.push(socket.into());
    }
    let status = File::from(adopt_fd(status).ok_or_else(|| bad(STATUS_FD))?);
    if listeners.is_empty() {
        return Err(bad(LISTEN_FDS));
    }
    let metrics = match std::env::var(METRICS) {
        Ok(v) => {
            let parts: Vec<usize> = v.split(',').filter_map(|p| p.parse().ok()).collect();
            let &[fd, slots, first] = parts.as_slice() else { return Err(bad(METRICS)) };
            let fd = adopt_fd(RawFd::try_from(fd).map_err(|_| bad(METRICS))?).ok_or_else(|| bad(METRICS))?;
            Some(GroupCounters::map(fd.as_fd(), slots, first).map_err(|e| format!("{METRICS}: {e}"))?)
        }
        Err(_) => None,
    };
    Ok(Some(Supervised { index, listeners, metrics, status }))
}

/// Takes ownership of inherited descriptor `fd`, if it is open (and not one of the
/// standard three).
fn adopt_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) takes no pointer and only reads the descriptor's flags.
    if fd <= 2 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return None;
    }
    // SAFETY: `fd` is open (checked above) and was inherited for this process alone to
    // own: the supervisor names each descriptor once, and nothing else in this process
    // knows its number.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Supervised {
    /// Tells the supervisor this process serves.
    pub fn ready(&mut self) {
        let _ = self.status.write_all(b"ready\n");
    }

    /// Hands the supervisor this process's final counters (`key=value` words).
    pub fn report(&mut self, counters: &str) {
        let _ = writeln!(self.status, "counters {counters}");
    }
}

// ---------------------------------------------------------------------------------
// The supervisor's side.

enum Event {
    Signal(i32),
    /// A child said it serves (by its pid).
    Ready(u32),
    /// A child's final counters.
    Counters(String),
}

/// One child process.
struct Proc {
    index: usize,
    /// Its first slot in the group's counters (it has `threads`).
    first_slot: usize,
    child: Child,
    started: Instant,
    ready: bool,
    /// Asked to drain (replaced, or the supervisor stops): its exit is expected.
    retiring: bool,
}

/// One slot's restart state.
#[derive(Default)]
struct Slot {
    early_deaths: u32,
    restart_at: Option<Instant>,
}

struct Supervisor {
    exe: PathBuf,
    args: Vec<std::ffi::OsString>,
    /// Every listener; process `i` gets `listeners[i * threads..(i + 1) * threads]`.
    /// Dropped when the supervisor stops, so the ports close with the last process.
    listeners: Vec<TcpListener>,
    threads: usize,
    /// The group's counters for `--metrics`: two sets of slots, one per generation's
    /// parity, so that during a rolling restart the old and the fresh set both count.
    metrics: OwnedFd,
    /// The same memory mapped here, to fold the slots of a process that exits into the
    /// retired slot (so the sum never goes backwards when its slots are reused).
    counters: GroupCounters,
    /// Rolling restarts so far.
    generation: usize,
    procs: Vec<Proc>,
    slots: Vec<Slot>,
    events: Sender<Event>,
    /// Counters summed over every process that reported.
    totals: BTreeMap<String, u64>,
    /// Processes that reported their counters.
    reported: usize,
    /// The threads reading the status pipes (each ends when its process has exited).
    readers: Vec<std::thread::JoinHandle<()>>,
    stopping: bool,
}

/// Runs the supervisor of `processes` server processes for `args` until they are all
/// gone. Errors are one line for the user.
pub fn run(args: &ServeArgs, processes: usize) -> Result<(), String> {
    let threads = match args.threads {
        Some(0) => return Err("--threads must be at least 1".into()),
        Some(n) => n,
        None => 1,
    };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path to start it again: {e}"))?;
    let addr = cli::resolve_bind(&args.bind, args.port)?;
    let listeners = listen::bind_listeners(addr, processes * threads, args.reuse_port)?;
    let addr = listeners[0].local_addr().map_err(|e| format!("cannot read the bound address: {e}"))?;
    let _pid_file = args.pid_file.as_deref().map(crate::PidFile::write).transpose()?;
    let (tx, rx) = mpsc::channel();
    spawn_signal_thread(tx.clone())?;
    let slots = 2 * processes * threads;
    let metrics =
        GroupCounters::create(slots).map_err(|e| format!("cannot make shared memory for the counters: {e}"))?;
    let counters = GroupCounters::map(metrics.as_fd(), slots, 0)
        .map_err(|e| format!("cannot map the shared memory for the counters: {e}"))?;
    let mut sup = Supervisor {
        exe,
        args: std::env::args_os().skip(1).collect(),
        listeners,
        threads,
        metrics,
        counters,
        generation: 0,
        procs: Vec::new(),
        slots: (0..processes).map(|_| Slot::default()).collect(),
        events: tx,
        totals: BTreeMap::new(),
        reported: 0,
        readers: Vec::new(),
        stopping: false,
    };
    for index in 0..processes {
        sup.spawn(index)?;
    }
    sup.wait_ready(&rx, |_| true).inspect_err(|_| sup.stop_all())?;
    info!(
        "listening on http://{addr} ({} under supervisor pid {}, {} each)",
        count(processes, "process", "processes"),
        std::process::id(),
        count(threads, "thread", "threads")
    );
    sup.run(&rx)
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn spawn_signal_thread(tx: Sender<Event>) -> Result<(), String> {
    use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR2};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR2, SIGCHLD])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("duet-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// How a process ended, in words.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig} ({})", signal_name(sig)),
        _ => status.to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGHUP => "SIGHUP",
        _ => "another signal",
    }
}

/// Sends `sig` to process `pid`.
fn kill(pid: u32, sig: i32) {
    // SAFETY: kill takes no pointers; `pid` is a child not yet reaped (the caller holds
    // its `Child` and has not seen it exit), so the number still names it.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

impl Supervisor {
    /// Starts process `index` on its listeners.
    fn spawn(&mut self, index: usize) -> Result<(), String> {
        let fds: Vec<RawFd> =
            self.listeners[index * self.threads..(index + 1) * self.threads].iter().map(|l| l.as_raw_fd()).collect();
        let (read, write) = std::io::pipe().map_err(|e| format!("cannot make a status pipe: {e}"))?;
        let write_fd = write.as_raw_fd();
        let list = fds.iter().map(|fd| fd.to_string()).collect::<Vec<_>>().join(",");
        let slots = 2 * self.slots.len() * self.threads;
        let first = ((self.generation % 2) * self.slots.len() + index) * self.threads;
        let metrics_fd = self.metrics.as_raw_fd();
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args)
            .env(LISTEN_FDS, list)
            .env(STATUS_FD, write_fd.to_string())
            .env(PROCESS, index.to_string())
            .env(METRICS, format!("{metrics_fd},{slots},{first}"))
            .stdin(Stdio::null())
            // Its own process group: a Ctrl-C reaches the supervisor alone, which
            // forwards it once (twice would be the "exit at once" second signal).
            .process_group(0);
        let inherited: Vec<RawFd> = fds.iter().copied().chain([write_fd, metrics_fd]).collect();
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (fcntl, prctl, getppid) on descriptors that are
        // open in it (copies of the parent's, which `self` and `write` keep open across
        // the spawn); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &inherited {
                    // Kept across the exec: the child's hand-over.
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // The supervisor gone (killed), the process drains and exits rather
                // than serve unsupervised.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start process {index} ({}): {e}", self.exe.display()))?;
        drop(write);
        let pid = child.id();
        let tx = self.events.clone();
        let reader = std::thread::Builder::new()
            .name(format!("duet-status-{index}"))
            .spawn(move || {
                for line in BufReader::new(read).lines() {
                    let Ok(line) = line else { return };
                    let event = match line.strip_prefix("counters ") {
                        Some(counters) => Event::Counters(counters.to_string()),
                        None if line == "ready" => Event::Ready(pid),
                        None => continue,
                    };
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start a status thread: {e}"))?;
        self.readers.retain(|r| !r.is_finished());
        self.readers.push(reader);
        info!("process {index} started (pid {pid})");
        self.procs.push(Proc {
            index,
            first_slot: first,
            child,
            started: Instant::now(),
            ready: false,
            retiring: false,
        });
        Ok(())
    }

    /// Waits until every process `which` picks says it serves; an error if one of them
    /// exits first, or takes too long.
    fn wait_ready(&mut self, rx: &Receiver<Event>, which: impl Fn(&Proc) -> bool) -> Result<(), String> {
        let give_up = Instant::now() + START_TIMEOUT;
        while self.procs.iter().any(|p| which(p) && !p.ready) {
            let left = give_up.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Event::Ready(pid)) => self.mark_ready(pid),
                Ok(Event::Counters(c)) => self.add_counters(&c),
                Ok(Event::Signal(sig)) if sig == libc::SIGCHLD => {
                    for (p, status) in self.reap() {
                        if which(&p) && !p.ready {
                            return Err(format!(
                                "process {} exited while starting ({}); see its error above",
                                p.index,
                                describe(status)
                            ));
                        }
                        self.died(p, status);
                    }
                }
                Ok(Event::Signal(sig)) => self.on_signal(sig),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("processes did not start serving within {START_TIMEOUT:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => return Err("the signal thread stopped".into()),
            }
            if self.stopping {
                return Err("stopped while starting".into());
            }
        }
        Ok(())
    }

    fn mark_ready(&mut self, pid: u32) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.child.id() == pid) {
            p.ready = true;
        }
    }

    fn add_counters(&mut self, counters: &str) {
        self.reported += 1;
        for word in counters.split_whitespace() {
            if let Some((key, value)) = word.split_once('=') {
                if let Ok(v) = value.parse::<u64>() {
                    *self.totals.entry(key.to_string()).or_default() += v;
                }
            }
        }
    }

    /// The processes that have exited, taken out of the list, with how they ended.
    fn reap(&mut self) -> Vec<(Proc, ExitStatus)> {
        let mut gone = Vec::new();
        let mut i = 0;
        while i < self.procs.len() {
            match self.procs[i].child.try_wait() {
                Ok(Some(status)) => {
                    let p = self.procs.swap_remove(i);
                    self.counters.retire(p.first_slot, self.threads);
                    gone.push((p, status));
                }
                Ok(None) => i += 1,
                Err(e) => {
                    warn!("cannot check process {}: {e}", self.procs[i].index);
                    i += 1;
                }
            }
        }
        gone
    }

    /// Process `p` exited with `status`: expected when it was retiring; otherwise it is
    /// restarted after its backoff.
    fn died(&mut self, p: Proc, status: ExitStatus) {
        let pid = p.child.id();
        if p.retiring || self.stopping {
            info!("process {} (pid {pid}) exited ({})", p.index, describe(status));
            return;
        }
        let slot = &mut self.slots[p.index];
        if p.started.elapsed() < STABLE_AFTER {
            slot.early_deaths += 1;
        } else {
            slot.early_deaths = 0;
        }
        let delay = match slot.early_deaths {
            0 => Duration::ZERO,
            n => FIRST_BACKOFF.saturating_mul(1 << (n - 1).min(16)).min(MAX_BACKOFF),
        };
        slot.restart_at = Some(Instant::now() + delay);
        warn!("process {} (pid {pid}) died ({}); restarting it in {delay:?}", p.index, describe(status));
    }

    /// The earliest pending restart.
    fn next_restart(&self) -> Option<Instant> {
        self.slots.iter().filter_map(|s| s.restart_at).min()
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            libc::SIGINT | libc::SIGTERM if !self.stopping => {
                info!("shutting down: every process drains (signal again to stop them at once)");
                self.stopping = true;
                for s in &mut self.slots {
                    s.restart_at = None;
                }
                for p in &mut self.procs {
                    p.retiring = true;
                    kill(p.child.id(), libc::SIGTERM);
                }
                // The processes hold the last copies: each port closes when its last
                // process has stopped accepting, and new connections are then refused
                // rather than queued for nobody.
                self.listeners.clear();
            }
            libc::SIGINT | libc::SIGTERM => {
                warn!("second signal: stopping every process now");
                for p in &self.procs {
                    // A second SIGTERM is each process's "exit at once".
                    kill(p.child.id(), libc::SIGTERM);
                }
                std::process::exit(128 + sig);
            }
            libc::SIGHUP => {
                info!("SIGHUP: every process reloads");
                for p in self.procs.iter().filter(|p| !p.retiring) {
                    kill(p.child.id(), libc::SIGHUP);
                }
            }
            _ => {}
        }
    }

    /// SIGUSR2: a fresh set of processes on the same listeners; once every one serves,
    /// the old set drains (their lame duck answers each kept connection's next request
    /// with `Connection: close`, and the client reconnects to the new set).
    fn replace_all(&mut self, rx: &Receiver<Event>) -> Result<(), String> {
        info!("SIGUSR2: starting a fresh set of processes");
        let old: Vec<u32> = self.procs.iter().map(|p| p.child.id()).collect();
        for p in &mut self.procs {
            // Its exit is no death to restart from now on.
            p.retiring = true;
        }
        for s in &mut self.slots {
            s.restart_at = None;
            s.early_deaths = 0;
        }
        self.generation += 1;
        for index in 0..self.slots.len() {
            self.spawn(index)?;
        }
        let fresh = |p: &Proc| !old.contains(&p.child.id());
        if let Err(e) = self.wait_ready(rx, fresh) {
            // The old set keeps serving; the fresh one goes.
            for p in self.procs.iter_mut().filter(|p| !old.contains(&p.child.id())) {
                p.retiring = true;
                kill(p.child.id(), libc::SIGTERM);
            }
            for p in self.procs.iter_mut().filter(|p| old.contains(&p.child.id())) {
                p.retiring = false;
            }
            // A restart of one of the old set uses the old set's counter slots.
            self.generation -= 1;
            warn!("SIGUSR2: the fresh set did not start ({e}); the old set keeps serving");
            return Ok(());
        }
        info!("SIGUSR2: the fresh set serves; the old set drains");
        for p in self.procs.iter().filter(|p| old.contains(&p.child.id())) {
            kill(p.child.id(), libc::SIGTERM);
        }
        Ok(())
    }

    /// The supervisor's loop, until every process is gone after a shutdown.
    fn run(mut self, rx: &Receiver<Event>) -> Result<(), String> {
        loop {
            if self.stopping && self.procs.is_empty() {
                // Every process has exited: its last words are in the channel once its
                // reader has seen the end of its pipe.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                while let Ok(event) = rx.try_recv() {
                    if let Event::Counters(c) = event {
                        self.add_counters(&c);
                    }
                }
                self.log_totals();
                return Ok(());
            }
            let event = match self.next_restart() {
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match event {
                Ok(Event::Signal(libc::SIGCHLD)) => {
                    for (p, status) in self.reap() {
                        self.died(p, status);
                    }
                    if let Some(index) = self.slots.iter().position(|s| s.early_deaths >= MAX_EARLY_DEATHS) {
                        error!("process {index} keeps dying ({MAX_EARLY_DEATHS} times in a row within {STABLE_AFTER:?} of starting); giving up");
                        self.stop_all();
                        return Err(format!("process {index} keeps dying; see the log above"));
                    }
                }
                Ok(Event::Signal(libc::SIGUSR2)) if !self.stopping => self.replace_all(rx)?,
                Ok(Event::Signal(sig)) => self.on_signal(sig),
                Ok(Event::Ready(pid)) => self.mark_ready(pid),
                Ok(Event::Counters(c)) => self.add_counters(&c),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err("the signal thread stopped".into()),
            }
            let now = Instant::now();
            for index in 0..self.slots.len() {
                if self.slots[index].restart_at.is_some_and(|at| at <= now) {
                    self.slots[index].restart_at = None;
                    if let Err(e) = self.spawn(index) {
                        warn!("{e}");
                        self.slots[index].early_deaths += 1;
                        self.slots[index].restart_at = Some(now + MAX_BACKOFF);
                    }
                }
            }
        }
    }

    /// Stops every process (a drain) and waits for them: on the way out after an error.
    fn stop_all(&mut self) {
        self.listeners.clear();
        for p in &mut self.procs {
            p.retiring = true;
            kill(p.child.id(), libc::SIGTERM);
        }
        for p in &mut self.procs {
            let _ = p.child.wait();
        }
        self.procs.clear();
    }

    fn log_totals(&self) {
        let words: Vec<String> = self.totals.iter().map(|(k, v)| format!("{k}={v}")).collect();
        info!("stopped: counters of {} summed: {}", count(self.reported, "process", "processes"), words.join(" "));
    }
}
