//! SVG charts for `--out`: req/s, CPU per request and latency percentiles, as small
//! multiples (one panel per scenario, the servers in the same colours in every panel);
//! and for a ladder over several connection counts, one line chart of server CPU per
//! request against the number of connections.

use super::{Figures, Getter, Results};
use indicatif::HumanCount;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

/// Twenty, told apart by hue first and then by lightness, so the ablation's rows
/// (`--ablation`: a dozen and growing) and the floors beside them each have their own.
const COLORS: [RGBColor; 20] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
    RGBColor(170, 110, 40),
    RGBColor(0, 100, 0),
    RGBColor(128, 0, 0),
    RGBColor(218, 165, 32),
    RGBColor(0, 128, 128),
    RGBColor(255, 105, 180),
    RGBColor(64, 64, 64),
    RGBColor(128, 128, 0),
    RGBColor(0, 191, 255),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// Writes the charts into `dir` and returns their paths.
pub fn write(r: &Results, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for (file, title, get, mark) in [
        (
            "requests_per_sec.svg",
            "requests per second (higher is better)",
            (|f| f.requests_per_sec) as super::Getter,
            false,
        ),
        ("cpu_us_per_req.svg", "server CPU µs per request (lower is better)", |f: &Figures| f.cpu_us_per_req, true),
    ] {
        let path = dir.join(file);
        bars(r, &path, title, get, mark).map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        written.push(path);
    }
    let path = dir.join("latency.svg");
    latency(r, &path).map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
    written.push(path);
    if by_connections_applies(r) {
        let path = dir.join("cpu_by_connections.svg");
        cpu_by_connections(r, &path).map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Each chart is small multiples: one panel per scenario, each with its own y axis (the
/// scenarios differ by orders of magnitude), the servers in the same colour in every
/// panel, and one legend strip at the top naming them.
const PANEL: (u32, u32) = (340, 250);
const HEADER: u32 = 70;
const MIN_WIDTH: u32 = 680;

/// Rows and columns for `n` panels: at most three across.
fn grid(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, 3);
    (n.div_ceil(cols).max(1), cols)
}

/// A label with three significant digits below 1,000 (CPU µs per request runs from
/// 0.4 to a few hundred), metric prefixes above.
fn tick(y: f64) -> String {
    match y.abs() {
        0.0 => "0".into(),
        a if a < 10.0 => format!("{y:.2}"),
        a if a < 100.0 => format!("{y:.1}"),
        _ => super::output::metric(y),
    }
}

/// Grey, for notes.
const GREY: RGBColor = RGBColor(90, 90, 90);
/// Dark red, for the mark of a run too short to compare by.
const WARN: RGBColor = RGBColor(178, 24, 43);

/// How much single `--quick` runs varied, measured 2026-12-07 03:30 UTC on the 2-CPU VM of
/// docs/results.md while other builds shared both CPUs: six runs of `duet compare --quick`
/// in a row (`flock /work/wt/measure.lock`, release build) gave uring/epoll req/s of
/// 0.68x-1.47x (median 0.93x, half the range ±27-40 % of it) and uring/epoll CPU per
/// request of 0.80x-1.04x (±9 %); the three quick runs of issue 21 gave 0.92x, 0.86x and
/// 0.69x.
const QUICK_NOISE: &str = "noise ±30 % in req/s, ±10 % in CPU per request";

/// The lines under a chart's title: what a panel title such as `c=16 d=1 13 B` means, and
/// for a run of one round the mark that its figures are too noisy to compare by.
fn header_lines(r: &Results) -> Vec<(String, RGBColor)> {
    let active = if r.config.active.is_some() { "active " } else { "" };
    let mut key = format!(
        "panels: c = {active}connections, d = requests in flight on each (pipelining depth), then the response body size"
    );
    if r.scenarios.iter().any(|s| s.scenario.idle > 0) {
        key.push_str("; +N idle: idle keep-alive connections held open too");
    }
    let mut lines = vec![(key, GREY)];
    if let Some(mark) = quick_mark(&r.config) {
        lines.push((mark, WARN));
    }
    lines
}

/// `quick: 1 round of 1 s, noise ...` for a comparison of one round (`--quick`), whose
/// single runs differ by more than the engines often do; None with more rounds.
fn quick_mark(c: &super::CompareConfig) -> Option<String> {
    (c.rounds == 1).then(|| {
        let seconds = c.duration.as_secs_f64();
        format!("quick: 1 round of {seconds} s, {QUICK_NOISE}: compare with --rounds 3 or more")
    })
}

/// The canvas: a title, the lines under it, the legend strip of `servers`, and one area
/// per scenario, each wide enough for a bar per server.
fn canvas<'a>(
    path: &'a Path,
    title: &str,
    lines: &[(String, RGBColor)],
    servers: &[String],
    panels: usize,
) -> Result<(Area<'a>, Vec<Area<'a>>, i32), Box<dyn std::error::Error>> {
    let legend: Vec<(String, RGBColor)> = servers.iter().enumerate().map(|(i, s)| (s.clone(), color(i))).collect();
    canvas_with(path, title, lines, &legend, panels, bar_panel_width(servers.len()))
}

/// A bar panel's width for `servers` bars: the usual one, wider past a few servers.
fn bar_panel_width(servers: usize) -> u32 {
    PANEL.0.max(70 + BAR_SLOT * servers as u32)
}

/// The width of a server's slot in a bar panel once there are more than a few.
const BAR_SLOT: u32 = 64;
/// The legend's line height.
const LEGEND_LINE: u32 = 20;
/// The height of a line of text under the title.
const HEADER_LINE: u32 = 16;

/// The width of a legend entry: a swatch and its name.
fn legend_entry_width(name: &str) -> i32 {
    34 + 8 * name.chars().count() as i32
}

/// The legend's entries, left to right, wrapped to lines `width` wide: each entry's
/// position (x, line).
fn legend_layout(legend: &[(String, RGBColor)], width: u32) -> Vec<(i32, u32)> {
    let (mut x, mut line) = (10, 0);
    legend
        .iter()
        .map(|(name, _)| {
            let w = legend_entry_width(name);
            if x > 10 && x + w > width as i32 - 10 {
                (x, line) = (10, line + 1);
            }
            let at = (x, line);
            x += w;
            at
        })
        .collect()
}

/// Whether the names under a panel's slots are too wide for them: then every other one
/// goes on a second line.
fn names_staggered(servers: &[String], panel_width: u32) -> bool {
    let slot = (panel_width.saturating_sub(70)) / servers.len().max(1) as u32;
    servers.iter().any(|name| 7 * name.chars().count() as u32 > slot)
}

/// The canvas with `lines` of text under the title, any legend entries, and panels
/// `panel_width` wide; also where a note under the legend goes (its y).
fn canvas_with<'a>(
    path: &'a Path,
    title: &str,
    lines: &[(String, RGBColor)],
    legend: &[(String, RGBColor)],
    panels: usize,
    panel_width: u32,
) -> Result<(Area<'a>, Vec<Area<'a>>, i32), Box<dyn std::error::Error>> {
    let (rows, cols) = grid(panels);
    // Wide enough for the title, the lines under it and the legend even with one panel.
    let widest_line = lines.iter().map(|(text, _)| 20 + 7 * text.chars().count() as u32).max().unwrap_or(0);
    let width = (panel_width * cols as u32).max(MIN_WIDTH).max(widest_line);
    // The legend: a swatch and a name per entry, left to right, on as many lines as it takes.
    let layout = legend_layout(legend, width);
    let extra = LEGEND_LINE * layout.last().map_or(0, |&(_, line)| line) + HEADER_LINE * lines.len() as u32;
    let header_height = HEADER + extra;
    let root = SVGBackend::new(path, (width, PANEL.1 * rows as u32 + header_height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(header_height);
    header.draw(&Text::new(title.to_string(), (10, 8), ("sans-serif", 20).into_font()))?;
    for (k, (text, colour)) in lines.iter().enumerate() {
        let y = 34 + (HEADER_LINE * k as u32) as i32;
        header.draw(&Text::new(text.clone(), (10, y), ("sans-serif", 12).into_font().color(colour)))?;
    }
    let legend_top = 44 + (HEADER_LINE * lines.len() as u32) as i32;
    for ((name, colour), &(x, line)) in legend.iter().zip(&layout) {
        let y = legend_top + (LEGEND_LINE * line) as i32;
        header.draw(&Rectangle::new([(x, y), (x + 14, y + 12)], colour.filled()))?;
        header.draw(&Text::new(name.clone(), (x + 20, y - 1), ("sans-serif", 14).into_font()))?;
    }
    let areas = body.split_evenly((rows, cols));
    Ok((root, areas, 62 + extra as i32))
}

/// An axis label: no trailing zeros, metric prefixes above 1,000 ("150k", "1.5M").
fn axis_label(y: f64) -> String {
    let trim = |x: f64, suffix: &str| {
        let t = format!("{x:.2}");
        let t = t.trim_end_matches('0').trim_end_matches('.');
        format!("{t}{suffix}")
    };
    match y.abs() {
        a if a >= 1e6 => trim(y / 1e6, "M"),
        a if a >= 1e3 => trim(y / 1e3, "k"),
        _ => trim(y, ""),
    }
}

/// Text centred on a point, its top (`VPos::Top`) or bottom there.
fn centred(size: u32, v: VPos, grey: bool) -> TextStyle<'static> {
    let colour = if grey { &GREY } else { &BLACK };
    TextStyle::from(("sans-serif", size).into_font()).color(colour).pos(Pos::new(HPos::Center, v))
}

/// The server names centred under their slots, one unit wide each from 0; `staggered`:
/// every other one a line lower, so long names do not run into each other.
fn name_slots<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    servers: &[String],
    staggered: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart.draw_series(servers.iter().enumerate().map(|(i, name)| {
        let dy = if staggered && i % 2 == 1 { 19 } else { 5 };
        EmptyElement::at((i as f64 + 0.5, 0.0)) + Text::new(name.clone(), (0, dy), centred(12, VPos::Top, false))
    }))?;
    Ok(())
}

