//! `sleepyseal local`: the benchmark harness and the chaos run, on one machine.
//!
//! - [`args`]: the flags of `sleepyseal local`;
//! - [`testbed`]: a run's testbed: ports, genesis, starting cores, drivers and load clients as
//!   processes of this same binary, readiness, metrics scrapes; used by every harness;
//! - [`local`]: the benchmark (one run or a sweep of rates);
//! - [`chaos`]: real-process perturbation with a workload check (`--chaos`);
//! - [`report`], [`table`], [`plot`]: the figures computed from what the watchers saw
//!   ([`crate::node::observe`]), and their text and SVG forms.
//!
//! Dependencies go one way: `local` and `chaos` use `testbed`; `local` uses the report modules;
//! neither harness uses the other.

pub mod args;
pub mod chaos;
pub mod cluster;
pub mod compare;
pub mod local;
pub mod output;
pub mod plot;
pub mod report;
pub mod sweep;
pub mod table;
pub mod testbed;
pub mod wan;

pub use args::LocalArgs;

pub use crate::node::signal_flag as interrupt_flag;

/// A run ended by Ctrl-C or SIGTERM (after winding down and reporting what it had): the command
/// exits with status 130, without an error trace.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Runs the benchmark, or with `--chaos` the chaos run. `reparse` parses the command line again
/// with one more flag (each run of a `--sweep`).
pub fn main(
    args: LocalArgs,
    reparse: &dyn Fn(&str) -> anyhow::Result<LocalArgs>,
) -> anyhow::Result<()> {
    args.validate()?;
    if args.chaos {
        if args.sweep.is_some() {
            anyhow::bail!("--sweep is for benchmark runs, not --chaos");
        }
        chaos::main(args)
    } else {
        local::main(args, reparse)
    }
}
