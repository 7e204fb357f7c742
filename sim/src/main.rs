//! `sleepyseal-sim`: many seeds of the simulator, in parallel, with a summary; `--self-check`
//! runs the negative controls.

mod selfcheck;
mod summary;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use sleepyseal_core::committee::{
    thresholds, ProtocolConstants, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_GC_DEPTH,
};
use sleepyseal_core::Stake;
use sleepyseal_sim::{run, Behaviour, HomeDrivers, SimConfig, SimDebug, SimReport};

use summary::{print_readable, Summary};

/// Rounds a campaign seed runs to by default: more than a test's [`SimConfig::default`] (30), so
/// that campaigns cross more garbage-collection cycles per seed.
const CAMPAIGN_ROUNDS: u64 = 40;

/// The deterministic simulator of sleepyseal over many seeds: every invariant of PROTOCOL.md §9
/// checked after every step, liveness figures, Byzantine cores and drivers, negative controls.
#[derive(Parser, Debug)]
#[command(name = "sleepyseal-sim", version, about)]
struct SimArgs {
    /// Validators (cores).
    #[arg(long, default_value_t = SimConfig::default().cores)]
    cores: usize,
    /// Stake per core, comma separated (default: 1 each).
    #[arg(long, value_delimiter = ',')]
    stakes: Option<Vec<u64>>,
    /// Honest drivers without a home core (0 is allowed with --home-drivers).
    #[arg(long, default_value_t = SimConfig::default().drivers)]
    drivers: usize,
    /// Add a home-core driver per core (PROTOCOL.md §7), --dead-home-drivers of them dead. The
    /// home-core campaign: `--home-drivers --drivers 0`, where liveness of a core whose home
    /// driver is dead comes from the others' on-demand carriage.
    #[arg(long)]
    home_drivers: bool,
    /// With --home-drivers: home drivers that never start or crash for good mid-run (drawn from
    /// the seed; at most all but one).
    #[arg(long, default_value_t = 1, requires = "home_drivers")]
    dead_home_drivers: usize,
    /// Number of seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed (seeds run are first..first+seeds). Replay one failure with --seed N --seeds 1.
    #[arg(long = "seed", default_value_t = 0)]
    first_seed: u64,
    /// Run until every live honest core committed a leader at this round.
    #[arg(long, default_value_t = CAMPAIGN_ROUNDS)]
    rounds: u64,
    /// Virtual-time limit per seed, in ms (hitting it is a liveness failure).
    #[arg(long, default_value_t = SimConfig::default().max_time_ms)]
    max_time_ms: u64,
    /// Cores crashed for good early in each run (at most f by stake).
    #[arg(long, default_value_t = SimConfig::default().crash)]
    crash: usize,
    /// Cores crashed and restarted from their store, one after another.
    #[arg(long, default_value_t = SimConfig::default().restart)]
    restart: usize,
    /// How long each restarted core stays down, in ms of virtual time: `LOW-HIGH` (default
    /// 100-1200). Outages far beyond what the others retain (gc depth + retention rounds) make
    /// the restarted core rejoin through a checkpoint (PROTOCOL.md §8a).
    #[arg(long, value_parser = parse_range, default_value = "100-1200")]
    outage_ms: (u64, u64),
    /// Crash each core once at its first checkpoint install: half the time before the
    /// install's write is durable (it is lost), half the time just after; back 50–500 ms later.
    #[arg(long)]
    install_crashes: bool,
    /// Do not kill and restart a driver mid-run.
    #[arg(long)]
    no_driver_crash: bool,
    /// Message loss per mille.
    #[arg(long, default_value_t = SimConfig::default().drop_per_mille)]
    drop_per_mille: u32,
    /// Message duplication per mille.
    #[arg(long, default_value_t = SimConfig::default().duplicate_per_mille)]
    duplicate_per_mille: u32,
    /// Minimum one-way latency, ms.
    #[arg(long, default_value_t = SimConfig::default().latency_ms.0)]
    latency_min_ms: u64,
    /// Maximum one-way latency, ms (the spread reorders messages).
    #[arg(long, default_value_t = SimConfig::default().latency_ms.1)]
    latency_max_ms: u64,
    /// Requests each driver keeps in flight per core.
    #[arg(long, default_value_t = SimConfig::default().driver.pipeline_depth)]
    pipeline_depth: usize,
    /// Do not cut driver–core links.
    #[arg(long)]
    no_partitions: bool,
    /// Load client transactions per second (virtual time).
    #[arg(long, default_value_t = SimConfig::default().load_tx_per_s)]
    load_tx_per_s: u64,
    /// Worker threads (seeds run in parallel; each seed is single-threaded and deterministic).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print one JSON object instead of the readable summary.
    #[arg(long)]
    json: bool,
    /// Byzantine count for --behaviour: for a core behaviour, the first K cores misbehave (with
    /// the crashed and restarting cores, at most f stake); for twin and twins-scenario, K
    /// equivocating twins (also within f); for a driver behaviour, K hostile drivers beside the
    /// honest --drivers.
    #[arg(long, default_value_t = SimConfig::default().byzantine)]
    byzantine: usize,
    /// What the Byzantine part does. Cores: withhold-votes, withhold-headers,
    /// invalid-signatures, stale-replies, amnesia, far-future-rounds, bad-parents, bad-payloads,
    /// old-chains, forged-checkpoints, twin, twins-scenario. Drivers: omit-leader,
    /// replay-bundles, reorder-bundles, truncate-bundles, mix-rounds, garbage, forged-fills,
    /// eager-installs. Both: mixed (each Byzantine core a different core behaviour, plus one
    /// hostile driver). Or all: seed s runs the (s mod 21)-th.
    #[arg(long, default_value = "all")]
    behaviour: String,
    /// Keep gc depth and retention at their defaults in every seed (by default two seeds in
    /// three run with a small gc depth and retention window).
    #[arg(long)]
    no_vary_storage: bool,
    /// GC_DEPTH of the committee (PROTOCOL.md §4.6), in the seeds that keep the default depth
    /// (all of them with --no-vary-storage).
    #[arg(long, default_value_t = DEFAULT_GC_DEPTH)]
    gc_depth: u64,
    /// CHECKPOINT_INTERVAL of the committee (PROTOCOL.md §8a), in the seeds that keep the
    /// default depth.
    #[arg(long, default_value_t = DEFAULT_CHECKPOINT_INTERVAL)]
    checkpoint_interval: u64,
    /// Rounds below gc_round each core retains to serve lagging cores, in the seeds that keep
    /// the default depth.
    #[arg(long, default_value_t = SimConfig::default().core.retention_rounds)]
    retention_rounds: u64,
    /// Run the negative controls instead (planted bugs, more than f Byzantine stake): each must
    /// be caught by the checkers, and the same scenarios without the bug must report nothing.
    #[arg(long)]
    self_check: bool,
    /// Write each seed's trace hash (S7: the same seed gives the same trace) to this file, one
    /// `seed hex` line per seed in seed order, to compare two builds seed by seed.
    #[arg(long)]
    traces: Option<std::path::PathBuf>,
    /// At the end of each seed, print every core's and driver's state to stderr (with one seed).
    #[arg(long)]
    debug_dump: bool,
    /// Print every reply this core instance sends a driver to stderr (with one seed).
    #[arg(long)]
    trace_instance: Option<usize>,
}

