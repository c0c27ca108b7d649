//! The live progress bar on stderr: the warm-up, then the measured window (elapsed of
//! the duration, or requests of `-n`), the current rate and the errors so far.
//!
//! Drawn by indicatif from the main thread, which wakes every 100 ms anyway; the load
//! threads only publish two relaxed counters. indicatif draws nothing when stderr is
//! not a terminal, so redirected output stays clean.

use crate::report::format_metric;
use crate::worker::Shared;
use crate::Config;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often the rate shown is recomputed.
const RATE_EVERY: Duration = Duration::from_millis(500);

/// Which part of the run the bar shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    /// The warm-up, whose counts are thrown away.
    Warmup { total: Duration },
    /// The measured window of `-d`.
    Timed { total: Duration },
    /// The measured window of `-n`.
    Counted { total: u64 },
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Warmup { .. } => "warm-up",
            Phase::Timed { .. } | Phase::Counted { .. } => "load",
        }
    }

    /// The bar's length: milliseconds, or requests.
    fn length(self) -> u64 {
        match self {
            Phase::Warmup { total } | Phase::Timed { total } => total.as_millis() as u64,
            Phase::Counted { total } => total,
        }
    }

    fn position(self, elapsed: Duration, requests: u64) -> u64 {
        match self {
            Phase::Warmup { .. } | Phase::Timed { .. } => (elapsed.as_millis() as u64).min(self.length()),
            Phase::Counted { total } => requests.min(total),
        }
    }
}

/// The text beside the bar: how far along, the rate and the errors.
pub(crate) fn message(phase: Phase, elapsed: Duration, requests: u64, rate: f64, errors: u64) -> String {
    let done = match phase {
        Phase::Warmup { total } | Phase::Timed { total } => {
            format!("{:.1}s / {:.1}s", elapsed.as_secs_f64(), total.as_secs_f64())
        }
        Phase::Counted { total } => format!("{requests} / {total} requests, {:.1}s", elapsed.as_secs_f64()),
    };
    format!("{done}  {} req/s  {errors} errors", format_metric(rate))
}

pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    /// Write the counts as lines on stderr (`Config::progress_lines`).
    lines: bool,
    phase: Phase,
    window: Phase,
    phase_start: Instant,
    last_at: Instant,
    last_requests: u64,
    rate: f64,
}

impl Progress {
    pub fn new(enabled: bool, config: &Config, start: Instant) -> Progress {
        let window = match config.requests {
            Some(total) => Phase::Counted { total },
            None => Phase::Timed { total: config.duration },
        };
        let phase = if config.warmup.is_zero() { window } else { Phase::Warmup { total: config.warmup } };
        let bar = enabled.then(|| {
            let bar = ProgressBar::with_draw_target(Some(phase.length()), ProgressDrawTarget::stderr());
            // A constant template: it parses, and if it ever did not, the default bar will do.
            let style = ProgressStyle::with_template("{prefix:>7} [{bar:30}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(phase.label());
            bar
        });
        let lines = config.progress_lines;
        Progress { bar, lines, phase, window, phase_start: start, last_at: start, last_requests: 0, rate: 0.0 }
    }

    /// The warm-up is over: the bar restarts for the measured window.
    pub fn window_opens(&mut self, now: Instant) {
        if self.phase == self.window {
            return;
        }
        self.phase = self.window;
        self.phase_start = now;
        self.last_at = now;
        self.last_requests = 0;
        if let Some(bar) = &self.bar {
            bar.set_length(self.phase.length());
            bar.set_position(0);
            bar.set_prefix(self.phase.label());
        }
    }

    pub fn update(&mut self, shared: &Shared) {
        if self.bar.is_none() && !self.lines {
            return;
        }
        let requests: u64 = shared.live.iter().map(|l| l.requests.load(Ordering::Relaxed)).sum();
        let errors: u64 = shared.live.iter().map(|l| l.errors.load(Ordering::Relaxed)).sum();
        if self.lines {
            eprintln!("progress {} {requests} {errors}", u8::from(self.phase == self.window));
        }
        self.show(requests, errors);
    }

    /// Draws `requests` and `errors` so far in this phase.
    fn show(&mut self, requests: u64, errors: u64) {
        let Some(bar) = &self.bar else { return };
        let now = Instant::now();
        if now - self.last_at >= RATE_EVERY {
            // The threads reset their counters when the window opens.
            let done = requests.saturating_sub(self.last_requests);
            self.rate = done as f64 / (now - self.last_at).as_secs_f64();
            self.last_at = now;
            self.last_requests = requests;
        }
        let elapsed = now - self.phase_start;
        bar.set_position(self.phase.position(elapsed, requests));
        bar.set_message(message(self.phase, elapsed, requests, self.rate, errors));
    }
}

/// One progress bar over several load processes run side by side (`duet load
/// --processes`), each writing its counts as lines (`Config::progress_lines`): the bar
/// shows their sums, the warm-up until every process has opened its window.
pub struct GroupProgress {
    progress: Progress,
    /// Each process's last counts: window open, requests, errors.
    latest: Vec<(bool, u64, u64)>,
}

impl GroupProgress {
    /// A bar for `processes` processes running `config` together (drawn only when
    /// `enabled` and stderr is a terminal).
    pub fn new(enabled: bool, config: &Config, processes: usize) -> GroupProgress {
        GroupProgress {
            progress: Progress::new(enabled, &Config { progress_lines: false, ..config.clone() }, Instant::now()),
            latest: vec![(false, 0, 0); processes],
        }
    }

