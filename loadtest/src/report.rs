//! The results: wrk's text layout, or one JSON object.

use crate::stats::{latency_histogram, latency_spread, sample_spread, Errors, Stats};
use crate::{Config, MergeError, Target};
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// The server process's usage over the measured window (`--server-pid`).
#[derive(Debug, Clone, Copy)]
pub struct ServerUsage {
    /// utime + stime of all its threads.
    pub cpu_s: f64,
    /// `cpu_s` per request answered, in microseconds.
    pub cpu_us_per_req: f64,
    /// Largest VmRSS seen while sampling every 100 ms.
    pub rss_peak_bytes: u64,
    /// VmHWM at the end (the peak over the process's whole life).
    pub rss_hwm_bytes: u64,
}

/// The merged measurements of a run (or of several, `--merge`).
#[derive(Debug)]
pub struct Report {
    /// What the run was asked to do.
    pub config: Config,
    /// Where the requests went.
    pub target: Target,
    /// The measurements of every thread, merged.
    pub stats: Stats,
    /// Length of the measured window (merged: the longest one).
    pub duration: Duration,
    /// The server's usage, with `--server-pid`.
    pub server: Option<ServerUsage>,
    /// The sampled server process went away during the window, so its figures (if
    /// any) cover less of it. Not part of the JSON: a merged or read report has false.
    pub server_went_away: bool,
    /// Idle connections open and answered at the end.
    pub idle_held: usize,
    /// Connections the server closed, reset or refused, or that could not connect, over
    /// the whole run (idle set-up and warm-up included).
    pub lost: u64,
    /// How many runs these figures hold: 1, or the number of files `--merge` read.
    pub runs: usize,
}

