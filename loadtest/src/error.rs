//! Typed errors of a load run and of merging reports. They name settings in the
//! library's own terms ([`Setting`]); a program with flags (such as `duet`) words them in
//! its flag names by matching on the variants, so nothing here knows a command line.

use crate::UrlError;
use std::fmt;

/// A setting of a load run ([`crate::Config`]) or of a comparison
/// ([`crate::compare::CompareConfig`]), for errors to say which one is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// Connections kept busy (a load run), or the connection counts (a comparison).
    Connections,
    /// Load threads.
    Threads,
    /// Requests pipelined per connection.
    Depth,
    /// Length of the measured window.
    Duration,
    /// The number of requests that ends a run.
    Requests,
    /// How long without progress counts as a timeout.
    Timeout,
    /// The open-loop rate, requests per second.
    Rate,
    /// Idle connections held beside the active ones.
    Idle,
    /// Unmeasured load before the window.
    Warmup,
    /// The share of the connections that is active.
    Active,
    /// Rounds of a comparison.
    Rounds,
    /// Paths the requests are spread over.
    Paths,
}

impl Setting {
    /// What the setting is called in the library's messages.
    pub fn name(self) -> &'static str {
        match self {
            Setting::Connections => "connections",
            Setting::Threads => "threads",
            Setting::Depth => "depth",
            Setting::Duration => "duration",
            Setting::Requests => "the request count",
            Setting::Timeout => "timeout",
            Setting::Rate => "the rate",
            Setting::Idle => "idle connections",
            Setting::Warmup => "a warm-up",
            Setting::Active => "an active share",
            Setting::Rounds => "rounds",
            Setting::Paths => "paths",
        }
    }
}

/// What a setting's value must be, and is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A count of at least 1.
    AtLeastOne,
    /// A length of time above zero.
    MoreThanZero,
    /// A finite number of requests per second above zero.
    PositiveRate,
}

impl Need {
    /// The requirement as the end of a sentence whose subject is the setting.
    pub fn requirement(self) -> &'static str {
        match self {
            Need::AtLeastOne => "must be at least 1",
            Need::MoreThanZero => "must be more than 0",
            Need::PositiveRate => "must be a positive number of requests per second",
        }
    }
}

/// A setting with a value outside its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange {
    /// Which setting.
    pub setting: Setting,
    /// What it must be.
    pub need: Need,
}

impl OutOfRange {
    pub(crate) fn new(setting: Setting, need: Need) -> OutOfRange {
        OutOfRange { setting, need }
    }
}

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.setting.name(), self.need.requirement())
    }
}

impl std::error::Error for OutOfRange {}

/// What is wrong with an extra request header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProblem {
    /// No `:` between name and value.
    NoColon,
    /// The name is empty or has characters a field name cannot have.
    BadName,
    /// A CR or LF in the value, which would split the request.
    LineBreak,
}

/// Why a load run could not be prepared or did not finish ([`crate::prepare`],
/// [`crate::run`]). Each Display is one line.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadError {
    /// A setting's value is out of its range.
    OutOfRange(OutOfRange),
    /// The method (upper-cased) is not an HTTP method token.
    BadMethod(String),
    /// An extra header line (as given) cannot be sent.
    BadHeader {
        /// The line as given.
        header: String,
        /// What is wrong with it.
        problem: HeaderProblem,
    },
    /// The open-file limit, raised as far as allowed, is too low for the connections.
    TooFewFiles {
        /// Active connections.
        connections: usize,
        /// Idle connections.
        idle: usize,
        /// Descriptors needed, spares included.
        needed: u64,
        /// The limit.
        limit: u64,
    },
    /// The server process to sample cannot be read.
    ServerProcess {
        /// Its process id.
        pid: u32,
        /// Why it cannot be read.
        why: String,
    },
    /// The URL is not one the load generator can use.
    Url(UrlError),
    /// A path to spread the requests over cannot be a request's target.
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        problem: crate::PathProblem,
    },
    /// A setting that holds a connection open for more than one request (pipelining
    /// depth, idle connections) with keep-alive off.
    NeedsKeepAlive(Setting),
    /// The host does not resolve, or no server accepts a connection.
    Connect(String),
    /// The run itself failed (a thread could not start or panicked, or the server
    /// does not speak HTTP).
    Run(String),
}

impl From<OutOfRange> for LoadError {
    fn from(e: OutOfRange) -> LoadError {
        LoadError::OutOfRange(e)
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::OutOfRange(e) => e.fmt(f),
            LoadError::BadMethod(method) => write!(f, "method '{method}' is not an HTTP method token"),
            LoadError::BadHeader { header, problem } => match problem {
                HeaderProblem::NoColon => write!(f, "header '{header}' has no ':' (write it as 'Name: value')"),
                HeaderProblem::BadName => write!(f, "header '{header}' has a bad name"),
                HeaderProblem::LineBreak => write!(f, "header '{header}' contains a line break"),
            },
            LoadError::TooFewFiles { connections, idle, needed, limit } => write!(
                f,
                "{} connections ({connections} active + {idle} idle) need about {needed} open files but the \
                 limit is {limit}: raise the hard limit (ulimit -Hn, or LimitNOFILE) or open fewer",
                connections + idle,
            ),
            LoadError::ServerProcess { pid, why } => {
                write!(f, "server process {pid}: {why} (is that process running?)")
            }
            LoadError::Url(e) => e.fmt(f),
            LoadError::BadPath { path, problem } => write!(f, "path '{}' {problem}", path.escape_debug()),
            LoadError::NeedsKeepAlive(setting) => {
                write!(f, "{} needs keep-alive connections: each request goes on its own", setting.name())
            }
            LoadError::Connect(why) | LoadError::Run(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for LoadError {}

/// Why reports cannot be merged ([`crate::Report::merge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeError {
    /// There was nothing to merge.
    NoReports,
    /// Open-loop and closed-loop runs were mixed.
    MixedLoops,
}

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeError::NoReports => f.write_str("merging needs at least one report"),
            MergeError::MixedLoops => f.write_str(
                "cannot merge open-loop (fixed rate) and closed-loop runs: their latencies measure different things",
            ),
        }
    }
}

impl std::error::Error for MergeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_messages_name_settings_not_flags() {
        let errors = [
            LoadError::from(OutOfRange::new(Setting::Connections, Need::AtLeastOne)).to_string(),
            LoadError::from(OutOfRange::new(Setting::Timeout, Need::MoreThanZero)).to_string(),
            LoadError::from(OutOfRange::new(Setting::Rate, Need::PositiveRate)).to_string(),
            LoadError::BadMethod("G T".into()).to_string(),
            LoadError::BadHeader { header: "x".into(), problem: HeaderProblem::NoColon }.to_string(),
            LoadError::TooFewFiles { connections: 10, idle: 5, needed: 100, limit: 50 }.to_string(),
            LoadError::ServerProcess { pid: 7, why: "gone".into() }.to_string(),
            MergeError::NoReports.to_string(),
            MergeError::MixedLoops.to_string(),
        ];
        assert_eq!(errors[0], "connections must be at least 1");
        assert_eq!(errors[2], "the rate must be a positive number of requests per second");
        assert_eq!(
            errors[5],
            "15 connections (10 active + 5 idle) need about 100 open files but the limit is 50: raise the hard \
             limit (ulimit -Hn, or LimitNOFILE) or open fewer"
        );
        for e in errors {
            assert!(!e.contains("--") && !e.contains("-c ") && !e.contains("-H "), "{e}");
        }
    }
}
