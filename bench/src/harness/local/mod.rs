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
pub mod store;

pub use run::run_config;

use std::path::PathBuf;

use anyhow::Context;

use super::args::LocalArgs;
use super::interrupt_flag;
use super::output::each_run;
use super::sweep;
use crate::node::runtime;
use crate::node::transaction::unix_micros;

/// Runs the benchmark (or a sweep) and prints its report.
pub fn main(
    args: LocalArgs,
    reparse: &dyn Fn(&str) -> anyhow::Result<LocalArgs>,
) -> anyhow::Result<()> {
    let runs = sweep::runs(&args, reparse)?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(format!("local-{}", unix_micros() / 1_000_000))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let rt = runtime("harness")?;
    let interrupted = interrupt_flag(&rt);
    each_run(&runs, &out, &interrupted, |args, rate, dir| {
        run::run_once(&rt, args, rate, dir, &interrupted)
    })
}
