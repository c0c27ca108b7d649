//! The command line of `duet` (not per engine): clap's full usage errors, duet's own
//! one-line errors, the pid file, and a server that outlives its log reader.

mod common;

use common::{run_duet, Server};
use std::net::TcpListener;

/// A usage error is clap's whole text, exit 2: what is wrong, the usage line of the
/// subcommand, and a hint that names it.
fn usage_error(args: &[&str], want: &[&str]) {
    let (status, stderr) = run_duet(args);
    assert_eq!(status.code(), Some(2), "exit status {status}; stderr:\n{stderr}");
    for w in want {
        assert!(stderr.contains(w), "{args:?}: expected {w:?} on stderr, got:\n{stderr}");
    }
}

#[test]
fn cli_unknown_flag_names_it_and_the_similar_one() {
    usage_error(
        &["serve", "--prot", "1"],
        &["'--prot'", "a similar argument exists: '--port'", "Usage: duet serve", "duet serve --help"],
    );
    usage_error(&["serve", "--no-such-flag"], &["'--no-such-flag'", "duet serve --help"]);
}

#[test]
fn cli_load_without_a_url_names_the_missing_argument() {
    usage_error(&["load"], &["required arguments were not provided", "<URL>", "Usage: duet load", "duet load --help"]);
}

#[test]
fn cli_bad_engine_lists_the_possible_values() {
    usage_error(
        &["serve", "--engine", "nope"],
        &["invalid value 'nope'", "possible values: auto, epoll, uring, epoll-lt, poll, select", "duet serve --help"],
    );
}

#[test]
fn cli_port_in_use_is_one_line_and_fails() {
    // A plain listener without SO_REUSEPORT: duet must not be able to join it.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (status, stderr) =
        run_duet(&["serve", "--engine", "epoll", "--bind", "127.0.0.1", "--port", &port, "--threads", "1"]);
    assert!(!status.success(), "exit status {status}; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("already in use")).collect();
    assert_eq!(lines.len(), 1, "expected one line saying 'already in use', got:\n{stderr}");
    assert!(!stderr.contains("listening on"), "should not claim to listen:\n{stderr}");
    drop(taken);
}

/// A second server on a port the first listens on fails with one line, unless both
/// share it on purpose; within one process the workers share it (four threads here).
#[test]
fn cli_a_second_server_on_the_same_port_fails_with_one_line() {
    let first = Server::start_with_threads("epoll", 4, &[]);
    let port = first.addr.port().to_string();
    let (status, stderr) =
        run_duet(&["serve", "--engine", "epoll", "--bind", "127.0.0.1", "--port", &port, "--threads", "2"]);
    assert!(!status.success(), "exit status {status}; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{stderr}");
    let want = format!("duet: error: port {port} is already in use by another process");
    assert!(lines[0].starts_with(&want), "expected {want:?}, got:\n{stderr}");
    // The first server is untouched.
    let mut c = first.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
}

#[test]
fn cli_reuse_port_lets_two_servers_share_a_port_on_purpose() {
    let mut first = Server::start("epoll", &["--reuse-port"]);
    let port = first.addr.port();
    let second = Server::try_start_on_port("epoll", port, &["--reuse-port"])
        .unwrap_or_else(|f| panic!("the second server did not start: {:?}", f.stderr));
    assert_eq!(second.addr.port(), port);
    // Once the first is gone, the port is the second's alone: it answers there.
    first.sigterm();
    assert!(first.wait_exit().success());
    let mut c = second.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
}

/// A log reader that goes away (stderr closed) must not take the server down: it keeps
/// serving, logs nothing more, and still shuts down gracefully on SIGTERM.
#[test]
fn cli_closed_stderr_neither_kills_the_server_nor_blocks_shutdown() {
    let mut server = Server::start_then_close_stderr("epoll", &[]);
    let mut c = server.connect();
    for _ in 0..3 {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.read_response().status, 200, "served after stderr closed");
    }
    drop(c);
    server.sigterm();
    // Bounded: the harness kills the server and fails the test if it does not exit.
    let status = server.wait_exit();
    assert!(status.success(), "graceful shutdown should exit 0, got {status}");
}