/// `mark_load_bound`: a † after a value measured while the load generator was the limit
/// (see `output::load_bound`), and a note in the header saying so.
fn bars(r: &Results, path: &Path, title: &str, get: super::Getter, mark_load_bound: bool) -> DrawResult {
    let servers = r.config.servers();
    let (root, areas, note_y) = canvas(path, title, &header_lines(r), &servers, r.scenarios.len())?;
    let staggered = names_staggered(&servers, bar_panel_width(servers.len()));
    let bound = |f: &Figures| mark_load_bound && super::output::load_bound(&r.config, f);
    if r.scenarios.iter().any(|s| servers.iter().filter_map(|n| s.figures(n)).any(&bound)) {
        let note = format!(
            "†: CPU util under {:.0}% in a closed loop, the load generator was the limit: not comparable",
            super::output::LOAD_BOUND_UTIL * 100.0
        );
        root.draw(&Text::new(note, (10, note_y), ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90))))?;
    }
    for (s, area) in r.scenarios.iter().zip(&areas) {
        let values: Vec<(usize, f64)> = servers
            .iter()
            .enumerate()
            .filter_map(|(i, name)| Some((i, get(s.figures(name)?))))
            .filter(|(_, v)| v.is_finite())
            .collect();
        // Room above the tallest bar for its value and ratio.
        let top = values.iter().map(|(_, v)| *v).fold(0.0f64, f64::max).max(1e-9) * 1.3;
        let mut chart = ChartBuilder::on(area)
            .caption(s.scenario.label(), ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(if staggered { 36 } else { 22 })
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..servers.len().max(1) as f64, 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(5)
            .y_label_formatter(&|y| axis_label(*y))
            .light_line_style(WHITE)
            .draw()?;
        chart.draw_series(
            values
                .iter()
                .map(|&(i, v)| Rectangle::new([(i as f64 + 0.12, 0.0), (i as f64 + 0.88, v)], color(i).filled())),
        )?;
        name_slots(&mut chart, &servers, staggered)?;
        // The value over each bar, so the panel is read without the axis, and over the
        // others their ratio to the first server's.
        let first = values.iter().find(|(i, _)| *i == 0).map(|&(_, v)| v).filter(|&v| v > 0.0);
        chart.draw_series(values.iter().map(|&(i, v)| {
            let marked = s.figures(&servers[i]).is_some_and(&bound);
            let label = format!("{}{}", tick(v), if marked { "†" } else { "" });
            EmptyElement::at((i as f64 + 0.5, v)) + Text::new(label, (0, -3), centred(12, VPos::Bottom, false))
        }))?;
        if let Some(base) = first {
            chart.draw_series(values.iter().filter(|(i, _)| *i > 0).map(|&(i, v)| {
                let ratio = format!("{:.2}× {}", v / base, servers[0]);
                EmptyElement::at((i as f64 + 0.5, v)) + Text::new(ratio, (0, -17), centred(10, VPos::Bottom, true))
            }))?;
        }
        let missing = servers.iter().enumerate().filter(|(i, _)| !values.iter().any(|(j, _)| j == i));
        chart.draw_series(missing.map(|(i, name)| {
            let why = if s.engine(name).is_some_and(|e| e.failed.is_some()) { "failed" } else { "n/a" };
            EmptyElement::at((i as f64 + 0.5, 0.0)) + Text::new(why, (0, -3), centred(11, VPos::Bottom, true))
        }))?;
    }
    root.present()?;
    Ok(())
}

