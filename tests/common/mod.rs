//! Harness for the conformance suite: starts the real `duet serve` on an ephemeral
//! port, talks raw HTTP/1.1 over TCP, and stops the server when the test ends.
//!
//! No sleeps: every wait is a blocking read or a channel receive with a generous
//! timeout, so the tests pass on a busy machine and fail (rather than hang) when the
//! server misbehaves.

#![allow(dead_code)]

use duet_loadtest::compare::parse_listening;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a client read may block before the test fails. Generous: the tests run
/// on busy 2-core machines, and nothing here waits longer than a server timeout of 1 s.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the server may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a test waits for a log line it knows the server will write.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server may take to exit after a signal or a start-up error.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The path of the binary under test.
pub fn duet_bin() -> &'static str {
    env!("CARGO_BIN_EXE_duet")
}

/// A command for the binary with a predictable log setup (info level, no colours).
pub fn duet_command() -> Command {
    let mut cmd = Command::new(duet_bin());
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1").stdin(Stdio::null());
    cmd
}

enum Event {
    Listening(SocketAddr),
    Eof,
}

/// Why a server did not start.
#[derive(Debug)]
pub struct StartFailure {
    /// Exit status, when the process exited.
    pub status: Option<ExitStatus>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<String>,
}

impl StartFailure {
    pub fn mentions(&self, needle: &str) -> bool {
        self.stderr.iter().any(|l| l.contains(needle))
    }
}

/// A running `duet serve`, killed on drop (also when the test panics).
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub engine: String,
    /// stderr so far, and a condvar the reader thread notifies after every line.
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    events: Receiver<Event>,
    drain: Option<JoinHandle<()>>,
    exited: Option<ExitStatus>,
    /// Whether the test closed the server's stderr after its listening line.
    stderr_closed: bool,
    /// The server's standard output, when started with [`Server::start_capturing_stdout`].
    pub stdout: Option<ChildStdout>,
}

impl Server {
    /// Starts `duet serve --engine <engine> --port 0 --threads 1 <extra>`; panics with
    /// the server's stderr if it does not come up.
    pub fn start(engine: &str, extra: &[&str]) -> Server {
        started(Server::try_start(engine, extra), &format!("duet serve --engine {engine} {extra:?}"))
    }

    /// Like [`Server::start`], on `port` instead of an ephemeral one.
    pub fn try_start_on_port(engine: &str, port: u16, extra: &[&str]) -> Result<Server, StartFailure> {
        Server::spawn(serve_command(engine, port, 1, extra), engine, false)
    }

    /// Like [`Server::start`], with `threads` worker threads instead of one.
    pub fn start_with_threads(engine: &str, threads: usize, extra: &[&str]) -> Server {
        let what = format!("duet serve --engine {engine} --threads {threads} {extra:?}");
        started(Server::spawn(serve_command(engine, 0, threads, extra), engine, false), &what)
    }

    /// Like [`Server::start`], with `env` added to the server's environment.
    pub fn start_with_env(engine: &str, env: &[(&str, &str)], extra: &[&str]) -> Server {
        let mut cmd = serve_command(engine, 0, 1, extra);
        cmd.envs(env.iter().copied());
        started(Server::spawn(cmd, engine, false), &format!("duet serve --engine {engine} {extra:?} with {env:?}"))
    }

    /// Like [`Server::start`], but reports a start-up failure instead of panicking.
    pub fn try_start(engine: &str, extra: &[&str]) -> Result<Server, StartFailure> {
        Server::try_start_on_port(engine, 0, extra)
    }

    /// Like [`Server::start`], but closes the read end of the server's stderr right after
    /// its listening line: a log reader that went away. Later log lines are lost (so
    /// [`Server::stderr_lines`] ends there), and [`Server::wait_exit`] waits on the
    /// process instead of on the end of its stderr.
    pub fn start_then_close_stderr(engine: &str, extra: &[&str]) -> Server {
        let what = format!("duet serve --engine {engine} {extra:?}");
        started(Server::spawn(serve_command(engine, 0, 1, extra), engine, true), &what)
    }

    /// Starts the server with its open-file limit (soft and hard) set to `nofile`, through
    /// util-linux `prlimit`.
    pub fn start_with_fd_limit(engine: &str, nofile: u32, extra: &[&str]) -> Server {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(duet_bin())
            .args(serve_args(engine))
            .args(["--port", "0", "--threads", "1"])
            .args(extra)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        started(Server::spawn(cmd, engine, false), "duet serve under prlimit")
    }

