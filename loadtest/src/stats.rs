//! Counters and latency histograms, one set per thread, merged at the end.

use hdrhistogram::Histogram;

/// Longest latency the histogram holds (an hour), in microseconds; longer ones saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Errors by kind, as wrk counts them (plus `status` for non-2xx/3xx responses).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Errors {
    /// Connects that failed or timed out.
    pub connect: u64,
    /// Reads that failed, and connections closed in the middle of a response.
    pub read: u64,
    /// Writes that failed.
    pub write: u64,
    /// Requests outstanding on a connection that made no progress for the timeout.
    pub timeout: u64,
    /// Responses with a status outside 2xx and 3xx.
    pub status: u64,
}

impl Errors {
    /// Socket errors (`connect`, `read`, `write`, `timeout`), as wrk's "Socket errors" line.
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

/// Responses by status code. The framer only accepts three-digit codes, so a table of
/// 1,000 counters holds every code without a map lookup per response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCounts(Box<[u64; 1000]>);

impl Default for StatusCounts {
    fn default() -> Self {
        StatusCounts(Box::new([0; 1000]))
    }
}

impl StatusCounts {
    /// Counts one response with `status` (ignored unless three digits).
    #[inline]
    pub fn record(&mut self, status: u16) {
        if let Some(n) = self.0.get_mut(usize::from(status)) {
            *n += 1;
        }
    }

    /// Adds `n` responses with `status`; false if the code is not three digits.
    pub fn add(&mut self, status: u16, n: u64) -> bool {
        match self.0.get_mut(usize::from(status)) {
            Some(c) => {
                *c += n;
                true
            }
            None => false,
        }
    }

    /// The codes seen, ascending, with their counts.
    pub fn codes(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.0.iter().enumerate().filter(|(_, &n)| n > 0).map(|(code, &n)| (code as u16, n))
    }

    /// Responses whose code is in `first..first + 100` (200 for 2xx).
    pub fn class(&self, first: u16) -> u64 {
        self.codes().filter(|(code, _)| (first..first + 100).contains(code)).map(|(_, n)| n).sum()
    }

    /// Responses outside 2xx-5xx (final 1xx codes are not counted: they are interim).
    pub fn other(&self) -> u64 {
        self.codes().filter(|(code, _)| !(200..600).contains(code)).map(|(_, n)| n).sum()
    }

    fn merge(&mut self, other: &StatusCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }
}

/// A latency histogram as every part of the load generator keeps it: microseconds, 1 us
/// to an hour, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that the crate accepts, so this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// What one thread measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of each completed request, in microseconds. In open loop it counts from
    /// the request's intended send time (corrected for coordinated omission).
    pub latency: Histogram<u64>,
    /// Open loop only: the same responses timed from their actual send, the server's
    /// service time as a closed loop would see it (wrk2's uncorrected latency). Empty
    /// in closed loop, where both are the same.
    pub uncorrected: Histogram<u64>,
    /// Responses by status code.
    pub status: StatusCounts,
    /// Requests answered.
    pub requests: u64,
    /// Bytes received, headers included.
    pub bytes_read: u64,
    /// Errors by kind.
    pub errors: Errors,
    /// Connections re-opened because the server closed them (or after an error).
    pub reconnects: u64,
    /// Connections that were opened and carried a request (one per request with keep-alive
    /// off; a connection opened when the last request had gone is not one of them).
    pub connects: u64,
    /// Requests per second of each thread, sampled every 100 ms (wrk's Req/Sec row).
    pub rate_samples: Vec<f64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    /// Nothing measured yet.
    pub fn new() -> Stats {
        Stats {
            latency: latency_histogram(),
            uncorrected: latency_histogram(),
            status: StatusCounts::default(),
            requests: 0,
            bytes_read: 0,
            errors: Errors::default(),
            reconnects: 0,
            connects: 0,
            rate_samples: Vec::new(),
        }
    }

    /// Records one latency in microseconds (clamped to the histogram's range).
    #[inline]
    pub fn record_us(&mut self, us: u64) {
        self.latency.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Records one uncorrected latency (open loop) in microseconds.
    #[inline]
    pub fn record_uncorrected_us(&mut self, us: u64) {
        self.uncorrected.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Forgets everything measured (the end of the warm-up).
    pub fn reset(&mut self) {
        self.latency.reset();
        self.uncorrected.reset();
        self.status = StatusCounts::default();
        self.requests = 0;
        self.bytes_read = 0;
        self.errors = Errors::default();
        self.reconnects = 0;
        self.connects = 0;
        self.rate_samples.clear();
    }

    /// Adds another thread's measurements to these.
    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.uncorrected.add(&other.uncorrected);
        self.status.merge(&other.status);
        self.requests += other.requests;
        self.bytes_read += other.bytes_read;
        self.errors.add(&other.errors);
        self.reconnects += other.reconnects;
        self.connects += other.connects;
        self.rate_samples.extend_from_slice(&other.rate_samples);
    }
}

/// Mean, standard deviation, maximum and the share of values within one standard
/// deviation of the mean (wrk's "+/- Stdev").
#[derive(Debug, Default, Clone, Copy)]
pub struct Spread {
    /// The mean.
    pub mean: f64,
    /// The standard deviation.
    pub stdev: f64,
    /// The largest value.
    pub max: f64,
    /// Percentage of values within one standard deviation of the mean.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_counted_by_code_and_class_and_merged() {
        let mut a = Stats::new();
        for code in [200, 200, 204, 301, 404, 503, 999] {
            a.status.record(code);
        }
        let mut b = Stats::new();
        b.status.record(200);
        b.status.record(500);
        a.merge(&b);
        assert_eq!(
            a.status.codes().collect::<Vec<_>>(),
            [(200, 3), (204, 1), (301, 1), (404, 1), (500, 1), (503, 1), (999, 1)]
        );
        assert_eq!((a.status.class(200), a.status.class(300), a.status.class(400), a.status.class(500)), (4, 1, 1, 2));
        assert_eq!(a.status.other(), 1);
        assert!(!a.status.add(1000, 1), "not a three-digit code");
        a.reset();
        assert_eq!(a.status.codes().count(), 0);
    }

    #[test]
    fn both_latency_histograms_merge_and_reset() {
        let mut a = Stats::new();
        a.record_us(900);
        a.record_uncorrected_us(100);
        let mut b = Stats::new();
        b.record_us(0); // clamped to the 1 us floor
        a.merge(&b);
        assert_eq!((a.latency.len(), a.latency.min(), a.uncorrected.len()), (2, 1, 1));
        a.reset();
        assert!(a.latency.is_empty() && a.uncorrected.is_empty());
    }
}