/// The three latency percentiles, light to dark: one bar each per server.
const PERCENTILES: [(&str, RGBColor, Getter); 3] = [
    ("p50", RGBColor(158, 202, 225), |f| f.p50_us),
    ("p99", RGBColor(49, 130, 189), |f| f.p99_us),
    ("p99.9", RGBColor(8, 48, 107), |f| f.p999_us),
];

/// The unit of a latency axis reaching `top_us`: µs below 2 ms, ms above, so the labels
/// are plain numbers (never "100.0k"); the divisor from µs and the name.
fn latency_unit(top_us: f64) -> (f64, &'static str) {
    if top_us >= 2000.0 {
        (1000.0, "ms")
    } else {
        (1.0, "µs")
    }
}

/// Small multiples again, and in each panel one group of three bars (p50, p99, p99.9)
/// per server, the servers named under their groups. One unit for the whole chart (the
/// largest value's), named in the title and on every panel's axis, so panels compare at
/// a glance. A scenario whose latency was not measured (wrk with pipelining) says so in
/// its panel.
fn latency(r: &Results, path: &Path) -> DrawResult {
    let servers = r.config.servers();
    let top_us = r
        .scenarios
        .iter()
        .flat_map(|s| servers.iter().filter_map(|name| s.figures(name)))
        .flat_map(|f| PERCENTILES.iter().map(|(_, _, get)| get(f)))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let (div, unit) = latency_unit(top_us);
    let title = format!("latency percentiles in {unit} (lower is better)");
    let legend: Vec<(String, RGBColor)> = PERCENTILES.iter().map(|(name, c, _)| (name.to_string(), *c)).collect();
    // Each group needs room for its name under it.
    let panel_width = PANEL.0.max(70 + 80 * servers.len() as u32);
    let lines = header_lines(r);
    let (root, areas, _) = canvas_with(path, &title, &lines, &legend, r.scenarios.len(), panel_width)?;
    let staggered = names_staggered(&servers, panel_width);
    let missing = r.scenarios.iter().any(|s| {
        servers
            .iter()
            .filter_map(|name| s.figures(name))
            .any(|f| PERCENTILES.iter().any(|(_, _, get)| !get(f).is_finite()))
    });
    if missing {
        let note = "n/a: not reported (wrk with pipelining; use --load-with duet)";
        let style = ("sans-serif", 13).into_font().color(&GREY);
        root.draw(&Text::new(note, (250, 43 + (HEADER_LINE * lines.len() as u32) as i32), style))?;
    }
    let n = servers.len().max(1) as f64;
    for (s, area) in r.scenarios.iter().zip(&areas) {
        let bars: Vec<(usize, usize, f64)> = servers
            .iter()
            .enumerate()
            .filter_map(|(i, name)| Some((i, s.figures(name)?)))
            .flat_map(|(i, f)| PERCENTILES.iter().enumerate().map(move |(k, (_, _, get))| (i, k, get(f))))
            .filter(|(_, _, v)| v.is_finite())
            .collect();
        let panel_top_us = bars.iter().map(|b| b.2).fold(0.0f64, f64::max);
        let top = (panel_top_us / div).max(1e-3) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(s.scenario.label(), ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(if staggered { 36 } else { 22 })
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..n, 0f64..top)?;
        let decimals = axis_decimals(top);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(6)
            .y_desc(unit)
            .y_label_formatter(&|y| format!("{y:.decimals$}"))
            .light_line_style(WHITE)
            .draw()?;
        let slot = |i: usize, k: usize| i as f64 + 0.14 + 0.24 * k as f64;
        chart.draw_series(bars.iter().map(|&(i, k, v)| {
            Rectangle::new([(slot(i, k), 0.0), (slot(i, k) + 0.22, v / div)], PERCENTILES[k].1.filled())
        }))?;
        // Each value over its bar in the axis's unit: p50 is often a sliver next to p99.9.
        chart.draw_series(bars.iter().map(|&(i, k, v)| {
            EmptyElement::at((slot(i, k) + 0.11, v / div))
                + Text::new(tick(v / div), (0, -2), centred(10, VPos::Bottom, false))
        }))?;
        name_slots(&mut chart, &servers, staggered)?;
        // A server with no percentiles says so over its group; a panel with none at all
        // says why in words.
        let grey = ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90));
        let measured: Vec<bool> = servers
            .iter()
            .map(|name| s.figures(name).is_some_and(|f| PERCENTILES.iter().any(|(_, _, get)| get(f).is_finite())))
            .collect();
        if !measured.contains(&true) {
            for (k, line) in
                ["latency n/a: not measured", "(wrk reports no percentiles with pipelining;", "use --load-with duet)"]
                    .iter()
                    .enumerate()
            {
                chart.draw_series(std::iter::once(
                    EmptyElement::at((0.06 * n, top * 0.7))
                        + Text::new(line.to_string(), (0, 16 * k as i32), grey.clone()),
                ))?;
            }
        } else {
            // A server that failed says so over its group; a percentile wrk did not
            // report (pipelining) is n/a in its slot.
            for (i, name) in servers.iter().enumerate() {
                let failed = s.engine(name).is_some_and(|e| e.failed.is_some());
                if failed || !measured[i] {
                    let why = if failed { "failed" } else { "n/a" };
                    let at = EmptyElement::at((i as f64 + 0.5, 0.0));
                    chart
                        .draw_series(std::iter::once(at + Text::new(why, (0, -3), centred(11, VPos::Bottom, true))))?;
                    continue;
                }
                for k in (0..PERCENTILES.len()).filter(|&k| !bars.iter().any(|b| b.0 == i && b.1 == k)) {
                    let at = EmptyElement::at((slot(i, k) + 0.11, 0.0));
                    chart.draw_series(std::iter::once(
                        at + Text::new("n/a", (0, -3), centred(10, VPos::Bottom, true)),
                    ))?;
                }
            }
        }
    }
    root.present()?;
    Ok(())
}