    /// Takes a line process `index` wrote; false when it is not a progress line.
    pub fn line(&mut self, index: usize, line: &str) -> bool {
        let mut words = line.strip_prefix("progress ").map(|rest| rest.split(' ').map(|w| w.parse::<u64>()));
        let Some(words) = words.as_mut() else { return false };
        let (Some(Ok(window)), Some(Ok(requests)), Some(Ok(errors))) = (words.next(), words.next(), words.next())
        else {
            return false;
        };
        if let Some(slot) = self.latest.get_mut(index) {
            *slot = (window == 1, requests, errors);
        }
        let now = Instant::now();
        if self.latest.iter().all(|l| l.0) {
            self.progress.window_opens(now);
        }
        let (requests, errors) = self.latest.iter().fold((0, 0), |(r, e), l| (r + l.1, e + l.2));
        self.progress.show(requests, errors);
        true
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_bar_takes_its_processes_count_lines_and_nothing_else() {
        let config = Config { warmup: Duration::from_secs(1), ..Config::default() };
        let mut g = GroupProgress::new(false, &config, 2);
        assert!(g.line(0, "progress 0 10 1"));
        assert!(!g.line(0, "duet: warning: something"), "other lines are the caller's");
        assert!(!g.line(1, "progress 1 x 0"));
        assert!(g.line(1, "progress 1 20 0"));
        assert_eq!(g.latest, [(false, 10, 1), (true, 20, 0)]);
        assert!(g.progress.phase != g.progress.window, "the window opens when every process's has");
        assert!(g.line(0, "progress 1 5 0"));
        assert!(g.progress.phase == g.progress.window);
    }

    #[test]
    fn the_warm_up_is_labelled_and_the_window_counts_time_or_requests() {
        let warm = Phase::Warmup { total: Duration::from_secs(2) };
        assert_eq!(warm.label(), "warm-up");
        assert_eq!(message(warm, Duration::from_millis(1500), 0, 1234.0, 0), "1.5s / 2.0s  1.23k req/s  0 errors");
        let timed = Phase::Timed { total: Duration::from_secs(10) };
        assert_eq!(timed.label(), "load");
        assert_eq!((timed.length(), timed.position(Duration::from_secs(11), 0)), (10_000, 10_000));
        let counted = Phase::Counted { total: 500 };
        assert_eq!(
            message(counted, Duration::from_millis(300), 120, 400.0, 3),
            "120 / 500 requests, 0.3s  400.00 req/s  3 errors"
        );
        assert_eq!((counted.length(), counted.position(Duration::ZERO, 120)), (500, 120));
    }

    #[test]
    fn without_a_warm_up_the_bar_starts_on_the_window() {
        let config = Config { requests: Some(10), ..Config::default() };
        let p = Progress::new(false, &config, Instant::now());
        assert_eq!(p.phase, Phase::Counted { total: 10 });
        let config = Config { warmup: Duration::from_secs(1), ..Config::default() };
        let p = Progress::new(false, &config, Instant::now());
        assert_eq!(p.phase, Phase::Warmup { total: Duration::from_secs(1) });
        assert_eq!(p.window, Phase::Timed { total: Duration::from_secs(10) });
    }
}
