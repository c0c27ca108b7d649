//! Typed errors of a comparison. Like [`crate::LoadError`] they name settings, never a
//! program's flags: `duet` words them in its own.

use crate::{OutOfRange, Setting};
use std::fmt;
use std::path::PathBuf;

/// An active share outside (0, 1], as given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShareError(pub f64);

impl fmt::Display for ShareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}% is not a share above 0 and at most 100%", self.0 * 100.0)
    }
}

impl std::error::Error for ShareError {}

/// What is wrong with a peer's `NAME=CMD@PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerProblem {
    /// No `=` after the name.
    NoEquals,
    /// The name is empty or has a space or a `/`.
    NameNotWord,
    /// No `@PORT` at the end.
    NoPort,
    /// The port is not a number from 1 to 65535.
    BadPort,
    /// The command does not split like a shell would split it.
    Split {
        /// The command as given.
        command: String,
        /// Why it does not split.
        why: String,
    },
    /// The command is empty.
    NoCommand,
}

impl fmt::Display for PeerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerProblem::NoEquals => f.write_str("no '='"),
            PeerProblem::NameNotWord => f.write_str("the name must be a word"),
            PeerProblem::NoPort => f.write_str("no '@PORT'"),
            PeerProblem::BadPort => f.write_str("bad port"),
            PeerProblem::Split { command, why } => write!(f, "{why} in '{command}'"),
            PeerProblem::NoCommand => f.write_str("no command"),
        }
    }
}

/// Why a comparison could not be set up ([`super::run`], [`super::Peer`]). An engine
/// that fails is a result, not one of these. Each Display is one line.
#[derive(Debug, Clone, PartialEq)]
pub enum CompareError {
    /// No engines to compare.
    NoEngines,
    /// A connection count or a depth is 0, or there are none.
    ZeroConnectionsOrDepth,
    /// There are no body sizes or no idle counts.
    NoBodySizesOrIdle,
    /// Two engines or peers have the same name.
    NamedTwice(String),
    /// Floor responders are compared but no scenario has the body they answer.
    FloorsNeedDefaultBody,
    /// A setting's value is out of its range.
    OutOfRange(OutOfRange),
    /// The active share is out of its range.
    Active(ShareError),
    /// An active share is combined with idle counts.
    ActiveWithIdle,
    /// The setting needs duet's load generator; wrk was asked for.
    NeedsDuetLoad(Setting),
    /// wrk was asked for but is not installed.
    WrkMissing,
    /// A peer's `NAME=CMD@PORT` (as given) is not one.
    Peer {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        problem: PeerProblem,
    },
    /// A floor responder is not built.
    FloorMissing(PathBuf),
    /// Something the comparison needs from the machine (a limit, a file, a port, the
    /// CPUs) failed; the message says what.
    Setup(String),
}

impl From<OutOfRange> for CompareError {
    fn from(e: OutOfRange) -> CompareError {
        CompareError::OutOfRange(e)
    }
}

/// The command that builds the floor responders.
pub const BUILD_FLOORS: &str = "cargo build --release --workspace --examples";

impl fmt::Display for CompareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompareError::NoEngines => f.write_str("a comparison needs at least one engine"),
            CompareError::ZeroConnectionsOrDepth => {
                f.write_str("connection counts and depths need values of at least 1")
            }
            CompareError::NoBodySizesOrIdle => f.write_str("body sizes and idle counts need at least one value"),
            CompareError::NamedTwice(name) => write!(f, "'{name}' is named twice among the engines and peers"),
            CompareError::FloorsNeedDefaultBody => write!(
                f,
                "the floors answer only the {body}-byte body: add {body} to the body sizes",
                body = super::DEFAULT_BODY
            ),
            CompareError::OutOfRange(e) => e.fmt(f),
            CompareError::Active(e) => write!(f, "active share: {e}"),
            CompareError::ActiveWithIdle => f.write_str(
                "an active share makes each connection count the total (the rest is idle): drop the idle counts",
            ),
            CompareError::NeedsDuetLoad(Setting::Idle) => {
                f.write_str("idle connections need duet's load generator (wrk cannot hold idle connections)")
            }
            CompareError::NeedsDuetLoad(Setting::Active) => {
                f.write_str("an active share needs duet's load generator (wrk cannot hold idle connections)")
            }
            CompareError::NeedsDuetLoad(setting) => write!(f, "{} needs duet's load generator", setting.name()),
            CompareError::WrkMissing => {
                f.write_str("wrk is not installed: install it (apt-get install wrk) or use duet's load generator")
            }
            CompareError::Peer { spec, problem } => write!(f, "peer '{spec}': {problem} (expected NAME=CMD@PORT)"),
            CompareError::FloorMissing(path) => {
                write!(f, "floor responder {} is missing; build the floors with: {BUILD_FLOORS}", path.display())
            }
            CompareError::Setup(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for CompareError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Need;

    #[test]
    fn library_messages_name_settings_not_flags() {
        let errors = [
            CompareError::NoEngines,
            CompareError::ZeroConnectionsOrDepth,
            CompareError::NoBodySizesOrIdle,
            CompareError::FloorsNeedDefaultBody,
            CompareError::OutOfRange(OutOfRange { setting: Setting::Rounds, need: Need::AtLeastOne }),
            CompareError::Active(ShareError(1.5)),
            CompareError::ActiveWithIdle,
            CompareError::NeedsDuetLoad(Setting::Idle),
            CompareError::NeedsDuetLoad(Setting::Warmup),
            CompareError::WrkMissing,
            CompareError::Peer { spec: "x".into(), problem: PeerProblem::NoEquals },
            CompareError::FloorMissing("/b/floor_epoll".into()),
        ]
        .map(|e| e.to_string());
        assert_eq!(errors[4], "rounds must be at least 1");
        assert_eq!(errors[5], "active share: 150% is not a share above 0 and at most 100%");
        assert_eq!(errors[7], "idle connections need duet's load generator (wrk cannot hold idle connections)");
        assert_eq!(errors[10], "peer 'x': no '=' (expected NAME=CMD@PORT)");
        for e in errors {
            assert!(!e.contains("--") || e.contains(BUILD_FLOORS), "{e}");
        }
    }
}
