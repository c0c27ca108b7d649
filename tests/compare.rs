//! `duet compare --quick --json` end to end, with duet's load generator and with wrk.
//! Loopback only; every run is bounded and the compare process (whose servers die with
//! it) is killed if the test fails.

mod common;

use serde_json::Value;
use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const RUN_TIMEOUT: Duration = Duration::from_secs(180);
const FIGURES: [&str; 10] = [
    "requests_per_sec",
    "latency_mean_us",
    "latency_p50_us",
    "latency_p99_us",
    "latency_p999_us",
    "cpu_us_per_req",
    "cpu_util",
    "rss_peak_bytes",
    // From each server's own counters (`duet serve --metrics`): checked positive below.
    "syscalls_per_req",
    "events_per_wakeup",
];

/// Kills the child when the test ends, passed or not.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn engines() -> Vec<&'static str> {
    match common::skip_reason("uring") {
        Some(reason) => {
            eprintln!("io_uring unavailable ({reason}): comparing the epoll engine only");
            vec!["epoll"]
        }
        None => vec!["epoll", "uring"],
    }
}

fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

fn compare_json(engines: &[&str], extra: &[&str]) -> Value {
    let mut args = vec!["--quick", "--duration", "1s", "--engines"];
    let engines = engines.join(",");
    args.push(&engines);
    args.extend_from_slice(extra);
    run_compare(&args)
}

/// `duet compare --json ARGS`, which must succeed; its JSON.
fn run_compare(args: &[&str]) -> Value {
    let mut cmd = common::duet_command();
    cmd.args(["compare", "--json"]).args(args);
    run_compare_command(cmd)
}

/// Runs `cmd` (a `duet compare --json` however started), which must succeed within
/// RUN_TIMEOUT; its JSON.
fn run_compare_command(mut cmd: std::process::Command) -> Value {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut guard = Guard(cmd.spawn().expect("start duet compare"));
    let out = reader(guard.0.stdout.take().unwrap());
    let err = reader(guard.0.stderr.take().unwrap());
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "duet compare did not finish within {RUN_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "duet compare failed ({status}): {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn check(v: &Value, engines: &[&str], load_with: &str) {
    assert_eq!(v["load_with"], load_with);
    let scenarios = v["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 2, "--quick: 16 connections at depth 1 and 16: {v}");
    for s in scenarios {
        for engine in engines {
            let e = &s["engines"][engine];
            assert!(e.is_object(), "{engine} missing from {s}");
            assert_eq!(e["median"]["errors"], 0, "{engine} had errors: {s}");
            for round in e["rounds"].as_array().expect("rounds") {
                assert_eq!(round["errors"], 0, "{engine} had errors: {s}");
            }
            for name in FIGURES {
                let value = &e["median"][name];
                // wrk cannot report latency percentiles with pipelining (see the table's note).
                if value.is_null() && load_with == "wrk" && name.starts_with("latency") && s["depth"] != 1 {
                    continue;
                }
                let x = value.as_f64().unwrap_or(0.0);
                assert!(x > 0.0 && x.is_finite(), "{engine} {name} = {value} in {s}");
            }
        }
        if engines.len() == 2 {
            for name in FIGURES {
                let (u, e) = (&s["engines"]["uring"]["median"][name], &s["engines"]["epoll"]["median"][name]);
                let ratio = &s["ratio_uring_over_epoll"][name];
                if u.is_null() || e.is_null() {
                    assert!(ratio.is_null(), "{name}: a ratio without both figures: {s}");
                    continue;
                }
                let (u, e) = (u.as_f64().unwrap(), e.as_f64().unwrap());
                let ratio = ratio.as_f64().expect("ratio");
                let want = u / e;
                assert!((ratio - want).abs() <= 1e-6 * want.abs(), "{name}: ratio {ratio} but {u} / {e} = {want}");
            }
        } else {
            assert!(s["ratio_uring_over_epoll"].is_null());
        }
    }
}

/// The `run` object: this machine, this build, a date and the command as it was typed.
fn check_run(run: &Value, out: &std::path::Path) {
    let text = |key: &str| run[key].as_str().unwrap_or_else(|| panic!("run.{key} missing: {run}")).to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(text("kernel"), kernel.trim());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let model = text("cpu_model");
    assert!(!model.is_empty() && (cpuinfo.contains(&model) || model == "unknown"), "{model}");
    let cpus = run["cpus"].as_u64().expect("run.cpus");
    assert_eq!(cpus as usize, cpuinfo.lines().filter(|l| l.starts_with("processor")).count());
    assert_eq!(text("version"), env!("CARGO_PKG_VERSION"));
    let commit = text("commit");
    assert!(commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())), "{commit}");
    // 2026-11-28T13:05:00Z
    let date = text("date");
    let shape: String = date.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }).collect();
    assert_eq!(shape, "9999-99-99T99:99:99Z", "{date}");
    let command = text("command");
    let tail =
        format!("compare --json --quick --duration 1s --engines {} --out {}", engines().join(","), out.display());
    assert!(command.ends_with(&tail), "{command}");
}

