//! The campaign's summary: figures summed over every seed, per behaviour with `--byzantine`,
//! printed readable or as one JSON object.

use serde::Serialize;
use sleepyseal_sim::{Behaviour, SimReport};

use crate::{behaviour_of, SimArgs};

/// The JSON summary.
#[derive(Serialize, Debug)]
pub(crate) struct Summary {
    seeds: u64,
    pub(crate) violations: u64,
    pub(crate) panics: u64,
    not_live: u64,
    min_commits: u64,
    max_commit_gap_rounds: u64,
    restarts: u64,
    restarted_caught_up: u64,
    acked_transactions: u64,
    slow_transactions: u64,
    failing_seeds: Vec<u64>,
    first_violations: Vec<String>,
    events: u64,
    /// Old chains (`old-chains`) that reached the present and joined the honest DAG, and the
    /// certificates the adversary formed for them.
    old_chains_joined: u64,
    old_chain_certificates: u64,
    old_chain_committed: u64,
    /// Checkpoint states honest cores signed (distinct indices per seed, summed), each checked.
    checkpoints: u64,
    /// Checkpoints honest cores installed.
    installs: u64,
    /// Gap entries honest cores verified through fills, honest cores whose gap was still open
    /// at the end, and transactions proposed again after FILL_TIMEOUT (possible duplicates).
    gap_entries_filled: u64,
    gaps_open: u64,
    possibly_duplicated: u64,
    /// Forged checkpoint certificates offered to honest cores (`forged-checkpoints`).
    forged_checkpoints: u64,
    /// Damaged fills handed to honest cores (`forged-fills`).
    forged_fills: u64,
    /// Real certificates offered to honest cores as early as the rules allow (`eager-installs`).
    eager_installs: u64,
    /// Crashes injected at installs (`--install-crashes`).
    install_crashes: u64,
    /// Rounds the others advanced from a restart until the restarted core was back within 2
    /// rounds of them: median and largest over every restart, and restarts never back.
    rejoin_rounds_median: u64,
    rejoin_rounds_max: u64,
    not_rejoined: u64,
    /// Seeds that stayed live but ended with a restarted core not back or a gap still open (the
    /// first 20), to replay.
    lagging_seeds: Vec<u64>,
    /// Seeds with slow transactions (the first 20), to replay.
    slow_seeds: Vec<u64>,
    wall_s: f64,
    /// With --byzantine: the figures of the seeds of each behaviour.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    per_behaviour: Vec<PerBehaviour>,
}

impl Summary {
    /// The figures of a campaign's `results`, sorted by seed, and of each behaviour's seeds
    /// with `--byzantine`.
    pub(crate) fn of(args: &SimArgs, results: &[Result<SimReport, u64>], wall_s: f64) -> Summary {
        let mut summary = summarize(results, wall_s);
        if args.byzantine > 0 {
            summary.per_behaviour = per_behaviour(args, results);
        }
        summary
    }
}

/// Figures of the seeds that ran one behaviour.
#[derive(Serialize, Debug)]
struct PerBehaviour {
    behaviour: &'static str,
    seeds: u64,
    violations: u64,
    panics: u64,
    not_live: u64,
    min_commits: u64,
    max_commit_gap_rounds: u64,
}

/// The summary of each behaviour's seeds (`--byzantine`), in the order of [`Behaviour::ALL`].
fn per_behaviour(args: &SimArgs, results: &[Result<SimReport, u64>]) -> Vec<PerBehaviour> {
    Behaviour::ALL
        .into_iter()
        .filter_map(|b| {
            let mine: Vec<Result<SimReport, u64>> = results
                .iter()
                .filter(|r| {
                    let seed = match r {
                        Ok(report) => report.seed,
                        Err(seed) => *seed,
                    };
                    behaviour_of(&args.behaviour, seed) == b
                })
                .cloned()
                .collect();
            (!mine.is_empty()).then(|| {
                let s = summarize(&mine, 0.0);
                PerBehaviour {
                    behaviour: b.name(),
                    seeds: s.seeds,
                    violations: s.violations,
                    panics: s.panics,
                    not_live: s.not_live,
                    min_commits: s.min_commits,
                    max_commit_gap_rounds: s.max_commit_gap_rounds,
                }
            })
        })
        .collect()
}

