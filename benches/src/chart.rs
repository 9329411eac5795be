//! The benchmarks' charts, drawn with plotters into SVG files: ratios against a peer as bars
//! on a log axis, latency CDFs with the tail spread out, and shares per worker.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

/// The colours series take, in order.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x7f, 0x7f, 0x7f),
];

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One bar of [`ratio_bars`].
#[derive(Debug, Clone)]
pub struct Ratio {
    /// What is compared.
    pub label: String,
    /// How many times better ours is (1 = even).
    pub ratio: f64,
    /// The ratio the budget asks for, if any (a black tick).
    pub target: Option<f64>,
    /// Whether the budget is met (red when not).
    pub met: Option<bool>,
}

fn canvas(path: &Path, size: (u32, u32)) -> DrawingArea<SVGBackend<'_>, Shift> {
    let area = SVGBackend::new(path, size).into_drawing_area();
    let _ = area.fill(&WHITE);
    area
}

/// Horizontal bars from 1x to each ratio on a log axis (0.1x to 100x), with the budget as a
/// tick, in `path`.
///
/// # Errors
/// When the file cannot be written.
pub fn ratio_bars(path: &Path, title: &str, bars: &[Ratio]) -> Result {
    let n = bars.len().max(1);
    let area = canvas(path, (900, 60 + 24 * n as u32));
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 15))
        .margin(10)
        .x_label_area_size(28)
        .y_label_area_size(330)
        .build_cartesian_2d((0.1f64..100.0).log_scale(), (0..n).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_labels(4)
        .x_label_formatter(&|v| format!("{v}x"))
        .y_label_formatter(&|s| match s {
            // The first bar at the top.
            SegmentValue::CenterOf(k) if *k < n => bars
                .get(n - 1 - k)
                .map_or(String::new(), |b| b.label.clone()),
            _ => String::new(),
        })
        .y_labels(n)
        .draw()?;
    let row = |i: usize| n - 1 - i;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let i = row(i);
        let colour = if b.met == Some(false) {
            PALETTE[1]
        } else {
            PALETTE[0]
        };
        let (from, to) = (1.0f64.min(b.ratio), 1.0f64.max(b.ratio));
        let mut bar = Rectangle::new(
            [
                (from.clamp(0.1, 100.0), SegmentValue::Exact(i)),
                (to.clamp(0.1, 100.0), SegmentValue::Exact(i + 1)),
            ],
            colour.filled(),
        );
        bar.set_margin(3, 3, 0, 0);
        bar
    }))?;
    chart.draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
        let (i, t) = (row(i), b.target?.clamp(0.1, 100.0));
        Some(PathElement::new(
            vec![(t, SegmentValue::Exact(i)), (t, SegmentValue::Exact(i + 1))],
            BLACK.stroke_width(2),
        ))
    }))?;
    area.present()?;
    Ok(())
}

/// Latency CDFs, one line a series of sorted latencies (µs): time on a log axis (0.1 ms to
/// 10 s), quantiles on a "nines" axis (0, 0.9, 0.99, 0.999), so that the tail, where series
/// differ, gets the room. In `path`.
///
/// # Errors
/// When the file cannot be written.
pub fn latency_cdf(path: &Path, title: &str, series: &[(&str, &[u64])]) -> Result {
    let area = canvas(path, (760, 440));
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 15))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d((0.1f64..10_000.0).log_scale(), 0f64..3.0)?;
    chart
        .configure_mesh()
        .x_desc("ms")
        .x_label_formatter(&|ms| format!("{ms}"))
        .y_labels(4)
        .y_label_formatter(&|nines| format!("{}", 1.0 - 10f64.powf(-nines)))
        .draw()?;
    for (i, (name, sorted)) in series.iter().enumerate() {
        if sorted.is_empty() {
            continue;
        }
        let n = sorted.len();
        // Evenly spaced on the nines axis, up to p99.9.
        let points = (0..=300).map(|k| {
            let nines = 3.0 * f64::from(k) / 300.0;
            let q = 1.0 - 10f64.powf(-nines);
            let idx = ((n - 1) as f64 * q) as usize;
            ((sorted[idx] as f64 / 1000.0).max(0.1), nines)
        });
        let colour = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    area.present()?;
    Ok(())
}

/// Each worker's share of the requests (%), grouped by run: `groups` are (run, counts per
/// worker in order). Full height is 50 %. In `path`.
///
/// # Errors
/// When the file cannot be written.
pub fn shares(path: &Path, title: &str, groups: &[(&str, Vec<u64>)]) -> Result {
    let n = groups.len().max(1);
    let workers = groups
        .iter()
        .map(|(_, s)| s.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let area = canvas(path, (760, 380));
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 15))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..50.0)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                groups
                    .get(i as usize)
                    .map_or(String::new(), |g| g.0.to_owned())
            } else {
                String::new()
            }
        })
        .y_desc("% of requests")
        .draw()?;
    let width = 0.8 / workers as f64;
    for j in 0..workers {
        let colour = PALETTE[j % PALETTE.len()];
        chart
            .draw_series(groups.iter().enumerate().filter_map(|(i, (_, counts))| {
                let total: u64 = counts.iter().sum::<u64>().max(1);
                let share = 100.0 * *counts.get(j)? as f64 / total as f64;
                let x0 = i as f64 - 0.4 + width * j as f64;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, share.min(50.0))],
                    colour.filled(),
                ))
            }))?
            .label(format!("worker {}", j + 1))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    area.present()?;
    Ok(())
}