    /// Like [`Server::start`], with the server's standard output piped to
    /// [`Server::stdout`] (it is discarded otherwise).
    pub fn start_capturing_stdout(engine: &str, extra: &[&str]) -> Server {
        let mut cmd = serve_command(engine, 0, 1, extra);
        cmd.stdout(Stdio::piped());
        started(Server::spawn_with_stdout(cmd, engine, false), &format!("duet serve --engine {engine} {extra:?}"))
    }

    /// Spawns `cmd` and waits for its listening line, read by the one parser of that line
    /// ([`duet_loadtest::compare::parse_listening`]). With `close_stderr`, the reader
    /// thread stops and closes the pipe right after that line.
    fn spawn(mut cmd: Command, engine: &str, close_stderr: bool) -> Result<Server, StartFailure> {
        cmd.stdout(Stdio::null());
        Server::spawn_with_stdout(cmd, engine, close_stderr)
    }

    /// [`Server::spawn`] with the standard output `cmd` was given.
    fn spawn_with_stdout(mut cmd: Command, engine: &str, close_stderr: bool) -> Result<Server, StartFailure> {
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn duet");
        let stdout = child.stdout.take();
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let (tx, events) = mpsc::channel();
        let drain = {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut announced = false;
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    let listening = if announced { None } else { parse_listening(&text) };
                    lines.0.lock().unwrap().push(text);
                    lines.1.notify_all();
                    if let Some(addr) = listening {
                        announced = true;
                        let _ = tx.send(Event::Listening(addr));
                        if close_stderr {
                            return; // drops the reader: the pipe's read end closes
                        }
                    }
                }
                let _ = tx.send(Event::Eof);
            })
        };
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            engine: engine.to_string(),
            lines,
            events,
            drain: Some(drain),
            exited: None,
            stderr_closed: close_stderr,
            stdout,
        };
        match server.events.recv_timeout(START_TIMEOUT) {
            Ok(Event::Listening(addr)) => {
                server.addr = addr;
                Ok(server)
            }
            Ok(Event::Eof) | Err(RecvTimeoutError::Disconnected) => {
                // stderr closed: the process exited (or is about to).
                let status = server.child.wait().ok();
                server.exited = status;
                Err(StartFailure { status, stderr: server.stderr_lines() })
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = server.child.kill();
                let status = server.child.wait().ok();
                server.exited = status;
                let mut stderr = server.stderr_lines();
                stderr.push(format!("(no listening line within {START_TIMEOUT:?}; killed)"));
                Err(StartFailure { status, stderr })
            }
        }
    }

    /// The server's process id (for reading `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server has written to stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    /// Waits until a stderr line contains `needle` (the server logs some events from
    /// another thread than the one that answers, so a response can arrive before its
    /// log line has been read), then returns every line so far. Panics after
    /// `LOG_TIMEOUT` with what was logged.
    pub fn wait_for_line(&self, needle: &str) -> Vec<String> {
        self.wait_for_lines(needle, 1)
    }

    /// Like [`Server::wait_for_line`], until `count` lines contain `needle`.
    pub fn wait_for_lines(&self, needle: &str, count: usize) -> Vec<String> {
        let (lock, logged) = &*self.lines;
        let guard = lock.lock().unwrap();
        let (guard, timeout) = logged
            .wait_timeout_while(guard, LOG_TIMEOUT, |lines| lines.iter().filter(|l| l.contains(needle)).count() < count)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "no {count} log lines with {needle:?} within {LOG_TIMEOUT:?}:\n{}",
            guard.join("\n")
        );
        guard.clone()
    }

    /// A new client connection with read/write timeouts.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; the pid
        // is our own child, which has not been reaped yet (we only reap it in
        // wait_exit or Drop), so the pid cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
    }

    /// Stops the server (SIGSTOP) and returns once it is stopped: what clients send
    /// meanwhile waits in the kernel, and [`Server::resume`] lets the server find it all
    /// at once, in the order it arrived.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        let pid = self.child.id() as libc::pid_t;
        let mut status = 0;
        loop {
            // SAFETY: waitpid writes one int into the valid, exclusively borrowed
            // `status`; the pid is our child, not reaped yet (WUNTRACED reports a stop
            // and reaps nothing).
            let rc = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
            if rc == pid && libc::WIFSTOPPED(status) {
                return;
            }
            let e = io::Error::last_os_error();
            assert!(rc < 0 && e.kind() == io::ErrorKind::Interrupted, "waitpid({pid}) for its stop: rc {rc}, {e}");
        }
    }

    /// Lets a server stopped by [`Server::pause`] run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Waits (bounded) for the server to exit and returns its status. The end of its
    /// stderr marks the exit, so this needs no polling.
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        if self.stderr_closed {
            let status = self.wait_child(EXIT_TIMEOUT).unwrap_or_else(|| {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "server did not exit within {EXIT_TIMEOUT:?}; stderr before it was closed:\n{}",
                    self.stderr_lines().join("\n")
                )
            });
            self.exited = Some(status);
            return status;
        }
        loop {
            match self.events.recv_timeout(EXIT_TIMEOUT) {
                Ok(Event::Listening(_)) => continue,
                Ok(Event::Eof) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("server did not exit within {EXIT_TIMEOUT:?}; stderr:\n{}", self.stderr_lines().join("\n"));
                }
            }
        }
        let status = self.child.wait().expect("wait for duet");
        self.exited = Some(status);
        if let Some(h) = self.drain.take() {
            let _ = h.join();
        }
        status
    }
}