/// The percentiles `--json` reports, with their key.
const JSON_PERCENTILES: [(&str, f64); 8] = [
    ("p50", 50.0),
    ("p75", 75.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p999", 99.9),
    ("p9999", 99.99),
    ("p100", 100.0),
];

/// The percentiles of wrk2's `--latency` summary.
const WRK2_PERCENTILES: [f64; 8] = [50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 99.999, 100.0];

/// The value at percentile `p` (0-100); `None` when nothing was recorded.
pub fn percentile(h: &Histogram<u64>, p: f64) -> Option<u64> {
    (!h.is_empty()).then(|| h.value_at_quantile(p / 100.0))
}

/// The mean; `None` when nothing was recorded.
pub fn mean(h: &Histogram<u64>) -> Option<f64> {
    (!h.is_empty()).then(|| h.mean())
}

/// `x` if it is a number (serde_json would write NaN as null too; this says so).
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Report {
    /// Requests answered per second of the measured window.
    pub fn requests_per_sec(&self) -> f64 {
        self.stats.requests as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    /// The latency at percentile `p` (0-100), from the intended send time in open loop;
    /// `None` when no request was answered.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        percentile(&self.stats.latency, p)
    }

    /// Open loop: the histogram of uncorrected latencies, from the actual send.
    pub fn uncorrected(&self) -> Option<&Histogram<u64>> {
        self.config.rate.map(|_| &self.stats.uncorrected)
    }

    /// The opening lines of a `--merge` report.
    pub fn merged_header_text(&self) -> String {
        let c = &self.config;
        let mut s =
            format!("Merged {} runs @ {}\n  {} threads and {} connections", self.runs, c.url, c.threads, c.connections);
        if c.idle > 0 {
            s.push_str(&format!(" (+{} idle)", c.idle));
        }
        if let Some(r) = c.rate {
            s.push_str(&format!(", {r} requests/s open loop"));
        }
        s.push('\n');
        s
    }

    /// wrk's layout, so its readers and parsers keep working; extra lines come last.
    /// With `latency_table`, wrk2's `--latency` layout: the summary percentiles and the
    /// detailed spectrum, and in open loop the same for the uncorrected latency (wrk2 -U).
    pub fn text(&self, latency_table: bool) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let lat = latency_spread(&s.latency);
        let req = sample_spread(&s.rate_samples);
        let _ = writeln!(out, "  Thread Stats   Avg      Stdev     Max   +/- Stdev");
        let _ = writeln!(
            out,
            "    Latency   {}{}{}{:8.2}%",
            units(&format_us(lat.mean), 8),
            units(&format_us(lat.stdev), 10),
            units(&format_us(lat.max), 9),
            lat.within_stdev_pct
        );
        let _ = writeln!(
            out,
            "    Req/Sec   {}{}{}{:8.2}%",
            units(&format_metric(req.mean), 8),
            units(&format_metric(req.stdev), 10),
            units(&format_metric(req.max), 9),
            req.within_stdev_pct
        );
        if latency_table {
            latency_distribution(&mut out, &s.latency, "Recorded Latency");
            let _ = writeln!(out, "----------------------------------------------------------");
            if let Some(raw) = self.uncorrected() {
                let _ = writeln!(out);
                latency_distribution(
                    &mut out,
                    raw,
                    "Uncorrected Latency (measured without taking delayed starts into account)",
                );
                let _ = writeln!(out, "----------------------------------------------------------");
            }
        }
        let _ = writeln!(
            out,
            "  {} requests in {}, {}B read",
            s.requests,
            format_duration(self.duration),
            format_binary(s.bytes_read as f64)
        );
        if s.requests > 0 {
            let st = &s.status;
            let _ = write!(
                out,
                "  Status codes: 2xx {}, 3xx {}, 4xx {}, 5xx {}",
                st.class(200),
                st.class(300),
                st.class(400),
                st.class(500)
            );
            if st.other() > 0 {
                let _ = write!(out, ", other {}", st.other());
            }
            let codes: Vec<String> = st.codes().map(|(code, n)| format!("{code} {n}")).collect();
            let _ = writeln!(out, "; by code: {}", codes.join(", "));
        }
        let e = &s.errors;
        if e.socket_total() > 0 {
            let _ = writeln!(
                out,
                "  Socket errors: connect {}, read {}, write {}, timeout {}",
                e.connect, e.read, e.write, e.timeout
            );
        }
        if e.status > 0 {
            let _ = writeln!(out, "  Non-2xx or 3xx responses: {}", e.status);
        }
        if s.reconnects > 0 {
            let _ = writeln!(out, "  Reconnects (server closed): {}", s.reconnects);
        }
        if !self.config.keepalive {
            let _ = writeln!(out, "  Connections opened: {} (keep-alive off: one per request)", s.connects);
        }
        if self.config.idle > 0 {
            let _ = writeln!(out, "  Idle connections held: {} of {}", self.idle_held, self.config.idle);
        }
        let _ = writeln!(out, "Requests/sec: {:9.2}", self.requests_per_sec());
        let _ = writeln!(
            out,
            "Transfer/sec: {:>10}B",
            format_binary(s.bytes_read as f64 / self.duration.as_secs_f64().max(1e-9))
        );
        if let Some(sv) = &self.server {
            let per_request = match finite(sv.cpu_us_per_req) {
                Some(us) => format!("{us:.2}us/request"),
                None => "n/a per request".into(),
            };
            let _ = writeln!(
                out,
                "Server CPU:   {:.3}s, {per_request}, peak RSS {}B",
                sv.cpu_s,
                format_binary(sv.rss_peak_bytes as f64)
            );
        }
        out
    }

    /// One JSON object (one line). Figures that do not exist (a percentile of no
    /// responses) are null, never 0.
    pub fn json(&self) -> String {
        // Plain data with string keys: serializing it cannot fail.
        serde_json::to_string(&self.to_json()).unwrap_or_default()
    }

    fn to_json(&self) -> JsonReport {
        let s = &self.stats;
        let e = &s.errors;
        let c = &self.config;
        JsonReport {
            url: c.url.clone(),
            runs: self.runs,
            threads: c.threads,
            connections: c.connections,
            idle: c.idle,
            idle_held: self.idle_held,
            depth: c.depth,
            rate: c.rate,
            requests_limit: c.requests,
            warmup_s: c.warmup.as_secs_f64(),
            requests: s.requests,
            duration_s: self.duration.as_secs_f64(),
            requests_per_sec: finite(self.requests_per_sec()),
            bytes_read: s.bytes_read,
            latency_us: LatencyJson::of(&s.latency),
            uncorrected_latency_us: self.uncorrected().map(LatencyJson::of),
            status: StatusJson {
                c2xx: s.status.class(200),
                c3xx: s.status.class(300),
                c4xx: s.status.class(400),
                c5xx: s.status.class(500),
                other: s.status.other(),
                codes: s.status.codes().map(|(code, n)| (format!("{code:03}"), n)).collect(),
            },
            errors: ErrorsJson {
                connect: e.connect,
                read: e.read,
                write: e.write,
                timeout: e.timeout,
                status: e.status,
            },
            reconnects: s.reconnects,
            connects: s.connects,
            keepalive: c.keepalive,
            lost: self.lost,
            thread_rate_samples: s.rate_samples.iter().map(|x| (x * 10.0).round() / 10.0).collect(),
            server: self.server.map(|sv| ServerJson {
                cpu_s: finite(sv.cpu_s),
                cpu_us_per_req: finite(sv.cpu_us_per_req),
                rss_peak_bytes: sv.rss_peak_bytes,
                rss_hwm_bytes: sv.rss_hwm_bytes,
            }),
        }
    }

    /// Reads one object printed by `--json` back. `name` says where it came from, for
    /// the error.
    pub fn from_json(name: &str, text: &str) -> Result<Report, String> {
        let j: JsonReport =
            serde_json::from_str(text.trim()).map_err(|e| format!("{name}: not the JSON of duet load --json: {e}"))?;
        let target = Target::parse(j.url.split(' ').next().unwrap_or("")).map_err(|e| format!("{name}: {e}"))?;
        let mut stats = Stats::new();
        stats.latency = j.latency_us.histogram(name)?;
        if let Some(raw) = &j.uncorrected_latency_us {
            stats.uncorrected = raw.histogram(name)?;
        }
        stats.requests = j.requests;
        stats.bytes_read = j.bytes_read;
        stats.errors = Errors {
            connect: j.errors.connect,
            read: j.errors.read,
            write: j.errors.write,
            timeout: j.errors.timeout,
            status: j.errors.status,
        };
        stats.reconnects = j.reconnects;
        stats.connects = j.connects;
        stats.rate_samples = j.thread_rate_samples;
        for (code, n) in &j.status.codes {
            let known = code.parse::<u16>().is_ok_and(|c| stats.status.add(c, *n));
            if !known {
                return Err(format!("{name}: status code '{code}' is not a three-digit code"));
            }
        }
        if !j.duration_s.is_finite() || j.duration_s < 0.0 || !j.warmup_s.is_finite() || j.warmup_s < 0.0 {
            return Err(format!("{name}: duration_s and warmup_s must be seconds"));
        }
        let config = Config {
            url: j.url,
            connections: j.connections,
            threads: j.threads,
            requests: j.requests_limit,
            idle: j.idle,
            depth: j.depth,
            rate: j.rate,
            warmup: Duration::from_secs_f64(j.warmup_s),
            keepalive: j.keepalive,
            ..Config::default()
        };
        Ok(Report {
            config,
            target,
            stats,
            duration: Duration::from_secs_f64(j.duration_s),
            // A `duet load --processes` child's sample of the server, for its parent.
            server: j.server.map(|sv| ServerUsage {
                cpu_s: sv.cpu_s.unwrap_or(f64::NAN),
                cpu_us_per_req: sv.cpu_us_per_req.unwrap_or(f64::NAN),
                rss_peak_bytes: sv.rss_peak_bytes,
                rss_hwm_bytes: sv.rss_hwm_bytes,
            }),
            server_went_away: false,
            idle_held: j.idle_held,
            lost: j.lost,
            runs: j.runs.max(1),
        })
    }

    /// Adds the runs up: counts and histograms exactly (a percentile of the result is
    /// that of all the responses together), connections and threads summed, rates of
    /// open-loop runs summed. The runs are taken to have run side by side, so the
    /// window is the longest one. The server's CPU is left out: each file measured its
    /// own share of the same server, or another server.
    pub fn merge(reports: Vec<Report>) -> Result<Report, MergeError> {
        let mut reports = reports.into_iter();
        let Some(mut all) = reports.next() else { return Err(MergeError::NoReports) };
        all.server = None;
        all.server_went_away = false;
        for r in reports {
            if r.config.rate.is_some() != all.config.rate.is_some() {
                return Err(MergeError::MixedLoops);
            }
            let c = &mut all.config;
            if !c.url.split(' ').any(|u| u == r.config.url) {
                c.url = format!("{} {}", c.url, r.config.url);
            }
            c.threads += r.config.threads;
            c.connections += r.config.connections;
            c.idle += r.config.idle;
            c.depth = c.depth.max(r.config.depth);
            c.rate = c.rate.zip(r.config.rate).map(|(a, b)| a + b);
            c.requests = c.requests.zip(r.config.requests).map(|(a, b)| a + b);
            c.warmup = c.warmup.max(r.config.warmup);
            c.keepalive &= r.config.keepalive;
            // Both histograms have the bounds of latency_histogram() (from_json made
            // them so), so adding them is exact and cannot fail.
            all.stats.merge(&r.stats);
            all.duration = all.duration.max(r.duration);
            all.idle_held += r.idle_held;
            all.lost += r.lost;
            all.runs += r.runs;
        }
        Ok(all)
    }
}

