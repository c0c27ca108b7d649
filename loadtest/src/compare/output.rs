//! The results as a markdown table and as JSON.

use super::{paired, Figures, Results, ScenarioResult, FIGURES};
use indicatif::HumanCount;
use serde_json::{json, Map, Value};
use std::fmt::Write;

/// A closed-loop server whose CPUs were busy less than this share of the time was waiting
/// on the load generator. A server that is the limit runs its CPUs near 100 % (above
/// 90 % in our closed-loop runs with the load on its own CPU); at 60 % it sleeps 40 % of
/// the time, and each wakeup finds fewer requests, so part of its CPU per request is the
/// cost of going idle and waking again. That figure measures the generator's pace, not
/// the server, and it is marked rather than compared. (Open loop, `--rate`, is below
/// saturation by design: every server gets the same load, so there it is comparable.)
pub const LOAD_BOUND_UTIL: f64 = 0.6;

/// The marker next to a CPU-per-request figure that is not comparable.
const LOAD_BOUND_MARK: &str = "†";

/// Whether `f` was measured with the server's CPUs well below saturation in a closed
/// loop: the load generator, not the server, was the limit.
pub fn load_bound(c: &super::CompareConfig, f: &Figures) -> bool {
    c.rate.is_none() && f.cpu_util < LOAD_BOUND_UTIL * c.server_cpus.len().max(1) as f64
}

fn figures_json(f: &Figures) -> Value {
    let mut m = Map::new();
    for (name, get) in FIGURES {
        m.insert(name.into(), json!(get(f)));
    }
    m.insert("errors".into(), json!(f.errors));
    Value::Object(m)
}

/// One cell of the ladder: the figures the classic table shows, or why there are none.
fn ladder_cell(s: &ScenarioResult, engine: &str) -> Value {
    let mut cell = json!({
        "connections": s.scenario.total(),
        "active": s.scenario.connections,
    });
    match s.engine(engine) {
        Some(e) => match &e.failed {
            Some(f) => {
                cell["failed"] = json!(f.reason);
                cell["detail"] = json!(f.detail);
            }
            None => {
                let m = &e.median;
                for (name, value) in [
                    ("latency_mean_us", m.mean_us),
                    ("latency_p99_us", m.p99_us),
                    ("cpu_us_per_req", m.cpu_us_per_req),
                    ("requests_per_sec", m.requests_per_sec),
                    ("syscalls_per_req", m.syscalls_per_req),
                    ("events_per_wakeup", m.events_per_wakeup),
                ] {
                    cell[name] = json!(value);
                }
                cell["errors"] = json!(m.errors);
                cell["failed"] = Value::Null;
            }
        },
        // A peer that serves only the 13-byte body has no cell in other scenarios.
        None => cell["failed"] = json!("not run"),
    }
    cell
}

/// Each `--ratio` in scenario `s`, by its label: `null` where either server did not run.
fn paired_json(c: &super::CompareConfig, s: &ScenarioResult) -> Value {
    let mut m = Map::new();
    for spec in &c.ratios {
        let value = match paired::paired(s, spec) {
            Some(p) => json!({
                "of_medians": p.of_medians,
                "median_of_rounds": p.median,
                "interval_95": p.interval.map(|(lo, hi)| [lo, hi]),
                "rounds": p.rounds,
            }),
            None => Value::Null,
        };
        m.insert(spec.label(), value);
    }
    Value::Object(m)
}