impl Server {
    /// Waits for the child to exit, at most `timeout` (blocking in poll(2) on a pidfd,
    /// no polling loop); `None` if it is still running.
    fn wait_child(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1;
        // the child is ours and not reaped yet, so the pid names it.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
        assert!(fd >= 0, "pidfd_open({pid}): {}", io::Error::last_os_error());
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        let ready = loop {
            // SAFETY: poll reads and writes the one valid, exclusively borrowed pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc >= 0 {
                break rc > 0;
            }
            let e = io::Error::last_os_error();
            assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll on a pidfd: {e}");
        };
        // SAFETY: fd is the descriptor pidfd_open returned above, closed only here.
        unsafe { libc::close(fd) };
        if ready {
            Some(self.child.wait().expect("wait for duet"))
        } else {
            None
        }
    }

    /// A connection whose receive buffer is `rcvbuf` bytes, set before connecting so the
    /// window is small from the handshake on: the server can push only as fast as the
    /// test reads. (Shrinking the buffer of an established connection shrinks a window
    /// already offered, which stalls loopback TCP in zero-window probing for seconds.)
    pub fn connect_small_rcvbuf(&self, rcvbuf: usize) -> TcpStream {
        let socket =
            socket2::Socket::new(socket2::Domain::for_address(self.addr), socket2::Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(rcvbuf).unwrap();
        socket
            .connect_timeout(&self.addr.into(), READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr));
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream
    }

    /// The number of descriptors the server process has open.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("read /proc/<pid>/fd").count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        if let Some(h) = self.drain.take() {
            let _ = h.join();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- duet serve --engine {} ({}) stderr ---\n{}\n--- end ---",
                self.engine,
                self.addr,
                self.stderr_lines().join("\n")
            );
        }
    }
}

/// `duet serve` for `engine` (as the suite names it) on `port` with `threads` workers,
/// then `extra`.
fn serve_command(engine: &str, port: u16, threads: usize, extra: &[&str]) -> Command {
    let mut cmd = duet_command();
    cmd.args(serve_args(engine)).args(["--port", &port.to_string(), "--threads", &threads.to_string()]).args(extra);
    cmd
}

/// The server `result` started, or a panic naming `what` with the server's stderr.
fn started(result: Result<Server, StartFailure>, what: &str) -> Server {
    match result {
        Ok(s) => s,
        Err(f) => panic!("{what} did not start (exit {:?}); stderr:\n{}", f.status, f.stderr.join("\n")),
    }
}

/// `serve --engine ENGINE`, for an engine as the suite names it: an engine, or
/// `uring:FEATURES`, the io_uring engine with `--uring-features FEATURES` (as `duet
/// compare` names its rows).
pub fn serve_args(engine: &str) -> Vec<String> {
    let mut args = vec!["serve".to_string(), "--engine".to_string()];
    match engine.split_once(':') {
        Some((name, features)) => args.extend([name.to_string(), "--uring-features".to_string(), features.to_string()]),
        None => args.push(engine.to_string()),
    }
    args
}

/// Whether `engine` (as the suite names it) is the io_uring engine, whatever its features.
pub fn is_uring(engine: &str) -> bool {
    engine == "uring" || engine.starts_with("uring:")
}

