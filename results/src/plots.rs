//! The report's SVG plots, drawn with `plotters`' SVG backend into strings that the HTML inlines:
//! the op timeline with fault bands, latency over time, throughput over time, and the
//! offset-by-observer view of one key. Plots stay small however long the history: the timeline
//! falls back to per-bucket cells and the latency plot samples its ok ops past a cap (failures
//! and timeouts are kept first, as they are what a reader looks for).

use std::collections::BTreeMap;

use checkers::stats::{FaultInterval, LatencyPoint, Throughput};
use checkers::OpType;
use plotters::prelude::*;

/// A plot that could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing the {plot} plot: {message}")]
pub struct PlotError {
    /// Which plot.
    pub plot: &'static str,
    /// What went wrong.
    pub message: String,
}

fn err<E: std::fmt::Debug>(plot: &'static str) -> impl Fn(E) -> PlotError {
    move |e| PlotError {
        plot,
        message: format!("{e:?}"),
    }
}

/// Width of every plot, pixels.
pub const WIDTH: u32 = 960;

/// Pixels right of each plot's area kept for its legend, so the legend never covers data.
pub const LEGEND_WIDTH: u32 = 170;

/// Per-series cap on latency points drawn.
pub const MAX_POINTS_PER_SERIES: usize = 4000;

/// Ops drawn one rectangle each in the timeline before it switches to per-bucket cells.
pub const MAX_TIMELINE_OPS: usize = 6000;

const OK_COLOR: RGBColor = RGBColor(46, 160, 67);
const FAIL_COLOR: RGBColor = RGBColor(207, 34, 46);
const INFO_COLOR: RGBColor = RGBColor(219, 142, 0);

/// The color of a completion type.
pub fn type_color(t: OpType) -> RGBColor {
    match t {
        OpType::Ok => OK_COLOR,
        OpType::Fail => FAIL_COLOR,
        OpType::Info => INFO_COLOR,
        OpType::Invoke => RGBColor(120, 120, 120),
    }
}

/// The band color of a fault kind.
pub fn fault_color(kind: &str) -> RGBColor {
    match kind {
        "partition" => RGBColor(110, 84, 200),
        "kill" | "stop" => RGBColor(200, 40, 40),
        "pause" => RGBColor(30, 120, 200),
        "clock" => RGBColor(200, 150, 0),
        "disk" => RGBColor(120, 80, 40),
        "packet-loss" => RGBColor(0, 150, 150),
        _ => RGBColor(128, 128, 128),
    }
}

/// A fault band in seconds: (start, end, kind).
pub type Band = (f64, f64, String);

