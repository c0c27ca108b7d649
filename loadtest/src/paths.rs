//! Spreading requests over many paths (`duet load --paths FILE`): a working set larger
//! than one file, as a file server sees it. Each path's request is rendered once; a load
//! thread picks the next one per request, in turn or at random from a seeded generator.

use std::fmt;

/// How the requests of a load thread pick their path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathOrder {
    /// In turn: thread `t` starts at path `t` (modulo their number) and takes the next
    /// one for each request, so every path gets its share from every thread.
    #[default]
    RoundRobin,
    /// At random, uniformly, from a generator seeded with this (each thread with its own
    /// stream of it), so the same seed and thread count repeat the same sequence.
    Random(u64),
}

/// Why a path cannot be sent as the target of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    /// It does not start with `/` (origin form, RFC 9112 §3.2.1).
    NoLeadingSlash,
    /// A space, a control character or a byte outside ASCII, which must be
    /// percent-encoded.
    NotEncoded,
    /// A `#fragment`, which is never sent.
    Fragment,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathProblem::NoLeadingSlash => "does not start with / (an origin-form path, e.g. /index.html)",
            PathProblem::NotEncoded => {
                "has a space, a control character or a non-ASCII byte (percent-encode it, e.g. %20)"
            }
            PathProblem::Fragment => "has a #fragment, which a request never carries",
        })
    }
}

/// Checks that `path` can be a request target as it is: origin form, printable ASCII.
pub fn check_path(path: &str) -> Result<(), PathProblem> {
    if !path.starts_with('/') {
        return Err(PathProblem::NoLeadingSlash);
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PathProblem::NotEncoded);
    }
    if path.contains('#') {
        return Err(PathProblem::Fragment);
    }
    Ok(())
}

/// What is wrong with a paths file ([`parse_paths`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathsError {
    /// No path in it (blank lines do not count).
    Empty,
    /// A line that is not a path a request can carry.
    Line {
        /// 1-based.
        line: usize,
        /// The line, without its line ending.
        text: String,
        /// What is wrong with it.
        problem: PathProblem,
    },
}

impl fmt::Display for PathsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathsError::Empty => f.write_str("no paths in it (one per line, e.g. /index.html)"),
            PathsError::Line { line, text, problem } => write!(f, "line {line}: '{}' {problem}", text.escape_debug()),
        }
    }
}

impl std::error::Error for PathsError {}

/// The paths of a paths file: one per line (LF or CRLF), blank lines skipped, each
/// checked by [`check_path`] and kept as written (a path's query included).
pub fn parse_paths(text: &str) -> Result<Vec<String>, PathsError> {
    let mut paths = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        check_path(line).map_err(|problem| PathsError::Line { line: i + 1, text: line.to_string(), problem })?;
        paths.push(line.to_string());
    }
    if paths.is_empty() {
        return Err(PathsError::Empty);
    }
    Ok(paths)
}

/// One load thread's choice of path for each request it sends.
#[derive(Debug, Clone)]
pub(crate) struct Picker {
    order: PathOrder,
    count: usize,
    next: usize,
    state: u64,
}

impl Picker {
    /// The picker of load thread `thread` over `count` paths.
    pub fn new(order: PathOrder, count: usize, thread: usize) -> Picker {
        let state = match order {
            // A stream of its own per thread: the seed moved by a large odd constant per thread.
            PathOrder::Random(seed) => seed ^ (thread as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
            PathOrder::RoundRobin => 0,
        };
        Picker { order, count: count.max(1), next: thread % count.max(1), state }
    }

    /// The index of the next request's path.
    pub fn next(&mut self) -> usize {
        match self.order {
            PathOrder::RoundRobin => {
                let at = self.next;
                self.next = (at + 1) % self.count;
                at
            }
            // Multiply-shift maps the 64-bit draw onto 0..count without the bias of `%`.
            PathOrder::Random(_) => ((u128::from(self.splitmix64()) * self.count as u128) >> 64) as usize,
        }
    }

    /// SplitMix64 (Steele, Lea and Flood): one add and a few multiply-xorshifts per draw,
    /// statistically sound for spreading requests, and no dependency.
    fn splitmix64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paths_file_is_one_origin_form_path_per_line() {
        assert_eq!(
            parse_paths("/a\r\n\n/b/c?x=1\n  \n/%20\n"),
            Ok(vec!["/a".into(), "/b/c?x=1".into(), "/%20".into()])
        );
        assert_eq!(parse_paths(""), Err(PathsError::Empty));
        assert_eq!(parse_paths("\n \n"), Err(PathsError::Empty));
        let err = parse_paths("/a\nindex.html\n").unwrap_err();
        assert_eq!(err, PathsError::Line { line: 2, text: "index.html".into(), problem: PathProblem::NoLeadingSlash });
        assert_eq!(
            err.to_string(),
            "line 2: 'index.html' does not start with / (an origin-form path, e.g. /index.html)"
        );
        for (line, problem) in [
            ("/a b", PathProblem::NotEncoded),
            ("/caf\u{e9}", PathProblem::NotEncoded),
            ("/a\tb", PathProblem::NotEncoded),
            ("/a#top", PathProblem::Fragment),
            ("http://x/a", PathProblem::NoLeadingSlash),
            (" /a", PathProblem::NoLeadingSlash),
        ] {
            assert_eq!(parse_paths(line), Err(PathsError::Line { line: 1, text: line.into(), problem }), "{line:?}");
        }
    }

    #[test]
    fn round_robin_takes_each_path_in_turn_from_the_threads_offset() {
        let mut first = Picker::new(PathOrder::RoundRobin, 3, 0);
        assert_eq!((0..7).map(|_| first.next()).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2, 0]);
        let mut second = Picker::new(PathOrder::RoundRobin, 3, 1);
        assert_eq!((0..4).map(|_| second.next()).collect::<Vec<_>>(), [1, 2, 0, 1]);
        let mut one = Picker::new(PathOrder::RoundRobin, 1, 5);
        assert_eq!((one.next(), one.next()), (0, 0));
    }

    #[test]
    fn random_order_repeats_with_its_seed_and_covers_every_path_evenly() {
        let draws = |seed, thread| {
            let mut p = Picker::new(PathOrder::Random(seed), 10, thread);
            (0..10_000).map(|_| p.next()).collect::<Vec<_>>()
        };
        assert_eq!(draws(7, 0), draws(7, 0), "the same seed, the same sequence");
        assert_ne!(draws(7, 0), draws(8, 0), "another seed, another sequence");
        assert_ne!(draws(7, 0), draws(7, 1), "each thread its own stream");
        let mut counts = [0usize; 10];
        for i in draws(7, 0) {
            counts[i] += 1;
        }
        // 1,000 expected each; 5 standard deviations (about 150) either side.
        assert!(counts.iter().all(|&n| (850..=1150).contains(&n)), "{counts:?}");
        let sequence = draws(7, 0);
        assert!(sequence.windows(2).any(|w| w[1] != (w[0] + 1) % 10), "not round-robin");
    }
}