/// Whether the tests of `engine` should be skipped, and why. Only an engine that
/// exits at start-up saying it is unavailable or not built is skipped; with
/// `DUET_REQUIRE_URING=1` that is a failure instead. Probed once per test process.
pub fn skip_reason(engine: &str) -> Option<String> {
    if engine == "epoll" {
        return None;
    }
    static PROBES: OnceLock<Mutex<HashMap<String, Option<String>>>> = OnceLock::new();
    let probes = PROBES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut probes = probes.lock().unwrap_or_else(|e| e.into_inner());
    let reason = probes
        .entry(engine.to_string())
        .or_insert_with(|| match Server::try_start(engine, &[]) {
            Ok(_server) => None, // dropped: killed
            Err(f) if f.mentions("io_uring engine unavailable") || f.mentions("not built yet") => {
                let why: Vec<String> = f
                    .stderr
                    .iter()
                    .filter(|l| l.contains("unavailable") || l.contains("not built yet"))
                    .cloned()
                    .collect();
                Some(why.join(" | "))
            }
            // Any other start-up failure is a real failure: let the test report it.
            Err(_) => None,
        })
        .clone();
    drop(probes);
    let reason = reason?;
    if is_uring(engine) && std::env::var("DUET_REQUIRE_URING").as_deref() == Ok("1") {
        panic!("DUET_REQUIRE_URING=1 but the {engine} engine is unavailable: {reason}");
    }
    Some(reason)
}

/// Raises this process's soft RLIMIT_NOFILE to the hard limit (for tests that hold
/// hundreds of sockets) and returns the soft limit it has then.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the valid, exclusively borrowed `lim`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let mut raised = lim;
        raised.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the valid, initialised `raised`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// A parsed response.
#[derive(Clone, Debug)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The raw head, for messages.
    pub raw_head: String,
}

impl Response {
    /// The value of the only header `name` (case-insensitive); panics if repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.header_all(name);
        assert!(all.len() <= 1, "header {name} repeated in\n{}", self.raw_head);
        all.first().copied()
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// True when a `Connection` header lists `close`.
    pub fn says_close(&self) -> bool {
        self.header_all("connection").iter().any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw TCP client with read and write timeouts and a buffer for bytes read past the
/// end of a response (pipelining).
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream =
            TcpStream::connect_timeout(&addr, READ_TIMEOUT).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        Client { stream, buf: Vec::new() }
    }

    /// A client over an already connected stream (e.g. one with socket options set
    /// before connecting); the caller sets its timeouts.
    pub fn from_stream(stream: TcpStream) -> Client {
        Client { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("send {}: {e}", show(bytes)));
    }

    /// One `write` per byte, with TCP_NODELAY so each byte is its own segment.
    pub fn send_bytewise(&mut self, bytes: &[u8]) {
        self.stream.set_nodelay(true).unwrap();
        for (i, b) in bytes.iter().enumerate() {
            self.stream
                .write_all(std::slice::from_ref(b))
                .unwrap_or_else(|e| panic!("send byte {i} of {}: {e}", show(bytes)));
        }
    }

    /// Shuts down the write side (the server sees EOF).
    pub fn shutdown_write(&mut self) {
        self.stream.shutdown(Shutdown::Write).unwrap();
    }

    /// Reads more bytes into the buffer: Ok(0) at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends what it can: the peer may already have closed (a shed connection).
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// A response, or `None` if the server closed (EOF or reset) before sending a byte.
    /// A read timeout is a failure: the server must either answer or close.
    pub fn try_read_response(&mut self) -> Option<Response> {
        if self.buf.is_empty() {
            match self.fill() {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => {
                    return None
                }
                Err(e) => panic!("server neither answered nor closed: {e}"),
            }
        }
        Some(self.read_response())
    }

    /// Reads one response to a GET (or any request whose response has a body).
    pub fn read_response(&mut self) -> Response {
        self.read_response_inner(false)
    }

    /// Reads one response to a HEAD: headers only, whatever Content-Length says.
    pub fn read_head_response(&mut self) -> Response {
        self.read_response_inner(true)
    }

    pub fn read_responses(&mut self, n: usize) -> Vec<Response> {
        (0..n).map(|_| self.read_response()).collect()
    }

