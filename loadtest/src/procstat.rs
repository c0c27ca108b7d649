//! Reading a server's CPU time and memory.
//!
//! CPU time comes from the process's POSIX CPU clock (`clock_getcpuclockid`), which
//! counts nanoseconds: over a one-second window at a few thousand requests a second,
//! /proc's 10 ms ticks would be most of the figure. Where that clock cannot be read,
//! `/proc/PID/stat` of the thread-group leader, which already sums utime and stime over
//! all of the process's threads, including threads that have exited (summing
//! `/proc/PID/task/*/stat` would miss those).
//!
//! A sample covers the process and every process below it (children, theirs, ...): a
//! `duet serve --processes N` supervisor is a tree of N + 1 processes, and nginx with a
//! master one of 1 + workers; a one-process server has no children and reads as before.
//! A descendant that exits between two samples takes its CPU time out of the sum (its
//! parent collects it into `cutime` only when it reaps it): the window's figure is then
//! short by what it spent, which the caller sees as a server that went away only when
//! the top process itself is gone.

use std::fs;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// utime + stime of all threads, in seconds.
    pub cpu_s: f64,
    /// Resident set size now, in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size over the process's life (VmHWM), in bytes.
    pub hwm_bytes: u64,
}

/// Reads process `pid` and its descendants, summed; the error (about `pid` itself: a
/// descendant gone by the time it is read is left out) says what went wrong in one line.
pub fn sample(pid: u32, ticks_per_sec: u64) -> Result<Sample, String> {
    let mut sum = sample_one(pid, ticks_per_sec)?;
    for child in descendants(pid) {
        if let Ok(s) = sample_one(child, ticks_per_sec) {
            sum.cpu_s += s.cpu_s;
            sum.rss_bytes += s.rss_bytes;
            sum.hwm_bytes += s.hwm_bytes;
        }
    }
    Ok(sum)
}

/// Every process below `pid` (its children, their children, ...), from the parent field
/// of each `/proc/N/stat`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, parse_ppid(&fs::read_to_string(format!("/proc/{p}/stat")).ok()?)?)))
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|&&(_, pp)| pp == parent).map(|&(p, _)| p));
        i += 1;
    }
    found.remove(0);
    found
}

/// The parent pid (field 4) of a /proc/PID/stat line.
fn parse_ppid(stat: &str) -> Option<u32> {
    stat[stat.rfind(')')? + 1..].split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Reads process `pid` alone.
fn sample_one(pid: u32, ticks_per_sec: u64) -> Result<Sample, String> {
    let stat =
        fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    let ticks = parse_cpu_ticks(&stat).ok_or_else(|| format!("cannot parse /proc/{pid}/stat"))?;
    let cpu_s = match crate::sys::process_cpu_time(pid) {
        Ok(t) => t.as_secs_f64(),
        Err(_) => ticks as f64 / ticks_per_sec.max(1) as f64,
    };
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Ok(Sample { cpu_s, rss_bytes: status_kb(&status, "VmRSS:") * 1024, hwm_bytes: status_kb(&status, "VmHWM:") * 1024 })
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line. The command name (field
/// 2) may contain spaces and parentheses, so fields are counted after the last ')'.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    // `after` starts at field 3 (state): utime is the 12th field from there.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn status_kb(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_ascii_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let line = "1234 (we ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 5 1000 200";
        assert_eq!(parse_cpu_ticks(line), Some(325));
    }

    #[test]
    fn cpu_time_is_read_in_nanoseconds_not_ticks() {
        let pid = std::process::id();
        let readings: Vec<f64> =
            (0..2).map(|_| sample(pid, crate::sys::clock_ticks_per_sec()).unwrap().cpu_s).collect();
        assert!(readings[1] >= readings[0]);
        // Ticks would make every reading a multiple of 10 ms; a nanosecond clock is one
        // by chance with a probability of 1e-7 per reading.
        let ns = |s: f64| (s * 1e9).round() as u64;
        assert!(readings.iter().any(|&s| ns(s) % 10_000_000 != 0), "{readings:?}");
    }

    #[test]
    fn the_parent_is_read_after_the_command_name() {
        assert_eq!(parse_ppid("1234 (a) b) S 77 1234 1234 0"), Some(77));
    }

    #[test]
    fn a_sample_sums_the_process_and_its_children() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let me = std::process::id();
        let found = descendants(me);
        let alone = sample_one(me, 100).unwrap();
        let tree = sample(me, 100).unwrap();
        let kid = sample_one(child.id(), 100);
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?} lacks {}", child.id());
        // The child's RSS is in the sum (the CPU times move between the reads).
        assert!(tree.rss_bytes >= kid.unwrap().rss_bytes + alone.rss_bytes / 2, "{tree:?} {alone:?}");
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id(), crate::sys::clock_ticks_per_sec()).unwrap();
        assert!(s.rss_bytes > 0 && s.hwm_bytes >= s.rss_bytes / 2);
        assert!(sample(u32::MAX, 100).is_err());
    }
}
