//! SVG charts for `--out`: req/s and CPU per request per scenario (engines side by
//! side), and latency percentile curves.

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

fn bars(r: &Results, path: &Path, title: &str, get: super::Getter) -> Result<(), Box<dyn std::error::Error>> {
    let engines = &r.config.servers();
    let labels: Vec<String> = r.scenarios.iter().map(|s| s.scenario.label()).collect();
    let top = r
        .scenarios
        .iter()
        .flat_map(|s| s.engines.iter().map(|e| get(&e.median)))
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    let width = (160 * labels.len().max(1) as u32 + 160).max(640);
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..labels.len() as f64, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_label_formatter(&|y| super::output::metric(*y))
        .x_labels(labels.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 1e-6 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()?;
    let n = engines.len().max(1) as f64;
    let bar = 0.8 / n;
    for (ei, engine) in engines.iter().enumerate() {
        let c = color(ei);
        let rects: Vec<Rectangle<(f64, f64)>> = r
            .scenarios
            .iter()
            .enumerate()
            .filter_map(|(si, s)| {
                let v = get(&s.engine(engine)?.median);
                let x0 = si as f64 + 0.1 + bar * ei as f64;
                v.is_finite().then(|| Rectangle::new([(x0, 0.0), (x0 + bar * 0.95, v)], c.filled()))
            })
            .collect();
        chart
            .draw_series(rects)?
            .label(engine.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
    }
    draw_legend(&mut chart)?;
    root.present()?;
    Ok(())
}

fn latency(r: &Results, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let points = |f: &Figures| -> Vec<(f64, f64)> {
        [(0.0, f.p50_us), (1.0, f.p99_us), (2.0, f.p999_us)]
            .into_iter()
            .filter(|(_, y)| y.is_finite() && *y > 0.0)
            .collect()
    };
    let all: Vec<f64> =
        r.scenarios.iter().flat_map(|s| &s.engines).flat_map(|e| points(&e.median)).map(|(_, y)| y).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).clamp(1.0, 1e9) / 1.5;
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0) * 1.5;
    let root = SVGBackend::new(path, (720, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("latency percentiles, µs (log scale)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.2f64..2.2f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(3)
        .y_label_formatter(&|y| super::output::metric(*y))
        .x_label_formatter(&|x| match x.round() as i64 {
            0 => "p50".into(),
            1 => "p99".into(),
            2 => "p99.9".into(),
            _ => String::new(),
        })
        .draw()?;
    let styles = [ShapeStyle::from(&BLACK).stroke_width(2), ShapeStyle::from(&BLACK).stroke_width(1)];
    for (si, s) in r.scenarios.iter().enumerate() {
        for (ei, e) in s.engines.iter().enumerate() {
            let c = color(ei).mix(1.0 - 0.5 * (si as f64 / r.scenarios.len().max(1) as f64));
            let style = ShapeStyle { color: c, filled: false, stroke_width: styles[si % 2].stroke_width };
            chart
                .draw_series(LineSeries::new(points(&e.median), style))?
                .label(format!("{} {}", e.engine, s.scenario.label()))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
        }
    }
    draw_legend(&mut chart)?;
    root.present()?;
    Ok(())
}

/// The legend every chart uses: upper left, on a translucent white box.
fn draw_legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}
