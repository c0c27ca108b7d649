//! The results as a markdown table and as JSON.

use super::{Figures, Results, FIGURES};
use serde_json::{json, Map, Value};
use std::fmt::Write;

fn figures_json(f: &Figures) -> Value {
    let mut m = Map::new();
    for (name, get) in FIGURES {
        m.insert(name.into(), json!(get(f)));
    }
    m.insert("errors".into(), json!(f.errors));
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
                engines.insert(
                    e.engine.clone(),
                    json!({
                        "median": figures_json(&e.median),
                        "rounds": e.rounds.iter().map(figures_json).collect::<Vec<_>>(),
                    }),
                );
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
                "engines": engines,
                "ratio_uring_over_epoll": ratio,
            })
        })
        .collect();
    json!({
        "load_with": c.load_with.name(),
        "engines": c.engines,
        "peers": c.peers.iter().map(|p| json!({"name": p.name, "command": p.argv, "port": p.port})).collect::<Vec<_>>(),
        "server_cpus": c.server_cpus,
        "load_cpus": c.load_cpus,
        "rounds": c.rounds,
        "duration_s": c.duration.as_secs_f64(),
        "scenarios": scenarios,
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

pub fn markdown(r: &Results) -> String {
    let c = &r.config;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "duet compare: load with {}, server CPUs {:?}, load CPUs {:?}, {} round(s) of {:.1}s, medians\n",
        c.load_with.name(),
        c.server_cpus,
        c.load_cpus,
        c.rounds,
        c.duration.as_secs_f64()
    );
    if !c.peers.is_empty() {
        let names: Vec<&str> = c.peers.iter().map(|p| p.name.as_str()).collect();
        let _ = writeln!(out, "peers: {} (no syscall counts; CPU and RSS of the process started)\n", names.join(", "));
    }
    out.push_str(
        "| scenario | engine | req/s | p50 | p99 | p99.9 | CPU µs/req | CPU util | peak RSS | syscalls/req | errors |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for s in &r.scenarios {
        let label = s.scenario.label();
        for e in &s.engines {
            let f = &e.median;
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} | {} | {} | {:.2} | {:.0}% | {} | {} | {} |",
                e.engine,
                metric(f.requests_per_sec),
                micros(f.p50_us),
                micros(f.p99_us),
                micros(f.p999_us),
                f.cpu_us_per_req,
                f.cpu_util * 100.0,
                bytes(f.rss_peak_bytes),
                if f.syscalls_per_req.is_finite() { format!("{:.2}", f.syscalls_per_req) } else { "–".into() },
                f.errors
            );
        }
        if let Some(ratios) = s.ratios() {
            let cell = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.2}×"));
            let cells: Vec<String> = ratios.into_iter().map(|(_, v)| cell(v)).collect();
            let _ = writeln!(out, "| {label} | uring/epoll | {} | |", cells.join(" | "));
        }
    }
    let missing = r
        .scenarios
        .iter()
        .flat_map(|s| &s.engines)
        .any(|e| [e.median.p50_us, e.median.p99_us, e.median.p999_us].iter().any(|x| !x.is_finite()));
    if missing {
        out.push_str(
            "\nn/a: not reported. With pipelining wrk prints 0 for percentiles that fall among the samples \
             its coordinated-omission correction adds; use --load-with duet for those.\n",
        );
    }
    out
}
