//! `duet compare --quick --json` end to end, with duet's load generator and with wrk.
//! Loopback only; every run is bounded and the compare process (whose servers die with
//! it) is killed if the test fails.

mod common;

use serde_json::Value;
use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const RUN_TIMEOUT: Duration = Duration::from_secs(180);
const FIGURES: [&str; 8] = [
    "requests_per_sec",
    "latency_p50_us",
    "latency_p99_us",
    "latency_p999_us",
    "cpu_us_per_req",
    "cpu_util",
    "rss_peak_bytes",
    // From each server's own counters (`duet serve --metrics`): checked positive below.
    "syscalls_per_req",
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
    let mut cmd = common::duet_command();
    cmd.args(["compare", "--quick", "--json", "--duration", "1s", "--engines", &engines.join(",")])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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

#[test]
fn quick_compare_with_duet_load() {
    let engines = engines();
    let dir = std::env::temp_dir().join(format!("duet-compare-test-{}", std::process::id()));
    let v = compare_json(&engines, &["--out", dir.to_str().unwrap()]);
    check(&v, &engines, "duet");
    let saved = std::fs::read_to_string(dir.join("results.json")).expect("results.json");
    assert_eq!(serde_json::from_str::<Value>(&saved).unwrap(), v);
    let md = std::fs::read_to_string(dir.join("results.md")).expect("results.md");
    assert!(md.contains("| epoll |") && md.contains("syscalls/req"), "{md}");
    for chart in ["requests_per_sec.svg", "cpu_us_per_req.svg", "latency.svg"] {
        let svg = std::fs::read_to_string(dir.join(chart)).expect(chart);
        assert!(svg.starts_with("<svg") && svg.contains("epoll"), "{chart}");
    }
    let _ = std::fs::remove_dir_all(&dir);
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
    let v = compare_json(&["epoll"], &["--floors", "--peer", &peer]);
    check(&v, &["epoll"], "duet");
    assert_eq!(v["peers"].as_array().map(Vec::len), Some(2), "{v}");
    for s in v["scenarios"].as_array().unwrap() {
        for name in ["mine", "floor-epoll"] {
            let m = &s["engines"][name]["median"];
            assert_eq!(m["errors"], 0, "{name} had errors: {s}");
            assert!(m["requests_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{name}: {s}");
            assert!(m["syscalls_per_req"].is_null(), "{name}: peers have no syscall counts: {s}");
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

#[test]
fn missing_wrk_or_bad_flags_are_one_line_errors() {
    let out = common::duet_command()
        .args(["compare", "--quick", "--engines", "epoll", "--load-with", "wrk", "--idle", "10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--idle needs --load-with duet"), "{err}");
    let out = common::duet_command().args(["compare", "--server-cpus", "x"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a CPU list"));
}