/// wrk2's `print_hdr_latency`: the summary percentiles, then HdrHistogram's classic
/// percentile spectrum in milliseconds (5 ticks per half distance).
fn latency_distribution(out: &mut String, h: &Histogram<u64>, description: &str) {
    let _ = writeln!(out, "  Latency Distribution (HdrHistogram - {description})");
    if h.is_empty() {
        let _ = writeln!(out, "  no responses");
        return;
    }
    for p in WRK2_PERCENTILES {
        let v = h.value_at_quantile(p / 100.0);
        let _ = writeln!(out, "{p:7.3}%{}", units(&format_us(v as f64), 10));
    }
    let _ = writeln!(out, "\n  Detailed Percentile spectrum:");
    let _ = writeln!(out, "{:>12} {:>12} {:>12} {:>12}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let _ = writeln!(
            out,
            "{:12.3} {:12.6} {:12} {:12.2}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            total,
            1.0 / (1.0 - q)
        );
    }
    let sub_buckets = (2.0 * 10f64.powi(i32::from(h.sigfig()))).log2().ceil().exp2() as u64;
    let _ = writeln!(out, "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]", h.mean() / 1000.0, h.stdev() / 1000.0);
    let _ = writeln!(out, "#[Max     = {:12.3}, Total count    = {:12}]", h.max() as f64 / 1000.0, h.len());
    let _ = writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), sub_buckets);
}

