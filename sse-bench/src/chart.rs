//! `--report FILE.svg|FILE.html`: the run (or, with `--table`, several runs
//! side by side) drawn with plotters on one page: latency percentiles per
//! second, delivered events and connected clients per second with the
//! scenario's moment marked, and the latency histogram. Every target gets
//! one colour on shared axes. The HTML file embeds the SVG and a summary
//! table and loads nothing from elsewhere.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context as _};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::print::{count, num};
use crate::report::Report;

/// Page size in pixels: three panels stacked, readable on a laptop screen
/// and in a README.
const WIDTH: u32 = 1000;
/// See [`WIDTH`].
const HEIGHT: u32 = 1150;

/// One colour per target, in table order (ours first); colour-blind safe
/// (Okabe-Ito).
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
];

/// Lowest latency drawn, ms: loopback deliveries take longer than this.
const MIN_LATENCY_MS: f64 = 0.01;

/// The power of ten at or below `v` (at least [`MIN_LATENCY_MS`]), so a log
/// axis starts just under the data instead of at an arbitrary floor.
fn decade_below(v: f64) -> f64 {
    if v.is_finite() && v > MIN_LATENCY_MS {
        10f64.powf(v.log10().floor())
    } else {
        MIN_LATENCY_MS
    }
}

const FONT: &str = "sans-serif";

/// Width of a histogram bucket as a factor (see `report::buckets`).
const BUCKET_SPAN: f64 = 1.25;

/// Writes the picture of `reports` (one per target; later runs of a label
/// already seen are left out) to `path`, as SVG or as a self-contained HTML
/// page, by the file's extension.
///
/// # Errors
/// On another extension, no reports, or a file that cannot be written.
pub fn write(path: &Path, reports: &[Report]) -> anyhow::Result<()> {
    let mut shown: Vec<&Report> = Vec::new();
    for r in reports {
        if !shown.iter().any(|s| s.label == r.label) {
            shown.push(r);
        }
    }
    if shown.is_empty() {
        bail!("--report: no report to draw");
    }
    let svg = svg(&shown)?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let text = match ext.to_ascii_lowercase().as_str() {
        "svg" => svg,
        "html" | "htm" => html(&shown, &svg),
        _ => bail!(
            "--report {}: the name must end in .svg or .html",
            path.display()
        ),
    };
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The three panels as one SVG document.
///
/// # Errors
/// When plotters fails to lay out a chart (it does not for finite data).
pub fn svg(reports: &[&Report]) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (title, rest) = root.split_vertically(40);
        title
            .draw_text(
                &headline(reports),
                &(FONT, 18).into_font().color(&BLACK),
                (20, 12),
            )
            .map_err(plot_err)?;
        let panels = rest.split_evenly((3, 1));
        latency_panel(&panels[0], reports)?;
        traffic_panel(&panels[1], reports)?;
        histogram_panel(&panels[2], reports)?;
        root.present().map_err(plot_err)?;
    }
    Ok(out)
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the report: {e:?}")
}

fn headline(reports: &[&Report]) -> String {
    let r = reports[0];
    format!(
        "sse-bench {}: {} clients, {} events/s for {} s, {} B payload ({})",
        r.scenario.name(),
        count(r.clients),
        num(r.rate),
        num(r.duration_s),
        r.payload,
        reports
            .iter()
            .map(|r| r.label.as_str())
            .collect::<Vec<_>>()
            .join(" vs ")
    )
}

/// The time axis shared by the first two panels, seconds.
fn time_range(reports: &[&Report]) -> std::ops::Range<f64> {
    let end = reports
        .iter()
        .flat_map(|r| {
            let t = &r.timeline;
            t.seconds
                .iter()
                .map(|s| s.t_s + 1.0)
                .chain(t.clients.iter().map(|c| c.0))
                .chain(std::iter::once(r.duration_s))
        })
        .fold(1.0f64, f64::max);
    0.0..end.ceil()
}

/// Latency p50 (thin), p99 (thick) and max (faint) per second, log scale.
fn latency_panel(area: &DrawingArea<SVGBackend, Shift>, reports: &[&Report]) -> anyhow::Result<()> {
    let top = reports
        .iter()
        .flat_map(|r| r.timeline.seconds.iter().map(|s| s.max_ms))
        .fold(10.0f64, f64::max)
        * 1.5;
    let bottom = decade_below(
        reports
            .iter()
            .flat_map(|r| r.timeline.seconds.iter().map(|s| s.p50_ms))
            .fold(f64::INFINITY, f64::min),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Delivery latency per second (p50 thin, p99 thick, max faint)",
            (FONT, 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(time_range(reports), (bottom..top).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since publishing started")
        .y_desc("ms (log)")
        .y_label_formatter(&|v| num(*v))
        .draw()
        .map_err(plot_err)?;
    for (i, r) in reports.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let points = |f: fn(&crate::report::Second) -> f64| {
            r.timeline
                .seconds
                .iter()
                .map(move |s| (s.t_s + 0.5, f(s).max(bottom)))
        };
        chart
            .draw_series(LineSeries::new(
                points(|s| s.max_ms),
                c.mix(0.35).stroke_width(1),
            ))
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(points(|s| s.p50_ms), c.stroke_width(1)))
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(points(|s| s.p99_ms), c.stroke_width(3)))
            .map_err(plot_err)?
            .label(format!("{} p99", r.label))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(3)));
    }
    marks(&mut chart, reports, (bottom, top))?;
    legend(&mut chart)
}

