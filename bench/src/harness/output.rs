//! What every benchmark harness writes: per run `report.json`, `summary.txt` and the timeline
//! plot; per sweep `sweep.json`, `sweep.txt` and the latency-against-throughput plot; with
//! `--json` the report on stdout.

use std::path::Path;

use super::report::{self, Report};
use super::{plot, table};

/// Prints the report (a sweep's: an array) as one JSON value on stdout.
pub fn print_json(reports: &[Report], sweep: bool) -> anyhow::Result<()> {
    let value = if sweep {
        serde_json::to_value(reports)?
    } else {
        serde_json::to_value(&reports[0])?
    };
    println!("{value}");
    Ok(())
}

/// Writes `report.json`, `summary.txt` and the timeline plot of one run.
pub fn write_run(dir: &Path, report: &Report) -> anyhow::Result<()> {
    report::write_json(dir, report)?;
    std::fs::write(dir.join("summary.txt"), table::table(report))?;
    plot::timeline(&dir.join("timeline.svg"), report)?;
    Ok(())
}

/// Writes `sweep.json`, `sweep.txt` and the latency-against-throughput plot of a sweep.
pub fn write_sweep(dir: &Path, reports: &[Report]) -> anyhow::Result<()> {
    report::write_sweep_json(dir, reports)?;
    std::fs::write(dir.join("sweep.txt"), table::sweep_table(reports))?;
    plot::sweep(&dir.join("sweep.svg"), reports)?;
    Ok(())
}
