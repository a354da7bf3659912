//! Charts as inline SVG, drawn with plotters' SVG backend (which escapes every text it writes).
//! No fonts are loaded: plotters estimates text sizes, and the browser draws the text.

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::data::LanguagePair;

const FONT: &str = "sans-serif";
const GERMAN: RGBColor = RGBColor(0x1f, 0x5f, 0xa8);
const ENGLISH: RGBColor = RGBColor(0xe0, 0x8a, 0x1e);

/// One line of a line chart.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

fn drawing_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

/// An axis range covering `values` with a little room, never empty.
fn padded(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    let span = hi - lo;
    // Bars get more room above them, for their value labels.
    let room = if from_zero { 0.12 } else { 0.05 };
    let pad = if span > 0.0 {
        span * room
    } else {
        hi.abs().max(1.0) * 0.1
    };
    if !from_zero || lo < 0.0 {
        lo -= pad;
    }
    hi += pad;
    (lo, hi)
}

/// A line chart (step on x) as an `<svg>` element.
pub fn line_chart(title: &str, y_label: &str, series: &[Series]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 340)).into_drawing_area();
        draw_lines(&root, title, y_label, series).map_err(drawing_error)?;
        root.present().map_err(drawing_error)?;
    }
    Ok(svg)
}

fn draw_lines(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all = || series.iter().flat_map(|s| s.points.iter().filter(finite));
    let (x0, x1) = padded(all().map(|p| p.0), false);
    let (y0, y1) = padded(all().map(|p| p.1), false);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y_label)
        .label_style((FONT, 12))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().filter(finite).copied(),
                color.stroke_width(2),
            ))?
            .label(s.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    Ok(())
}

/// Grouped bars for one German/English pair: a group per eval stage, the German bar beside
/// the English one, each labelled with its value.
pub fn pair_chart(pair: &LanguagePair) -> Result<String> {
    let mut svg = String::new();
    {
        let width = 220 + 130 * pair.values.len() as u32;
        let root = SVGBackend::with_string(&mut svg, (width.min(1100), 320)).into_drawing_area();
        draw_pair(&root, pair).map_err(drawing_error)?;
        root.present().map_err(drawing_error)?;
    }
    Ok(svg)
}

fn draw_pair(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    pair: &LanguagePair,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let better = if pair.lower_is_better {
        "lower is better"
    } else {
        "higher is better"
    };
    let title = format!(
        "{} vs {}: {} ({better})",
        pair.german, pair.english, pair.metric
    );
    let n = pair.values.len().max(1);
    let (y0, y1) = padded(
        pair.values
            .iter()
            .flat_map(|v| [v.german, v.english])
            .flatten(),
        true,
    );
    let stages: Vec<String> = pair.values.iter().map(|v| v.stage.clone()).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), y0..y1)?;
    let label_of = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            stages.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&label_of)
        .y_desc(pair.metric.as_str())
        .label_style((FONT, 12))
        .draw()?;
    for (offset, color, language) in [(-0.36, GERMAN, "German"), (0.0, ENGLISH, "English")] {
        let bars: Vec<(f64, f64)> = pair
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let value = if language == "German" {
                    v.german
                } else {
                    v.english
                };
                value.map(|value| (i as f64 + offset, value))
            })
            .collect();
        chart
            .draw_series(
                bars.iter()
                    .map(|&(x, v)| Rectangle::new([(x, 0.0), (x + 0.34, v)], color.filled())),
            )?
            .label(language)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        // Each value just above its bar.
        chart.draw_series(bars.iter().map(|&(x, v)| {
            EmptyElement::at((x, v)) + Text::new(format_value(v), (2, -14), (FONT, 11).into_font())
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    Ok(())
}

/// Four significant digits, or scientific notation for very large or small values.
pub fn format_value(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        let digits = (4 - (v.abs().max(1e-12).log10().floor() as i32 + 1)).clamp(0, 4) as usize;
        format!("{v:.digits$}")
    }
}