/// The line chart needs an active share, one depth and one body size (so the
/// connection count is the only thing that varies) and at least two connection counts.
fn by_connections_applies(r: &Results) -> bool {
    let c = &r.config;
    c.active.is_some() && c.depths.len() == 1 && c.body_sizes.len() == 1 && c.connections.len() >= 2
}

const LINE_CHART: (u32, u32) = (960, 540);
/// The legend's column, right of the plot.
const LEGEND_WIDTH: u32 = 250;

/// Server CPU µs per request against the total number of connections: one line per
/// engine, failures named in the legend, and (with a rate) the level at which the server
/// CPUs are saturated.
fn cpu_by_connections(r: &Results, path: &Path) -> DrawResult {
    let c = &r.config;
    let servers = c.servers();
    let share = c.active.unwrap_or(1.0);
    let lines: Vec<Vec<(f64, f64)>> = servers
        .iter()
        .map(|name| {
            r.scenarios
                .iter()
                .filter_map(|s| Some((s.scenario.total() as f64, s.figures(name)?.cpu_us_per_req)))
                .filter(|(_, y)| y.is_finite())
                .collect()
        })
        .collect();
    let x_max = r.scenarios.iter().map(|s| s.scenario.total()).max().unwrap_or(1) as f64;
    let x_min = r.scenarios.iter().map(|s| s.scenario.total()).min().unwrap_or(1).max(1) as f64;
    // Connection counts span decades (100 to 19,000): a log axis gives each its room.
    let (x_from, x_to) = (x_min / 1.25, x_max * 1.25);
    // A tick at each count measured.
    let mut counts: Vec<f64> = r.scenarios.iter().map(|s| s.scenario.total() as f64).collect();
    counts.sort_by(f64::total_cmp);
    counts.dedup();
    let y_data = lines.iter().flatten().map(|&(_, y)| y).fold(0.0f64, f64::max);
    // One CPU fully busy serving `rate` requests a second costs 1e6 / rate µs each: a
    // server that reaches it is saturated, and its line flattens there for that reason.
    let ceiling = c.rate.map(|rate| c.server_cpus.len().max(1) as f64 * 1e6 / rate);
    let shown_ceiling = ceiling.filter(|&v| v <= y_data * 1.5);
    let y_top = y_data.max(shown_ceiling.unwrap_or(0.0)).max(1e-3) * 1.15;

    let root = SVGBackend::new(path, LINE_CHART).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER);
    let (plot_area, legend) = body.split_horizontally(LINE_CHART.0 - LEGEND_WIDTH);
    let load = c.rate.map_or(String::from("closed loop"), |r| {
        format!("open loop at {} requests/s in total", HumanCount(r.round() as u64))
    });
    let cpus = match c.server_cpus.len() {
        1 => "1 CPU".to_string(),
        n => format!("{n} CPUs"),
    };
    header.draw(&Text::new(
        "Server CPU per request against connections held open (lower is better)",
        (16, 10),
        ("sans-serif", 20).into_font(),
    ))?;
    header.draw(&Text::new(
        format!("{}% of the connections active, {load}; server on {cpus}", share * 100.0),
        (16, 34),
        ("sans-serif", 14).into_font().color(&GREY),
    ))?;
    if let Some(mark) = quick_mark(c) {
        header.draw(&Text::new(mark, (16, 52), ("sans-serif", 12).into_font().color(&WARN)))?;
    }
    let mut chart = ChartBuilder::on(&plot_area)
        .margin(16)
        .margin_top(6)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d((x_from..x_to).log_scale().with_key_points(counts), 0f64..y_top)?;
    let decimals = axis_decimals(y_top);
    chart
        .configure_mesh()
        .x_desc("connections held open, active and idle (log scale)")
        .y_desc("server CPU µs per request")
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|x| HumanCount(x.round().max(0.0) as u64).to_string())
        .y_label_formatter(&|y| format!("{y:.decimals$}"))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    if let Some(level) = shown_ceiling {
        chart.draw_series(DashedLineSeries::new(
            [(x_from, level), (x_to, level)],
            6,
            4,
            RGBColor(120, 120, 120).stroke_width(1),
        ))?;
        // Just above the line, so the dashes do not cross the words.
        chart.draw_series(std::iter::once(
            EmptyElement::at((x_from * 1.05, level))
                + Text::new(
                    format!("CPU saturated: {} µs/request at this rate", tick(level)),
                    (0, -16),
                    ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
                ),
        ))?;
    }
    // The oldest engine last, on top: select's short line would hide under poll's.
    for (i, points) in lines.iter().enumerate().rev() {
        chart.draw_series(LineSeries::new(points.iter().copied(), color(i).stroke_width(3)))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color(i).filled())))?;
    }

    // The legend, outside the data: a swatch and a name per engine, and where it failed.
    let mut y = 40;
    legend.draw(&Text::new("engine", (10, y - 26), ("sans-serif", 15).into_font()))?;
    for (i, name) in servers.iter().enumerate() {
        legend.draw(&PathElement::new(vec![(10, y + 8), (40, y + 8)], color(i).stroke_width(3)))?;
        legend.draw(&Circle::new((25, y + 8), 4, color(i).filled()))?;
        legend.draw(&Text::new(name.clone(), (48, y), ("sans-serif", 15).into_font()))?;
        y += 22;
        let failure = legend_failure(r, name);
        if let Some(note) = failure {
            legend.draw(&Text::new(note, (48, y), ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90))))?;
            y += 20;
        }
        y += 8;
    }
    root.present()?;
    Ok(())
}