/// The bands of fault intervals; an interval without an end runs to `end_s`.
pub fn bands(faults: &[FaultInterval], end_s: f64) -> Vec<Band> {
    faults
        .iter()
        .map(|f| {
            let s = f.start_ns as f64 / 1e9;
            let e = f.end_ns.map_or(end_s, |e| e as f64 / 1e9).max(s + 0.02);
            (s, e, f.kind.clone())
        })
        .collect()
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The timeline of client ops: one row per worker (`process % workers`), and a top row
/// `final-reads` for the final phase's reader, a bar from invoke to completion colored by
/// outcome, fault bands behind; past [`MAX_TIMELINE_OPS`] ops, each (row, time bucket) cell is
/// colored by its worst outcome instead.
pub fn timeline(
    points: &[LatencyPoint],
    workers: u64,
    bands: &[Band],
    end_s: f64,
) -> Result<String, PlotError> {
    let e = err("timeline");
    let workers = workers.max(1);
    let final_row = points
        .iter()
        .any(|p| p.process == checkers::Process::Client(checkers::history::FINAL_PROCESS));
    let row = |p: &LatencyPoint| match &p.process {
        checkers::Process::Client(checkers::history::FINAL_PROCESS) => workers,
        checkers::Process::Client(n) => n % workers,
        checkers::Process::Named(_) => 0,
    };
    let rows = workers + u64::from(final_row);
    let end_s = end_s.max(1.0);
    let height = (120 + 22 * rows as u32).min(900);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .margin_right(LEGEND_WIDTH)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end_s, -0.5f64..(rows as f64 - 0.5))
            .map_err(&e)?;
        let label = |y: &f64| {
            let r = y.round() as i64;
            if final_row && r == workers as i64 {
                "final-reads".to_string()
            } else {
                r.to_string()
            }
        };
        chart
            .configure_mesh()
            .x_desc("time since start (s)")
            .y_desc("worker")
            .y_labels(rows.min(24) as usize)
            .y_label_formatter(&label)
            .disable_y_mesh()
            .draw()
            .map_err(&e)?;
        draw_bands(&mut chart, bands, -0.5, rows as f64 - 0.5, &e)?;
        if points.len() <= MAX_TIMELINE_OPS {
            chart
                .draw_series(points.iter().map(|p| {
                    let y = row(p) as f64;
                    let s = secs(p.invoke_ns);
                    let t = secs(p.invoke_ns + p.latency_ns).max(s + end_s / 2000.0);
                    Rectangle::new(
                        [(s, y - 0.35), (t, y + 0.35)],
                        type_color(p.op_type).filled(),
                    )
                }))
                .map_err(&e)?;
        } else {
            // Worst outcome per (worker, bucket): info > fail > ok.
            let buckets = 480usize;
            let w = end_s / buckets as f64;
            let mut cells: BTreeMap<(u64, usize), OpType> = BTreeMap::new();
            for p in points {
                let b = ((secs(p.invoke_ns) / w) as usize).min(buckets - 1);
                let c = cells.entry((row(p), b)).or_insert(p.op_type);
                let rank = |t: OpType| match t {
                    OpType::Info => 3,
                    OpType::Fail => 2,
                    _ => 1,
                };
                if rank(p.op_type) > rank(*c) {
                    *c = p.op_type;
                }
            }
            chart
                .draw_series(cells.iter().map(|((r, b), t)| {
                    let y = *r as f64;
                    let s = *b as f64 * w;
                    Rectangle::new([(s, y - 0.35), (s + w, y + 0.35)], type_color(*t).filled())
                }))
                .map_err(&e)?;
        }
        let legend: Legend = [OpType::Ok, OpType::Fail, OpType::Info]
            .into_iter()
            .map(|t| {
                (
                    checkers::stats::type_name(t).to_string(),
                    type_color(t),
                    Swatch::Fill,
                )
            })
            .collect();
        side_legend(&root, &legend, bands, &e)?;
        root.present().map_err(&e)?;
    }
    Ok(svg)
}

/// A chart on `root` in the common frame: margins (the right one kept for the legend),
/// label areas, and the mesh with the axes' descriptions.
fn frame<'a, 'b, Y>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    x: std::ops::Range<f64>,
    y: Y,
    (x_desc, y_desc): (&str, &str),
    e: &impl Fn(DrawingAreaErrorKind<std::io::Error>) -> PlotError,
) -> Result<Chart<'a, 'b, Y::CoordDescType>, PlotError>
where
    Y: plotters::coord::ranged1d::AsRangedCoord,
    Y::CoordDescType:
        plotters::coord::ranged1d::ValueFormatter<<Y::CoordDescType as Ranged>::ValueType>,
{
    let mut chart = ChartBuilder::on(root)
        .margin(10)
        .margin_right(LEGEND_WIDTH)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(e)?;
    Ok(chart)
}

/// How a legend entry is drawn: a line, a filled swatch, or a band's shade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Swatch {
    Line,
    Fill,
}

/// A plot's legend: label, colour, swatch.
type Legend = Vec<(String, RGBColor, Swatch)>;

