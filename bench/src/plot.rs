//! `corekv-bench compare --plot FILE.svg`: throughput against p99 latency over a
//! sweep of open-loop offered rates, one curve per system; `sweep-contention
//! --plot FILE.svg`: committed transactions per second against θ, one curve per
//! policy and transaction size. Drawn with plotters' SVG backend (no font
//! libraries: text is SVG `<text>` the viewer renders).

use std::path::Path;

use plotters::prelude::*;

/// One labelled curve: (x, y) points in x order (for `compare`, achieved ops/s
/// and p99 ms per offered rate).
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// The system's label.
    pub label: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

/// A chart's title and axes; the y axis is logarithmic.
#[derive(Debug, Clone, Copy)]
pub struct Axes<'a> {
    /// The caption.
    pub title: &'a str,
    /// The x axis' description.
    pub x: &'a str,
    /// The y axis' description.
    pub y: &'a str,
    /// Where the x axis starts (its end is the largest x plus 5%).
    pub x_min: f64,
}

/// Draws `curves` into the SVG file at `path`; p99 on a log axis, as it spans
/// orders of magnitude between an idle and a saturated system.
pub fn draw(path: &Path, title: &str, curves: &[Curve]) -> Result<(), String> {
    let axes = Axes { title, x: "throughput (ops/s)", y: "p99 latency (ms, log)", x_min: 0.0 };
    draw_log_y(path, axes, curves)
}

/// Draws `curves` into the SVG file at `path` on a logarithmic y axis.
pub fn draw_log_y(path: &Path, axes: Axes<'_>, curves: &[Curve]) -> Result<(), String> {
    let points = curves.iter().flat_map(|c| c.points.iter());
    let x_max = points.clone().map(|p| p.0).fold(axes.x_min + 1e-9, f64::max) * 1.05;
    let y_min = points.clone().map(|p| p.1).filter(|y| *y > 0.0).fold(f64::INFINITY, f64::min);
    let y_max = points.map(|p| p.1).fold(0.0f64, f64::max);
    let (y_min, y_max) = if y_min.is_finite() && y_max > 0.0 { (y_min / 1.5, y_max * 1.5) } else { (0.01, 10.0) };
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(axes.title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(axes.x_min..x_max, (y_min..y_max).log_scale())
        .map_err(|e| fail(&e))?;
    chart.configure_mesh().x_desc(axes.x).y_desc(axes.y).draw().map_err(|e| fail(&e))?;
    for (i, curve) in curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = curve.points.iter().copied().filter(|p| p.1 > 0.0).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(curve.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(|e| fail(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_curve_per_system() {
        let path = std::env::temp_dir().join(format!("corekv-plot-test-{}.svg", std::process::id()));
        let curves = vec![
            Curve { label: "etcd, 3 members".into(), points: vec![(1000.0, 5.0), (2000.0, 9.0), (3000.0, 300.0)] },
            Curve { label: "corekv, 3 nodes".into(), points: vec![(2000.0, 2.0), (6000.0, 4.0), (9000.0, 30.0)] },
        ];
        draw(&path, "put: throughput vs p99", &curves).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("etcd, 3 members") && svg.contains("corekv, 3 nodes"), "a legend entry per system");
        for color in ["#1F77B4", "#D62728"] {
            let line = svg.lines().filter(|l| l.contains("<polyline") && l.contains(color)).count();
            assert!(line >= 2, "a line and its legend swatch in {color}: {line}");
        }
    }
}