/// `--pid-file`: written once the server listens with its pid, which `kill -HUP` can use
/// to reload it; removed at a clean exit. An unwritable path is one line and exit 1.
#[test]
fn cli_pid_file_holds_the_pid_reloads_through_it_and_goes_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let pid_path = dir.path().join("duet.pid");
    let body = dir.path().join("body.txt");
    std::fs::write(&body, "old").unwrap();
    let route = format!("/x=@{}", body.display());
    let mut server = Server::start("epoll", &["--pid-file", pid_path.to_str().unwrap(), "--route", &route]);
    let text = std::fs::read_to_string(&pid_path).expect("the pid file exists once the server listens");
    let pid: i32 = text.trim().parse().unwrap_or_else(|_| panic!("not a pid: {text:?}"));
    assert_eq!(pid as u32, server.pid());

    std::fs::write(&body, "new").unwrap();
    // SAFETY: kill(2) with the pid of the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let mut c = server.connect();
    let deadline = std::time::Instant::now() + common::READ_TIMEOUT;
    loop {
        c.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c.read_response();
        if r.body_str() == "new" {
            break;
        }
        assert_eq!(r.body_str(), "old");
        assert!(std::time::Instant::now() < deadline, "SIGHUP through the pid file did not reload");
    }
    drop(c);
    server.sigterm();
    assert!(server.wait_exit().success());
    assert!(!pid_path.exists(), "the pid file should be removed at exit");

    let bad = dir.path().join("no-such-dir").join("duet.pid");
    let (status, stderr) =
        run_duet(&["serve", "--engine", "epoll", "--port", "0", "--threads", "1", "--pid-file", bad.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "exit status {status}; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    assert!(lines[0].contains("cannot write --pid-file"), "{stderr}");
}

/// `--access-log` to a path that cannot be opened: one error line naming the flag and
/// the path, exit 1, before the server listens.
#[test]
fn cli_access_log_that_cannot_be_opened_is_one_line_and_fails() {
    let bad = std::env::temp_dir().join(format!("duet-no-such-dir-{}", std::process::id())).join("access.log");
    let (status, stderr) = run_duet(&[
        "serve",
        "--engine",
        "epoll",
        "--port",
        "0",
        "--threads",
        "1",
        "--access-log",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(1), "exit status {status}; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    assert!(lines[0].contains("cannot open --access-log") && lines[0].contains(bad.to_str().unwrap()), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
}

/// The log counts in English: `1 thread`, `1 route`, `1 connection`.
#[test]
fn cli_start_up_log_says_one_thread_and_one_route() {
    let mut server = Server::start("epoll", &["--route", "/x=y"]);
    let log = server.stderr_lines().join("\n");
    assert!(log.contains("(engine epoll, 1 thread)"), "{log}");
    assert!(log.contains("0 files and 1 route: 1 body cached (1 byte in memory)"), "{log}");
    let mut c = server.connect();
    c.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    drop(c);
    server.sigterm();
    assert!(server.wait_exit().success());
    let log = server.stderr_lines().join("\n");
    assert!(log.contains("stopped: 1 connection, 1 request (0 errors)"), "{log}");
}

fn help(sub: &str) -> String {
    let out = common::duet_command().args([sub, "--help"]).output().unwrap();
    assert!(out.status.success(), "duet {sub} --help: {}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

/// Each of `needles` is in `text`, in this order.
fn assert_in_order(text: &str, needles: &[&str]) {
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"));
    for pair in needles.windows(2) {
        assert!(at(pair[0]) < at(pair[1]), "{} should come before {}:\n{text}", pair[0], pair[1]);
    }
}

/// `duet load --help` groups its flags: what load, what each request is, what is reported.
#[test]
fn cli_help_groups_load_flags() {
    let text = help("load");
    assert_in_order(
        &text,
        &[
            "Load:",
            "--connections <N>",
            "--warmup <DURATION>",
            "Request:",
            "--method <METHOD>",
            "Report:",
            "      --json ",
        ],
    );
}

/// `duet serve --help` groups its flags, content before tuning and the io_uring flags apart;
/// `duet compare --help` groups its flags by engines, scenario, load and output and shows
/// what each flag defaults to.
#[test]
fn cli_help_groups_serve_flags_and_shows_compare_defaults() {
    let text = help("serve");
    assert_in_order(
        &text,
        &[
            "Listening:",
            "--bind <ADDR>",
            "--pid-file <PATH>",
            "Content:",
            "--dir <DIR>",
            "Limits and timeouts:",
            "--max-headers <N>",
            "--drain-timeout <DURATION>",
            "io_uring:",
            "--uring-entries <N>",
            "--uring-buffers <N>",
            "--sqpoll",
            "Logging and metrics:",
        ],
    );
    let text = help("compare");
    assert_in_order(
        &text,
        &[
            "Engines:",
            "--engines <",
            "--floors",
            "Scenario:",
            "--connections <N,..>",
            "--idle <N,..>",
            "Load:",
            "--rounds <N>",
            "--load-with <",
            "Presets:",
            "      --quick\n",
            "Output:",
            "--out <DIR>",
            "      --json\n",
        ],
    );
    for want in ["[default: 16,256", "[default: 1,16", "[default: 3", "[default: 5s", "[default: duet]"] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

/// `--bind` takes a host name; one that does not resolve is one line and exit 1.
#[test]
fn cli_bind_accepts_a_host_name() {
    let server = Server::start("epoll", &["--bind", "localhost"]);
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    let mut c = server.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().status, 200);

    let (status, stderr) =
        run_duet(&["serve", "--engine", "epoll", "--port", "0", "--threads", "1", "--bind", "no-such-host.invalid"]);
    assert_eq!(status.code(), Some(1), "exit status {status}; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(lines[0].starts_with("duet: error: --bind no-such-host.invalid: cannot resolve"), "{stderr}");
}

/// A bad `--uring-buffers` is a usage error whatever the engine, never a silent fall-back
/// from io_uring to epoll under `--engine auto`.
#[test]
fn cli_uring_buffers_not_a_power_of_two_is_rejected_at_parse_time() {
    for engine in ["auto", "epoll", "uring"] {
        usage_error(
            &["serve", "--engine", engine, "--port", "0", "--uring-buffers", "1000"],
            &["invalid value '1000' for '--uring-buffers <N>'", "power of two", "duet serve --help"],
        );
    }
}

/// `--bind` with what looks like an IP address but is not one says so, as a usage error,
/// instead of trying it as a host name.
#[test]
fn cli_bind_that_looks_like_an_ip_but_is_not_one_says_so() {
    usage_error(
        &["serve", "--port", "0", "--bind", "999.1.1.1"],
        &["invalid value '999.1.1.1' for '--bind <ADDR>': not an IPv4 address", "duet serve --help"],
    );
    let (_, stderr) = run_duet(&["serve", "--port", "0", "--bind", "999.1.1.1"]);
    assert!(!stderr.contains("resolve") && !stderr.contains("INFO"), "{stderr}");
    usage_error(&["serve", "--port", "0", "--bind", "[::1]"], &["not an IPv6 address"]);
}

/// An argument that turns out bad at start (a --bind name that does not resolve, a bad
/// --metrics path) is the only line: nothing is logged before it, whatever the engine
/// (`auto` and `uring` log the io_uring features they found once all is checked).
#[test]
fn cli_no_start_up_log_line_comes_before_an_argument_error() {
    for engine in ["auto", "uring", "epoll"] {
        for (flag, value, says) in [
            ("--bind", "no-such-host.invalid", "duet: error: --bind no-such-host.invalid: cannot resolve"),
            ("--metrics", "metrics", "duet: error: --metrics metrics: expected a plain absolute path"),
        ] {
            let (status, stderr) = run_duet(&["serve", "--engine", engine, "--port", "0", flag, value]);
            assert_eq!(status.code(), Some(1), "{engine} {flag}: {stderr}");
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "{engine} {flag}: expected one line, got:\n{stderr}");
            assert!(lines[0].starts_with(says), "{engine} {flag}: {stderr}");
        }
    }
}

/// `--pin` is worded one way, the true one (the engine's `pin_cpu` picks the i-th CPU of the
/// affinity mask, tested in duet-engine), in `--help` and in docs/serving.md.
#[test]
fn cli_pin_is_described_as_it_works_in_help_and_docs() {
    let wording = "the i-th CPU this process may run on";
    let text = help("serve").split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.contains(&format!("Pin worker thread i to {wording}")), "{text}");
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/serving.md")).unwrap();
    let row = docs.lines().find(|l| l.starts_with("| `--pin` |")).expect("a --pin row in docs/serving.md");
    assert!(row.replace('*', "").contains(&format!("pin worker i to {wording}")), "{row}");
}

/// Every flag that takes a DURATION says in its help that a bare number is seconds, and a
/// bare number is taken as seconds.
#[test]
fn cli_every_duration_flag_says_a_bare_number_is_seconds() {
    let mut durations = 0;
    for sub in ["serve", "load", "compare"] {
        let text = help(sub);
        // Each flag's entry runs from its line (`  -d, --duration <DURATION>`) to the next one's.
        let mut entries: Vec<String> = Vec::new();
        for line in text.lines() {
            match entries.last_mut() {
                Some(entry) if !line.trim_start().starts_with('-') => entry.push_str(line),
                _ => entries.push(line.to_string()),
            }
        }
        let mut flags = entries.iter().filter(|entry| entry.contains("<DURATION>")).peekable();
        assert!(flags.peek().is_some(), "duet {sub} has DURATION flags");
        for entry in flags {
            durations += 1;
            let entry = entry.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(entry.contains("a bare number is seconds"), "{sub}: {entry}");
        }
    }
    assert!(durations >= 10, "{durations}");
    // `--header-timeout 1.5` is 1.5 s: the server starts with it (a unit-less value it
    // could not parse would be a usage error).
    let server = Server::start("epoll", &["--header-timeout", "1.5", "--keepalive-timeout", "2"]);
    let mut c = server.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
}

/// `duet generate KIND`: exit 0 and what KIND is on standard output.
fn generate(kind: &str) -> String {
    let out = common::duet_command().args(["generate", kind]).output().unwrap();
    assert!(out.status.success(), "duet generate {kind}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The long flags `duet SUB --help` lists.
fn long_flags(sub: &str) -> Vec<String> {
    let text = help(sub);
    let flags: Vec<String> = text
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
        .map(|w| w.trim_end_matches(',').to_string())
        .collect();
    assert!(flags.len() > 5, "duet {sub} --help: {flags:?}");
    flags
}

/// The man page is one roff page with a section per subcommand that names each of its flags.
#[test]
fn cli_generate_man_names_every_subcommand_and_its_flags() {
    let man = generate("man");
    assert!(man.lines().any(|l| l.starts_with(".TH duet 1")), "{}", &man[..man.len().min(200)]);
    for sub in ["serve", "load", "compare", "generate"] {
        let section = format!(".SH \"DUET {}\"", sub.to_uppercase());
        let at = man.find(&section).unwrap_or_else(|| panic!("no {section} in the man page"));
        if sub == "generate" {
            continue;
        }
        for flag in long_flags(sub) {
            let roff = format!("\\fB{}\\fR", flag.replace('-', "\\-"));
            assert!(man[at..].contains(&roff), "duet {sub} {flag} ({roff}) not in its section of the man page");
        }
    }
    assert!(man.contains("a bare number is seconds"), "the man page has the same help as --help");
}

/// Bash, zsh and fish completions: each names the subcommands and their flags in its
/// shell's own form, and bash's registers itself for `duet` when sourced.
#[test]
fn cli_generate_completions_for_bash_zsh_and_fish() {
    let bash = generate("complete-bash");
    let zsh = generate("complete-zsh");
    let fish = generate("complete-fish");
    assert!(zsh.starts_with("#compdef duet"), "{}", &zsh[..zsh.len().min(200)]);
    for sub in ["serve", "load", "compare", "generate"] {
        assert!(bash.contains(&format!("duet,{sub})")), "bash: {sub}");
        assert!(zsh.contains(&format!("({sub})")), "zsh: {sub}");
        assert!(fish.contains(&format!("-f -a \"{sub}\"")), "fish: {sub}");
    }
    for flag in long_flags("serve").iter().chain(&long_flags("load")).chain(&long_flags("compare")) {
        assert!(bash.contains(flag.as_str()), "bash: {flag}");
        // `'--port=[help]:N:...'` for a flag with a value, `'--pin[help]'` for a switch.
        assert!(zsh.contains(&format!("{flag}=[")) || zsh.contains(&format!("{flag}[")), "zsh: {flag}");
        assert!(fish.contains(&format!("-l {}", &flag[2..])), "fish: {flag}");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("duet.bash");
    std::fs::write(&script, &bash).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {}; complete -p duet", script.display()))
        .output()
        .expect("bash");
    let registered = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && registered.contains("duet"),
        "{registered} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    usage_error(&["generate", "nope"], &["invalid value 'nope'", "man, complete-bash, complete-zsh, complete-fish"]);
}