/// Draws `legend` and the fault kinds of `bands` in the margin right of the plotting area
/// ([`LEGEND_WIDTH`] pixels), so a legend never covers data.
fn side_legend(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    legend: &Legend,
    bands: &[Band],
    e: &impl Fn(DrawingAreaErrorKind<std::io::Error>) -> PlotError,
) -> Result<(), PlotError> {
    let kinds: std::collections::BTreeSet<&str> = bands.iter().map(|b| b.2.as_str()).collect();
    let mut all: Vec<(String, RGBAColor, Swatch)> = legend
        .iter()
        .map(|(l, c, s)| (l.clone(), c.to_rgba(), *s))
        .collect();
    all.extend(
        kinds
            .into_iter()
            .map(|k| (format!("fault: {k}"), fault_color(k).mix(0.3), Swatch::Fill)),
    );
    let x0 = (WIDTH - LEGEND_WIDTH + 16) as i32;
    for (i, (label, colour, swatch)) in all.iter().enumerate() {
        let y = 18 + 16 * i as i32;
        match swatch {
            Swatch::Line => root
                .draw(&PathElement::new(
                    vec![(x0, y), (x0 + 14, y)],
                    colour.stroke_width(2),
                ))
                .map_err(e)?,
            Swatch::Fill => root
                .draw(&Rectangle::new(
                    [(x0, y - 5), (x0 + 14, y + 5)],
                    colour.filled(),
                ))
                .map_err(e)?,
        }
        root.draw(&Text::new(
            label.clone(),
            (x0 + 20, y - 6),
            ("sans-serif", 12).into_font(),
        ))
        .map_err(e)?;
    }
    Ok(())
}

type Chart<'a, 'b, Y> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>;

fn draw_bands<Y>(
    chart: &mut Chart<'_, '_, Y>,
    bands: &[Band],
    lo: Y::ValueType,
    hi: Y::ValueType,
    e: &impl Fn(DrawingAreaErrorKind<std::io::Error>) -> PlotError,
) -> Result<(), PlotError>
where
    Y: plotters::coord::ranged1d::Ranged,
    Y::ValueType: Clone + 'static,
{
    chart
        .draw_series(bands.iter().map(|(s, t, kind)| {
            Rectangle::new(
                [(*s, lo.clone()), (*t, hi.clone())],
                fault_color(kind).mix(0.15).filled(),
            )
        }))
        .map_err(e)?;
    Ok(())
}

