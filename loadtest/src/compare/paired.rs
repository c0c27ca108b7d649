//! `--ratio A/B`: one server's CPU per request over another's, paired round by round.
//!
//! A round runs every server in turn, so a round's two figures were measured seconds
//! apart, under the same state of the machine; from one round to the next that state
//! drifts (on a shared VM the same binary's CPU per request moves by a quarter). The
//! ratio within a round cancels most of that drift, and the rounds' ratios give an
//! interval for their median that needs no assumption about their distribution: the
//! order statistics that bracket the median with 95 % confidence (the sign test's).

use super::{median_of_sorted, Results, ScenarioResult};

/// One `A/B` of `--ratio`: the two servers' names as the table shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatioSpec {
    /// The server over...
    pub a: String,
    /// ... this one.
    pub b: String,
}

impl RatioSpec {
    /// Parses `A/B`, where both are among `servers` (the engines and peers compared).
    pub fn parse(spec: &str, servers: &[String]) -> Result<RatioSpec, String> {
        let (a, b) = spec
            .split_once('/')
            .map(|(a, b)| (a.trim(), b.trim()))
            .filter(|(a, b)| !a.is_empty() && !b.is_empty())
            .ok_or_else(|| format!("--ratio {spec}: expected A/B, two server names (e.g. uring/epoll)"))?;
        for name in [a, b] {
            if !servers.iter().any(|s| s == name) {
                return Err(format!("--ratio {spec}: no server named {name} (compared: {})", servers.join(", ")));
            }
        }
        if a == b {
            return Err(format!("--ratio {spec}: a server over itself is always 1"));
        }
        Ok(RatioSpec { a: a.to_string(), b: b.to_string() })
    }

    /// `A/B`, as the tables and the JSON name it.
    pub fn label(&self) -> String {
        format!("{}/{}", self.a, self.b)
    }
}

/// What one scenario's rounds say about A's CPU per request over B's.
#[derive(Debug)]
pub struct Paired {
    /// A's median over B's median (the table's figures).
    pub of_medians: f64,
    /// A over B in each round where both have a finite, positive figure, in round order.
    pub rounds: Vec<f64>,
    /// The median of `rounds`.
    pub median: f64,
    /// The 95 % interval for that median; `None` below [`MIN_ROUNDS_FOR_INTERVAL`] rounds.
    pub interval: Option<(f64, f64)>,
}

/// Fewer rounds than this cannot bracket a median with 95 % confidence: even the lowest
/// and highest of five miss it with probability 2/32.
pub const MIN_ROUNDS_FOR_INTERVAL: usize = 6;

/// A's CPU per request over B's in scenario `s`, or `None` when either did not run there
/// or failed.
pub fn paired(s: &ScenarioResult, spec: &RatioSpec) -> Option<Paired> {
    let (a, b) = (s.engine(&spec.a)?, s.engine(&spec.b)?);
    if a.failed.is_some() || b.failed.is_some() {
        return None;
    }
    let rounds: Vec<f64> = a
        .rounds
        .iter()
        .zip(&b.rounds)
        .map(|(x, y)| x.cpu_us_per_req / y.cpu_us_per_req)
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    if rounds.is_empty() {
        return None;
    }
    let mut sorted = rounds.clone();
    sorted.sort_by(f64::total_cmp);
    Some(Paired {
        of_medians: a.median.cpu_us_per_req / b.median.cpu_us_per_req,
        median: median_of_sorted(&sorted),
        interval: median_interval(&sorted),
        rounds,
    })
}

/// Every `--ratio` in every scenario where both servers ran.
pub fn all(r: &Results) -> Vec<(&ScenarioResult, &RatioSpec, Paired)> {
    r.scenarios
        .iter()
        .flat_map(|s| r.config.ratios.iter().filter_map(move |spec| paired(s, spec).map(|p| (s, spec, p))))
        .collect()
}

/// The distribution-free 95 % interval for the median of the sample `sorted` (ascending):
/// `[x(k), x(n+1-k)]` for the largest k with P(Binomial(n, 1/2) < k) at most 2.5 %.
fn median_interval(sorted: &[f64]) -> Option<(f64, f64)> {
    let n = sorted.len();
    if n < MIN_ROUNDS_FOR_INTERVAL {
        return None;
    }
    // P(X <= j) for X ~ Binomial(n, 1/2), each term from its logarithm so that neither
    // C(n, j) nor 2^n overflows for large n.
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_choose = 0.0; // ln C(n, 0)
    let mut below = 0.0; // P(X <= j - 1)
    let mut k = 0; // the largest k (1-based) found so far
    for j in 0..n {
        if j > 0 {
            ln_choose += ((n - j + 1) as f64 / j as f64).ln();
        }
        // P(X <= j): x(j + 1) can be the interval's lower end while it is at most 2.5 %.
        let with_j = below + (ln_choose + ln_half_n).exp();
        if with_j > 0.025 {
            break;
        }
        below = with_j;
        k = j + 1;
    }
    // 1-based [x(k), x(n + 1 - k)]: each end misses the median with probability P(X < k).
    (k >= 1).then(|| (sorted[k - 1], sorted[n - k]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> Vec<String> {
        ["epoll", "uring", "floor-uring", "monoio"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_ratio_names_two_compared_servers() {
        assert_eq!(
            RatioSpec::parse("uring/monoio", &servers()),
            Ok(RatioSpec { a: "uring".into(), b: "monoio".into() })
        );
        assert_eq!(RatioSpec::parse(" uring / epoll ", &servers()).unwrap().label(), "uring/epoll");
        let err = RatioSpec::parse("uring/monoi", &servers()).unwrap_err();
        assert!(err.contains("no server named monoi") && err.contains("floor-uring"), "{err}");
        for bad in ["uring", "uring/", "/epoll", ""] {
            assert!(RatioSpec::parse(bad, &servers()).unwrap_err().contains("expected A/B"), "{bad}");
        }
        assert!(RatioSpec::parse("uring/uring", &servers()).is_err());
    }

    #[test]
    fn the_interval_is_the_sign_tests_order_statistics() {
        let ranks = |n: usize| {
            let x: Vec<f64> = (1..=n).map(|i| i as f64).collect();
            median_interval(&x).map(|(lo, hi)| (lo as usize, hi as usize))
        };
        // Five rounds cannot give 95 %: min and max miss the median with p = 2/32.
        assert_eq!(ranks(5), None);
        // Six: min and max, p = 2/64.
        assert_eq!(ranks(6), Some((1, 6)));
        // The textbook table (e.g. Conover): n = 10 -> 2nd and 9th, n = 20 -> 6th and
        // 15th, n = 30 -> 10th and 21st.
        assert_eq!(ranks(10), Some((2, 9)));
        assert_eq!(ranks(20), Some((6, 15)));
        assert_eq!(ranks(30), Some((10, 21)));
        // Many rounds: no underflow, and the interval stays around the middle.
        let (lo, hi) = ranks(2000).unwrap();
        assert!(lo > 900 && hi < 1100 && lo + hi == 2001, "{lo} {hi}");
    }
}