/// `--json`, as serde writes and reads it.
#[derive(Debug, Serialize, Deserialize)]
struct JsonReport {
    url: String,
    /// Runs merged into these figures (1 for one run).
    #[serde(default = "one")]
    runs: usize,
    threads: usize,
    connections: usize,
    idle: usize,
    idle_held: usize,
    depth: usize,
    rate: Option<f64>,
    /// `-n`, when the window was a count of requests.
    #[serde(default)]
    requests_limit: Option<u64>,
    warmup_s: f64,
    requests: u64,
    duration_s: f64,
    requests_per_sec: Option<f64>,
    bytes_read: u64,
    latency_us: LatencyJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uncorrected_latency_us: Option<LatencyJson>,
    status: StatusJson,
    errors: ErrorsJson,
    reconnects: u64,
    /// Connections established in the window (`--json` of older builds: 0).
    #[serde(default)]
    connects: u64,
    /// False with `--disable-keepalive`.
    #[serde(default = "yes")]
    keepalive: bool,
    #[serde(default)]
    lost: u64,
    /// Each thread's requests per second every 100 ms: the Req/Sec row, kept so that a
    /// merge can print it too.
    #[serde(default)]
    thread_rate_samples: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server: Option<ServerJson>,
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, Deserialize)]
struct LatencyJson {
    p50: Option<u64>,
    p75: Option<u64>,
    p90: Option<u64>,
    p95: Option<u64>,
    p99: Option<u64>,
    p999: Option<u64>,
    p9999: Option<u64>,
    max: Option<u64>,
    min: Option<u64>,
    mean: Option<f64>,
    stdev: Option<f64>,
    /// Every latency: the HdrHistogram, V2 compressed (deflate) and base64 encoded,
    /// as HdrHistogram's own tools read it.
    histogram: String,
}