fn config(args: &SimArgs, seed: u64) -> SimConfig {
    let mut config = SimConfig {
        cores: args.cores,
        stakes: args.stakes.clone(),
        drivers: args.drivers,
        home_drivers: args.home_drivers.then_some(HomeDrivers {
            dead: args.dead_home_drivers,
        }),
        seed,
        rounds: args.rounds,
        max_time_ms: args.max_time_ms,
        crash: args.crash,
        restart: args.restart,
        outage_ms: args.outage_ms,
        install_crashes: args.install_crashes,
        driver_crash: !args.no_driver_crash,
        latency_ms: (args.latency_min_ms, args.latency_max_ms),
        drop_per_mille: args.drop_per_mille,
        duplicate_per_mille: args.duplicate_per_mille,
        partitions: !args.no_partitions,
        load_tx_per_s: args.load_tx_per_s,
        byzantine: args.byzantine,
        behaviour: behaviour_of(&args.behaviour, seed),
        vary_storage: !args.no_vary_storage,
        constants: ProtocolConstants {
            gc_depth: args.gc_depth,
            checkpoint_interval: args.checkpoint_interval,
        },
        debug: SimDebug {
            dump: args.debug_dump,
            trace_instance: args.trace_instance,
        },
        ..SimConfig::default()
    };
    config.driver.pipeline_depth = args.pipeline_depth.max(1);
    config.core.retention_rounds = args.retention_rounds;
    config
}

/// The behaviour seed `seed` runs with (`all` rotates through every one).
fn behaviour_of(name: &str, seed: u64) -> Behaviour {
    if name == "all" {
        Behaviour::ALL[(seed % Behaviour::ALL.len() as u64) as usize]
    } else {
        Behaviour::from_name(name).unwrap_or_default()
    }
}