/// Latency over time: one point per op at its invocation time, log-scaled milliseconds, colored
/// by outcome, shaped by function (circle: send, triangle: poll, cross: anything else).
pub fn latency(points: &[LatencyPoint], bands: &[Band], end_s: f64) -> Result<String, PlotError> {
    let e = err("latency");
    let end_s = end_s.max(1.0);
    // Series by (f, type), each capped; ok ops are sampled with a stride.
    let mut series: BTreeMap<(String, &'static str), Vec<&LatencyPoint>> = BTreeMap::new();
    for p in points {
        series
            .entry((p.f.clone(), checkers::stats::type_name(p.op_type)))
            .or_default()
            .push(p);
    }
    let max_ms = points
        .iter()
        .map(|p| p.latency_ns as f64 / 1e6)
        .fold(1.0f64, f64::max)
        * 1.5;
    let min_ms = (points
        .iter()
        .map(|p| p.latency_ns as f64 / 1e6)
        .fold(f64::INFINITY, f64::min)
        / 2.0)
        .clamp(0.01, max_ms / 10.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = frame(
            &root,
            0f64..end_s,
            (min_ms..max_ms).log_scale(),
            ("invocation time (s)", "latency (ms, log)"),
            &e,
        )?;
        draw_bands(&mut chart, bands, min_ms, max_ms, &e)?;
        let mut legend: Legend = Vec::new();
        for ((f, t), ps) in &series {
            let op_type = ps.first().map_or(OpType::Ok, |p| p.op_type);
            let color = type_color(op_type);
            let stride = ps.len().div_ceil(MAX_POINTS_PER_SERIES).max(1);
            let coords = ps
                .iter()
                .step_by(stride)
                .map(|p| (secs(p.invoke_ns), (p.latency_ns as f64 / 1e6).max(min_ms)));
            let label = if stride > 1 {
                format!("{f} {t} (1 in {stride})")
            } else {
                format!("{f} {t}")
            };
            let mark = match f.as_str() {
                "send" => "●",
                "poll" => "▲",
                _ => "✕",
            };
            legend.push((format!("{mark} {label}"), color, Swatch::Fill));
            let shape = f.clone();
            match shape.as_str() {
                "send" => {
                    chart
                        .draw_series(coords.map(|c| Circle::new(c, 2, color.filled())))
                        .map_err(&e)?
                        .label(label)
                        .legend(move |(x, y)| Circle::new((x + 6, y), 3, color.filled()));
                }
                "poll" => {
                    chart
                        .draw_series(coords.map(|c| TriangleMarker::new(c, 3, color.filled())))
                        .map_err(&e)?
                        .label(label)
                        .legend(move |(x, y)| TriangleMarker::new((x + 6, y), 4, color.filled()));
                }
                _ => {
                    chart
                        .draw_series(coords.map(|c| Cross::new(c, 3, color)))
                        .map_err(&e)?
                        .label(label)
                        .legend(move |(x, y)| Cross::new((x + 6, y), 4, color));
                }
            }
        }
        side_legend(&root, &legend, bands, &e)?;
        root.present().map_err(&e)?;
    }
    Ok(svg)
}

/// Completions per second over time, one line per completion type.
pub fn throughput(t: &Throughput, bands: &[Band]) -> Result<String, PlotError> {
    let e = err("throughput");
    let n = t.buckets().max(1);
    let w = t.bucket_ns as f64 / 1e9;
    let start_s = t.start_ns as f64 / 1e9;
    let end_s = start_s + (n as f64 * w).max(1.0);
    let max_y = t
        .series
        .values()
        .flat_map(|s| s.iter())
        .copied()
        .max()
        .unwrap_or(0) as f64
        / w;
    let max_y = (max_y * 1.15).max(1.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = frame(
            &root,
            start_s..end_s,
            0f64..max_y,
            ("completion time (s)", "completions / s"),
            &e,
        )?;
        draw_bands(&mut chart, bands, 0.0, max_y, &e)?;
        let mut legend: Legend = Vec::new();
        for (name, counts) in &t.series {
            let color = match name.as_str() {
                "ok" => OK_COLOR,
                "fail" => FAIL_COLOR,
                _ => INFO_COLOR,
            };
            legend.push((name.clone(), color, Swatch::Line));
            chart
                .draw_series(LineSeries::new(
                    counts
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (start_s + (i as f64 + 0.5) * w, *c as f64 / w)),
                    color.stroke_width(2),
                ))
                .map_err(&e)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                });
        }
        side_legend(&root, &legend, bands, &e)?;
        root.present().map_err(&e)?;
    }
    Ok(svg)
}