/// Delivered events per second (left axis, solid) and open streams
/// (right axis, dashed look: thin and faint).
fn traffic_panel(area: &DrawingArea<SVGBackend, Shift>, reports: &[&Report]) -> anyhow::Result<()> {
    let top_events = reports
        .iter()
        .flat_map(|r| r.timeline.seconds.iter().map(|s| s.delivered as f64))
        .fold(1.0f64, f64::max)
        * 1.15;
    let top_clients = reports
        .iter()
        .map(|r| r.clients as f64)
        .fold(1.0f64, f64::max)
        * 1.15;
    let range = time_range(reports);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Delivered events per second (thick) and connected clients (thin)",
            (FONT, 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .right_y_label_area_size(64)
        .build_cartesian_2d(range.clone(), 0.0..top_events)
        .map_err(plot_err)?
        .set_secondary_coord(range, 0.0..top_clients);
    chart
        .configure_mesh()
        .x_desc("seconds since publishing started")
        .y_desc("events/s")
        .y_label_formatter(&|v| count(v.round() as u64))
        .draw()
        .map_err(plot_err)?;
    chart
        .configure_secondary_axes()
        .y_desc("clients")
        .label_style((FONT, 12))
        .y_label_formatter(&|v| count(v.round() as u64))
        .draw()
        .map_err(plot_err)?;
    for (i, r) in reports.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let events = r
            .timeline
            .seconds
            .iter()
            .map(|s| (s.t_s + 0.5, s.delivered as f64));
        chart
            .draw_series(LineSeries::new(events, c.stroke_width(3)))
            .map_err(plot_err)?
            .label(format!("{} events/s", r.label))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(3)));
        let clients = r.timeline.clients.iter().map(|&(t, n)| (t, n as f64));
        chart
            .draw_secondary_series(LineSeries::new(clients, c.mix(0.7).stroke_width(1)))
            .map_err(plot_err)?
            .label(format!("{} clients", r.label))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(1)));
    }
    marks(&mut chart, reports, (0.0, top_events))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 12))
        .draw()
        .map_err(plot_err)
}

/// Share of deliveries per latency bucket, log latency axis.
fn histogram_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    reports: &[&Report],
) -> anyhow::Result<()> {
    let shares: Vec<Vec<(f64, f64)>> = reports
        .iter()
        .map(|r| {
            let total: u64 = r.latency_histogram.iter().map(|b| b.count).sum();
            r.latency_histogram
                .iter()
                .map(|b| {
                    let share = 100.0 * b.count as f64 / total.max(1) as f64;
                    (b.to_ms.max(MIN_LATENCY_MS), share)
                })
                .collect()
        })
        .collect();
    let right = shares.iter().flatten().map(|p| p.0).fold(10.0f64, f64::max) * 1.5;
    let top = shares.iter().flatten().map(|p| p.1).fold(1.0f64, f64::max) * 1.15;
    let left = decade_below(
        shares
            .iter()
            .flatten()
            .filter(|p| p.1 > 0.0)
            .map(|p| p.0 / BUCKET_SPAN)
            .fold(f64::INFINITY, f64::min),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Latency histogram (share of deliveries per 25%-wide bucket)",
            (FONT, 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((left..right).log_scale(), 0.0..top)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (log)")
        .y_desc("% of deliveries")
        .x_label_formatter(&|v| num(*v))
        .y_label_formatter(&|v| num(*v))
        .draw()
        .map_err(plot_err)?;
    for (i, (r, points)) in reports.iter().zip(shares).enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = points.into_iter().filter(|p| p.0 >= left).collect();
        chart
            .draw_series(AreaSeries::new(points.clone(), 0.0, c.mix(0.15)))
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))
            .map_err(plot_err)?
            .label(format!(
                "{}: p50 {} ms, p99 {} ms",
                r.label,
                num(r.latency_ms.p50),
                num(r.latency_ms.p99)
            ))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    legend(&mut chart)
}

/// Vertical lines at the scenario's moments, labelled.
fn marks<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
    reports: &[&Report],
    (bottom, top): (f64, f64),
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, r) in reports.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        for m in &r.timeline.marks {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    [(m.t_s, bottom), (m.t_s, top)],
                    BLACK.mix(0.6).stroke_width(1),
                )))
                .map_err(plot_err)?;
            let label = if reports.len() > 1 {
                format!("{}: {}", r.label, m.label)
            } else {
                m.label.clone()
            };
            // Stack the labels of several targets below each other.
            let offset = (4, 4 + 16 * i as i32);
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((m.t_s, top))
                        + Text::new(label, offset, (FONT, 12).into_font().color(&c)),
                ))
                .map_err(plot_err)?;
        }
    }
    Ok(())
}

fn legend<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 12))
        .draw()
        .map_err(plot_err)
}

/// Escapes text for HTML.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained page: the chart inline and a summary table.
fn html(reports: &[&Report], svg: &str) -> String {
    let mut s = String::new();
    let title = escape(&headline(reports));
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;\
         text-align:right}}th:first-child,td:first-child{{text-align:left}}</style>\
         </head><body>\n<h1>{title}</h1>\n"
    );
    let _ = writeln!(s, "<table><tr><th>target</th><th>latency p50 ms</th><th>p99 ms</th><th>max ms</th><th>delivered</th><th>lost</th><th>result</th></tr>");
    for r in reports {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.label),
            num(r.latency_ms.p50),
            num(r.latency_ms.p99),
            num(r.latency_ms.max),
            count(r.events.delivered),
            count(r.events.lost),
            escape(&r.verdict())
        );
    }
    let _ = writeln!(s, "</table>\n<div>");
    // The SVG document's XML declaration is not allowed inside HTML.
    let body = svg.find("<svg").map_or(svg, |i| &svg[i..]);
    s.push_str(body);
    s.push_str("\n</div></body></html>\n");
    s
}
