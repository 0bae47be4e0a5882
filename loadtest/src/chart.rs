//! An SVG chart of a set of runs: one small bar chart per figure (latency p50 and p99, server
//! RSS, server CPU, bytes per event, deliveries per second), one bar per run.
//!
//! plotters' SVG backend without font libraries: text is emitted as SVG `<text>` and sized by
//! plotters' built-in estimate, so nothing here needs system fonts.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

/// Pixel size of the whole chart.
const SIZE: (u32, u32) = (1200, 760);

/// Bar colours, one per run (cycled).
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

type Figure = (&'static str, fn(&Report) -> f64);

/// The panels, in reading order.
const FIGURES: [Figure; 6] = [
    ("Latency p50 (ms)", |r| r.delivery.latency_ms.p50),
    ("Latency p99 (ms)", |r| r.delivery.latency_ms.p99),
    ("Server RSS peak (MB)", |r| r.resources.server_rss_mb_peak),
    ("Server CPU (% of a core)", |r| r.resources.server_cpu_pct),
    ("Wire bytes per event", |r| r.wire.total_per_event),
    ("Deliveries per second", |r| r.delivery.per_second),
];

/// A chart could not be written.
#[derive(Debug)]
pub struct ChartError(String);

impl std::fmt::Display for ChartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot draw the chart: {}", self.0)
    }
}

impl std::error::Error for ChartError {}

/// Writes the chart of `reports` to `path` (SVG), titled `title`.
pub fn write_svg(path: &Path, title: &str, reports: &[Report]) -> Result<(), ChartError> {
    let fail = |e: &dyn std::fmt::Display| ChartError(e.to_string());
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| fail(&e))?;
    let labels: Vec<String> = reports
        .iter()
        .map(|r| format!("{}/{}", r.target.as_str(), r.transport.as_str()))
        .collect();
    for (area, (name, value)) in root.split_evenly((2, 3)).iter().zip(FIGURES) {
        panel(area, name, value, reports, &labels).map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    name: &str,
    value: fn(&Report) -> f64,
    reports: &[Report],
    labels: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let values: Vec<f64> = reports.iter().map(value).collect();
    let top = values.iter().copied().fold(0.0_f64, f64::max).max(1e-3) * 1.2;
    let bars = reports.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(name, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d((0..bars - 1).into_segmented(), 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()?;
    for (i, &v) in values.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart.draw_series(
            Histogram::vertical(&chart)
                .style(colour.filled())
                .margin(12)
                .data([(i, v)]),
        )?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{v:.1}"),
            (SegmentValue::CenterOf(i), v + top * 0.03),
            ("sans-serif", 12),
        )))?;
    }
    Ok(())
}
