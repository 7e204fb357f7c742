//! SVG plots of benchmark reports (plotters): throughput and latency over time for one run,
//! the cores' store sizes against their bound, latency against throughput for a sweep.

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::report::Report;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 640;

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plot: {e:?}")
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws the series labels in a framed box.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// Committed tx/s (top) and end-to-end p50 / p99 latency (bottom) per second of a run.
pub fn timeline(path: &Path, r: &Report) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(HEIGHT / 2);
    throughput_chart(&top, r)?;
    latency_chart(&bottom, r)?;
    root.present().map_err(err)?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Committed tx/s per second against the input rate, the measurement window marked.
fn throughput_chart(area: &Area, r: &Report) -> anyhow::Result<()> {
    let c = &r.config;
    let seconds = r.timeline.len().max(1) as f64;
    let warmup = c.warmup_s as f64;
    let end = (c.warmup_s + c.duration_s) as f64;
    let max_tps = r
        .timeline
        .iter()
        .map(|(_, n, _, _)| *n as f64)
        .fold(c.rate as f64, f64::max)
        * 1.15;
    let caption = format!(
        "{} cores, {}, {} tx/s x {} B: committed throughput",
        c.cores,
        c.drivers_label(),
        c.rate,
        c.tx_size
    );
    let mut chart = per_second_chart(area, caption, seconds, max_tps, "tx/s")?;
    chart
        .draw_series(LineSeries::new(
            r.timeline
                .iter()
                .map(|(s, n, _, _)| (*s as f64 + 0.5, *n as f64)),
            BLUE.stroke_width(2),
        ))
        .map_err(err)?
        .label("committed tx/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(
            [(0.0, c.rate as f64), (end, c.rate as f64)],
            BLACK.mix(0.4),
        ))
        .map_err(err)?
        .label("input rate")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    for x in [warmup, end] {
        chart
            .draw_series(LineSeries::new([(x, 0.0), (x, max_tps)], RED.mix(0.3)))
            .map_err(err)?;
    }
    legend(&mut chart)
}

/// End-to-end p50 and p99 of the transactions committed each second.
fn latency_chart(area: &Area, r: &Report) -> anyhow::Result<()> {
    let seconds = r.timeline.len().max(1) as f64;
    let max_latency = r
        .timeline
        .iter()
        .map(|(_, _, _, p99)| *p99)
        .fold(10.0, f64::max)
        * 1.15;
    let caption = "end-to-end latency of transactions committed each second".to_string();
    let mut chart = per_second_chart(area, caption, seconds, max_latency, "ms")?;
    let busy = r.timeline.iter().filter(|(_, n, _, _)| *n > 0);
    chart
        .draw_series(LineSeries::new(
            busy.clone().map(|(s, _, p50, _)| (*s as f64 + 0.5, *p50)),
            GREEN.stroke_width(2),
        ))
        .map_err(err)?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    chart
        .draw_series(LineSeries::new(
            busy.map(|(s, _, _, p99)| (*s as f64 + 0.5, *p99)),
            MAGENTA.stroke_width(2),
        ))
        .map_err(err)?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
    legend(&mut chart)
}

/// A chart over the seconds of a run, from 0 to `y_max` (in `y_desc`).
fn per_second_chart<'a, 'b>(
    area: &'a Area<'b>,
    caption: String,
    seconds: f64,
    y_max: f64,
    y_desc: &str,
) -> anyhow::Result<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..seconds, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the load started")
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// Each core's store size (MiB) over the run, against the bound its settings give (dashed; not
/// drawn when unknown, `bound_bytes` 0). `samples`: seconds since the load started, each core's
/// store bytes then.
pub fn store_sizes(
    path: &Path,
    samples: &[(f64, Vec<u64>)],
    bound_bytes: u64,
) -> anyhow::Result<()> {
    const MIB: f64 = 1024.0 * 1024.0;
    let root = SVGBackend::new(path, (WIDTH, HEIGHT / 2 + 120)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let seconds = samples.last().map_or(1.0, |(t, _)| t.max(1.0));
    let largest = samples
        .iter()
        .flat_map(|(_, sizes)| sizes.iter().copied())
        .max()
        .unwrap_or(0)
        .max(bound_bytes) as f64
        / MIB;
    let cores = samples.first().map_or(0, |(_, sizes)| sizes.len());
    let caption = format!("store size of each of {cores} cores against the bound of its settings");
    let mut chart = per_second_chart(&root, caption, seconds, largest.max(1.0) * 1.1, "MiB")?;
    for i in 0..cores {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                samples.iter().map(|(t, sizes)| (*t, sizes[i] as f64 / MIB)),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("core {i}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    if bound_bytes > 0 {
        let bound = bound_bytes as f64 / MIB;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, bound), (seconds, bound)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(err)?
            .label("bound")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}

/// End-to-end latency (p50 and p99) against end-to-end throughput, one point per rate.
pub fn sweep(path: &Path, reports: &[Report]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT / 2 + 120)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max_tps = reports.iter().map(|r| r.e2e_tps).fold(1.0, f64::max) * 1.1;
    let max_latency = reports
        .iter()
        .map(|r| r.e2e_latency_ms.p99)
        .fold(10.0, f64::max)
        * 1.1;
    let c = &reports
        .first()
        .ok_or_else(|| anyhow!("empty sweep"))?
        .config;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{} cores, {}, {} B transactions: latency against throughput",
                c.cores,
                c.drivers_label(),
                c.tx_size
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_tps, 0f64..max_latency)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("end-to-end throughput (tx/s)")
        .y_desc("end-to-end latency (ms)")
        .draw()
        .map_err(err)?;
    let p50: Vec<(f64, f64)> = reports
        .iter()
        .map(|r| (r.e2e_tps, r.e2e_latency_ms.p50))
        .collect();
    let p99: Vec<(f64, f64)> = reports
        .iter()
        .map(|r| (r.e2e_tps, r.e2e_latency_ms.p99))
        .collect();
    for (points, color, label) in [(p50, BLUE, "p50"), (p99, MAGENTA, "p99")] {
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(err)?;
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}