fn summarize(results: &[Result<SimReport, u64>], wall_s: f64) -> Summary {
    let mut s = Summary {
        seeds: results.len() as u64,
        violations: 0,
        panics: 0,
        not_live: 0,
        min_commits: u64::MAX,
        max_commit_gap_rounds: 0,
        restarts: 0,
        restarted_caught_up: 0,
        acked_transactions: 0,
        slow_transactions: 0,
        failing_seeds: Vec::new(),
        first_violations: Vec::new(),
        events: 0,
        old_chains_joined: 0,
        old_chain_certificates: 0,
        old_chain_committed: 0,
        checkpoints: 0,
        installs: 0,
        gap_entries_filled: 0,
        forged_fills: 0,
        eager_installs: 0,
        install_crashes: 0,
        gaps_open: 0,
        possibly_duplicated: 0,
        forged_checkpoints: 0,
        rejoin_rounds_median: 0,
        rejoin_rounds_max: 0,
        not_rejoined: 0,
        lagging_seeds: Vec::new(),
        slow_seeds: Vec::new(),
        wall_s,
        per_behaviour: Vec::new(),
    };
    let mut rejoins: Vec<u64> = Vec::new();
    for result in results {
        match result {
            Err(seed) => {
                s.panics += 1;
                s.failing_seeds.push(*seed);
            }
            Ok(r) => {
                s.violations += r.violations.len() as u64;
                if !r.violations.is_empty() || !r.live {
                    s.failing_seeds.push(r.seed);
                }
                for v in r.violations.iter().take(2) {
                    if s.first_violations.len() < 10 {
                        s.first_violations
                            .push(format!("seed {}: {} {}", r.seed, v.invariant, v.detail));
                    }
                }
                s.not_live += u64::from(!r.live);
                s.min_commits = s.min_commits.min(r.min_commits);
                s.max_commit_gap_rounds = s.max_commit_gap_rounds.max(r.max_commit_gap_rounds);
                s.restarts += r.restarts;
                s.restarted_caught_up += r.restarted_caught_up;
                s.acked_transactions += r.acked_transactions;
                s.slow_transactions += r.slow_transactions;
                s.events += r.events;
                s.old_chains_joined += r.old_chains_joined;
                s.old_chain_certificates += r.old_chain_certificates;
                s.old_chain_committed += r.old_chain_committed;
                s.checkpoints += r.checkpoints;
                s.installs += r.installs;
                s.gap_entries_filled += r.gap_entries_filled;
                s.gaps_open += r.gaps_open;
                s.possibly_duplicated += r.possibly_duplicated;
                s.forged_checkpoints += r.forged_checkpoints;
                s.forged_fills += r.forged_fills;
                s.eager_installs += r.eager_installs;
                s.install_crashes += r.install_crashes;
                s.not_rejoined += r.not_rejoined;
                if r.live && r.violations.is_empty() && (r.not_rejoined > 0 || r.gaps_open > 0) {
                    s.lagging_seeds.push(r.seed);
                }
                if r.slow_transactions > 0 {
                    s.slow_seeds.push(r.seed);
                }
                rejoins.extend(&r.rejoin_rounds);
            }
        }
    }
    if s.min_commits == u64::MAX {
        s.min_commits = 0;
    }
    rejoins.sort_unstable();
    s.rejoin_rounds_median = rejoins.get(rejoins.len() / 2).copied().unwrap_or(0);
    s.rejoin_rounds_max = rejoins.last().copied().unwrap_or(0);
    s.failing_seeds.truncate(20);
    s.lagging_seeds.truncate(20);
    s.slow_seeds.truncate(20);
    s
}