    fn read_response_inner(&mut self, head_only: bool) -> Response {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.buf.len() < 1 << 20, "no end of head in 1 MiB: {}", show(&self.buf));
            match self.fill() {
                Ok(0) => panic!("EOF before a complete response head; got {}", show(&self.buf)),
                Ok(_) => {}
                Err(e) => panic!("reading a response head: {e}; got {}", show(&self.buf)),
            }
        };
        let raw_head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = raw_head.trim_end().split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("bad status line in\n{raw_head}"));
        let reason = parts.next().unwrap_or("").to_string();
        assert!(version.starts_with("HTTP/1."), "bad status line in\n{raw_head}");
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap_or_else(|| panic!("bad header line {l:?} in\n{raw_head}"));
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        let mut resp = Response { version, status, reason, headers, body: Vec::new(), raw_head };
        let len = if head_only {
            0
        } else {
            let cl = resp
                .header("content-length")
                .unwrap_or_else(|| panic!("response without Content-Length:\n{}", resp.raw_head));
            cl.parse::<usize>().unwrap_or_else(|_| panic!("bad Content-Length in\n{}", resp.raw_head))
        };
        while self.buf.len() < head_end + len {
            match self.fill() {
                Ok(0) => panic!(
                    "EOF in a response body ({} of {len} bytes) after\n{}",
                    self.buf.len() - head_end,
                    resp.raw_head
                ),
                Ok(_) => {}
                Err(e) => panic!("reading a response body: {e} after\n{}", resp.raw_head),
            }
        }
        resp.body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        resp
    }

    /// Asserts that the server closed the connection after what was read so far:
    /// no further bytes, then EOF (or a reset).
    pub fn expect_closed(&mut self) {
        self.read_to_close(true);
    }

    /// Asserts that the server ended the connection in order after what was read so
    /// far: no further bytes, then EOF. A reset fails: it is how a close with unread
    /// input shows, and it can destroy a response the client has not read yet.
    pub fn expect_orderly_close(&mut self) {
        self.read_to_close(false);
    }

    fn read_to_close(&mut self, reset_ok: bool) {
        assert!(self.buf.is_empty(), "unexpected bytes after the response: {}", show(&self.buf));
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => panic!("expected the server to close; got more bytes: {}", show(&chunk[..n])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if reset_ok && e.kind() == io::ErrorKind::ConnectionReset => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    panic!("the server did not close the connection within {READ_TIMEOUT:?}")
                }
                Err(e) => panic!("expected an orderly EOF, got {e}"),
            }
        }
    }

    /// Bytes read past the last response, not yet parsed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Bytes for a message: escaped, and shortened when long.
pub fn show(bytes: &[u8]) -> String {
    const MAX: usize = 600;
    let s: String = bytes.iter().take(MAX).flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect();
    if bytes.len() > MAX {
        format!("\"{s}\"... ({} bytes)", bytes.len())
    } else {
        format!("\"{s}\"")
    }
}

/// Runs `duet <args>` to completion (bounded) and returns its exit status and stderr.
pub fn run_duet(args: &[&str]) -> (ExitStatus, String) {
    let mut child = duet_command().args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn duet");
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        let _ = tx.send(String::from_utf8_lossy(&s).into_owned());
    });
    let text = match rx.recv_timeout(EXIT_TIMEOUT) {
        Ok(t) => t,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("duet {args:?} did not exit within {EXIT_TIMEOUT:?}");
        }
    };
    let status = child.wait().expect("wait for duet");
    (status, text)
}

/// Waits for a file's inode to be freed: deleted, and closed by every process that had
/// it open (inotify's `IN_DELETE_SELF`, delivered when the last reference goes). Watch
/// before deleting the file.
pub struct InodeGone {
    fd: std::os::fd::OwnedFd,
}

impl InodeGone {
    pub fn watch(path: &std::path::Path) -> InodeGone {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1: {}", io::Error::last_os_error());
        // SAFETY: `fd` was just returned by inotify_init1 and nothing else owns it.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("a path without NUL");
        // SAFETY: `cpath` is a valid NUL-terminated string that outlives the call; the
        // descriptor is open (owned above).
        let wd = unsafe {
            libc::inotify_add_watch(std::os::fd::AsRawFd::as_raw_fd(&fd), cpath.as_ptr(), libc::IN_DELETE_SELF)
        };
        assert!(wd >= 0, "inotify_add_watch {}: {}", path.display(), io::Error::last_os_error());
        InodeGone { fd }
    }

    /// Blocks (at most `timeout`) until the inode is freed; false if it was not.
    pub fn wait(&self, timeout: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        loop {
            // SAFETY: poll reads and writes the one valid, exclusively borrowed pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc == 0 {
                return false;
            }
            if rc > 0 {
                break;
            }
            let e = io::Error::last_os_error();
            assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll on inotify: {e}");
        }
        let mut buf = [0u8; 4096];
        // SAFETY: `buf` is exclusively borrowed and writable for its length.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n >= 16, "reading inotify events: {}", io::Error::last_os_error());
        // The first event's mask (struct inotify_event: wd, mask, cookie, len, name).
        let mask = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        assert!(mask & libc::IN_DELETE_SELF != 0, "unexpected inotify event mask {mask:#x}");
        true
    }
}