#[test]
fn quick_compare_with_duet_load() {
    let engines = engines();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let v = compare_json(&engines, &["--out", dir.to_str().unwrap()]);
    check(&v, &engines, "duet");
    let saved = std::fs::read_to_string(dir.join("results.json")).expect("results.json");
    assert_eq!(serde_json::from_str::<Value>(&saved).unwrap(), v);
    let md = std::fs::read_to_string(dir.join("results.md")).expect("results.md");
    assert!(md.contains("| epoll |") && md.contains("syscalls/req"), "{md}");
    check_run(&v["run"], dir);
    let run = &v["run"];
    let header = format!(
        "duet {} ({}), {}",
        run["version"].as_str().unwrap(),
        run["commit"].as_str().unwrap(),
        run["date"].as_str().unwrap()
    );
    assert!(md.starts_with(&header), "{md}");
    assert!(md.contains(&format!("command: `{}`", run["command"].as_str().unwrap())), "{md}");
    for chart in ["requests_per_sec.svg", "cpu_us_per_req.svg", "latency.svg"] {
        let svg = std::fs::read_to_string(dir.join(chart)).expect(chart);
        assert!(svg.starts_with("<svg") && svg.contains("epoll"), "{chart}");
    }
}

#[test]
fn quick_compare_with_wrk() {
    let found =
        std::process::Command::new("wrk").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        eprintln!("skipped: wrk is not installed (apt-get install wrk)");
        return;
    }
    let engines = engines();
    let v = compare_json(&engines, &["--load-with", "wrk"]);
    check(&v, &engines, "wrk");
}

