//! What every benchmark harness writes: per run `report.json`, `summary.txt` and the timeline
//! plot; per sweep `sweep.json`, `sweep.txt` and the latency-against-throughput plot; with
//! `--json` the report on stdout.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::args::LocalArgs;
use super::report::{self, Report};
use super::{plot, table};

/// Runs `run_once(rate, dir)` for each rate of `--rate`/`--rates` (a sweep: one directory per
/// rate under `out`), writes and prints each report and the sweep's, until done or interrupted
/// (then the reports so far are written and the command fails with [`super::Interrupted`]).
pub fn each_rate(
    args: &LocalArgs,
    out: &Path,
    interrupted: &AtomicBool,
    mut run_once: impl FnMut(u64, &Path) -> anyhow::Result<Report>,
) -> anyhow::Result<()> {
    let rates = args.run_rates();
    let sweep = rates.len() > 1;
    let mut reports = Vec::new();
    for (i, rate) in rates.iter().enumerate() {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        let dir: PathBuf = if sweep {
            out.join(format!("rate-{rate}"))
        } else {
            out.to_path_buf()
        };
        std::fs::create_dir_all(&dir)?;
        if sweep {
            eprintln!("== run {}/{}: {rate} tx/s", i + 1, rates.len());
        }
        let report = run_once(*rate, &dir)?;
        write_run(&dir, &report)?;
        if !args.json {
            println!("{}", table::table(&report));
        }
        reports.push(report);
    }
    if sweep {
        write_sweep(out, &reports)?;
        if !args.json {
            println!("{}", table::sweep_table(&reports));
        }
    }
    if args.json && !reports.is_empty() {
        print_json(&reports, sweep)?;
    }
    eprintln!("results in {}", out.display());
    if interrupted.load(Ordering::SeqCst) {
        return Err(super::Interrupted.into());
    }
    Ok(())
}

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