impl LatencyJson {
    fn of(h: &Histogram<u64>) -> LatencyJson {
        let at = |key: &str| JSON_PERCENTILES.iter().find(|(k, _)| *k == key).and_then(|&(_, p)| percentile(h, p));
        LatencyJson {
            p50: at("p50"),
            p75: at("p75"),
            p90: at("p90"),
            p95: at("p95"),
            p99: at("p99"),
            p999: at("p999"),
            p9999: at("p9999"),
            max: at("p100"),
            min: (!h.is_empty()).then(|| h.min()),
            mean: mean(h),
            stdev: (!h.is_empty()).then(|| h.stdev()),
            histogram: encode_histogram(h),
        }
    }

    fn histogram(&self, name: &str) -> Result<Histogram<u64>, String> {
        let h = decode_histogram(&self.histogram).map_err(|e| format!("{name}: latency histogram: {e}"))?;
        let mut ours = latency_histogram();
        ours.add(&h).map_err(|_| format!("{name}: latency histogram: values beyond an hour"))?;
        Ok(ours)
    }
}

/// V2 deflate serialization, base64 (standard alphabet, padded): HdrHistogram's
/// interchange format ("HISTFAAA...").
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail, and our histograms are within the format's bounds.
    match V2DeflateSerializer::new().serialize(h, &mut bytes) {
        Ok(_) => base64::engine::general_purpose::STANDARD.encode(bytes),
        Err(_) => String::new(),
    }
}

/// The inverse of [`encode_histogram`] (also reads uncompressed V2).
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|e| format!("not base64: {e}"))?;
    Deserializer::new().deserialize(&mut &bytes[..]).map_err(|e| format!("not an HdrHistogram: {e:?}"))
}

