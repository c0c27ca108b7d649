//! The results: wrk's text layout, or one JSON object.

use crate::stats::{latency_spread, sample_spread, Stats};
use crate::{Config, Target};
use std::fmt::Write;
use std::time::Duration;

/// The server process's usage over the measured window (`--server-pid`).
#[derive(Debug, Clone, Copy)]
pub struct ServerUsage {
    /// utime + stime of all its threads.
    pub cpu_s: f64,
    pub cpu_us_per_req: f64,
    /// Largest VmRSS seen while sampling every 100 ms.
    pub rss_peak_bytes: u64,
    /// VmHWM at the end (the peak over the process's whole life).
    pub rss_hwm_bytes: u64,
}

/// The merged measurements of a run.
#[derive(Debug)]
pub struct Report {
    pub config: Config,
    pub target: Target,
    pub stats: Stats,
    /// Length of the measured window.
    pub duration: Duration,
    pub server: Option<ServerUsage>,
    /// Idle connections open and answered at the end.
    pub idle_held: usize,
    /// Connections the server closed, reset or refused, or that could not connect, over
    /// the whole run (idle set-up and warm-up included).
    pub lost: u64,
}

impl Report {
    pub fn requests_per_sec(&self) -> f64 {
        self.stats.requests as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    fn percentile(&self, p: f64) -> u64 {
        if self.stats.latency.is_empty() {
            0
        } else {
            self.stats.latency.value_at_quantile(p / 100.0)
        }
    }

    /// wrk's layout, so its readers and parsers keep working; extra lines come last.
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
            let _ = writeln!(out, "  Latency Distribution");
            for p in [50.0, 75.0, 90.0, 99.0, 99.9] {
                let label = if p == 99.9 { "99.9%".to_string() } else { format!("{p:.0}%") };
                let _ = writeln!(out, "  {label:>6}{}", units(&format_us(self.percentile(p) as f64), 10));
            }
        }
        let _ = writeln!(
            out,
            "  {} requests in {}, {}B read",
            s.requests,
            format_duration(self.duration),
            format_binary(s.bytes_read as f64)
        );
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
            let _ = writeln!(
                out,
                "Server CPU:   {:.3}s, {:.2}us/request, peak RSS {}B",
                sv.cpu_s,
                sv.cpu_us_per_req,
                format_binary(sv.rss_peak_bytes as f64)
            );
        }
        out
    }

    /// One JSON object (one line).
    pub fn json(&self) -> String {
        let s = &self.stats;
        let e = &s.errors;
        let c = &self.config;
        let mean = if s.latency.is_empty() { 0.0 } else { s.latency.mean() };
        let stdev = if s.latency.is_empty() { 0.0 } else { s.latency.stdev() };
        let mut out = String::from("{");
        let _ = write!(out, "\"url\":{},", json_str(&c.url));
        let _ = write!(
            out,
            "\"threads\":{},\"connections\":{},\"idle\":{},\"idle_held\":{},\"depth\":{},",
            c.threads, c.connections, c.idle, self.idle_held, c.depth
        );
        let _ = write!(out, "\"rate\":{},", c.rate.map_or("null".to_string(), num));
        let _ = write!(out, "\"warmup_s\":{},", num(c.warmup.as_secs_f64()));
        let _ = write!(out, "\"requests\":{},", s.requests);
        let _ = write!(out, "\"duration_s\":{},", num(self.duration.as_secs_f64()));
        let _ = write!(out, "\"requests_per_sec\":{},", num(self.requests_per_sec()));
        let _ = write!(out, "\"bytes_read\":{},", s.bytes_read);
        let _ = write!(
            out,
            "\"latency_us\":{{\"p50\":{},\"p75\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{},\"min\":{},\"mean\":{},\"stdev\":{}}},",
            self.percentile(50.0),
            self.percentile(75.0),
            self.percentile(90.0),
            self.percentile(99.0),
            self.percentile(99.9),
            if s.latency.is_empty() { 0 } else { s.latency.max() },
            if s.latency.is_empty() { 0 } else { s.latency.min() },
            num(mean),
            num(stdev)
        );
        let _ = write!(
            out,
            "\"errors\":{{\"connect\":{},\"read\":{},\"write\":{},\"timeout\":{},\"status\":{}}},",
            e.connect, e.read, e.write, e.timeout, e.status
        );
        let _ = write!(out, "\"reconnects\":{}", s.reconnects);
        if let Some(sv) = &self.server {
            let _ = write!(
                out,
                ",\"server\":{{\"cpu_s\":{},\"cpu_us_per_req\":{},\"rss_peak_bytes\":{},\"rss_hwm_bytes\":{}}}",
                num(sv.cpu_s),
                num(sv.cpu_us_per_req),
                sv.rss_peak_bytes,
                sv.rss_hwm_bytes
            );
        }
        out.push('}');
        out
    }
}

/// A finite JSON number.
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{:.3}", x)
    } else {
        "0".into()
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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

pub(crate) fn format_duration(d: Duration) -> String {
    format_us(d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