/// Decimals for axis labels up to `top`, enough to tell eight ticks apart.
fn axis_decimals(top: f64) -> usize {
    match top {
        t if t >= 20.0 => 0,
        t if t >= 2.0 => 1,
        _ => 2,
    }
}

/// What the legend says under an engine that failed somewhere: `FAILED: reason` when it
/// has no point at all, `FAILED from N: reason` from the first count it could not hold.
fn legend_failure(r: &Results, name: &str) -> Option<String> {
    let mut failures = r.scenarios.iter().filter_map(|s| Some((s, s.engine(name)?.failed.as_ref()?)));
    let (first, failure) = failures.next()?;
    if r.scenarios.iter().all(|s| s.figures(name).is_none()) {
        Some(format!("FAILED: {}", failure.reason))
    } else {
        Some(format!("FAILED from {}: {}", HumanCount(first.scenario.total() as u64), failure.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connections_chart_names_every_engine_its_axes_and_its_failures() {
        let r = crate::compare::fixture::ladder();
        assert!(by_connections_applies(&r));
        let dir = tempfile::tempdir().unwrap();
        let written = write(&r, dir.path()).unwrap();
        let path = dir.path().join("cpu_by_connections.svg");
        assert!(written.contains(&path), "{written:?}");
        let svg = std::fs::read_to_string(&path).unwrap();
        if let Ok(keep) = std::env::var("DUET_KEEP_CHART") {
            let _ = std::fs::copy(&path, keep);
        }
        // plotters writes each text on a line of its own.
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        for text in [
            "connections held open, active and idle (log scale)",
            "server CPU µs per request",
            "10% of the connections active, open loop at 5,000 requests/s in total; server on 1 CPU",
            "select",
            "poll",
            "epoll",
            "FAILED from 10,000: FD_SETSIZE",
            "FAILED: did not start",
            "10,000",
        ] {
            assert!(texts.contains(&text), "{text} missing");
        }
        // The rate's saturation level is drawn only when the data come near it.
        assert!(!svg.contains("CPU saturated"));
    }

    /// The texts of `file` drawn from `r` (plotters writes each text on a line of its own).
    fn chart_texts(r: &Results, file: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        write(r, dir.path()).unwrap();
        let svg = std::fs::read_to_string(dir.path().join(file)).unwrap();
        // To look at them: DUET_KEEP_CHARTS=DIR keeps a copy of each.
        if let Ok(keep) = std::env::var("DUET_KEEP_CHARTS") {
            let _ = std::fs::copy(dir.path().join(file), std::path::Path::new(&keep).join(file));
        }
        svg.lines().map(|l| l.trim().to_string()).collect()
    }

    /// epoll and uring, with duet at depth 1 (all percentiles, in ms) and wrk's
    /// pipelining at depth 16 (none).
    fn two_depths() -> Results {
        let mut r = crate::compare::fixture::ladder();
        r.config.engines = vec!["epoll".into(), "uring".into()];
        let figures = |rps: f64, p: [f64; 3]| Figures {
            requests_per_sec: rps,
            p50_us: p[0],
            p99_us: p[1],
            p999_us: p[2],
            cpu_us_per_req: 1e6 / rps,
            ..Figures::default()
        };
        let result = |engine: &str, median: Figures| crate::compare::EngineResult {
            engine: engine.into(),
            rounds: vec![median],
            median,
            failed: None,
        };
        let scenario = |depth| crate::compare::Scenario { connections: 16, depth, body_size: 13, idle: 0 };
        let nan = [f64::NAN; 3];
        r.scenarios = vec![
            crate::compare::ScenarioResult {
                scenario: scenario(1),
                processes: 1,
                engines: vec![
                    result("epoll", figures(100_000.0, [120.0, 2_740.0, 5_430.0])),
                    result("uring", figures(150_000.0, [90.0, 360.0, 3_760.0])),
                ],
            },
            crate::compare::ScenarioResult {
                scenario: scenario(16),
                processes: 1,
                engines: vec![result("epoll", figures(1e6, nan)), result("uring", figures(2e6, nan))],
            },
        ];
        r
    }

    #[test]
    fn the_latency_chart_has_a_bar_per_percentile_and_server_in_each_scenario() {
        let texts = chart_texts(&two_depths(), "latency.svg");
        let has = |t: &str| texts.iter().any(|x| x == t);
        // The legend names the percentiles, not the servers; the servers are under their groups.
        for t in ["p50", "p99", "p99.9", "epoll", "uring", "c=16 d=1 13 B", "c=16 d=16 13 B"] {
            assert!(has(t), "{t} missing: {texts:?}");
        }
        // Milliseconds where the panel reaches them, each bar's value over it.
        assert!(has("ms") && has("5.43") && has("0.12") && has("3.76"), "{texts:?}");
        assert!(!texts.iter().any(|t| t.ends_with('k')), "no metric prefixes on a latency axis: {texts:?}");
        // The depth-16 panel says why it has no bars.
        assert!(has("latency n/a: not measured"), "{texts:?}");
        assert!(has("n/a: not reported (wrk with pipelining; use --load-with duet)"), "{texts:?}");
    }

    /// One unit for the whole latency chart: a panel in the hundreds of µs next to one in
    /// ms is drawn in ms too, and every panel's axis says so.
    #[test]
    fn the_latency_chart_has_one_unit_named_in_its_title_and_on_every_panel() {
        let mut r = two_depths();
        let small = |engine: &str, p: [f64; 3]| crate::compare::EngineResult {
            engine: engine.into(),
            rounds: vec![],
            median: Figures { requests_per_sec: 1e5, p50_us: p[0], p99_us: p[1], p999_us: p[2], ..Figures::default() },
            failed: None,
        };
        r.scenarios[1].engines = vec![small("epoll", [105.0, 224.0, 452.0]), small("uring", [108.0, 191.0, 335.0])];
        let texts = chart_texts(&r, "latency.svg");
        let has = |t: &str| texts.iter().any(|x| x == t);
        assert!(has("latency percentiles in ms (lower is better)"), "{texts:?}");
        assert_eq!(texts.iter().filter(|t| *t == "ms").count(), 2, "both panels' axes: {texts:?}");
        assert!(!texts.iter().any(|t| t.contains("µs")), "{texts:?}");
        // The µs panel's values in ms.
        assert!(has("0.45") && has("0.11") && has("5.43"), "{texts:?}");
        // All in µs when nothing reaches 2 ms.
        r.scenarios.truncate(0);
        r.scenarios.push(crate::compare::ScenarioResult {
            scenario: crate::compare::Scenario { connections: 16, depth: 1, body_size: 13, idle: 0 },
            processes: 1,
            engines: vec![small("epoll", [105.0, 224.0, 452.0]), small("uring", [108.0, 191.0, 335.0])],
        });
        let texts = chart_texts(&r, "latency.svg");
        assert!(texts.iter().any(|t| t == "latency percentiles in µs (lower is better)"), "{texts:?}");
        assert!(texts.iter().any(|t| t == "452"), "{texts:?}");
    }

    /// Every small-multiples chart decodes its panel titles, idle connections included
    /// where there are some.
    #[test]
    fn each_chart_says_what_its_panel_titles_mean() {
        let key = "panels: c = connections, d = requests in flight on each (pipelining depth), then the response \
                   body size";
        let mut r = two_depths();
        r.config.active = None;
        for file in ["requests_per_sec.svg", "cpu_us_per_req.svg", "latency.svg"] {
            assert!(chart_texts(&r, file).iter().any(|t| t == key), "{file}");
        }
        r.scenarios[0].scenario.idle = 100;
        let texts = chart_texts(&r, "requests_per_sec.svg");
        let idle = format!("{key}; +N idle: idle keep-alive connections held open too");
        assert!(texts.contains(&idle), "{texts:?}");
        assert!(texts.iter().any(|t| t == "c=16 d=1 13 B +100 idle"), "{texts:?}");
        // With an active share, c counts the active ones.
        let texts = chart_texts(&crate::compare::fixture::ladder(), "latency.svg");
        assert!(texts.iter().any(|t| t.starts_with("panels: c = active connections, d = ")), "{texts:?}");
    }

    /// A comparison of one round (`--quick`) says in every chart that its figures are one
    /// short run each, with the noise such runs showed; one of several rounds does not.
    #[test]
    fn a_one_round_run_is_marked_quick_with_its_noise_in_every_chart() {
        let mut r = crate::compare::fixture::ladder();
        r.config.rounds = 1;
        r.config.duration = std::time::Duration::from_secs(1);
        let mark = "quick: 1 round of 1 s, noise ±30 % in req/s, ±10 % in CPU per request: compare with --rounds 3 \
                    or more";
        for file in ["requests_per_sec.svg", "cpu_us_per_req.svg", "latency.svg", "cpu_by_connections.svg"] {
            assert!(chart_texts(&r, file).iter().any(|t| t == mark), "{file}");
        }
        r.config.duration = std::time::Duration::from_millis(500);
        assert!(chart_texts(&r, "latency.svg").iter().any(|t| t.starts_with("quick: 1 round of 0.5 s, noise")));
        r.config.rounds = 3;
        for file in ["requests_per_sec.svg", "cpu_us_per_req.svg", "latency.svg", "cpu_by_connections.svg"] {
            assert!(!chart_texts(&r, file).iter().any(|t| t.starts_with("quick:")), "{file}");
        }
    }

    /// The charts drawn again from results.json are those of the run: the JSON read back
    /// writes the same JSON.
    #[test]
    fn results_read_back_from_json_are_the_results_written() {
        let mut over_veth = two_depths();
        over_veth.config.network = Some(crate::compare::netns::NetPath {
            server_ns: Default::default(),
            load_ns: Default::default(),
            impairments: crate::compare::netns::Impairments {
                loss_percent: Some(0.1),
                delay: Some(std::time::Duration::from_millis(1)),
            },
        });
        for r in [two_depths(), crate::compare::fixture::ladder(), over_veth] {
            let json = r.json();
            let back = Results::from_json("results.json", &json).unwrap();
            assert_eq!(back.json(), json);
        }
        // What decides the charts drawn: the ladder's line chart needs its totals back.
        let ladder = crate::compare::fixture::ladder();
        let back = Results::from_json("results.json", &ladder.json()).unwrap();
        assert_eq!(back.config.connections, ladder.config.connections);
        assert!(by_connections_applies(&back));
        let err = Results::from_json("x.json", "{}").unwrap_err();
        assert!(err.starts_with("x.json: not the results.json of duet compare"), "{err}");
    }

    #[test]
    fn the_bar_charts_label_each_value_and_its_ratio_to_the_first_server() {
        let texts = chart_texts(&two_depths(), "requests_per_sec.svg");
        let has = |t: &str| texts.iter().any(|x| x == t);
        for t in ["100.0k", "150.0k", "1.50× epoll", "1.00M", "2.00M", "2.00× epoll"] {
            assert!(has(t), "{t} missing: {texts:?}");
        }
        // Axis labels carry no trailing zeros.
        assert!(has("150k") || has("100k"), "{texts:?}");
        assert!(!has("1.00× epoll"), "no ratio of the first server to itself");
        assert_eq!(axis_label(150_000.0), "150k");
        assert_eq!(axis_label(2_500_000.0), "2.5M");
        assert_eq!(axis_label(0.25), "0.25");
        assert_eq!(axis_label(0.0), "0");
        assert_eq!(latency_unit(1999.0), (1.0, "µs"));
        assert_eq!(latency_unit(2000.0), (1000.0, "ms"));
    }

    #[test]
    fn the_cpu_chart_marks_figures_measured_while_the_load_generator_was_the_limit() {
        let mut r = two_depths();
        r.config.rate = None;
        for s in &mut r.scenarios {
            for e in &mut s.engines {
                e.median.cpu_util = if e.engine == "epoll" { 0.4 } else { 0.97 };
            }
        }
        let texts = chart_texts(&r, "cpu_us_per_req.svg");
        let has = |t: &str| texts.iter().any(|x| x == t);
        assert!(has("10.0†") && has("6.67"), "epoll marked, uring not: {texts:?}");
        assert!(texts.iter().any(|t| t.starts_with("†: CPU util under 60% in a closed loop")), "{texts:?}");
        // Requests per second are what they are: never marked.
        assert!(!chart_texts(&r, "requests_per_sec.svg").iter().any(|t| t.contains('†')));
        r.config.rate = Some(1000.0);
        assert!(!chart_texts(&r, "cpu_us_per_req.svg").iter().any(|t| t.contains('†')), "open loop");
    }

    #[test]
    fn one_connection_count_or_no_active_share_draws_no_line_chart() {
        let mut r = crate::compare::fixture::ladder();
        r.config.connections.truncate(1);
        assert!(!by_connections_applies(&r));
        let mut r = crate::compare::fixture::ladder();
        r.config.active = None;
        assert!(!by_connections_applies(&r));
    }

    #[test]
    fn twenty_servers_get_their_own_colours_and_the_ablations_room_and_legend_lines() {
        let servers: Vec<String> = [
            "uring",
            "uring:no-direct",
            "uring:no-ring-fd",
            "uring:no-flat-sq",
            "uring:no-send",
            "uring:no-bundle",
            "uring:no-inc",
            "uring:no-sendfile",
            "uring:zc",
            "uring:splice",
            "uring:none",
            "epoll",
            "floor-epoll",
            "floor-uring",
            "nginx",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let colours: Vec<RGBColor> = (0..20).map(color).collect();
        for (i, c) in colours.iter().enumerate() {
            assert!(!colours[..i].contains(c), "server {i} shares a colour");
        }
        // Panels widen with the servers; long names alternate between two lines.
        let width = bar_panel_width(servers.len());
        assert!(width >= 70 + 64 * 10 && bar_panel_width(2) == PANEL.0);
        assert!(names_staggered(&servers, width));
        assert!(!names_staggered(&["epoll".into(), "uring".into()], bar_panel_width(2)));
        // The legend wraps inside the canvas rather than running off its edge.
        let legend: Vec<(String, RGBColor)> = servers.iter().map(|s| (s.clone(), color(0))).collect();
        let layout = legend_layout(&legend, MIN_WIDTH);
        for ((name, _), &(x, _)) in legend.iter().zip(&layout) {
            assert!(x + legend_entry_width(name) <= MIN_WIDTH as i32 - 10, "{name} at {x}");
        }
        assert!(layout.last().unwrap().1 >= 1, "{layout:?}");
        assert_eq!(legend_layout(&legend[..2], MIN_WIDTH), [(10, 0), (10 + legend_entry_width("uring"), 0)]);

        // Drawn: every server named in every chart.
        let mut r = two_depths();
        r.config.engines = servers.clone();
        for s in &mut r.scenarios {
            let first = s.engines[0].clone();
            s.engines = servers
                .iter()
                .map(|name| crate::compare::EngineResult { engine: name.clone(), ..first.clone() })
                .collect();
        }
        for file in ["requests_per_sec.svg", "cpu_us_per_req.svg", "latency.svg"] {
            let texts = chart_texts(&r, file);
            for name in &servers {
                assert!(texts.iter().any(|t| t == name), "{name} missing from {file}");
            }
        }
    }

    #[test]
    fn panels_go_three_across() {
        assert_eq!(grid(0), (1, 1));
        assert_eq!(grid(1), (1, 1));
        assert_eq!(grid(2), (1, 2));
        assert_eq!(grid(6), (2, 3));
        assert_eq!(grid(7), (3, 3));
    }

    #[test]
    fn labels_keep_three_significant_digits_below_a_thousand() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(0.455), "0.46");
        assert_eq!(tick(10.81), "10.8");
        assert_eq!(tick(11.06), "11.1");
        assert_eq!(tick(226.7), "227");
        assert_eq!(tick(1_530_000.0), "1.53M");
    }
}
