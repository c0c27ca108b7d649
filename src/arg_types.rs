//! Value types of command-line arguments shared by the subcommands (`serve`, `load`,
//! `compare`): each subcommand's module imports these, and none imports another's.

use clap::ValueEnum;
use std::str::FromStr;
use std::time::Duration;

/// A byte count: `4096`, `8k`, `8KiB`, `1m`, `1MiB`, `1g`.
#[derive(Clone, Copy, Debug)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a size (try 8KiB, 1MiB or 4096)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            _ => return Err(format!("'{s}' has an unknown unit (use B, KiB, MiB or GiB)")),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("'{s}' is too large"))
    }
}

/// A duration: `10s`, `500ms`, `2m`, `1h`, `250us`, or a bare number of seconds (`1.5`).
#[derive(Clone, Copy, Debug)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a duration (try 10s or 500ms)"))?;
        let secs = match unit {
            "" | "s" => n,
            "ms" => n / 1e3,
            "us" => n / 1e6,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(format!("'{s}' has an unknown unit (use us, ms, s, m or h; a bare number is seconds)")),
        };
        Duration::try_from_secs_f64(secs).map(Seconds).map_err(|_| format!("'{s}' is out of range"))
    }
}

/// `--paths FILE` (`duet load`, `duet compare`): its paths, or one line saying why there
/// are none to use.
pub fn read_paths(file: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read --paths {}: {e}", file.display()))?;
    duet_loadtest::parse_paths(&text).map_err(|e| format!("--paths {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_with_units() {
        assert_eq!("8KiB".parse::<ByteSize>().unwrap().0, 8192);
        assert_eq!("1m".parse::<ByteSize>().unwrap().0, 1 << 20);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert!("8 parsecs".parse::<ByteSize>().is_err());
        assert_eq!("500ms".parse::<Seconds>().unwrap().0, Duration::from_millis(500));
        assert_eq!("2".parse::<Seconds>().unwrap().0, Duration::from_secs(2));
        assert_eq!("1m".parse::<Seconds>().unwrap().0, Duration::from_secs(60));
        assert!("-1s".parse::<Seconds>().is_err());
        assert!("soon".parse::<Seconds>().is_err());
    }
}

/// `--engine` of `serve`, and the engine names `compare --engines` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineChoice {
    /// io_uring when this kernel allows it, epoll otherwise.
    Auto,
    /// Edge-triggered epoll readiness loop.
    Epoll,
    /// io_uring completion loop.
    Uring,
    /// Level-triggered epoll, interest following need (a baseline).
    #[value(name = "epoll-lt")]
    EpollLt,
    /// poll(2) (a baseline: O(connections) per wakeup).
    Poll,
    /// select(2) (a baseline: O(connections) per wakeup, descriptors below 1024 only).
    Select,
}

impl EngineChoice {
    pub fn name(self) -> &'static str {
        match self {
            EngineChoice::Auto => "auto",
            EngineChoice::Epoll => "epoll",
            EngineChoice::Uring => "uring",
            EngineChoice::EpollLt => "epoll-lt",
            EngineChoice::Poll => "poll",
            EngineChoice::Select => "select",
        }
    }

    /// The readiness selector of a readiness engine (None: io_uring or auto).
    pub fn readiness(self) -> Option<duet_engine_epoll::Readiness> {
        use duet_engine_epoll::Readiness;
        match self {
            EngineChoice::Epoll => Some(Readiness::Epoll),
            EngineChoice::EpollLt => Some(Readiness::EpollLt),
            EngineChoice::Poll => Some(Readiness::Poll),
            EngineChoice::Select => Some(Readiness::Select),
            EngineChoice::Uring | EngineChoice::Auto => None,
        }
    }

    /// The default of `--max-cached-file` for this (resolved) engine: the largest file
    /// served from memory rather than streamed from the page cache. Both engines stream
    /// a file with `sendfile`, which the kernel does without copying the bytes, so past
    /// 64 KiB (where a copy starts to cost more than the extra call for the head) a file
    /// is cheaper streamed (measured for io_uring in docs/io_uring.md); and a crowd of
    /// slow readers asking for large files then costs page references, not a copy of
    /// every body.
    pub fn default_max_cached_file(self) -> u64 {
        64 << 10
    }
}
