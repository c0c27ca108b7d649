//! Driving the load with wrk: the Lua script, the command and the parser of its output.

use super::{Figures, Scenario};
use crate::procstat;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What `wrk --latency` printed, in microseconds and plain counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkOutput {
    /// Requests completed.
    pub requests: u64,
    /// The length of the run as wrk reports it, in seconds.
    pub duration_s: f64,
    /// The `Requests/sec` line.
    pub requests_per_sec: f64,
    /// The average of the per-thread `Req/Sec` row (k and M expanded).
    pub thread_req_per_sec: Option<f64>,
    /// The `Latency` row's average.
    pub mean_us: Option<f64>,
    /// The median latency.
    pub p50_us: f64,
    /// The 99th percentile latency.
    pub p99_us: f64,
    /// Printed by our Lua `done` hook (`p999_us N`); wrk itself stops at 99%.
    pub p999_us: Option<f64>,
    /// The `Socket errors` line, summed (connect, read, write, timeout).
    pub socket_errors: u64,
    /// The `Non-2xx or 3xx responses` line (0 when absent).
    pub non_2xx_3xx: u64,
}

/// Whether wrk is on PATH.
pub fn available() -> bool {
    Command::new("wrk").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// A Lua script that pipelines `depth` requests per round trip (wrk's own pipeline.lua)
/// and prints the 99.9th percentile when wrk is done.
pub fn script(depth: usize) -> String {
    let mut s = String::new();
    if depth > 1 {
        s.push_str(&format!(
            "init = function(args)\n  local r = {{}}\n  for i = 1, {depth} do\n    r[i] = wrk.format(nil)\n  end\n  \
             req = table.concat(r)\nend\n\nrequest = function()\n  return req\nend\n\n"
        ));
    }
    s.push_str(
        "done = function(summary, latency, requests)\n  io.write(string.format(\"p999_us %d\\n\", \
         latency:percentile(99.9)))\nend\n",
    );
    s
}

/// Writes the script for `depth` into `dir` and returns its path.
pub fn write_script(dir: &Path, depth: usize) -> Result<PathBuf, String> {
    let path = dir.join(format!("wrk-depth-{depth}.lua"));
    std::fs::write(&path, script(depth)).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Runs wrk once against `url` and samples the server `pid` while it runs.
pub fn measure(
    url: &str,
    scenario: &Scenario,
    threads: usize,
    duration: Duration,
    script: &Path,
    pid: u32,
) -> Result<Figures, String> {
    let secs = duration.as_secs_f64().ceil().max(1.0) as u64;
    let threads = threads.clamp(1, scenario.connections);
    let ticks = crate::sys::clock_ticks_per_sec();
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{threads}"))
        .arg(format!("-c{}", scenario.connections))
        .arg(format!("-d{secs}s"))
        .args(["--latency", "--timeout", "5s", "-s"])
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let first = procstat::sample(pid, ticks)?;
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot run wrk: {e} (install it with: apt-get install wrk)"))?;
    // The output is small (a few hundred bytes), so the pipes cannot fill before wrk exits.
    let mut rss_peak = first.rss_bytes;
    let deadline = start + Duration::from_secs(secs + 30);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("wrk did not finish in time".into());
            }
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for wrk: {e}")),
        }
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(s) = procstat::sample(pid, ticks) {
            rss_peak = rss_peak.max(s.rss_bytes);
        }
    }
    let last = procstat::sample(pid, ticks)?;
    let out = child.wait_with_output().map_err(|e| format!("cannot read wrk's output: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("wrk failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    let w = parse(&stdout)?;
    let cpu_s = (last.cpu_s - first.cpu_s).max(0.0);
    let window = if w.duration_s > 0.0 { w.duration_s } else { start.elapsed().as_secs_f64() };
    // With pipelining wrk records one latency per batch, and its coordinated-omission
    // correction then adds samples above the recorded maximum that its percentile walk
    // never reaches: it prints 0 for those percentiles. They are reported as missing (NaN).
    let reported = |x: f64| if x > 0.0 { x } else { f64::NAN };
    Ok(Figures {
        requests_per_sec: w.requests_per_sec,
        mean_us: reported(w.mean_us.unwrap_or(0.0)),
        p50_us: reported(w.p50_us),
        p99_us: reported(w.p99_us),
        p999_us: reported(w.p999_us.unwrap_or(0.0)),
        cpu_us_per_req: if w.requests > 0 { cpu_s * 1e6 / w.requests as f64 } else { 0.0 },
        cpu_util: cpu_s / window.max(1e-9),
        rss_peak_bytes: rss_peak.max(last.rss_bytes) as f64,
        syscalls_per_req: f64::NAN,
        events_per_wakeup: f64::NAN,
        errors: w.socket_errors + w.non_2xx_3xx,
    })
}

/// Parses the text of `wrk --latency`.
pub fn parse(text: &str) -> Result<WrkOutput, String> {
    let mut out = WrkOutput::default();
    let (mut p50, mut p99, mut rps, mut total) = (None, None, None, None);
    for line in text.lines() {
        let t = line.trim();
        let mut words = t.split_whitespace();
        let first = words.next().unwrap_or("");
        match first {
            "50%" => p50 = Some(parse_latency(words.next().unwrap_or(""))?),
            "99%" => p99 = Some(parse_latency(words.next().unwrap_or(""))?),
            "p999_us" => out.p999_us = words.next().and_then(|v| v.parse().ok()),
            "Req/Sec" => out.thread_req_per_sec = words.next().and_then(parse_count),
            // `Latency   210.50us ...`, not `Latency Distribution`.
            "Latency" => out.mean_us = words.next().and_then(|w| parse_latency(w).ok()).or(out.mean_us),
            "Requests/sec:" => rps = words.next().and_then(|v| v.parse::<f64>().ok()),
            _ => {}
        }
        if let Some(rest) = t.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            out.socket_errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1))
                .filter_map(|n| n.parse::<u64>().ok())
                .sum();
        } else if let Some(rest) = t.strip_prefix("Non-2xx or 3xx responses:") {
            out.non_2xx_3xx = rest.trim().parse().map_err(|_| format!("unreadable wrk line '{t}'"))?;
        } else if let Some((n, rest)) = t.split_once(" requests in ") {
            if let Ok(n) = n.trim().parse::<u64>() {
                total = Some(n);
                out.duration_s =
                    rest.split(',').next().map_or(Ok(0.0), |d| parse_latency(d.trim()).map(|us| us / 1e6))?;
            }
        }
    }
    let missing = |what: &str| format!("wrk's output has no {what} (is this wrk --latency?)");
    out.p50_us = p50.ok_or_else(|| missing("50% latency"))?;
    out.p99_us = p99.ok_or_else(|| missing("99% latency"))?;
    out.requests_per_sec = rps.ok_or_else(|| missing("Requests/sec"))?;
    out.requests = total.ok_or_else(|| missing("request count"))?;
    Ok(out)
}

