//! duet_loadtest's errors worded for the command line: where the library names a
//! setting, `duet load` and `duet compare` name the flag that sets it. The one table of
//! those names is [`flag`]; both subcommands' handlers word their errors here.

use duet_loadtest::compare::{CompareError, BUILD_FLOORS};
use duet_loadtest::{HeaderProblem, LoadError, MergeError, OutOfRange, Setting};
#[cfg(test)]
use std::time::Duration;

/// The flag that sets `setting`, in `duet load` and `duet compare` alike.
pub fn flag(setting: Setting) -> &'static str {
    match setting {
        Setting::Connections => "--connections",
        Setting::Threads => "--threads",
        Setting::Depth => "--depth",
        Setting::Duration => "--duration",
        Setting::Requests => "--requests",
        Setting::Timeout => "--timeout",
        Setting::Rate => "--rate",
        Setting::Idle => "--idle",
        Setting::Warmup => "--warmup",
        Setting::Active => "--active",
        Setting::Rounds => "--rounds",
        Setting::Paths => "--paths",
    }
}

fn out_of_range(e: &OutOfRange) -> String {
    format!("{} {}", flag(e.setting), e.need.requirement())
}

/// A `duet load` error.
pub fn load_error(e: &LoadError) -> String {
    match e {
        LoadError::OutOfRange(e) => out_of_range(e),
        LoadError::BadMethod(method) => format!("--method '{method}' is not an HTTP method token"),
        LoadError::BadHeader { header, problem: HeaderProblem::NoColon } => {
            format!("header '{header}' has no ':' (use -H 'Name: value')")
        }
        LoadError::TooFewFiles { connections, idle, needed, limit } => format!(
            "{} connections (-c {connections} + {} {idle}) need about {needed} open files but the limit is \
             {limit}: raise the hard limit (ulimit -Hn, or LimitNOFILE) or open fewer",
            connections + idle,
            flag(Setting::Idle),
        ),
        LoadError::ServerProcess { pid, why } => format!("--server-pid {pid}: {why} (is that process running?)"),
        LoadError::NeedsKeepAlive(setting) => {
            format!("{} keeps a connection for more than one request: drop it or --disable-keepalive", flag(*setting))
        }
        other => other.to_string(),
    }
}

/// A `duet load --merge` error.
pub fn merge_error(e: &MergeError) -> String {
    match e {
        MergeError::NoReports => "--merge needs at least one file".into(),
        MergeError::MixedLoops => format!(
            "cannot merge open-loop ({}) and closed-loop runs: their latencies measure different things",
            flag(Setting::Rate)
        ),
    }
}

/// A `duet compare` error.
pub fn compare_error(e: &CompareError) -> String {
    match e {
        CompareError::NoEngines => "--engines needs at least one engine".into(),
        CompareError::ZeroConnectionsOrDepth => {
            format!("{} and {} need values of at least 1", flag(Setting::Connections), flag(Setting::Depth))
        }
        CompareError::NoBodySizesOrIdle => format!("--body-size and {} need at least one value", flag(Setting::Idle)),
        CompareError::FloorsNeedDefaultBody => {
            let body = duet_loadtest::compare::DEFAULT_BODY;
            format!("the floors answer only the {body}-byte body: add --body-size {body}")
        }
        CompareError::OutOfRange(e) => out_of_range(e),
        CompareError::Active(e) => format!("{}: {e}", flag(Setting::Active)),
        CompareError::ActiveWithIdle => format!(
            "{} makes {} the total (the rest is idle): drop {}",
            flag(Setting::Active),
            flag(Setting::Connections),
            flag(Setting::Idle)
        ),
        // --ladder sets an active share too.
        CompareError::NeedsDuetLoad(Setting::Active) => {
            format!("{} and --ladder need --load-with duet (wrk cannot hold idle connections)", flag(Setting::Active))
        }
        CompareError::NeedsDuetLoad(Setting::Idle) => {
            format!("{} needs --load-with duet (wrk cannot hold idle connections)", flag(Setting::Idle))
        }
        // One message for both, as they are one choice: an open loop with its warm-up.
        CompareError::NeedsDuetLoad(Setting::Rate | Setting::Warmup) => {
            format!("{} and {} need --load-with duet", flag(Setting::Rate), flag(Setting::Warmup))
        }
        CompareError::NeedsDuetLoad(setting) => format!("{} needs --load-with duet", flag(*setting)),
        CompareError::WrkMissing => {
            "wrk is not installed: install it (apt-get install wrk) or use --load-with duet".into()
        }
        CompareError::Peer { spec, problem } => format!("--peer '{spec}': {problem} (expected NAME=CMD@PORT)"),
        CompareError::FloorMissing(path) => {
            format!("--floors: {} is missing; build the floors with: {BUILD_FLOORS}", path.display())
        }
        other => other.to_string(),
    }
}