/// Latency quantiles over time (Jepsen's `latency-quantiles`): the ok ops' latencies grouped
/// into windows of invocation time, one line per quantile (p50, p95, p99, max) per function,
/// log-scaled milliseconds.
pub fn latency_quantiles(
    points: &[LatencyPoint],
    bands: &[Band],
    end_s: f64,
) -> Result<String, PlotError> {
    let e = err("latency-quantiles");
    let end_s = end_s.max(1.0);
    let windows = 60usize;
    let w = (end_s / windows as f64).max(1.0);
    let mut groups: BTreeMap<(String, usize), Vec<u64>> = BTreeMap::new();
    for p in points.iter().filter(|p| p.op_type == OpType::Ok) {
        let b = (secs(p.invoke_ns) / w) as usize;
        groups
            .entry((p.f.clone(), b))
            .or_default()
            .push(p.latency_ns);
    }
    const QS: [(&str, f64, RGBColor); 4] = [
        ("p50", 0.5, RGBColor(46, 160, 67)),
        ("p95", 0.95, RGBColor(30, 120, 200)),
        ("p99", 0.99, RGBColor(219, 142, 0)),
        ("max", 1.0, RGBColor(207, 34, 46)),
    ];
    // (f, quantile) -> points
    let mut lines: BTreeMap<(String, usize), Vec<(f64, f64)>> = BTreeMap::new();
    let (mut lo, mut hi) = (f64::INFINITY, 1.0f64);
    for ((f, b), mut v) in groups {
        v.sort_unstable();
        for (qi, (_, q, _)) in QS.iter().enumerate() {
            let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            let ms = v[i] as f64 / 1e6;
            lo = lo.min(ms);
            hi = hi.max(ms);
            lines
                .entry((f.clone(), qi))
                .or_default()
                .push(((b as f64 + 0.5) * w, ms));
        }
    }
    let lo = if lo.is_finite() {
        (lo / 2.0).max(0.01)
    } else {
        0.1
    };
    let hi = hi * 1.5;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = frame(
            &root,
            0f64..end_s,
            (lo..hi).log_scale(),
            ("invocation time (s)", "ok latency (ms, log)"),
            &e,
        )?;
        draw_bands(&mut chart, bands, lo, hi, &e)?;
        let mut legend: Legend = Vec::new();
        for ((f, qi), pts) in lines {
            let (name, _, color) = QS[qi];
            legend.push((format!("{f} {name}"), color, Swatch::Line));
            let style = if f == "send" {
                color.stroke_width(2)
            } else {
                color.stroke_width(1)
            };
            chart
                .draw_series(LineSeries::new(pts, style))
                .map_err(&e)?
                .label(format!("{f} {name}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], style));
        }
        side_legend(&root, &legend, bands, &e)?;
        root.present().map_err(&e)?;
    }
    Ok(svg)
}

/// Availability over time: per bucket of the throughput, the share of completed ops that were
/// ok; a bucket in which nothing completed counts as 0 (the clients were waiting), so a run
/// that stalled for half its length shows it, whatever its overall share.
pub fn availability(t: &Throughput, bands: &[Band]) -> Result<String, PlotError> {
    let e = err("availability");
    let n = t.buckets().max(1);
    let w = t.bucket_ns.max(1) as f64 / 1e9;
    let start_s = t.start_ns as f64 / 1e9;
    let end_s = start_s + (n as f64 * w).max(1.0);
    let at = |name: &str, i: usize| t.series.get(name).and_then(|s| s.get(i)).copied();
    let share: Vec<(f64, f64)> = (0..t.buckets())
        .map(|i| {
            let ok = at("ok", i).unwrap_or(0);
            let all: u64 = t.series.values().filter_map(|s| s.get(i)).sum();
            let v = if all == 0 {
                0.0
            } else {
                100.0 * ok as f64 / all as f64
            };
            (start_s + (i as f64 + 0.5) * w, v)
        })
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 240)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = frame(
            &root,
            start_s..end_s,
            0f64..105.0,
            ("completion time (s)", "ok share of ops (%)"),
            &e,
        )?;
        draw_bands(&mut chart, bands, 0.0, 105.0, &e)?;
        let legend: Legend = vec![("ok share".into(), OK_COLOR, Swatch::Line)];
        chart
            .draw_series(LineSeries::new(share, OK_COLOR.stroke_width(2)))
            .map_err(&e)?
            .label("ok share (0: nothing completed)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], OK_COLOR.stroke_width(2)));
        side_legend(&root, &legend, bands, &e)?;
        root.present().map_err(&e)?;
    }
    Ok(svg)
}

/// Acknowledged values nobody had read yet, over time (Jepsen's unseen plot), with fault bands
/// and a line where the final reads began: a count that does not fall to zero after that line
/// is the `unseen` finding.
pub fn unseen(u: &checkers::stats::Unseen, bands: &[Band]) -> Result<String, PlotError> {
    let e = err("unseen");
    let w = u.bucket_ns.max(1) as f64 / 1e9;
    let start_s = u.start_ns as f64 / 1e9;
    let end_s = start_s + (u.counts.len() as f64 * w).max(1.0);
    let max_y = (u.counts.iter().copied().max().unwrap_or(0) as f64 * 1.15).max(1.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 260)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = frame(
            &root,
            start_s..end_s,
            0f64..max_y,
            ("time (s)", "acknowledged, unread"),
            &e,
        )?;
        draw_bands(&mut chart, bands, 0.0, max_y, &e)?;
        let mut legend: Legend = vec![("unseen".into(), INFO_COLOR, Swatch::Line)];
        chart
            .draw_series(LineSeries::new(
                u.counts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (start_s + (i as f64 + 1.0) * w, *c as f64)),
                INFO_COLOR.stroke_width(2),
            ))
            .map_err(&e)?
            .label("unseen")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], INFO_COLOR.stroke_width(2))
            });
        if let Some(f) = u.final_start_ns {
            let x = f as f64 / 1e9;
            legend.push(("final reads begin".into(), BLACK, Swatch::Line));
            chart
                .draw_series(LineSeries::new(
                    vec![(x, 0.0), (x, max_y)],
                    BLACK.stroke_width(1),
                ))
                .map_err(&e)?
                .label("final reads begin")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], BLACK.stroke_width(1))
                });
        }
        side_legend(&root, &legend, bands, &e)?;
        root.present().map_err(&e)?;
    }
    Ok(svg)
}