pub fn json(r: &Results) -> String {
    let c = &r.config;
    let scenarios: Vec<Value> = r
        .scenarios
        .iter()
        .map(|s| {
            let mut engines = Map::new();
            for e in &s.engines {
                let value = match &e.failed {
                    Some(f) => json!({"failed": f.reason, "detail": f.detail}),
                    None => json!({
                        "median": figures_json(&e.median),
                        "load_bound": load_bound(c, &e.median),
                        "rounds": e.rounds.iter().map(figures_json).collect::<Vec<_>>(),
                    }),
                };
                engines.insert(e.engine.clone(), value);
            }
            let ratio = match s.ratios() {
                Some(ratios) => Value::Object(ratios.into_iter().map(|(n, v)| (n.to_string(), json!(v))).collect()),
                None => Value::Null,
            };
            json!({
                "connections": s.scenario.connections,
                "depth": s.scenario.depth,
                "body_size": s.scenario.body_size,
                "idle": s.scenario.idle,
                "total_connections": s.scenario.total(),
                "processes": s.processes,
                "engines": engines,
                "ratio_uring_over_epoll": ratio,
                "paired_ratios": paired_json(c, s),
            })
        })
        .collect();
    let ladder = match c.active {
        Some(share) => json!({
            "active_share": share,
            "rate": c.rate,
            "rows": c.servers().iter().map(|name| json!({
                "engine": name,
                "cells": r.scenarios.iter().map(|s| ladder_cell(s, name)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }),
        None => Value::Null,
    };
    let run = &r.run;
    json!({
        "run": {
            "kernel": run.kernel,
            "cpu_model": run.cpu_model,
            "cpus": run.cpus,
            "version": run.version,
            "commit": run.commit,
            "date": run.date,
            "command": run.command,
        },
        "load_with": c.load_with.name(),
        "network": match &c.network {
            Some(net) => json!({
                "path": "veth between network namespaces",
                "server_addr": super::netns::SERVER_ADDR.to_string(),
                "load_addr": super::netns::LOAD_ADDR.to_string(),
                "loss_percent": net.impairments.loss_percent,
                "delay_us": net.impairments.delay.map(|d| d.as_micros() as u64),
            }),
            None => json!({"path": "loopback"}),
        },
        "engines": c.engines,
        "peers": c.peers.iter().map(|p| json!({"name": p.name, "command": p.argv, "port": p.port})).collect::<Vec<_>>(),
        "server_cpus": c.server_cpus,
        "load_cpus": c.load_cpus,
        "rounds": c.rounds,
        "duration_s": c.duration.as_secs_f64(),
        "warmup_s": c.warmup.as_secs_f64(),
        "active_share": c.active,
        "rate": c.rate,
        "ratios": c.ratios.iter().map(super::RatioSpec::label).collect::<Vec<_>>(),
        "scenarios": scenarios,
        "ladder": ladder,
    })
    .to_string()
}

/// `1.23k`-style numbers for the table.
pub fn metric(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn micros(us: f64) -> String {
    if !us.is_finite() {
        "n/a".into()
    } else if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

pub fn bytes(b: f64) -> String {
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1 << 20) as f64 {
        format!("{:.1} MiB", b / (1 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

fn failed_cell(reason: &str) -> String {
    format!("FAILED ({reason})")
}

/// The column heading of a scenario in the ladder tables; depth and body size only when
/// they vary between scenarios.
fn ladder_heading(r: &Results, s: &ScenarioResult) -> String {
    let mut h = format!(
        "{} conns ({} active)",
        HumanCount(s.scenario.total() as u64),
        HumanCount(s.scenario.connections as u64)
    );
    if r.config.depths.len() > 1 {
        h.push_str(&format!(", depth {}", s.scenario.depth));
    }
    if r.config.body_sizes.len() > 1 {
        h.push_str(&format!(", {}", bytes(s.scenario.body_size as f64)));
    }
    if s.processes > 1 {
        h.push_str(&format!(", {} + {} processes", s.processes, s.processes));
    }
    h
}

/// A figure of engine `name` in a process-group scenario says so where the engine's
/// cost grows with the descriptors it watches: poll over a group is one poll per process
/// over its share, not one poll over them all.
fn group_mark(name: &str, s: &ScenarioResult) -> String {
    if s.processes > 1 && matches!(name, "poll" | "select") {
        format!(" ({name} ×{} processes)", s.processes)
    } else {
        String::new()
    }
}

/// The note under the ladder tables for the scenarios run as process groups.
fn group_note(r: &Results, out: &mut String) {
    for s in r.scenarios.iter().filter(|s| s.processes > 1) {
        let share = s.scenario.total().div_ceil(s.processes as usize);
        let _ = writeln!(
            out,
            "At {} connections: {} server processes (`duet serve --processes {}`) against {} load processes, \
             each holding about {} connections (past one process's descriptor limit). Server CPU and RSS are \
             summed over the server's processes. poll there is {} polls of about {} descriptors each, not one \
             poll over {}; select cannot watch descriptors of FD_SETSIZE (1024) or above in any process.\n",
            HumanCount(s.scenario.total() as u64),
            s.processes,
            s.processes,
            s.processes,
            HumanCount(share as u64),
            s.processes,
            HumanCount(share as u64),
            HumanCount(s.scenario.total() as u64),
        );
    }
}

/// The classic table (one row per engine, mean / p99 latency per connection count), then
/// server CPU per request in the same layout.
fn ladder_tables(r: &Results, share: f64, out: &mut String) {
    let c = &r.config;
    let load = match c.rate {
        Some(rate) => format!("open loop at {} requests/s in total", HumanCount(rate.round() as u64)),
        None => "closed loop".to_string(),
    };
    let headings: Vec<String> = r.scenarios.iter().map(|s| ladder_heading(r, s)).collect();
    let servers = c.servers();
    let table = |out: &mut String, title: &str, cell: &dyn Fn(&Figures) -> String| {
        let _ = writeln!(out, "{title}\n");
        let _ = writeln!(out, "| engine | {} |", headings.join(" | "));
        let _ = writeln!(out, "|---|{}", "---:|".repeat(headings.len()));
        for name in &servers {
            let cells: Vec<String> = r
                .scenarios
                .iter()
                .map(|s| match s.engine(name) {
                    Some(e) => match &e.failed {
                        Some(f) => failed_cell(&f.reason),
                        None => format!("{}{}", cell(&e.median), group_mark(name, s)),
                    },
                    None => "–".to_string(),
                })
                .collect();
            let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
        }
        out.push('\n');
    };
    table(
        out,
        &format!("The ladder: mean / p99 latency, {}% of the connections active, {load}, medians", format_share(share)),
        &|f| format!("{} / {}", micros(f.mean_us), micros(f.p99_us)),
    );
    table(out, "Server CPU µs per request", &|f| cpu_cell(c, f));
    group_note(r, out);
}

/// CPU µs per request, marked when the server was not the limit.
fn cpu_cell(c: &super::CompareConfig, f: &Figures) -> String {
    let mark = if load_bound(c, f) { LOAD_BOUND_MARK } else { "" };
    format!("{:.2}{mark}", f.cpu_us_per_req)
}

/// The note under a table that has marked CPU figures.
fn load_bound_note(r: &Results, out: &mut String) {
    let c = &r.config;
    let any = r.scenarios.iter().flat_map(|s| &s.engines).any(|e| e.failed.is_none() && load_bound(c, &e.median));
    if any {
        let _ = writeln!(
            out,
            "\n{LOAD_BOUND_MARK} CPU util under {:.0}% of the server's {} CPU(s) in a closed loop: the server \
             waited for work (the load generator was the limit, or another process held the load's CPU), and \
             part of this CPU per request is the cost of idling and waking up. \
             Not comparable with a saturated server's; give the load more CPUs (--load-cpus) or compare at a \
             fixed --rate.",
            LOAD_BOUND_UTIL * 100.0,
            c.server_cpus.len().max(1),
        );
    }
}

/// `10` for 0.1, `2.5` for 0.025.
fn format_share(share: f64) -> String {
    let pct = share * 100.0;
    if (pct - pct.round()).abs() < 1e-9 {
        format!("{pct:.0}")
    } else {
        format!("{pct}")
    }
}

/// One line per failure, once per engine when all its failures say the same.
fn failure_notes(r: &Results, out: &mut String) {
    let mut lines = Vec::new();
    for name in r.config.servers() {
        let failures: Vec<(&ScenarioResult, &super::Failure)> =
            r.scenarios.iter().filter_map(|s| Some((s, s.engine(&name)?.failed.as_ref()?))).collect();
        let Some((_, first)) = failures.first() else { continue };
        if failures.iter().all(|(_, f)| f.detail == first.detail) {
            lines.push(format!("- {name}: {}", first.detail));
        } else {
            for (s, f) in &failures {
                lines.push(format!("- {name} at {}: {}", s.scenario.label(), f.detail));
            }
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(out, "\nFAILED:\n{}", lines.join("\n"));
    }
}

/// The `--ratio` table: A's CPU per request over B's, from the medians and round by round.
fn paired_table(r: &Results, out: &mut String) {
    if r.config.ratios.is_empty() {
        return;
    }
    let rows = paired::all(r);
    out.push_str(
        "\nCPU µs/req, A over B within each round (a round runs every server in turn, seconds apart; \
         the 95 % interval is for the median of the rounds' ratios, from their order statistics):\n\n",
    );
    out.push_str(
        "| scenario | A/B | of the medians | median of the rounds | 95 % interval | lowest–highest | rounds |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for (s, spec, p) in &rows {
        let interval = match p.interval {
            Some((lo, hi)) => format!("{lo:.2}–{hi:.2}×"),
            None => format!("– (needs {} rounds)", paired::MIN_ROUNDS_FOR_INTERVAL),
        };
        let lo = p.rounds.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = p.rounds.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let _ = writeln!(
            out,
            "| {} | {} | {:.2}× | {:.2}× | {interval} | {lo:.2}–{hi:.2}× | {} |",
            s.scenario.label(),
            spec.label(),
            p.of_medians,
            p.median,
            p.rounds.len()
        );
    }
    for spec in &r.config.ratios {
        if !rows.iter().any(|(_, s, _)| *s == spec) {
            let _ = writeln!(out, "\n{}: no scenario where both ran without failing.", spec.label());
        }
    }
}

pub fn markdown(r: &Results) -> String {
    let c = &r.config;
    let mut out = String::new();
    let run = &r.run;
    let _ = writeln!(out, "duet {} ({}), {}", run.version, run.commit, run.date);
    let _ = writeln!(out, "machine: {}, {} CPUs, Linux {}", run.cpu_model, run.cpus, run.kernel);
    let _ = writeln!(out, "command: `{}`\n", run.command);
    let _ = write!(
        out,
        "duet compare: load with {}, server CPUs {:?}, load CPUs {:?}, {} round(s) of {:.1}s",
        c.load_with.name(),
        c.server_cpus,
        c.load_cpus,
        c.rounds,
        c.duration.as_secs_f64()
    );
    if !c.warmup.is_zero() {
        let _ = write!(out, " after {:.1}s of warm-up", c.warmup.as_secs_f64());
    }
    out.push_str(", medians\n\n");
    if let Some(net) = &c.network {
        let _ = write!(
            out,
            "network: veth between namespaces ({} to {})",
            super::netns::LOAD_ADDR,
            super::netns::SERVER_ADDR
        );
        if let Some(loss) = net.impairments.loss_percent {
            let _ = write!(out, ", {loss} % loss each way");
        }
        if let Some(delay) = net.impairments.delay {
            let _ = write!(out, ", {} µs added to each round trip", delay.as_micros());
        }
        out.push_str("\n\n");
    }
    if !c.peers.is_empty() {
        let names: Vec<&str> = c.peers.iter().map(|p| p.name.as_str()).collect();
        let _ = writeln!(out, "peers: {} (no syscall counts; CPU and RSS of the process started)\n", names.join(", "));
    }
    if let Some(share) = c.active {
        ladder_tables(r, share, &mut out);
    }
    out.push_str(
        "| scenario | engine | req/s | mean | p50 | p99 | p99.9 | CPU µs/req | CPU util | peak RSS | syscalls/req \
         | events/wakeup | errors |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let ratio = |x: f64| if x.is_finite() { format!("{x:.2}") } else { "–".into() };
    for s in &r.scenarios {
        let label = s.scenario.label();
        for e in &s.engines {
            if let Some(f) = &e.failed {
                let _ = writeln!(out, "| {label} | {} | {} |{}", e.engine, failed_cell(&f.reason), " |".repeat(10));
                continue;
            }
            let f = &e.median;
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {:.0}% | {} | {} | {} | {} |",
                e.engine,
                metric(f.requests_per_sec),
                micros(f.mean_us),
                micros(f.p50_us),
                micros(f.p99_us),
                micros(f.p999_us),
                cpu_cell(c, f),
                f.cpu_util * 100.0,
                bytes(f.rss_peak_bytes),
                ratio(f.syscalls_per_req),
                ratio(f.events_per_wakeup),
                f.errors
            );
        }
        if let Some(ratios) = s.ratios() {
            let cell = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.2}×"));
            let cells: Vec<String> = ratios.into_iter().map(|(_, v)| cell(v)).collect();
            let _ = writeln!(out, "| {label} | uring/epoll | {} | |", cells.join(" | "));
        }
    }
    load_bound_note(r, &mut out);
    failure_notes(r, &mut out);
    let missing =
        r.scenarios.iter().flat_map(|s| &s.engines).filter(|e| e.failed.is_none()).any(|e| {
            [e.median.mean_us, e.median.p50_us, e.median.p99_us, e.median.p999_us].iter().any(|x| !x.is_finite())
        });
    if missing {
        out.push_str(
            "\nn/a: not reported. With pipelining wrk prints 0 for percentiles that fall among the samples \
             its coordinated-omission correction adds; use --load-with duet for those.\n",
        );
    }
    // Last: the notes above are about the main table.
    paired_table(r, &mut out);
    out
}

/// Reads a results.json that [`json`] wrote back into [`Results`], for drawing its charts
/// again (`cargo run -p duet-loadtest --example charts`): the figures as measured, the
/// configuration as far as the charts need it. `name` says where it came from, for the
/// error.
pub fn from_json(name: &str, text: &str) -> Result<Results, String> {
    let bad = |what: &str| format!("{name}: not the results.json of duet compare ({what})");
    let v: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let strings = |key: &str| -> Result<Vec<String>, String> {
        v[key]
            .as_array()
            .ok_or_else(|| bad(key))?
            .iter()
            .map(|s| s.as_str().map(String::from).ok_or_else(|| bad(key)))
            .collect()
    };
    let numbers = |value: &Value, key: &str| -> Result<Vec<usize>, String> {
        value
            .as_array()
            .ok_or_else(|| bad(key))?
            .iter()
            .map(|n| n.as_u64().map(|n| n as usize).ok_or_else(|| bad(key)))
            .collect()
    };
    let count = |value: &Value, key: &str| value[key].as_u64().ok_or_else(|| bad(key));
    let engines = strings("engines")?;
    let peers: Vec<super::Peer> = v["peers"]
        .as_array()
        .ok_or_else(|| bad("peers"))?
        .iter()
        .map(|p| {
            Ok(super::Peer {
                name: p["name"].as_str().ok_or_else(|| bad("peers"))?.to_string(),
                argv: Vec::new(),
                port: p["port"].as_u64().unwrap_or(0) as u16,
                fixed_body: false,
            })
        })
        .collect::<Result<_, String>>()?;
    let mut scenarios = Vec::new();
    for s in v["scenarios"].as_array().ok_or_else(|| bad("scenarios"))? {
        let scenario = super::Scenario {
            connections: count(s, "connections")? as usize,
            depth: count(s, "depth")? as usize,
            body_size: count(s, "body_size")?,
            idle: count(s, "idle")? as usize,
        };
        // Results written before process groups ran in one process each.
        let processes = s["processes"].as_u64().unwrap_or(1);
        let mut results = Vec::new();
        for server in engines.iter().chain(peers.iter().map(|p| &p.name)) {
            let e = &s["engines"][server];
            if e.is_null() {
                continue;
            }
            let figures = |f: &Value| -> Figures {
                let get = |key: &str| f[key].as_f64().unwrap_or(f64::NAN);
                Figures {
                    requests_per_sec: get("requests_per_sec"),
                    mean_us: get("latency_mean_us"),
                    p50_us: get("latency_p50_us"),
                    p99_us: get("latency_p99_us"),
                    p999_us: get("latency_p999_us"),
                    cpu_us_per_req: get("cpu_us_per_req"),
                    cpu_util: get("cpu_util"),
                    rss_peak_bytes: get("rss_peak_bytes"),
                    syscalls_per_req: get("syscalls_per_req"),
                    events_per_wakeup: get("events_per_wakeup"),
                    errors: f["errors"].as_u64().unwrap_or(0),
                }
            };
            let failed = e["failed"].as_str().map(|reason| super::Failure {
                reason: reason.to_string(),
                detail: e["detail"].as_str().unwrap_or_default().to_string(),
            });
            let rounds: Vec<Figures> = e["rounds"].as_array().map_or(Vec::new(), |r| r.iter().map(figures).collect());
            results.push(super::EngineResult {
                engine: server.clone(),
                rounds,
                median: if failed.is_some() { Figures::default() } else { figures(&e["median"]) },
                failed,
            });
        }
        scenarios.push(ScenarioResult { scenario, processes, engines: results });
    }
    let unique = |values: Vec<usize>| {
        let mut seen: Vec<usize> = Vec::new();
        for x in values {
            if !seen.contains(&x) {
                seen.push(x);
            }
        }
        seen
    };
    let active = v["active_share"].as_f64();
    let run = &v["run"];
    let text_of = |key: &str| run[key].as_str().unwrap_or("unknown").to_string();
    let config = super::CompareConfig {
        duet_exe: "duet".into(),
        engines,
        server_cpus: numbers(&v["server_cpus"], "server_cpus")?,
        load_cpus: numbers(&v["load_cpus"], "load_cpus")?,
        // With an active share the counts are totals, as `--connections` gave them.
        connections: unique(
            scenarios
                .iter()
                .map(|s| if active.is_some() { s.scenario.total() } else { s.scenario.connections })
                .collect(),
        ),
        depths: unique(scenarios.iter().map(|s| s.scenario.depth).collect()),
        body_sizes: {
            let mut sizes: Vec<u64> = Vec::new();
            for s in &scenarios {
                if !sizes.contains(&s.scenario.body_size) {
                    sizes.push(s.scenario.body_size);
                }
            }
            sizes
        },
        idle: if active.is_some() { vec![0] } else { unique(scenarios.iter().map(|s| s.scenario.idle).collect()) },
        rounds: count(&v, "rounds")? as usize,
        duration: std::time::Duration::try_from_secs_f64(v["duration_s"].as_f64().ok_or_else(|| bad("duration_s"))?)
            .map_err(|_| bad("duration_s"))?,
        load_with: if v["load_with"] == "wrk" { super::LoadWith::Wrk } else { super::LoadWith::Duet },
        peers,
        progress: false,
        active,
        rate: v["rate"].as_f64(),
        warmup: std::time::Duration::try_from_secs_f64(v["warmup_s"].as_f64().unwrap_or(0.0))
            .map_err(|_| bad("warmup_s"))?,
        paths: Vec::new(),
        // How the bodies were served is not in the results; the charts do not need it.
        files: false,
        // Where the namespaces were is gone with them; the path and its impairments are not.
        network: match v["network"]["path"].as_str() {
            Some(p) if p.starts_with("veth") => Some(super::netns::NetPath {
                server_ns: Default::default(),
                load_ns: Default::default(),
                impairments: super::netns::Impairments {
                    loss_percent: v["network"]["loss_percent"].as_f64(),
                    delay: v["network"]["delay_us"].as_u64().map(std::time::Duration::from_micros),
                },
            }),
            _ => None,
        },
        ratios: v["ratios"]
            .as_array()
            .map_or(&[][..], |a| a.as_slice())
            .iter()
            .filter_map(|r| r.as_str()?.split_once('/'))
            .map(|(a, b)| super::RatioSpec { a: a.to_string(), b: b.to_string() })
            .collect(),
    };
    let info = super::RunInfo {
        kernel: text_of("kernel"),
        cpu_model: text_of("cpu_model"),
        cpus: run["cpus"].as_u64().unwrap_or(0) as usize,
        version: text_of("version"),
        commit: text_of("commit"),
        date: text_of("date"),
        command: text_of("command"),
    };
    Ok(Results { config, run: info, scenarios })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::fixture::ladder;

    #[test]
    fn a_process_group_column_says_so_and_poll_there_is_marked_as_several_polls() {
        let mut r = ladder();
        r.scenarios[1].processes = 6;
        r.scenarios[1].engines[1] = r.scenarios[1].engines[2].clone();
        r.scenarios[1].engines[1].engine = "poll".into();
        let md = markdown(&r);
        assert!(
            md.contains("| engine | 1,000 conns (100 active) | 10,000 conns (1,000 active), 6 + 6 processes |"),
            "{md}"
        );
        assert!(md.contains("(poll ×6 processes) |"), "{md}");
        assert!(md.contains("poll there is 6 polls of about 1,667 descriptors each, not one poll over 10,000"), "{md}");
        let v: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(
            (v["scenarios"][0]["processes"].as_u64(), v["scenarios"][1]["processes"].as_u64()),
            (Some(1), Some(6))
        );
        let back = from_json("r", &json(&r)).unwrap();
        assert_eq!(back.scenarios[1].processes, 6, "read back");
    }

    #[test]
    fn the_ladder_prints_the_classic_table_with_failures_in_place() {
        let md = markdown(&ladder());
        assert!(md.contains("| engine | 1,000 conns (100 active) | 10,000 conns (1,000 active) |"), "{md}");
        assert!(md.contains("| select | 15.20 ms / 45.00 ms | FAILED (FD_SETSIZE) |"), "{md}");
        assert!(md.contains("| poll | FAILED (did not start) | FAILED (did not start) |"), "{md}");
        assert!(md.contains("| epoll | 800 µs / 2.00 ms | 1.20 ms / 4.00 ms |"), "{md}");
        assert!(md.contains("| epoll | 12.50 | 12.50 |"), "CPU per request in the same layout: {md}");
        assert!(md.contains("10% of the connections active, open loop at 5,000 requests/s"), "{md}");
        // The full table has a FAILED row with every other cell empty, so columns line up.
        let row = md.lines().find(|l| l.starts_with("| c=1000 d=1 13 B +9000 idle | select | FAILED")).expect(&md);
        let header = md.lines().find(|l| l.starts_with("| scenario |")).unwrap();
        assert_eq!(row.matches('|').count(), header.matches('|').count(), "{row}");
        // Notes: the story of each failure, once per engine when it is the same everywhere.
        assert_eq!(md.matches("- poll: the poll server did not start").count(), 1, "{md}");
        assert!(md.contains("- select: 9000 connections lost"), "{md}");
    }

    #[test]
    fn the_machine_and_the_command_head_the_results() {
        let r = ladder();
        let v: Value = serde_json::from_str(&json(&r)).unwrap();
        let run = &v["run"];
        assert_eq!(run["kernel"], "6.1.0-test");
        assert_eq!(run["cpu_model"], "Test CPU @ 3.00GHz");
        assert_eq!(run["cpus"], 2);
        assert_eq!(run["version"], "0.1.0");
        assert_eq!(run["commit"], "abc1234");
        assert_eq!(run["date"], "2026-11-28T13:00:00Z");
        assert_eq!(run["command"], "duet compare --ladder --out 'my results'");
        let md = markdown(&r);
        let head: Vec<&str> = md.lines().take(3).collect();
        assert_eq!(
            head,
            [
                "duet 0.1.0 (abc1234), 2026-11-28T13:00:00Z",
                "machine: Test CPU @ 3.00GHz, 2 CPUs, Linux 6.1.0-test",
                "command: `duet compare --ladder --out 'my results'`",
            ]
        );
    }

    /// The ladder fixture in a closed loop, epoll's CPUs busy `util` of the time.
    fn closed_loop(util: f64) -> Results {
        let mut r = ladder();
        r.config.rate = None;
        for s in &mut r.scenarios {
            for e in s.engines.iter_mut().filter(|e| e.failed.is_none()) {
                e.median.cpu_util = if e.engine == "epoll" { util } else { 0.95 };
            }
        }
        r
    }

    #[test]
    fn cpu_per_request_is_marked_when_the_load_generator_was_the_limit() {
        let r = closed_loop(0.35);
        let md = markdown(&r);
        assert!(md.contains("| epoll | 12.50† | 12.50† |"), "the ladder's CPU table: {md}");
        assert!(md.contains("| select | 12.50 | FAILED"), "a saturated server is not marked: {md}");
        let row = md.lines().find(|l| l.starts_with("| c=100 d=1 13 B +900 idle | epoll |")).expect(&md);
        assert!(row.contains("| 12.50† | 35% |"), "{row}");
        assert!(md.contains("† CPU util under 60% of the server's 1 CPU(s) in a closed loop"), "{md}");
        let v: Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(v["scenarios"][0]["engines"]["epoll"]["load_bound"], true);
        assert_eq!(v["scenarios"][0]["engines"]["select"]["load_bound"], false);

        // Busy enough, or open loop (below saturation by design): no mark, no note.
        for r in [closed_loop(0.75), { ladder() }] {
            let md = markdown(&r);
            assert!(!md.contains('†'), "{md}");
            let v: Value = serde_json::from_str(&json(&r)).unwrap();
            assert_eq!(v["scenarios"][0]["engines"]["epoll"]["load_bound"], false);
        }
        // Two server CPUs: saturation is 200%, so 100% is half of it.
        let mut r = closed_loop(1.0);
        r.config.server_cpus = vec![0, 2];
        assert!(markdown(&r).contains("| epoll | 12.50† |"));
    }

    #[test]
    fn without_an_active_share_there_is_no_ladder() {
        let mut r = ladder();
        r.config.active = None;
        assert!(!markdown(&r).contains("The ladder"));
        let v: Value = serde_json::from_str(&json(&r)).unwrap();
        assert!(v["ladder"].is_null());
    }

    #[test]
    fn the_ladder_json_holds_every_engine_with_figures_or_a_reason() {
        let v: Value = serde_json::from_str(&json(&ladder())).unwrap();
        let rows = v["ladder"]["rows"].as_array().unwrap();
        let engines: Vec<&str> = rows.iter().map(|r| r["engine"].as_str().unwrap()).collect();
        assert_eq!(engines, ["select", "poll", "epoll"]);
        let cell = |row: usize, col: usize| &rows[row]["cells"][col];
        assert_eq!(cell(0, 0)["connections"], 1000);
        assert_eq!(cell(0, 0)["active"], 100);
        assert_eq!(cell(0, 0)["latency_mean_us"], 15_200.0);
        assert!(cell(0, 0)["failed"].is_null());
        assert_eq!(cell(0, 1)["failed"], "FD_SETSIZE");
        assert!(cell(0, 1)["detail"].as_str().unwrap().contains("FD_SETSIZE (1024)"));
        assert_eq!(cell(1, 0)["failed"], "did not start");
        assert_eq!(cell(2, 1)["latency_p99_us"], 4000.0);
        assert_eq!(v["scenarios"][1]["engines"]["select"]["failed"], "FD_SETSIZE");
        assert_eq!(v["scenarios"][1]["total_connections"], 10_000);
        assert_eq!(v["active_share"], 0.1);
        assert_eq!(v["rate"], 5000.0);
    }

    #[test]
    fn a_ratio_is_paired_round_by_round_with_its_interval() {
        let mut r = ladder();
        r.config.ratios = vec![
            super::super::RatioSpec { a: "select".into(), b: "epoll".into() },
            super::super::RatioSpec { a: "poll".into(), b: "epoll".into() },
        ];
        // Seven rounds at 1,000 connections: select's CPU per request is 1..7 times
        // epoll's, round by round; the medians, set apart, give the first column.
        let s = &mut r.scenarios[0];
        let fig = |cpu: f64| Figures { cpu_us_per_req: cpu, ..Figures::default() };
        s.engines[0].rounds = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0].iter().map(|k| fig(10.0 * k * 1.1)).collect();
        s.engines[0].median = fig(60.0);
        s.engines[2].rounds = (0..7).map(|_| fig(11.0)).collect();
        s.engines[2].median = fig(10.0);
        let md = markdown(&r);
        let row = md.lines().find(|l| l.contains("| select/epoll |")).expect(&md);
        assert_eq!(row, "| c=100 d=1 13 B +900 idle | select/epoll | 6.00× | 4.00× | 1.00–7.00× | 1.00–7.00× | 7 |");
        // 10,000 connections: select failed, so no row there; poll never ran: a note.
        assert_eq!(md.lines().filter(|l| l.contains("| select/epoll |")).count(), 1, "{md}");
        assert!(md.contains("poll/epoll: no scenario where both ran without failing."), "{md}");

        let v: Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(v["ratios"], json!(["select/epoll", "poll/epoll"]));
        let p = &v["scenarios"][0]["paired_ratios"]["select/epoll"];
        assert_eq!(p["median_of_rounds"], 4.0);
        assert_eq!(p["interval_95"], json!([1.0, 7.0]));
        assert_eq!(p["rounds"].as_array().map(Vec::len), Some(7));
        assert_eq!(v["scenarios"][0]["paired_ratios"]["poll/epoll"], Value::Null);
        assert_eq!(v["scenarios"][1]["paired_ratios"]["select/epoll"], Value::Null);
        assert_eq!(from_json("r", &json(&r)).unwrap().config.ratios, r.config.ratios);

        // Five rounds cannot give a 95 % interval; the row says how many it needs.
        for e in [0, 2] {
            r.scenarios[0].engines[e].rounds.truncate(5);
        }
        let md = markdown(&r);
        assert!(md.contains("| 3.00× | – (needs 6 rounds) | 1.00–5.00× | 5 |"), "{md}");
        // Without --ratio, no such table.
        r.config.ratios.clear();
        assert!(!markdown(&r).contains("A over B"));
    }
}
