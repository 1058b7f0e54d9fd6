//! Latency plots as SVG: latency over time (p50, p99, max per second) and the latency by
//! percentile (log scale: 50, 90, 99, 99.9, 99.99 …). Plain SVG lines, no plotting crate: two
//! charts of polylines are all there is.

use std::fmt::Write;

use hdrhistogram::Histogram;

const W: f64 = 760.0;
const H: f64 = 300.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 30.0;
const PLOT_W: f64 = W - LEFT - 20.0;
const PLOT_H: f64 = H - TOP - 50.0;

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
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

/// Both charts, one above the other, in one SVG document.
pub fn svg(title: &str, total: &Histogram<u64>, per_second: &[Histogram<u64>]) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let over_time: Vec<Series<'_>> = [("p50", "#1f77b4", 0.5), ("p99", "#ff7f0e", 0.99)]
        .into_iter()
        .map(|(name, color, q)| Series {
            name,
            color,
            points: per_second
                .iter()
                .enumerate()
                .filter(|(_, h)| !h.is_empty())
                .map(|(s, h)| (s as f64, ms(h.value_at_quantile(q))))
                .collect(),
        })
        .chain(std::iter::once(Series {
            name: "max",
            color: "#d62728",
            points: per_second
                .iter()
                .enumerate()
                .filter(|(_, h)| !h.is_empty())
                .map(|(s, h)| (s as f64, ms(h.max())))
                .collect(),
        }))
        .collect();
    // x = number of nines: 50% → 0.301, 90% → 1, 99% → 2, 99.9% → 3 …
    let nines = |q: f64| -(1.0 - q).log10();
    let by_percentile = vec![Series {
        name: "latency",
        color: "#2ca02c",
        points: (0..=500)
            .map(|i| 0.5 + 0.5 * (1.0 - 10f64.powf(-(i as f64) / 100.0)))
            .filter(|q| *q < 1.0)
            .map(|q| (nines(q), ms(total.value_at_quantile(q))))
            .collect(),
    }];
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" font-family="sans-serif" font-size="12">"#,
        2.0 * H
    );
    let _ = write!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    chart(
        &mut out,
        0.0,
        &format!("{title}: latency over time"),
        "seconds",
        &over_time,
        |x| format!("{x:.0}"),
    );
    chart(
        &mut out,
        H,
        &format!("{title}: latency by percentile"),
        "percentile",
        &by_percentile,
        |x| format!("{}", 100.0 - 100.0 * 10f64.powf(-x)),
    );
    out.push_str("</svg>\n");
    out
}

fn chart(
    out: &mut String,
    y0: f64,
    title: &str,
    x_label: &str,
    series: &[Series<'_>],
    x_tick: impl Fn(f64) -> String,
) {
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(1.0_f64, f64::max);
    let y_max = all.map(|p| p.1).fold(0.001_f64, f64::max) * 1.1;
    let px = |x: f64| LEFT + x / x_max * PLOT_W;
    let py = |y: f64| y0 + TOP + PLOT_H - y / y_max * PLOT_H;
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="{}" font-size="14">{}</text>"#,
        y0 + 18.0,
        escape(title)
    );
    let _ = write!(
        out,
        r#"<rect x="{LEFT}" y="{}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="grey"/>"#,
        y0 + TOP
    );
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{y:.2} ms</text>"#,
            LEFT - 4.0,
            py(y) + 4.0
        );
        let x = x_max * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            px(x),
            y0 + TOP + PLOT_H + 16.0,
            x_tick(x)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#,
        LEFT + PLOT_W / 2.0,
        y0 + TOP + PLOT_H + 34.0
    );
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            s.color,
            points.join(" ")
        );
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" fill="{}">{}</text>"#,
            LEFT + 10.0 + 60.0 * i as f64,
            y0 + TOP + 14.0,
            s.color,
            s.name
        );
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::check_path;
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
}
