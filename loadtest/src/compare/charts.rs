//! SVG charts for `--out`: req/s, CPU per request and latency percentiles, as small
//! multiples (one panel per scenario, the servers in the same colours in every panel);
//! and for a ladder over several connection counts, one line chart of server CPU per
//! request against the number of connections.

use super::{Figures, Results};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// Writes the charts into `dir` and returns their paths.
pub fn write(r: &Results, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for (file, title, get) in [
        ("requests_per_sec.svg", "requests per second (higher is better)", (|f| f.requests_per_sec) as super::Getter),
        ("cpu_us_per_req.svg", "server CPU µs per request (lower is better)", |f: &Figures| f.cpu_us_per_req),
    ] {
        let path = dir.join(file);
        bars(r, &path, title, get).map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
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

/// The canvas: a title, the legend strip of `servers`, and one area per scenario.
fn canvas<'a>(
    path: &'a Path,
    title: &str,
    servers: &[String],
    panels: usize,
) -> Result<(Area<'a>, Vec<Area<'a>>), Box<dyn std::error::Error>> {
    let (rows, cols) = grid(panels);
    // Wide enough for the title and the legend even with one panel.
    let size = ((PANEL.0 * cols as u32).max(MIN_WIDTH), PANEL.1 * rows as u32 + HEADER);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER);
    header.draw(&Text::new(title.to_string(), (10, 8), ("sans-serif", 20).into_font()))?;
    // The legend: a swatch and a name per server, left to right.
    let mut x = 10;
    for (i, server) in servers.iter().enumerate() {
        header.draw(&Rectangle::new([(x, 44), (x + 14, 56)], color(i).filled()))?;
        header.draw(&Text::new(server.clone(), (x + 20, 43), ("sans-serif", 14).into_font()))?;
        x += 34 + 8 * server.chars().count() as i32;
    }
    let areas = body.split_evenly((rows, cols));
    Ok((root, areas))
}

fn bars(r: &Results, path: &Path, title: &str, get: super::Getter) -> DrawResult {
    let servers = r.config.servers();
    let (root, areas) = canvas(path, title, &servers, r.scenarios.len())?;
    for (s, area) in r.scenarios.iter().zip(&areas) {
        let values: Vec<(usize, f64)> = servers
            .iter()
            .enumerate()
            .filter_map(|(i, name)| Some((i, get(s.figures(name)?))))
            .filter(|(_, v)| v.is_finite())
            .collect();
        let top = values.iter().map(|(_, v)| *v).fold(0.0f64, f64::max).max(1e-9) * 1.2;
        let mut chart = ChartBuilder::on(area)
            .caption(s.scenario.label(), ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(6)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..servers.len().max(1) as f64, 0f64..top)?;
        chart.configure_mesh().disable_x_mesh().x_labels(0).y_labels(5).y_label_formatter(&|y| tick(*y)).draw()?;
        chart.draw_series(
            values
                .iter()
                .map(|&(i, v)| Rectangle::new([(i as f64 + 0.1, 0.0), (i as f64 + 0.9, v)], color(i).filled())),
        )?;
        // The value over each bar, so the panel is read without the axis.
        chart.draw_series(
            values
                .iter()
                .map(|&(i, v)| Text::new(tick(v), (i as f64 + 0.15, v * 1.08), ("sans-serif", 11).into_font())),
        )?;
    }
    root.present()?;
    Ok(())
}

fn latency(r: &Results, path: &Path) -> DrawResult {
    let servers = r.config.servers();
    let title = "latency percentiles p50 / p99 / p99.9, µs (lower is better)";
    let (root, areas) = canvas(path, title, &servers, r.scenarios.len())?;
    let points = |f: &Figures| -> Vec<(f64, f64)> {
        [(0.0, f.p50_us), (1.0, f.p99_us), (2.0, f.p999_us)].into_iter().filter(|(_, y)| y.is_finite()).collect()
    };
    for (s, area) in r.scenarios.iter().zip(&areas) {
        let top = servers
            .iter()
            .filter_map(|name| s.figures(name))
            .flat_map(points)
            .map(|(_, y)| y)
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(s.scenario.label(), ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(22)
            .y_label_area_size(52)
            .build_cartesian_2d(-0.15f64..2.15f64, 0f64..top)?;
        chart
            .configure_mesh()
            .x_labels(3)
            .y_labels(5)
            .y_label_formatter(&|y| tick(*y))
            .x_label_formatter(&|x| match x.round() as i64 {
                0 => "p50".into(),
                1 => "p99".into(),
                2 => "p99.9".into(),
                _ => String::new(),
            })
            .draw()?;
        for (i, name) in servers.iter().enumerate() {
            let Some(f) = s.figures(name) else { continue };
            let style = color(i).stroke_width(2);
            chart.draw_series(LineSeries::new(points(f), style))?;
            chart.draw_series(points(f).into_iter().map(|p| Circle::new(p, 3, color(i).filled())))?;
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
        format!("open loop at {} requests/s in total", super::output::thousands(r.round() as usize))
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
        (16, 38),
        ("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
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
        .x_label_formatter(&|x| super::output::thousands(x.round().max(0.0) as usize))
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
        Some(format!("FAILED from {}: {}", super::output::thousands(first.scenario.total()), failure.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connections_chart_names_every_engine_its_axes_and_its_failures() {
        let r = crate::compare::fixture::ladder();
        assert!(by_connections_applies(&r));
        let dir = std::env::temp_dir().join(format!("duet-chart-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let written = write(&r, &dir).unwrap();
        let path = dir.join("cpu_by_connections.svg");
        assert!(written.contains(&path), "{written:?}");
        let svg = std::fs::read_to_string(&path).unwrap();
        if let Ok(keep) = std::env::var("DUET_KEEP_CHART") {
            let _ = std::fs::copy(&path, keep);
        }
        let _ = std::fs::remove_dir_all(&dir);
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
