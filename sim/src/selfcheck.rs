//! `sleepyseal-sim --self-check`: the negative controls. Each control plants a known bug (or puts
//! more than f Byzantine stake in play) and runs seeds until the invariant checkers report a
//! violation. A control the checkers never catch means the checkers are blind to that bug: the
//! self-check then fails. Each control's scenario is also run with the bug removed over the same
//! number of seeds, which must report nothing (the checkers bite because of the bug, not the
//! scenario).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;
use sleepyseal_sim::controls::{self, Control};
use sleepyseal_sim::run;

/// The outcome of one control.
#[derive(Serialize, Debug)]
struct Outcome {
    name: &'static str,
    what: &'static str,
    caught: bool,
    /// Seeds run until the first violation (or the limit).
    seeds_needed: Option<u64>,
    limit: u64,
    /// The first violation reported.
    first_violation: Option<String>,
    /// Violations of the same scenario without the bug, over the same seeds (must be 0).
    baseline_seeds: u64,
    baseline_violations: u64,
    baseline_panics: u64,
}

/// The JSON summary of `--self-check`.
#[derive(Serialize, Debug)]
struct SelfCheck {
    mutants_total: usize,
    mutants_caught: usize,
    baseline_violations: u64,
    controls: Vec<Outcome>,
    wall_s: f64,
}

/// Seeds of each scenario run without its bug, at least.
const BASELINE_SEEDS: u64 = 20;

fn check(control: &Control) -> Outcome {
    let mut seeds_needed = None;
    let mut first_violation = None;
    for seed in 0..control.limit {
        let cfg = (control.make)(seed);
        match catch_unwind(AssertUnwindSafe(|| run(cfg))) {
            Ok(report) => {
                if let Some(v) = report.violations.first() {
                    seeds_needed = Some(seed + 1);
                    first_violation = Some(format!("seed {seed}: {} {}", v.invariant, v.detail));
                    break;
                }
            }
            Err(_) => {
                // A planted bug that makes a core panic is caught too (an assertion fired).
                seeds_needed = Some(seed + 1);
                first_violation = Some(format!("seed {seed}: panic"));
                break;
            }
        }
    }
    let (mut baseline_seeds, mut baseline_violations, mut baseline_panics) = (0, 0, 0);
    if let Some(baseline) = control.baseline {
        let seeds = seeds_needed.unwrap_or(control.limit).max(BASELINE_SEEDS);
        for seed in 0..seeds {
            baseline_seeds += 1;
            match catch_unwind(AssertUnwindSafe(|| run(baseline(seed)))) {
                Ok(report) => baseline_violations += report.violations.len() as u64,
                Err(_) => baseline_panics += 1,
            }
        }
    }
    Outcome {
        name: control.name,
        what: control.what,
        caught: seeds_needed.is_some(),
        seeds_needed,
        limit: control.limit,
        first_violation: first_violation.map(|v| v.chars().take(300).collect()),
        baseline_seeds,
        baseline_violations,
        baseline_panics,
    }
}

/// Runs every control (in parallel over `threads`) and prints the result; fails if a control was
/// not caught or a baseline reported anything.
pub fn main(threads: usize, json: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let controls = controls::all();
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(control) = controls.get(i) else {
                    break;
                };
                let outcome = check(control);
                outcomes.lock().expect("not poisoned").push((i, outcome));
            });
        }
    });
    let mut outcomes = outcomes.into_inner().expect("not poisoned");
    outcomes.sort_by_key(|(i, _)| *i);
    let controls: Vec<Outcome> = outcomes.into_iter().map(|(_, o)| o).collect();
    let summary = SelfCheck {
        mutants_total: controls.len(),
        mutants_caught: controls.iter().filter(|c| c.caught).count(),
        baseline_violations: controls
            .iter()
            .map(|c| c.baseline_violations + c.baseline_panics)
            .sum(),
        controls,
        wall_s: started.elapsed().as_secs_f64(),
    };
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("sleepyseal-sim --self-check: negative controls");
        for c in &summary.controls {
            println!(
                "  {:<24} {:<8} {:<18} baseline {} seeds, {} violations — {}",
                c.name,
                if c.caught { "caught" } else { "MISSED" },
                c.seeds_needed
                    .map(|s| format!("after {s} seed(s)"))
                    .unwrap_or_else(|| format!("in {} seeds", c.limit)),
                c.baseline_seeds,
                c.baseline_violations + c.baseline_panics,
                c.what
            );
        }
        println!(
            "  caught {}/{} in {:.1} s",
            summary.mutants_caught, summary.mutants_total, summary.wall_s
        );
    }
    if summary.mutants_caught < summary.mutants_total || summary.baseline_violations > 0 {
        std::process::exit(1);
    }
    Ok(())
}