#[derive(Debug, Serialize, Deserialize)]
struct StatusJson {
    #[serde(rename = "2xx")]
    c2xx: u64,
    #[serde(rename = "3xx")]
    c3xx: u64,
    #[serde(rename = "4xx")]
    c4xx: u64,
    #[serde(rename = "5xx")]
    c5xx: u64,
    other: u64,
    /// Responses by code, "200": n.
    codes: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ErrorsJson {
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
    status: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ServerJson {
    cpu_s: Option<f64>,
    cpu_us_per_req: Option<f64>,
    rss_peak_bytes: u64,
    rss_hwm_bytes: u64,
}

/// Right-aligns a formatted value in `width` with the unit in a two-character column,
/// the way wrk's print_units does.
fn units(s: &str, width: usize) -> String {
    let b = s.as_bytes();
    let mut pad = 2;
    if b.last().is_some_and(u8::is_ascii_alphabetic) {
        pad -= 1;
    }
    if b.len() >= 2 && b[b.len() - 2].is_ascii_alphabetic() {
        pad -= 1;
    }
    format!("{:>w$}{}", s, &"  "[..pad], w = width - pad)
}

fn scaled(x: f64, base: f64, units: &[&str]) -> String {
    let mut x = x;
    let mut i = 0;
    while x >= base && i + 1 < units.len() {
        x /= base;
        i += 1;
    }
    format!("{x:.2}{}", units[i])
}

/// Microseconds as wrk prints times: us, ms, s.
pub(crate) fn format_us(us: f64) -> String {
    if us >= 60e6 {
        return format!("{:.2}m", us / 60e6);
    }
    scaled(us, 1000.0, &["us", "ms", "s"])
}

/// A count as wrk prints rates: 1.23k, 4.56M.
pub(crate) fn format_metric(x: f64) -> String {
    scaled(x, 1000.0, &["", "k", "M", "G"])
}

/// Bytes in binary units, without the trailing B (the caller adds it).
pub(crate) fn format_binary(x: f64) -> String {
    scaled(x, 1024.0, &["", "K", "M", "G", "T"])
}

/// A duration as the reports print it (`10.00s`, `500.00ms`).
pub fn format_duration(d: Duration) -> String {
    format_us(d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(latencies: &[u64], rate: Option<f64>) -> Report {
        let mut stats = Stats::new();
        for &us in latencies {
            stats.record_us(us);
            if rate.is_some() {
                stats.record_uncorrected_us(us / 2);
            }
            stats.requests += 1;
            stats.status.record(200);
        }
        stats.rate_samples = vec![100.0, 120.0];
        Report {
            config: Config { url: "http://127.0.0.1:8080/".into(), rate, ..Config::default() },
            target: Target::parse("http://127.0.0.1:8080/").unwrap(),
            stats,
            duration: Duration::from_secs(2),
            server: None,
            server_went_away: false,
            idle_held: 0,
            lost: 0,
            runs: 1,
        }
    }

    fn json_of(r: &Report) -> serde_json::Value {
        serde_json::from_str(&r.json()).unwrap()
    }

    #[test]
    fn json_has_the_tail_percentiles_status_codes_and_the_histogram() {
        let mut r = report(&(1..=10_000).collect::<Vec<_>>(), None);
        r.stats.status.record(404);
        let v = json_of(&r);
        let lat = &v["latency_us"];
        // 1..=10000 us once each: percentile p is p * 100 us, to 3 significant digits.
        let h = &r.stats.latency;
        for (key, us) in [("p50", 5_000), ("p95", 9_500), ("p99", 9_900), ("p9999", 9_999), ("max", 10_000)] {
            assert_eq!(lat[key], h.highest_equivalent(us), "{key}");
        }
        assert_eq!(lat["min"], 1);
        assert_eq!(v["status"]["2xx"], 10_000);
        assert_eq!(v["status"]["4xx"], 1);
        assert_eq!(v["status"]["codes"]["404"], 1);
        let h = decode_histogram(lat["histogram"].as_str().unwrap()).unwrap();
        assert_eq!(h, r.stats.latency, "the histogram travels exactly");
        assert!(v.get("uncorrected_latency_us").is_none(), "closed loop has one latency");
        assert!(lat["histogram"].as_str().unwrap().starts_with("HISTF"), "V2 deflate, base64");
    }

    #[test]
    fn figures_that_do_not_exist_are_null_not_zero() {
        let mut r = report(&[], None);
        r.server = Some(ServerUsage { cpu_s: 0.5, cpu_us_per_req: f64::NAN, rss_peak_bytes: 1, rss_hwm_bytes: 2 });
        let v = json_of(&r);
        for key in ["p50", "p95", "p99", "p9999", "max", "min", "mean", "stdev"] {
            assert!(v["latency_us"][key].is_null(), "{key}: {v}");
        }
        assert!(v["server"]["cpu_us_per_req"].is_null(), "{v}");
        assert_eq!(v["server"]["cpu_s"], 0.5);
        assert_eq!(v["requests_per_sec"], 0.0, "no requests in a real window is a rate of 0");
        assert!(r.text(false).contains("Server CPU:   0.500s, n/a per request, peak RSS"), "{}", r.text(false));
    }

    #[test]
    fn json_read_back_keeps_the_servers_sample_for_a_process_groups_parent() {
        let mut r = report(&[10, 20], None);
        r.server = Some(ServerUsage { cpu_s: 0.25, cpu_us_per_req: 125.0, rss_peak_bytes: 7, rss_hwm_bytes: 9 });
        let back = Report::from_json("child", &r.json()).unwrap();
        let sv = back.server.expect("the server's sample read back");
        assert_eq!((sv.cpu_s, sv.cpu_us_per_req, sv.rss_peak_bytes, sv.rss_hwm_bytes), (0.25, 125.0, 7, 9));
        assert!(Report::from_json("none", &report(&[10], None).json()).unwrap().server.is_none());
    }

    #[test]
    fn json_reads_back_into_the_same_report() {
        let r = report(&[10, 20, 30, 4_000], Some(100.0));
        let back = Report::from_json("a.json", &r.json()).unwrap();
        assert_eq!(back.stats.latency, r.stats.latency);
        assert_eq!(back.stats.uncorrected, r.stats.uncorrected);
        assert_eq!(back.stats.status, r.stats.status);
        assert_eq!((back.stats.requests, back.duration, back.config.rate), (4, Duration::from_secs(2), Some(100.0)));
        assert_eq!(back.text(true), r.text(true));
        let err = Report::from_json("b.json", "{\"url\": 1}").unwrap_err();
        assert!(err.starts_with("b.json: not the JSON of duet load --json"), "{err}");
        let bad = r.json().replace("HISTF", "XXXXX");
        assert!(Report::from_json("c.json", &bad).unwrap_err().contains("latency histogram"));
    }

    #[test]
    fn merging_is_exact_and_adds_the_counts() {
        let a = report(&[100, 200, 300], None);
        let b = report(&[5_000, 6_000], None);
        let mut whole = Stats::new();
        for us in [100, 200, 300, 5_000, 6_000] {
            whole.record_us(us);
        }
        let from = |r: &Report| Report::from_json("x", &r.json()).unwrap();
        let m = Report::merge(vec![from(&a), from(&b)]).unwrap();
        assert_eq!(m.stats.latency, whole.latency, "the merged histogram is the histogram of every response");
        assert_eq!(m.percentile(50.0), whole.latency.value_at_quantile(0.5).into());
        assert_eq!((m.stats.requests, m.runs, m.config.connections, m.config.threads), (5, 2, 20, 4));
        assert_eq!(m.stats.status.class(200), 5);
        assert_eq!(m.duration, Duration::from_secs(2), "side by side: the longest window");
        assert_eq!(m.stats.rate_samples.len(), 4);
        assert!(m.merged_header_text().starts_with("Merged 2 runs @ http://127.0.0.1:8080/\n"));
        let err = Report::merge(vec![from(&a), from(&report(&[1], Some(10.0)))]).unwrap_err();
        assert!(err.to_string().contains("open-loop"), "{err}");
        assert!(Report::merge(Vec::new()).is_err());
    }

    #[test]
    fn latency_text_is_wrk2s_layout_with_the_uncorrected_spectrum_in_open_loop() {
        let closed = report(&(1..=1000).collect::<Vec<_>>(), None).text(true);
        for needle in [
            "  Latency Distribution (HdrHistogram - Recorded Latency)\n 50.000%  500.00us\n",
            "\n 99.999%    1.00ms\n100.000%    1.00ms\n",
            "\n  Detailed Percentile spectrum:\n       Value   Percentile   TotalCount 1/(1-Percentile)\n\n",
            "       0.001     0.000000            1         1.00\n",
            "       1.000     1.000000         1000          inf\n",
            "#[Mean    =        0.500, StdDeviation   =        0.289]\n",
            "#[Max     =        1.000, Total count    =         1000]\n",
            "#[Buckets =           22, SubBuckets     =         2048]\n",
            "  Status codes: 2xx 1000, 3xx 0, 4xx 0, 5xx 0; by code: 200 1000\n",
        ] {
            assert!(closed.contains(needle), "missing {needle:?} in:\n{closed}");
        }
        assert!(!closed.contains("Uncorrected"), "{closed}");
        let open = report(&[1000, 2000], Some(50.0)).text(true);
        let uncorrected = open.find("HdrHistogram - Uncorrected Latency").expect("the uncorrected block");
        assert!(open[uncorrected..].contains(" 50.000%  500.00us"), "{open}");
        assert!(!report(&[1000], Some(50.0)).text(false).contains("Latency Distribution"));
    }

    #[test]
    fn units_like_wrk() {
        assert_eq!(format_us(635.91), "635.91us");
        assert_eq!(format_us(12_920.0), "12.92ms");
        assert_eq!(format_us(10_100_000.0), "10.10s");
        assert_eq!(format_metric(56_200.0), "56.20k");
        assert_eq!(format_binary(17.76 * 1024.0 * 1024.0 * 1024.0), "17.76G");
        assert_eq!(units("635.91us", 8), "635.91us");
        assert_eq!(units("0.89ms", 10), "    0.89ms");
        assert_eq!(units("93.00", 8), " 93.00  ");
    }
}