pub(crate) fn print_readable(args: &SimArgs, s: &Summary) {
    let homes = if args.home_drivers {
        format!(" + home drivers ({} dead)", args.dead_home_drivers)
    } else {
        String::new()
    };
    println!(
        "sleepyseal-sim: {} cores, {} drivers{homes}, crash {}, restart {}, seeds {}..{}",
        args.cores,
        args.drivers,
        args.crash,
        args.restart,
        args.first_seed,
        args.first_seed + args.seeds
    );
    println!("  seeds run                 {}", s.seeds);
    println!("  safety violations         {}", s.violations);
    println!("  panics                    {}", s.panics);
    println!("  seeds not live            {}", s.not_live);
    println!("  fewest committed leaders  {}", s.min_commits);
    println!(
        "  largest commit gap        {} rounds",
        s.max_commit_gap_rounds
    );
    println!(
        "  restarts / caught up      {} / {}",
        s.restarts, s.restarted_caught_up
    );
    println!(
        "  acked / slow transactions {} / {}",
        s.acked_transactions, s.slow_transactions
    );
    if s.old_chain_certificates > 0 {
        println!(
            "  old chains: joined {}, certificates {}, committed {} (the rest cut at the floor)",
            s.old_chains_joined, s.old_chain_certificates, s.old_chain_committed
        );
    }
    println!(
        "  checkpoints signed        {} (each checked, S10)",
        s.checkpoints
    );
    if s.forged_checkpoints > 0 {
        println!(
            "  forged checkpoints        {} offered to every honest core, {} installs",
            s.forged_checkpoints, s.installs
        );
    }
    if s.restarts > 0 {
        println!(
            "  installs / not rejoined   {} / {}",
            s.installs, s.not_rejoined
        );
        println!(
            "  rounds to rejoin          median {}, largest {} (the others' rounds from a restart until within 2 of them)",
            s.rejoin_rounds_median, s.rejoin_rounds_max
        );
        if s.forged_fills > 0 {
            println!(
                "  forged fills              {} handed to honest cores (S12 checks what they hold)",
                s.forged_fills
            );
        }
        if s.eager_installs > 0 {
            println!(
                "  early installs offered    {} (the oldest real certificate each core must take, or one exactly GC_DEPTH ahead, to refuse)",
                s.eager_installs
            );
        }
        if s.install_crashes > 0 {
            println!(
                "  crashes at installs       {} (half before the install's write was durable)",
                s.install_crashes
            );
        }
        if s.installs > 0 {
            println!(
                "  gaps: entries filled {}, open at the end {}, possibly duplicated transactions {}",
                s.gap_entries_filled, s.gaps_open, s.possibly_duplicated
            );
        }
    }
    println!("  events                    {}", s.events);
    println!("  wall time                 {:.1} s", s.wall_s);
    for b in &s.per_behaviour {
        println!(
            "  byzantine {:<20} seeds {:>5}, violations {}, panics {}, not live {}, largest gap {} rounds",
            b.behaviour, b.seeds, b.violations, b.panics, b.not_live, b.max_commit_gap_rounds
        );
    }
    for v in &s.first_violations {
        println!("  ! {v}");
    }
    if !s.failing_seeds.is_empty() {
        println!(
            "  failing seeds (replay with --seed N --seeds 1): {:?}",
            s.failing_seeds
        );
    }
    if !s.lagging_seeds.is_empty() {
        println!(
            "  seeds with a core not back or a gap open (replay with --seed N --seeds 1): {:?}",
            s.lagging_seeds
        );
    }
    if !s.slow_seeds.is_empty() {
        println!(
            "  seeds with slow transactions (replay with --seed N --seeds 1): {:?}",
            s.slow_seeds
        );
    }
}