/// One error of each kind `duet load` can word, for the tests here and the check in
/// `cli` that every flag they name is one of `duet load`'s.
#[cfg(test)]
pub fn load_samples() -> Vec<String> {
    use duet_loadtest::Need;
    let mut worded: Vec<String> = [
        Setting::Connections,
        Setting::Threads,
        Setting::Depth,
        Setting::Duration,
        Setting::Requests,
        Setting::Timeout,
        Setting::Rate,
    ]
    .into_iter()
    .map(|setting| {
        let need = match setting {
            Setting::Duration | Setting::Timeout => Need::MoreThanZero,
            Setting::Rate => Need::PositiveRate,
            _ => Need::AtLeastOne,
        };
        load_error(&LoadError::OutOfRange(OutOfRange { setting, need }))
    })
    .collect();
    worded.extend(
        [
            LoadError::BadMethod("G T".into()),
            LoadError::BadHeader { header: "x".into(), problem: HeaderProblem::NoColon },
            LoadError::TooFewFiles { connections: 10, idle: 5, needed: 100, limit: 50 },
            LoadError::ServerProcess { pid: 7, why: "gone".into() },
            LoadError::NeedsKeepAlive(Setting::Depth),
            LoadError::NeedsKeepAlive(Setting::Idle),
        ]
        .iter()
        .map(load_error),
    );
    worded.extend([MergeError::NoReports, MergeError::MixedLoops].iter().map(merge_error));
    worded
}

