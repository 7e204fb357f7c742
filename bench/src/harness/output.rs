//! What every benchmark harness writes: per run `report.json`, `summary.txt` and the timeline
//! plot; per sweep `sweep.json`, `sweep.txt` and the latency-against-throughput plot; with
//! `--json` the report on stdout.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::args::LocalArgs;
use super::report::{self, Report};
use super::sweep::SweepPoint;
use super::{plot, table};

/// Runs `run_once(args, rate, dir)` for each of `runs` (a `--sweep`: one per value) and each rate
/// of `--rate`/`--rates` (a sweep of either kind: one directory per run under `out`), writes and
/// prints each report and the sweep's, until done or interrupted (then the reports so far are
/// written and the command fails with [`super::Interrupted`]).
pub fn each_run(
    runs: &[(Option<SweepPoint>, LocalArgs)],
    out: &Path,
    interrupted: &AtomicBool,
    mut run_once: impl FnMut(&LocalArgs, u64, &Path) -> anyhow::Result<Report>,
) -> anyhow::Result<()> {
    let all: Vec<(&Option<SweepPoint>, &LocalArgs, u64)> = runs
        .iter()
        .flat_map(|(point, args)| args.run_rates().into_iter().map(move |r| (point, args, r)))
        .collect();
    let Some((_, first, _)) = all.first() else {
        return Ok(());
    };
    let json = first.json;
    let sweep = all.len() > 1;
    let mut reports = Vec::new();
    for (i, (point, args, rate)) in all.iter().enumerate() {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        let name = match point {
            Some(p) => format!("{}-{}", p.flag, p.value),
            None => format!("rate-{rate}"),
        };
        let dir: PathBuf = if sweep {
            out.join(&name)
        } else {
            out.to_path_buf()
        };
        std::fs::create_dir_all(&dir)?;
        if sweep {
            eprintln!("== run {}/{}: {name}", i + 1, all.len());
        }
        let mut report = run_once(args, *rate, &dir)?;
        report.config.sweep = (*point).clone();
        write_run(&dir, &report)?;
        if !json {
            println!("{}", table::table(&report));
        }
        reports.push(report);
    }
    if sweep {
        write_sweep(out, &reports)?;
        if !json {
            println!("{}", table::sweep_table(&reports));
        }
    }
    if json && !reports.is_empty() {
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
