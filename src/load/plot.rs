//! Latency plots as SVG, drawn with `plotters` (SVG backend): latency over time (p50, p99,
//! max per second) and the latency by percentile, its axis labelled 50 / 90 / 99 / 99.9 /
//! 99.99 (log scale of the nines), latencies on a log axis with round ticks (issue 24).

use hdrhistogram::Histogram;
use plotters::coord::combinators::BindKeyPoints;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// The by-percentile axis: x is the number of nines (−log10(1 − q)), ticks only at the
/// percentiles of [`PERCENTILES`], each labelled as a percentile.
struct NinesAxis {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for NinesAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

impl ValueFormatter<f64> for NinesAxis {
    fn format(value: &f64) -> String {
        percentile_label(*value)
    }
}

/// A plot is written as SVG: a file named otherwise (`run.png`) would hold SVG under a name
/// that lies about it, so it is refused before the run rather than after it.
pub fn check_path(path: &std::path::Path) -> Result<(), String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("svg") => Ok(()),
        _ => Err(format!(
            "--plot {}: plots are written as SVG; name the file .svg",
            path.display()
        )),
    }
}

const W: u32 = 820;
const H: u32 = 340;
/// The percentiles the by-percentile axis is labelled with, as nines (x = −log10(1 − q)).
const PERCENTILES: [f64; 6] = [0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999];
/// Round latency ticks (ms): 1, 2, 5 of each decade.
fn round_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi * 10.0 {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if t >= lo && t <= hi {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

fn ms_label(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn nines(q: f64) -> f64 {
    -(1.0 - q).log10()
}

fn percentile_label(x: f64) -> String {
    let p = 100.0 - 100.0 * 10f64.powf(-x);
    let s = format!("{p:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Both charts, one above the other, in one SVG document.
pub fn svg(title: &str, total: &Histogram<u64>, per_second: &[Histogram<u64>]) -> String {
    let mut out = String::new();
    if let Err(e) = draw(&mut out, title, total, per_second) {
        // A plot is a convenience of the report: a drawing error leaves a note, not a failed run.
        tracing::warn!(error = %e, "load: plot not drawn");
    }
    out
}

type Drawn = Result<(), Box<dyn std::error::Error>>;

/// One line of a chart: name, colour, (x, latency ms) points.
type Line<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

fn draw(
    out: &mut String,
    title: &str,
    total: &Histogram<u64>,
    per_second: &[Histogram<u64>],
) -> Drawn {
    let ms = |us: u64| (us.max(1) as f64) / 1000.0;
    let over_time: Vec<Line<'_>> = [
        ("p50", RGBColor(0x1f, 0x77, 0xb4), Some(0.5)),
        ("p99", RGBColor(0xff, 0x7f, 0x0e), Some(0.99)),
        ("max", RGBColor(0xd6, 0x27, 0x28), None),
    ]
    .into_iter()
    .map(|(name, color, q)| {
        let points = per_second
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(|(s, h)| {
                let v = q.map_or(h.max(), |q| h.value_at_quantile(q));
                (s as f64 + 0.5, ms(v))
            })
            .collect();
        (name, color, points)
    })
    .collect();
    // The percentile curve up to the last percentile the run has samples for.
    let len = total.len().max(1) as f64;
    let x_max = nines(1.0 - 1.0 / len).clamp(2.0, 5.0);
    let by_percentile: Vec<(f64, f64)> = (0..=600)
        .map(|i| 0.301 + (x_max - 0.301) * f64::from(i) / 600.0)
        .map(|x| (x, ms(total.value_at_quantile(1.0 - 10f64.powf(-x)))))
        .collect();

    let all_y = over_time
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .chain(by_percentile.iter().map(|p| p.1));
    let (y_lo, y_hi) = all_y.fold((f64::MAX, 0.001f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let y_lo = if y_lo == f64::MAX { 0.001 } else { y_lo };
    // Whole decades around the data, so the round ticks fall inside.
    let y_lo = 10f64.powf(y_lo.log10().floor());
    let y_hi = 10f64.powf(y_hi.log10().ceil()).max(y_lo * 10.0);
    let seconds = per_second.len().max(1) as f64;

    let root = SVGBackend::with_string(out, (W, 2 * H)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(H);

    let mut chart = ChartBuilder::on(&top)
        .caption(format!("{title}: latency over time"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(
            0f64..seconds,
            (y_lo..y_hi)
                .log_scale()
                .with_key_points(round_ticks(y_lo, y_hi)),
        )?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc("latency (ms)")
        .y_label_formatter(&|v| ms_label(*v))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (name, color, points) in over_time {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let key_points: Vec<f64> = PERCENTILES
        .iter()
        .map(|&q| nines(q))
        .filter(|&x| x <= x_max + 1e-9)
        .collect();
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            format!("{title}: latency by percentile"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(
            NinesAxis {
                inner: (0.301f64..x_max).into(),
                ticks: key_points,
            },
            (y_lo..y_hi)
                .log_scale()
                .with_key_points(round_ticks(y_lo, y_hi)),
        )?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .y_label_formatter(&|v| ms_label(*v))
        .draw()?;
    let green = RGBColor(0x2c, 0xa0, 0x2c);
    chart.draw_series(LineSeries::new(by_percentile, green.stroke_width(2)))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_path, ms_label, percentile_label, round_ticks};
    use std::path::Path;

    #[test]
    fn only_svg_file_names_are_taken() {
        assert!(check_path(Path::new("/tmp/run.svg")).is_ok());
        assert!(check_path(Path::new("run.SVG")).is_ok());
        for bad in ["/tmp/run.png", "run", "run.svg.txt"] {
            let err = check_path(Path::new(bad)).unwrap_err();
            assert!(err.contains(bad) && err.contains(".svg"), "{err}");
        }
    }

    #[test]
    fn axes_are_labelled_in_round_figures() {
        let labels: Vec<String> = [0.5, 0.9, 0.99, 0.999, 0.9999]
            .iter()
            .map(|q: &f64| percentile_label(-(1.0 - q).log10()))
            .collect();
        assert_eq!(labels, ["50", "90", "99", "99.9", "99.99"]);
        assert_eq!(round_ticks(0.1, 100.0).len(), 10);
        assert_eq!(ms_label(0.5), "0.5");
        assert_eq!(ms_label(20.0), "20");
    }
}