/// One error of each kind `duet compare` can word (see [`load_samples`]).
#[cfg(test)]
pub fn compare_samples() -> Vec<String> {
    use duet_loadtest::compare::{PeerProblem, ShareError};
    use duet_loadtest::Need;
    [
        CompareError::NoEngines,
        CompareError::ZeroConnectionsOrDepth,
        CompareError::NoBodySizesOrIdle,
        CompareError::FloorsNeedDefaultBody,
        CompareError::OutOfRange(OutOfRange { setting: Setting::Rounds, need: Need::AtLeastOne }),
        CompareError::OutOfRange(OutOfRange { setting: Setting::Duration, need: Need::MoreThanZero }),
        CompareError::OutOfRange(OutOfRange { setting: Setting::Rate, need: Need::PositiveRate }),
        CompareError::Active(ShareError(1.5)),
        CompareError::ActiveWithIdle,
        CompareError::NeedsDuetLoad(Setting::Idle),
        CompareError::NeedsDuetLoad(Setting::Active),
        CompareError::NeedsDuetLoad(Setting::Rate),
        CompareError::NeedsDuetLoad(Setting::Warmup),
        CompareError::NeedsDuetLoad(Setting::Paths),
        CompareError::WrkMissing,
        CompareError::Peer { spec: "x".into(), problem: PeerProblem::NoEquals },
        CompareError::FloorMissing("/b/floor_epoll".into()),
    ]
    .iter()
    .map(compare_error)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_loadtest::compare::{PeerProblem, ShareError};
    use duet_loadtest::{Config, Need};

    /// What `duet load` says when prepare refuses `config`.
    fn refused(config: Config) -> String {
        let config = Config { url: "http://127.0.0.1:1/".into(), ..config };
        load_error(&duet_loadtest::prepare(config).expect_err("refused before connecting"))
    }

    #[test]
    fn a_load_setting_out_of_range_names_its_flag() {
        let d = Config::default;
        assert_eq!(refused(Config { connections: 0, ..d() }), "--connections must be at least 1");
        assert_eq!(refused(Config { threads: 0, ..d() }), "--threads must be at least 1");
        assert_eq!(refused(Config { depth: 0, ..d() }), "--depth must be at least 1");
        assert_eq!(refused(Config { duration: Duration::ZERO, ..d() }), "--duration must be more than 0");
        assert_eq!(refused(Config { requests: Some(0), ..d() }), "--requests must be at least 1");
        assert_eq!(refused(Config { timeout: Duration::ZERO, ..d() }), "--timeout must be more than 0");
        assert_eq!(
            refused(Config { rate: Some(-1.0), ..d() }),
            "--rate must be a positive number of requests per second"
        );
    }

    #[test]
    fn keep_alive_off_refuses_what_holds_a_connection_open() {
        let off = || Config { keepalive: false, ..Config::default() };
        assert_eq!(
            refused(Config { depth: 4, ..off() }),
            "--depth keeps a connection for more than one request: drop it or --disable-keepalive"
        );
        assert_eq!(
            refused(Config { idle: 10, ..off() }),
            "--idle keeps a connection for more than one request: drop it or --disable-keepalive"
        );
    }

    #[test]
    fn a_bad_method_names_the_method_flag() {
        let config = Config { method: "g t".into(), ..Config::default() };
        assert_eq!(refused(config), "--method 'G T' is not an HTTP method token");
    }

    #[test]
    fn a_header_without_a_colon_points_at_the_header_flag() {
        let refused_header = |h: &str| refused(Config { headers: vec![h.into()], ..Config::default() });
        assert_eq!(refused_header("no colon"), "header 'no colon' has no ':' (use -H 'Name: value')");
        assert_eq!(refused_header(": x"), "header ': x' has a bad name");
    }

    #[test]
    fn too_few_open_files_name_the_connection_and_idle_flags() {
        let e = LoadError::TooFewFiles { connections: 10, idle: 5, needed: 100, limit: 50 };
        assert_eq!(
            load_error(&e),
            "15 connections (-c 10 + --idle 5) need about 100 open files but the limit is 50: raise the hard \
             limit (ulimit -Hn, or LimitNOFILE) or open fewer"
        );
    }

    #[test]
    fn an_unreadable_server_process_names_the_server_pid_flag() {
        let e = LoadError::ServerProcess { pid: 7, why: "cannot read /proc/7/stat".into() };
        assert_eq!(load_error(&e), "--server-pid 7: cannot read /proc/7/stat (is that process running?)");
    }

    #[test]
    fn merge_errors_name_the_merge_and_rate_flags() {
        assert_eq!(merge_error(&MergeError::NoReports), "--merge needs at least one file");
        assert_eq!(
            merge_error(&MergeError::MixedLoops),
            "cannot merge open-loop (--rate) and closed-loop runs: their latencies measure different things"
        );
    }

    #[test]
    fn a_compare_matrix_without_values_names_its_flags() {
        assert_eq!(compare_error(&CompareError::NoEngines), "--engines needs at least one engine");
        assert_eq!(
            compare_error(&CompareError::ZeroConnectionsOrDepth),
            "--connections and --depth need values of at least 1"
        );
        assert_eq!(compare_error(&CompareError::NoBodySizesOrIdle), "--body-size and --idle need at least one value");
        assert_eq!(
            compare_error(&CompareError::FloorsNeedDefaultBody),
            "the floors answer only the 13-byte body: add --body-size 13"
        );
    }

    #[test]
    fn a_compare_setting_out_of_range_names_its_flag() {
        let worded = |setting, need| compare_error(&CompareError::OutOfRange(OutOfRange { setting, need }));
        assert_eq!(worded(Setting::Rounds, Need::AtLeastOne), "--rounds must be at least 1");
        assert_eq!(worded(Setting::Duration, Need::MoreThanZero), "--duration must be more than 0");
        assert_eq!(
            worded(Setting::Rate, Need::PositiveRate),
            "--rate must be a positive number of requests per second"
        );
    }

    #[test]
    fn an_active_share_error_names_the_active_connections_and_idle_flags() {
        assert_eq!(
            compare_error(&CompareError::Active(ShareError(1.5))),
            "--active: 150% is not a share above 0 and at most 100%"
        );
        assert_eq!(
            compare_error(&CompareError::ActiveWithIdle),
            "--active makes --connections the total (the rest is idle): drop --idle"
        );
    }

    #[test]
    fn what_wrk_cannot_do_names_the_flag_and_load_with_duet() {
        let worded = |setting| compare_error(&CompareError::NeedsDuetLoad(setting));
        assert_eq!(worded(Setting::Idle), "--idle needs --load-with duet (wrk cannot hold idle connections)");
        assert_eq!(
            worded(Setting::Active),
            "--active and --ladder need --load-with duet (wrk cannot hold idle connections)"
        );
        assert_eq!(worded(Setting::Rate), "--rate and --warmup need --load-with duet");
        assert_eq!(worded(Setting::Warmup), "--rate and --warmup need --load-with duet");
        assert_eq!(
            compare_error(&CompareError::WrkMissing),
            "wrk is not installed: install it (apt-get install wrk) or use --load-with duet"
        );
    }

    #[test]
    fn peer_and_floor_errors_name_their_flags() {
        let spec = "n=srv \"x@80";
        let e = duet_loadtest::compare::Peer::parse(spec).unwrap_err();
        assert_eq!(
            compare_error(&e),
            "--peer 'n=srv \"x@80': missing closing quote in 'srv \"x' (expected NAME=CMD@PORT)"
        );
        let e = CompareError::Peer { spec: "nginx".into(), problem: PeerProblem::NoEquals };
        assert_eq!(compare_error(&e), "--peer 'nginx': no '=' (expected NAME=CMD@PORT)");
        assert_eq!(
            compare_error(&CompareError::FloorMissing("/b/examples/floor_epoll".into())),
            "--floors: /b/examples/floor_epoll is missing; build the floors with: cargo build --release \
             --workspace --examples"
        );
    }

    #[test]
    fn errors_about_no_setting_read_as_the_library_words_them() {
        let e = CompareError::NamedTwice("epoll".into());
        assert_eq!(compare_error(&e), "'epoll' is named twice among the engines and peers");
        assert_eq!(load_error(&LoadError::Connect("cannot resolve x".into())), "cannot resolve x");
    }
}
