//! `sleepyseal local`: the benchmark harness on one machine.
//!
//! One run: write a fresh testbed, start the cores, the drivers and the load clients as
//! processes of this same binary on 127.0.0.1, follow one live core's commit stream (with
//! payloads) for the whole run, sample `/proc` for CPU time and memory at the edges of the
//! measurement window, scrape every process's metrics, stop everything, then report.
//!
//! Figures come from the commit stream and from `/proc`, never from log text. Every load
//! transaction carries its send time, so every committed transaction is a latency sample. After
//! the load stops, the harness waits (up to `--drain`) until every transaction the cores
//! acknowledged has committed; any that did not are reported as `not_committed`.
//!
//! [`run`] is one run phase by phase (its watcher of the commit stream is
//! [`crate::node::observe::Watcher`]), [`progress`] draws the progress bar.

mod progress;
mod run;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::runtime::Runtime;

use super::args::LocalArgs;
use super::report::{self, Report};
use super::{plot, table};
use crate::node::transaction::unix_micros;
use crate::node::{runtime, shutdown_signal};

/// Runs the benchmark (or a sweep) and prints its report.
pub fn main(args: LocalArgs) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(format!("local-{}", unix_micros() / 1_000_000))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let rates = args.run_rates();
    let sweep = rates.len() > 1;
    let rt = runtime("harness")?;
    let interrupted = interrupt_flag(&rt);
    let mut reports = Vec::new();
    for (i, rate) in rates.iter().enumerate() {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        let dir = if sweep {
            out.join(format!("rate-{rate}"))
        } else {
            out.clone()
        };
        std::fs::create_dir_all(&dir)?;
        if sweep {
            eprintln!("== run {}/{}: {rate} tx/s", i + 1, rates.len());
        }
        let report = run::run_once(&rt, &args, *rate, &dir, &interrupted)?;
        write_run(&dir, &report)?;
        if !args.json {
            println!("{}", table::table(&report));
        }
        reports.push(report);
    }
    if sweep {
        write_sweep(&out, &reports)?;
        if !args.json {
            println!("{}", table::sweep_table(&reports));
        }
    }
    if args.json {
        print_json(&reports, sweep)?;
    }
    eprintln!("results in {}", out.display());
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// A flag raised on Ctrl-C or SIGTERM: the run in progress winds down and reports.
fn interrupt_flag(rt: &Runtime) -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let signal = {
        let _context = rt.enter();
        shutdown_signal()
    };
    let raised = interrupted.clone();
    rt.spawn(async move {
        signal.await;
        raised.store(true, Ordering::SeqCst);
    });
    interrupted
}

/// Prints the report (a sweep's: an array) as one JSON value on stdout.
fn print_json(reports: &[Report], sweep: bool) -> anyhow::Result<()> {
    let value = if sweep {
        serde_json::to_value(reports)?
    } else {
        serde_json::to_value(&reports[0])?
    };
    println!("{value}");
    Ok(())
}

/// Writes `report.json`, `summary.txt` and the timeline plot of one run.
fn write_run(dir: &Path, report: &Report) -> anyhow::Result<()> {
    report::write_json(dir, report)?;
    std::fs::write(dir.join("summary.txt"), table::table(report))?;
    plot::timeline(&dir.join("timeline.svg"), report)?;
    Ok(())
}

/// Writes `sweep.json`, `sweep.txt` and the latency-against-throughput plot of a sweep.
fn write_sweep(dir: &Path, reports: &[Report]) -> anyhow::Result<()> {
    report::write_sweep_json(dir, reports)?;
    std::fs::write(dir.join("sweep.txt"), table::sweep_table(reports))?;
    plot::sweep(&dir.join("sweep.svg"), reports)?;
    Ok(())
}