fn validate(args: &SimArgs) -> anyhow::Result<()> {
    if args.cores == 0 || args.cores > 64 {
        bail!("--cores must be in 1..=64");
    }
    if args.drivers == 0 && !args.home_drivers {
        bail!("--drivers must be at least 1 without --home-drivers (liveness needs a driver)");
    }
    if args.home_drivers && args.dead_home_drivers >= args.cores && args.drivers == 0 {
        bail!("--dead-home-drivers must leave a live driver (at most --cores − 1)");
    }
    let stakes = args.stakes.clone().unwrap_or_else(|| vec![1; args.cores]);
    if stakes.len() != args.cores || stakes.contains(&0) {
        bail!("--stakes needs {} positive values", args.cores);
    }
    let total: u64 = stakes.iter().sum();
    let (f, _, _) = thresholds(Stake(total));
    let mut sorted = stakes.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    // Hostile drivers take no stake; every core behaviour and twins do.
    let only_drivers = args.behaviour != "all"
        && Behaviour::from_name(&args.behaviour).is_some_and(Behaviour::is_driver);
    let byzantine_cores = if only_drivers { 0 } else { args.byzantine };
    let worst: u64 = sorted
        .iter()
        .take(args.crash + args.restart.min(1) + byzantine_cores)
        .sum();
    if worst > f.0 {
        bail!(
            "--crash {} (+1 restarting) and --byzantine {} can take down {worst} stake, above f = {}: \
             nothing to check",
            args.crash,
            args.byzantine,
            f.0
        );
    }
    if args.behaviour != "all" && Behaviour::from_name(&args.behaviour).is_none() {
        bail!(
            "--behaviour must be all or one of {}",
            Behaviour::ALL.map(Behaviour::name).join(", ")
        );
    }
    ProtocolConstants {
        gc_depth: args.gc_depth,
        checkpoint_interval: args.checkpoint_interval,
    }
    .check()
    .context("--gc-depth / --checkpoint-interval")?;
    if args.latency_min_ms > args.latency_max_ms {
        bail!("--latency-min-ms exceeds --latency-max-ms");
    }
    Ok(())
}

/// `LOW-HIGH` as a range.
fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not LOW-HIGH"))?;
    let low: u64 = low.trim().parse().map_err(|e| format!("{low:?}: {e}"))?;
    let high: u64 = high.trim().parse().map_err(|e| format!("{high:?}: {e}"))?;
    if low > high {
        return Err(format!("{low} exceeds {high}"));
    }
    Ok((low, high))
}

fn main() -> anyhow::Result<()> {
    campaign(SimArgs::parse())
}

/// Runs the seeds and prints the summary.
fn campaign(args: SimArgs) -> anyhow::Result<()> {
    if args.self_check {
        return selfcheck::main(args.threads, args.json);
    }
    validate(&args)?;
    let started = Instant::now();
    let next = AtomicU64::new(args.first_seed);
    let end = args
        .first_seed
        .checked_add(args.seeds)
        .context("seed range overflows")?;
    let results: Mutex<Vec<Result<SimReport, u64>>> = Mutex::new(Vec::new());
    let progress = progress_bar(args.seeds);
    std::thread::scope(|scope| {
        for _ in 0..args.threads.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                let cfg = config(&args, seed);
                let outcome = catch_unwind(AssertUnwindSafe(|| run(cfg))).map_err(|_| seed);
                results.lock().expect("results lock").push(outcome);
                progress.inc(1);
            });
        }
    });
    progress.finish_and_clear();
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|r| match r {
        Ok(report) => report.seed,
        Err(seed) => *seed,
    });
    if let Some(path) = &args.traces {
        write_traces(path, &results)?;
    }
    let summary = Summary::of(&args, &results, started.elapsed().as_secs_f64());
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_readable(&args, &summary);
    }
    if summary.violations > 0 || summary.panics > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// A bar on stderr over the seeds of a campaign (drawn only on a terminal, so `--json` output
/// and logs stay clean).
fn progress_bar(seeds: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(seeds);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "[{bar:30}] {pos}/{len} seeds, {elapsed} elapsed, about {eta} left",
        )
        .expect("a valid template"),
    );
    bar
}

/// One `seed trace` line per seed (`panic` for a seed that panicked).
fn write_traces(path: &std::path::Path, results: &[Result<SimReport, u64>]) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut out = String::new();
    for result in results {
        match result {
            Ok(r) => {
                let hex: String = r.trace.0.iter().map(|b| format!("{b:02x}")).collect();
                writeln!(out, "{} {hex}", r.seed)?;
            }
            Err(seed) => writeln!(out, "{seed} panic")?,
        }
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}