/// One observation of a key's offset: which row (observer) saw which value there.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Offset.
    pub offset: i64,
    /// Value seen there.
    pub value: i64,
    /// Row index into the plot's observer labels.
    pub row: usize,
    /// Drawn highlighted (the offset is part of a finding).
    pub flagged: bool,
}

/// The offset-by-observer view of one key, after Jepsen's order plots: offset on x, one row per
/// observer (the send acknowledgements, then each polling process), a point for each value seen
/// at each offset, colored by value so disagreement stands out; flagged observations are drawn
/// larger with a red ring, and `missing` (acknowledged offsets nobody read) as red crosses on
/// the first row.
pub fn offsets(
    key: &str,
    rows: &[String],
    obs: &[Observation],
    missing: &[i64],
) -> Result<String, PlotError> {
    let e = err("offsets");
    let lo = obs
        .iter()
        .map(|o| o.offset)
        .chain(missing.iter().copied())
        .min()
        .unwrap_or(0);
    let hi = obs
        .iter()
        .map(|o| o.offset)
        .chain(missing.iter().copied())
        .max()
        .unwrap_or(0);
    // At least a dozen offsets wide, so a lone offset is not a smear.
    let (lo, hi) = if hi - lo < 12 {
        let pad = (12 - (hi - lo)) / 2;
        (lo - pad, hi + pad)
    } else {
        (lo, hi)
    };
    let nrows = rows.len().max(1);
    let height = (140 + 24 * nrows as u32).min(800);
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .caption(format!("key {key}"), ("sans-serif", 16))
            .x_label_area_size(35)
            .y_label_area_size(120)
            .build_cartesian_2d(
                (lo as f64 - 0.5)..(hi as f64 + 0.5),
                -0.5f64..(nrows as f64 - 0.5),
            )
            .map_err(&e)?;
        let labels = rows.to_vec();
        chart
            .configure_mesh()
            .x_desc("offset")
            .y_labels(nrows.min(30))
            .y_label_formatter(&|y| {
                let i = y.round();
                if (y - i).abs() > 0.01 || i < 0.0 {
                    return String::new();
                }
                // Row 0 is drawn at the top.
                (nrows - 1)
                    .checked_sub(i as usize)
                    .and_then(|r| labels.get(r).cloned())
                    .unwrap_or_default()
            })
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .draw()
            .map_err(&e)?;
        chart
            .draw_series(obs.iter().filter(|o| o.flagged).map(|o| {
                Circle::new(
                    (o.offset as f64, (nrows - 1 - o.row) as f64),
                    7,
                    FAIL_COLOR.stroke_width(2),
                )
            }))
            .map_err(&e)?;
        chart
            .draw_series(obs.iter().map(|o| {
                let c = palette[(o.value.unsigned_abs() % palette.len() as u64) as usize];
                Circle::new((o.offset as f64, (nrows - 1 - o.row) as f64), 4, c.filled())
            }))
            .map_err(&e)?;
        chart
            .draw_series(missing.iter().map(|m| {
                Cross::new(
                    (*m as f64, (nrows - 1) as f64),
                    6,
                    FAIL_COLOR.stroke_width(2),
                )
            }))
            .map_err(&e)?;
        root.present().map_err(&e)?;
    }
    Ok(svg)
}