/// `10.5us`, `1.20ms`, `2.00s`, `1.00m`, `1.00h` as microseconds.
fn parse_latency(s: &str) -> Result<f64, String> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("unreadable wrk time '{s}'"))?;
    let mult = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return Err(format!("unreadable wrk time '{s}'")),
    };
    Ok(n * mult)
}

/// `12.34`, `12.34k`, `1.20M`, `2.00G` as a plain number.
fn parse_count(s: &str) -> Option<f64> {
    let (num, mult) = match s.as_bytes().last()? {
        b'k' => (&s[..s.len() - 1], 1e3),
        b'M' => (&s[..s.len() - 1], 1e6),
        b'G' => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    num.parse::<f64>().ok().map(|n| n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "Running 1s test @ http://127.0.0.1:8080/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   210.50us   55.10us   1.20ms   80.00%
    Req/Sec    72.51k     1.30k   74.00k    90.00%
  Latency Distribution
     50%  200.00us
     75%  230.00us
     90%  280.00us
     99%    1.02ms
  72154 requests in 1.00s, 9.02MB read
Requests/sec:  72080.35
Transfer/sec:      9.01MB
p999_us 1180
";

    const ERRORS: &str = "Running 5s test @ http://127.0.0.1:8080/
  2 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.50s   300.00ms   2.00s    70.00%
    Req/Sec     1.20M   100.00k    1.30M    60.00%
  Latency Distribution
     50%    1.40s 
     75%    1.60s 
     90%    1.80s 
     99%    2.00s 
  5000000 requests in 5.00s, 600.00MB read
  Socket errors: connect 3, read 2, write 1, timeout 7
  Non-2xx or 3xx responses: 11
Requests/sec: 1000000.00
Transfer/sec:    120.00MB
";

    #[test]
    fn parses_clean_output() {
        let w = parse(CLEAN).unwrap();
        assert_eq!(w.requests, 72154);
        assert!((w.duration_s - 1.0).abs() < 1e-9);
        assert!((w.requests_per_sec - 72080.35).abs() < 1e-6);
        assert_eq!(w.thread_req_per_sec, Some(72510.0));
        assert_eq!(w.mean_us, Some(210.5));
        assert!((w.p50_us - 200.0).abs() < 1e-9);
        assert!((w.p99_us - 1020.0).abs() < 1e-9);
        assert_eq!(w.p999_us, Some(1180.0));
        assert_eq!((w.socket_errors, w.non_2xx_3xx), (0, 0));
    }

    #[test]
    fn parses_errors_seconds_and_millions() {
        let w = parse(ERRORS).unwrap();
        assert_eq!(w.requests, 5_000_000);
        assert!((w.p50_us - 1.4e6).abs() < 1e-6);
        assert!((w.p99_us - 2.0e6).abs() < 1e-6);
        assert_eq!(w.mean_us, Some(1.5e6));
        assert_eq!(w.p999_us, None);
        assert_eq!(w.thread_req_per_sec, Some(1.2e6));
        assert_eq!(w.socket_errors, 13);
        assert_eq!(w.non_2xx_3xx, 11);
        assert!((w.duration_s - 5.0).abs() < 1e-9);
    }

    #[test]
    fn units_and_counts() {
        assert_eq!(parse_latency("10.5us").unwrap(), 10.5);
        assert_eq!(parse_latency("1.20ms").unwrap(), 1200.0);
        assert_eq!(parse_latency("1.00m").unwrap(), 60e6);
        assert!(parse_latency("fast").is_err());
        assert_eq!(parse_count("12.34k"), Some(12340.0));
        assert_eq!(parse_count("1.5M"), Some(1.5e6));
        assert_eq!(parse_count("812.00"), Some(812.0));
    }

    #[test]
    fn output_without_figures_is_an_error() {
        let e = parse("unable to connect to 127.0.0.1:1 Connection refused\n").unwrap_err();
        assert!(e.contains("50% latency"), "{e}");
    }

    #[test]
    fn script_pipelines_only_above_depth_one() {
        assert!(!script(1).contains("request ="));
        assert!(script(16).contains("for i = 1, 16 do"));
        assert!(script(16).contains("percentile(99.9)"));
    }
}