#[test]
fn quick_compare_with_floors_and_a_peer() {
    let examples = std::path::Path::new(common::duet_bin()).parent().unwrap().join("examples");
    let floor = examples.join("floor_epoll");
    if !floor.is_file() {
        eprintln!("skipped: {} is not built (cargo build --examples)", floor.display());
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let peer = format!("mine='{}' {port}@{port}", floor.display());
    let v = compare_json(&["epoll"], &["--floors", "--peer", &peer, "--ratio", "epoll/floor-epoll,mine/floor-epoll"]);
    check(&v, &["epoll"], "duet");
    assert_eq!(v["peers"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["ratios"], serde_json::json!(["epoll/floor-epoll", "mine/floor-epoll"]));
    for s in v["scenarios"].as_array().unwrap() {
        for name in ["mine", "floor-epoll"] {
            let m = &s["engines"][name]["median"];
            assert_eq!(m["errors"], 0, "{name} had errors: {s}");
            assert!(m["requests_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{name}: {s}");
            assert!(m["syscalls_per_req"].is_null(), "{name}: peers have no syscall counts: {s}");
            assert!(m["events_per_wakeup"].is_null(), "{name}: peers have no event counts: {s}");
        }
        // One round (--quick): its ratio, and no interval (that needs 6 rounds).
        for ratio in ["epoll/floor-epoll", "mine/floor-epoll"] {
            let p = &s["paired_ratios"][ratio];
            let cpu = |name: &str| s["engines"][name]["median"]["cpu_us_per_req"].as_f64().unwrap();
            let a = ratio.split('/').next().unwrap();
            // (serde_json's float parsing may land one unit in the last place away.)
            let of_medians = p["of_medians"].as_f64().unwrap();
            assert!((of_medians / (cpu(a) / cpu("floor-epoll")) - 1.0).abs() < 1e-12, "{ratio}: {s}");
            assert_eq!(p["rounds"].as_array().map(Vec::len), Some(1), "{ratio}: {s}");
            assert!(p["interval_95"].is_null(), "{ratio}: {s}");
        }
    }
    let out = common::duet_command()
        .args(["compare", "--quick", "--engines", "epoll", "--peer", "broken@80"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected NAME=CMD@PORT") && err.lines().count() == 1, "{err}");
}

/// `--files`: the bodies are files of one directory every server serves (a duet engine
/// with `--dir`; nginx, when installed, from its root with sendfile), each answered
/// whole and without error, at the preset's 64 connections with `--quick`.
#[test]
fn the_files_preset_serves_one_generated_directory_with_nginx_as_a_peer_when_installed() {
    let engines = engines();
    let list = engines.join(",");
    let args = ["--files", "--quick", "--engines", &list, "--body-size", "4KiB,1MiB", "--duration", "0.5s"];
    let v = run_compare(&args);
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].iter().any(|p| std::path::Path::new(p).is_file());
    let mut rows = engines.clone();
    if nginx {
        rows.push("nginx");
    } else {
        eprintln!("nginx is not installed: the --files rows without it");
    }
    let scenarios = v["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 2, "64 connections, depth 1, two sizes: {v}");
    for (s, size) in scenarios.iter().zip([4096, 1 << 20]) {
        assert_eq!((s["connections"].as_u64(), s["depth"].as_u64()), (Some(64), Some(1)), "{s}");
        assert_eq!(s["body_size"], size, "{s}");
        for row in &rows {
            let m = &s["engines"][row]["median"];
            assert_eq!(m["errors"], 0, "{row} had errors: {s}");
            positive(m, "requests_per_sec");
            positive(m, "cpu_us_per_req");
        }
    }
}

/// The ladder's engines, oldest I/O model first (`duet compare --ladder`).
const LADDER: [&str; 5] = ["select", "poll", "epoll-lt", "epoll", "uring"];

/// Why `duet serve --engine ENGINE` cannot run here: `None` if it serves, the reason if
/// this build has no such engine (clap rejects the name) or io_uring is unavailable.
fn cannot_serve(engine: &str) -> Option<String> {
    if let Some(reason) = common::skip_reason(engine) {
        return Some(reason);
    }
    match common::Server::try_start(engine, &[]) {
        Ok(_server) => None,
        Err(f) if f.mentions("invalid value") => Some(f.stderr.join(" ")),
        Err(f) => panic!("duet serve --engine {engine} failed to start: {}", f.stderr.join("\n")),
    }
}

fn positive(cell: &Value, name: &str) -> f64 {
    let x = cell[name].as_f64().unwrap_or(0.0);
    assert!(x > 0.0 && x.is_finite(), "{name} = {} in {cell}", cell[name]);
    x
}

#[test]
fn quick_ladder_has_every_engine_with_figures_or_the_reason_it_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let v = run_compare(&["--ladder", "--quick", "--out", dir.to_str().unwrap()]);
    assert_eq!(v["active_share"], 0.1, "{v}");
    assert!(v["rate"].as_f64().unwrap_or(0.0) > 0.0, "--ladder is open loop: {v}");
    let rows = v["ladder"]["rows"].as_array().expect("ladder rows");
    let engines: Vec<&str> = rows.iter().map(|r| r["engine"].as_str().unwrap()).collect();
    assert_eq!(engines, LADDER, "one row per engine, oldest first");
    for row in rows {
        let engine = row["engine"].as_str().unwrap();
        let cells = row["cells"].as_array().unwrap();
        let totals: Vec<u64> = cells.iter().map(|c| c["connections"].as_u64().unwrap()).collect();
        let active: Vec<u64> = cells.iter().map(|c| c["active"].as_u64().unwrap()).collect();
        assert_eq!((totals, active), (vec![100, 200], vec![10, 20]), "--quick: 100,200 connections, 10% active");
        match cannot_serve(engine) {
            // Within every engine's limits (select's included): figures, no errors.
            None => {
                for cell in cells {
                    assert!(cell["failed"].is_null(), "{engine} failed: {cell}");
                    let (mean, p99) = (positive(cell, "latency_mean_us"), positive(cell, "latency_p99_us"));
                    assert!(p99 >= mean / 10.0, "{engine}: p99 {p99} against mean {mean}");
                    for name in ["cpu_us_per_req", "requests_per_sec", "syscalls_per_req", "events_per_wakeup"] {
                        positive(cell, name);
                    }
                    assert_eq!(cell["errors"], 0, "{engine}: {cell}");
                }
            }
            // An engine that cannot start is a row with its reason, not the end of the run.
            Some(why) => {
                eprintln!("{engine} cannot run here ({why}): expecting FAILED (did not start)");
                for cell in cells {
                    assert_eq!(cell["failed"], "did not start", "{engine}: {cell}");
                    assert!(cell["detail"].as_str().unwrap_or("").contains(engine), "{cell}");
                }
            }
        }
    }
    let md = std::fs::read_to_string(dir.join("results.md")).expect("results.md");
    assert!(md.contains("| engine | 100 conns (10 active) | 200 conns (20 active) |"), "{md}");
    for engine in LADDER {
        assert!(md.contains(&format!("| {engine} | ")), "{engine} has no row: {md}");
    }
    let svg = std::fs::read_to_string(dir.join("cpu_by_connections.svg")).expect("the O(n) chart");
    assert!(svg.contains("server CPU µs per request"), "{svg}");
}

#[test]
fn a_server_that_cannot_hold_the_connections_fails_with_its_reason_and_the_others_run() {
    // A duet serve with 40 descriptors cannot hold 100 connections: it sheds the rest.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tight = format!(
        "tight=prlimit --nofile=40:40 -- '{}' serve --engine epoll --threads 1 --port {port}@{port}",
        common::duet_bin()
    );
    let args = ["--engines", "epoll", "--peer", &tight, "--connections", "100", "--active", "10%"];
    let v = run_compare(&[&args[..], &["--rate", "200", "--duration", "0.5s", "--rounds", "1"]].concat());
    let s = &v["scenarios"][0];
    assert_eq!((s["connections"].as_u64(), s["idle"].as_u64()), (Some(10), Some(90)), "{s}");
    let failed = &s["engines"]["tight"];
    assert_eq!(failed["failed"], "out of descriptors", "{s}");
    let detail = failed["detail"].as_str().unwrap();
    assert!(detail.contains("closed, reset or refused") && detail.contains("out of file descriptors"), "{detail}");
    assert!(s["engines"]["epoll"]["median"]["requests_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{s}");
    assert_eq!(v["ladder"]["rows"][1]["cells"][0]["failed"], "out of descriptors", "{v}");
}

/// Past FD_SETSIZE, select refuses connections: its cell is FAILED (FD_SETSIZE), with
/// the server's own line as the detail, and the other engines run.
#[test]
fn select_past_fd_setsize_fails_with_its_reason_and_epoll_runs() {
    let limit = common::raise_nofile_limit();
    if limit < 3000 {
        eprintln!("skipping: 1,100 connections to each of two servers need 3000 open files, the limit is {limit}");
        return;
    }
    let args = ["--engines", "select,epoll", "--connections", "1100", "--active", "10%", "--rate", "200"];
    let v = run_compare(&[&args[..], &["--duration", "0.5s", "--rounds", "1"]].concat());
    let rows = v["ladder"]["rows"].as_array().expect("ladder rows");
    let select = &rows[0]["cells"][0];
    assert_eq!((rows[0]["engine"].as_str(), select["failed"].as_str()), (Some("select"), Some("FD_SETSIZE")), "{v}");
    let detail = select["detail"].as_str().unwrap_or("");
    assert!(detail.contains("select cannot watch descriptor") && detail.contains("use poll or epoll"), "{detail}");
    let epoll = &rows[1]["cells"][0];
    assert!(epoll["failed"].is_null(), "{v}");
    positive(epoll, "latency_p99_us");
}

#[test]
fn missing_wrk_or_bad_flags_are_one_line_errors() {
    let out = common::duet_command()
        .args(["compare", "--quick", "--engines", "epoll", "--load-with", "wrk", "--idle", "10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--idle needs --load-with duet"), "{err}");
    let out = common::duet_command()
        .args(["compare", "--quick", "--engines", "epoll", "--load-with", "wrk", "--paths", "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--paths /dev/null: no paths in it"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let paths = dir.path().join("paths.txt");
    std::fs::write(&paths, "/\n").unwrap();
    let out = common::duet_command()
        .args(["compare", "--quick", "--engines", "epoll", "--load-with", "wrk", "--paths", paths.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--paths needs --load-with duet"), "{err}");
    let out = common::duet_command().args(["compare", "--server-cpus", "x"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a CPU list"));
    let out = common::duet_command().args(["compare", "--ladder", "--load-with", "wrk"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ladder need --load-with duet"));
    for (args, says) in [
        (&["--active", "10%", "--idle", "5"][..], "cannot be used with"),
        (&["--active", "0%"][..], "not a share above 0"),
        (&["--active", "ten"][..], "not a share"),
        (&["--rate=-1"][..], "--rate must be a positive number"),
        (&["--ratio", "epoll/nope"][..], "--ratio epoll/nope: no server named nope (compared: epoll)"),
        (&["--ratio", "epoll"][..], "--ratio epoll: expected A/B"),
    ] {
        let out = common::duet_command().args(["compare", "--engines", "epoll"]).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// The figures an ablation reader needs, as results.md heads their columns.
const ROW_FIGURES: [&str; 4] = ["req/s", "CPU µs/req", "syscalls/req", "peak RSS"];

/// Each of `rows` has a line per scenario in results.md with every one of
/// [`ROW_FIGURES`] filled in (no FAILED, no n/a, no dash).
fn check_markdown_rows(md: &str, rows: &[&str], scenarios: usize) {
    fn cells(line: &str) -> Vec<&str> {
        line.split('|').map(str::trim).collect()
    }
    let header = cells(md.lines().find(|l| l.starts_with("| scenario | engine |")).expect(md));
    let columns: Vec<usize> =
        ROW_FIGURES.iter().map(|name| header.iter().position(|h| h == name).expect(name)).collect();
    for row in rows {
        let lines: Vec<Vec<&str>> =
            md.lines().filter(|l| l.starts_with("| c=")).map(cells).filter(|c| c[2] == *row).collect();
        assert_eq!(lines.len(), scenarios, "{row}: a line per scenario: {md}");
        for line in lines {
            for (&col, name) in columns.iter().zip(ROW_FIGURES) {
                let cell = line[col];
                let filled = !cell.is_empty() && !["–", "n/a", "0 B"].contains(&cell) && !cell.contains("FAILED");
                assert!(filled, "{row}: {name} is '{cell}' in {line:?}");
            }
        }
    }
}

/// `uring:FEATURES` rows run side by side with plain uring and epoll (idle connections
/// held too), each with its own figures under the name it was given; the uring/epoll
/// ratio is the plain uring row's.
#[test]
fn uring_feature_rows_have_figures_of_their_own() {
    if let Some(reason) = common::skip_reason("uring") {
        eprintln!("skipped: io_uring unavailable ({reason})");
        return;
    }
    let rows = ["uring", "uring:no-direct", "uring:none", "epoll"];
    let dir = std::env::temp_dir().join(format!("duet-compare-rows-{}", std::process::id()));
    let engines = rows.join(",");
    let args = ["--quick", "--engines", &engines, "--connections", "4", "--idle", "20", "--duration", "0.5s"];
    let v = run_compare(&[&args[..], &["--out", dir.to_str().unwrap()]].concat());
    assert_eq!(v["engines"], serde_json::json!(rows), "{v}");
    let scenarios = v["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 2, "depth 1 and 16: {v}");
    for s in scenarios {
        assert_eq!(s["idle"], 20, "{s}");
        for row in rows {
            let m = &s["engines"][row]["median"];
            assert_eq!(m["errors"], 0, "{row} had errors: {s}");
            for name in ["requests_per_sec", "cpu_us_per_req", "syscalls_per_req", "rss_peak_bytes"] {
                positive(m, name);
            }
        }
        let (u, e) = (&s["engines"]["uring"]["median"], &s["engines"]["epoll"]["median"]);
        let ratio = s["ratio_uring_over_epoll"]["requests_per_sec"].as_f64().expect("a ratio");
        let want = u["requests_per_sec"].as_f64().unwrap() / e["requests_per_sec"].as_f64().unwrap();
        assert!((ratio - want).abs() <= 1e-6 * want, "the ratio is the plain uring row's: {ratio} against {want}");
    }
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(saved["engines"], serde_json::json!(rows));
    let md = std::fs::read_to_string(dir.join("results.md")).expect("results.md");
    check_markdown_rows(&md, &rows, 2);
    assert_eq!(md.matches("| uring/epoll |").count(), 2, "{md}");
    let svg = std::fs::read_to_string(dir.join("requests_per_sec.svg")).expect("the req/s chart");
    assert!(svg.contains("uring:no-direct") && svg.contains("uring:none"), "every row in the chart");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--ablation`: uring, uring:no-X for every default feature, uring:zc, uring:splice,
/// uring:mmap, uring:mmap-zc, uring:none and epoll, each a row
/// with figures (or, where io_uring is unavailable, a row that says it did not start).
#[test]
fn the_ablation_runs_every_feature_row() {
    let ablation = [
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
    ];
    let dir = std::env::temp_dir().join(format!("duet-compare-ablation-{}", std::process::id()));
    let args = ["--ablation", "--connections", "2", "--depth", "1", "--rounds", "1", "--duration", "0.5s"];
    let v = run_compare(&[&args[..], &["--out", dir.to_str().unwrap()]].concat());
    assert_eq!(v["engines"], serde_json::json!(ablation), "{v}");
    let md = std::fs::read_to_string(dir.join("results.md")).expect("results.md");
    let _ = std::fs::remove_dir_all(&dir);
    match common::skip_reason("uring") {
        None => check_markdown_rows(&md, &ablation, 1),
        Some(reason) => {
            eprintln!("io_uring unavailable ({reason}): expecting the uring rows FAILED (did not start)");
            check_markdown_rows(&md, &["epoll"], 1);
            for row in &ablation[..11] {
                assert_eq!(v["scenarios"][0]["engines"][row]["failed"], "did not start", "{row}: {v}");
            }
        }
    }
}

/// A bad entry of `--engines` is a usage error (exit 2, clap's text: one line saying what is
/// wrong, then the hint) before any server starts, an unknown engine name as much as a
/// misspelt feature.
#[test]
fn bad_engine_specs_are_usage_errors_before_anything_runs() {
    for (spec, says) in [
        (
            "epoll,foo",
            "invalid value 'foo' for '--engines <ENGINE[:FEATURES],..>': unknown engine 'foo' (engines: auto,",
        ),
        (
            "epoll:none",
            "invalid value 'epoll:none' for '--engines <ENGINE[:FEATURES],..>': only the uring engine takes",
        ),
        (
            "uring:turbo",
            "invalid value 'uring:turbo' for '--engines <ENGINE[:FEATURES],..>': unknown io_uring feature 'turbo'",
        ),
        ("uring:none,direct", "'direct' is an io_uring feature, not an engine"),
    ] {
        let out = common::duet_command().args(["compare", "--quick", "--engines", spec]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{spec}");
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: ") && first.contains(says), "{spec}: {err}");
        assert!(err.contains("try 'duet compare --help'"), "{spec}: {err}");
        assert!(out.stdout.is_empty(), "{spec}: nothing ran");
    }
    let out = common::duet_command().args(["compare", "--ablation", "--engines", "epoll"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'--ablation' cannot be used with '--engines"), "{err}");
}

/// Past one process's open-file limit `duet compare` runs a process group on each side
/// (here the limit is made 300, so 500 connections take 3 + 3 processes and 100 fit one
/// each): the group's cells have figures, the server's RSS is summed over its processes,
/// poll runs as a group (marked in the table), select is not run (FD_SETSIZE) and says why.
#[test]
fn past_one_processes_limit_compare_runs_process_groups_on_both_sides() {
    let engines = [&["select", "poll"][..], &engines()[..]].concat().join(",");
    let args = ["--engines", &engines, "--connections", "100,500", "--active", "10%", "--rate", "500", "--depth", "1"];
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "ulimit -n 300 && exec \"$0\" \"$@\"", common::duet_bin(), "compare", "--json"]).args(args);
    cmd.args(["--duration", "0.5s", "--warmup", "0.2s", "--rounds", "1"]);
    let v = run_compare_command(cmd);
    let (one, group) = (&v["scenarios"][0], &v["scenarios"][1]);
    assert_eq!((one["processes"].as_u64(), group["processes"].as_u64()), (Some(1), Some(3)), "{v}");
    assert_eq!(group["total_connections"], 500, "{group}");
    for engine in engines.split(',').filter(|&e| e != "select") {
        let m = &group["engines"][engine]["median"];
        for key in ["requests_per_sec", "latency_p99_us", "cpu_us_per_req", "rss_peak_bytes"] {
            positive(m, key);
        }
        assert!(m["syscalls_per_req"].is_null(), "not reported for a group: {m}");
    }
    // Four processes (the supervisor and three) against one.
    let rss = |s: &Value| s["engines"]["epoll"]["median"]["rss_peak_bytes"].as_f64().unwrap_or(0.0);
    assert!(rss(group) > 2.0 * rss(one), "the group's RSS is summed: {} against {}", rss(group), rss(one));
    let select = &group["engines"]["select"];
    assert_eq!(select["failed"], "FD_SETSIZE", "{group}");
    assert!(select["detail"].as_str().unwrap_or("").contains("group of 3 processes"), "{select}");
    assert!(one["engines"]["select"]["failed"].is_null(), "select holds 100 in one process: {one}");
}

/// `--paths FILE` reaches every load run: the requests go to its paths instead of the
/// scenario's, so a path the servers do not serve shows as errors, and one they serve as
/// none.
#[test]
fn paths_are_passed_to_the_load_runs() {
    let dir = tempfile::tempdir().unwrap();
    let errors = |paths: &str| {
        let file = dir.path().join("paths.txt");
        std::fs::write(&file, paths).unwrap();
        let args = ["--quick", "--engines", "epoll", "--depth", "1", "--duration", "0.3s"];
        let v = run_compare(&[&args[..], &["--paths", file.to_str().unwrap()]].concat());
        let m = &v["scenarios"][0]["engines"]["epoll"]["median"];
        positive(m, "requests_per_sec");
        m["errors"].as_u64().expect("an error count")
    };
    assert_eq!(errors("/\n"), 0, "/ is served");
    assert!(errors("/not-served\n") > 0, "every request went to /not-served: a 404 each");
}
