//! Counters and latency histograms, one set per thread, merged at the end.

use hdrhistogram::Histogram;

/// Longest latency the histogram holds (an hour), in microseconds; longer ones saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Errors by kind, as wrk counts them (plus `status` for non-2xx/3xx responses).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Errors {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub timeout: u64,
    pub status: u64,
}

impl Errors {
    pub fn socket_total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }

    fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.timeout += o.timeout;
        self.status += o.status;
    }
}

/// What one thread measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of each completed request, in microseconds.
    pub latency: Histogram<u64>,
    pub requests: u64,
    pub bytes_read: u64,
    pub errors: Errors,
    /// Connections re-opened because the server closed them (or after an error).
    pub reconnects: u64,
    /// Requests per second of each thread, sampled every 100 ms (wrk's Req/Sec row).
    pub rate_samples: Vec<f64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            // 1 us to an hour with 3 significant digits: the bounds are constants that
            // the crate accepts, so this cannot fail.
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
            requests: 0,
            bytes_read: 0,
            errors: Errors::default(),
            reconnects: 0,
            rate_samples: Vec::new(),
        }
    }

    #[inline]
    pub fn record_us(&mut self, us: u64) {
        self.latency.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    pub fn reset(&mut self) {
        self.latency.reset();
        self.requests = 0;
        self.bytes_read = 0;
        self.errors = Errors::default();
        self.reconnects = 0;
        self.rate_samples.clear();
    }

    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.requests += other.requests;
        self.bytes_read += other.bytes_read;
        self.errors.add(&other.errors);
        self.reconnects += other.reconnects;
        self.rate_samples.extend_from_slice(&other.rate_samples);
    }
}

/// Mean, standard deviation, maximum and the share of values within one standard
/// deviation of the mean (wrk's "+/- Stdev").
#[derive(Debug, Default, Clone, Copy)]
pub struct Spread {
    pub mean: f64,
    pub stdev: f64,
    pub max: f64,
    pub within_stdev_pct: f64,
}

pub fn latency_spread(h: &Histogram<u64>) -> Spread {
    if h.is_empty() {
        return Spread::default();
    }
    let (mean, stdev) = (h.mean(), h.stdev());
    let (lo, hi) = (mean - stdev, mean + stdev);
    let within: u64 = h
        .iter_recorded()
        .filter(|v| {
            let x = v.value_iterated_to() as f64;
            x >= lo && x <= hi
        })
        .map(|v| v.count_at_value())
        .sum();
    Spread { mean, stdev, max: h.max() as f64, within_stdev_pct: 100.0 * within as f64 / h.len() as f64 }
}

pub fn sample_spread(samples: &[f64]) -> Spread {
    if samples.is_empty() {
        return Spread::default();
    }
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = if samples.len() > 1 { samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    let stdev = var.sqrt();
    let max = samples.iter().copied().fold(0.0, f64::max);
    let within = samples.iter().filter(|&&x| x >= mean - stdev && x <= mean + stdev).count() as f64;
    Spread { mean, stdev, max, within_stdev_pct: 100.0 * within / n }
}
