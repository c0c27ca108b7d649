//! What a comparison ran on and how it was started: the `run` object of results.json
//! and the header of results.md, so a result can be told apart from another machine's.

use std::time::{SystemTime, UNIX_EPOCH};

/// The machine and the invocation of one `duet compare`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// The first `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// CPUs online on the machine (not only those this process may use).
    pub cpus: usize,
    /// duet's version.
    pub version: String,
    /// The commit duet was built from, `unknown` outside a git checkout.
    pub commit: String,
    /// When the comparison started, UTC, ISO 8601 (`2026-11-28T13:05:00Z`).
    pub date: String,
    /// The command line, quoted so a shell runs it again as it was.
    pub command: String,
}

impl RunInfo {
    /// This machine, this build, now and this process's arguments.
    pub fn collect() -> RunInfo {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
        let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let args: Vec<String> = std::env::args().collect();
        RunInfo {
            kernel: if kernel.is_empty() { "unknown".into() } else { kernel },
            cpu_model: cpu_model(&cpuinfo).unwrap_or("unknown").to_string(),
            cpus: cpu_count(&cpuinfo)
                .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
                .unwrap_or(1),
            version: env!("CARGO_PKG_VERSION").to_string(),
            commit: env!("DUET_COMMIT").to_string(),
            date: iso8601_utc(seconds),
            command: shell_words::join(&args),
        }
    }
}

/// The first `model name` (x86) or `Model` / `Hardware` line (Arm) of /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> Option<&str> {
    ["model name", "Model", "Hardware"].iter().find_map(|key| {
        cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim())
        })
    })
}

/// The `processor` entries of /proc/cpuinfo: the CPUs online.
fn cpu_count(cpuinfo: &str) -> Option<usize> {
    let n = cpuinfo.lines().filter(|l| matches!(l.split_once(':'), Some((k, _)) if k.trim() == "processor")).count();
    (n > 0).then_some(n)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (the proleptic Gregorian calendar,
/// days to a date as in Howard Hinnant's `civil_from_days`).
pub fn iso8601_utc(seconds: u64) -> String {
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest / 60 % 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso_8601_in_utc() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601_utc(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(iso8601_utc(1_798_761_600), "2027-01-01T00:00:00Z");
    }

    #[test]
    fn the_cpu_comes_from_proc_cpuinfo() {
        let x86 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(x86), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_count(x86), Some(2));
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\n\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";
        assert_eq!(cpu_model(arm), Some("Raspberry Pi 4 Model B Rev 1.4"));
        assert_eq!((cpu_model(""), cpu_count("")), (None, None));
    }

    #[test]
    fn this_machine_is_described() {
        let run = RunInfo::collect();
        assert!(!run.kernel.is_empty() && run.cpus >= 1, "{run:?}");
        assert!(!run.commit.is_empty() && run.date.ends_with('Z'), "{run:?}");
        assert_eq!(run.version, env!("CARGO_PKG_VERSION"));
        // The command line, quoted: a shell splits it back into the same words.
        assert_eq!(shell_words::split(&run.command).unwrap(), std::env::args().collect::<Vec<_>>());
    }
}
