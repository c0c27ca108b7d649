//! SVG charts for `--out`: req/s, CPU per request and latency percentiles, as small
//! multiples (one panel per scenario, the servers in the same colours in every panel).

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
            .filter_map(|(i, name)| Some((i, get(&s.engine(name)?.median))))
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
        let top =
            s.engines.iter().flat_map(|e| points(&e.median)).map(|(_, y)| y).fold(0.0f64, f64::max).max(1.0) * 1.15;
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
            let Some(e) = s.engine(name) else { continue };
            let style = color(i).stroke_width(2);
            chart.draw_series(LineSeries::new(points(&e.median), style))?;
            chart.draw_series(points(&e.median).into_iter().map(|p| Circle::new(p, 3, color(i).filled())))?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
