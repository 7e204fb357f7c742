//! `sleepyseal local --chaos`: real-process perturbation with a workload check.
//!
//! Four cores (or `--cores`), at least two standalone drivers and a load client run on 127.0.0.1
//! while the harness, in turn: kills each core with SIGKILL and restarts it from its store;
//! keeps one core killed for `--chaos-away-s` (60 s) under load, far longer than the others
//! retain its history, so it rejoins through a checkpoint and fills the gap (PROTOCOL.md §8a);
//! freezes a core with SIGSTOP for 10 s and thaws it; kills a standalone driver mid-run and
//! starts a new one; restarts every core one after another (SIGTERM, then start again). After
//! each perturbation of a core it times how long that core takes to get back within 2 rounds of
//! the others.
//!
//! Every core runs its home driver in its process (unless `--no-home-drivers`), and standalone
//! driver j has home core j (so killing it leaves its core's home driver to carry its payloads).
//! Killing a core kills its home driver with it. Liveness without a home driver is checked by
//! the simulator (`sim_home_drivers`) rather than here: a core without one commits its
//! transactions with a tail (an own header re-served after a restart is orphaned, and its
//! transactions come back after gc depth rounds), which at this run's idle rounds outlasted the
//! 30 s drain in 3 of 14 runs.
//!
//! Throughout, one follower per core records its committed sequence (entries and transactions)
//! and a poller records every own header each core reports ([`collect`]). At the end the harness
//! checks agreement, the workload and double signing ([`check`]).

mod check;
mod collect;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use sleepyseal_net::{Clients, NetLimits};
use tokio::runtime::Runtime;

use self::check::{check, read_acked, record, RunShape, Step};
use self::collect::Collectors;
use super::args::LocalArgs;
use super::testbed::{self, wait_ready, Proc, Spec, Testbed};
use crate::node::runtime;
use crate::node::transaction::unix_micros;

/// How far behind the others (in rounds) a perturbed core may be and count as recovered.
const RECOVERED_WITHIN_ROUNDS: u64 = 2;
/// Longest wait for a perturbed core to recover before the step is marked failed.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// Runs the chaos scenario; fails if any check fails.
pub fn main(args: LocalArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if args.cores < 4 {
        bail!("--chaos needs at least 4 cores (one may be down at a time)");
    }
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(format!("chaos-{}", unix_micros() / 1_000_000))
    });
    let rt = runtime("harness")?;
    let mut chaos = Chaos::start(&rt, &args, &out)?;
    let instance = chaos.bed.net.committee.instance();
    let collectors = Collectors::start(&rt, &chaos.clients, instance, args.cores);
    // The load runs through the whole scenario; it is stopped with SIGTERM at the end, which
    // makes it write the acknowledged ranges.
    let acked_path = out.join("acked.txt");
    let mut load = chaos.start_load(&out, &acked_path)?;
    std::thread::sleep(Duration::from_secs(5));
    let steps = chaos.perturb()?;
    // Stop the load, then let everything acknowledged commit.
    load.stop(Duration::from_secs(15));
    let acked = read_acked(&acked_path)?;
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(30) && !collectors.all_committed(&acked) {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let collected = collectors.finish(&rt, &chaos.clients);
    chaos.stop();
    let shape = RunShape {
        cores: args.cores,
        drivers: chaos.drivers.len(),
        rate: args.rate,
        started,
    };
    let report = check(shape, steps, &collected, &acked);
    let pretty = serde_json::to_string_pretty(&report)?;
    std::fs::write(out.join("chaos.json"), &pretty)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{pretty}");
    }
    eprintln!("results in {}", out.display());
    if report.failed() {
        bail!("chaos run failed its checks (see {})", out.display());
    }
    Ok(())
}

/// A chaos run in progress: its testbed, its processes and the harness's clients.
struct Chaos<'a> {
    rt: &'a Runtime,
    args: &'a LocalArgs,
    bed: Testbed,
    cores: Vec<Proc>,
    drivers: Vec<Proc>,
    clients: Arc<Clients>,
}

impl<'a> Chaos<'a> {
    /// Writes the testbed, starts every core, waits until they answer, starts the standalone
    /// drivers (at least two, so commits go on while one is down, even without home drivers).
    fn start(rt: &'a Runtime, args: &'a LocalArgs, out: &Path) -> anyhow::Result<Chaos<'a>> {
        let n = args.cores;
        let drivers = args.drivers.max(2);
        // Payloads of committed entries kept long enough for the followers to read every
        // transaction (the workload check). Retention is the default: a core away longer than
        // it covers comes back through a checkpoint.
        let core_extra = vec!["--committed-window-bytes=1073741824".to_string()];
        let spec = Spec {
            cores: n,
            drivers,
            stakes: args.stakes.clone(),
            base_port: args.base_port,
            seed: 7,
            constants: args.constants(),
            flags: args.node_flags(),
            core_extra,
            loads: 1,
            wan: args.wan.clone(),
        };
        let bed = Testbed::create(out, spec)?;
        let cores: Vec<Proc> = (0..n)
            .map(|i| bed.start_core(i))
            .collect::<Result<_, _>>()?;
        let options = bed.client_options()?;
        let clients =
            Arc::new(rt.block_on(async {
                Clients::with_options(&bed.net, NetLimits::default(), options)
            })?);
        let deadline = Instant::now() + Duration::from_secs(30);
        let instance = bed.net.committee.instance();
        for i in 0..n {
            wait_ready(rt, &clients, instance, i, deadline, || None)?;
        }
        let drivers: Vec<Proc> = (0..drivers)
            .map(|j| bed.start_driver(j, Some(j % n)))
            .collect::<Result<_, _>>()?;
        Ok(Chaos {
            rt,
            args,
            bed,
            cores,
            drivers,
            clients,
        })
    }

    /// Starts the load on every core, for longer than the run: it is stopped with SIGTERM.
    fn start_load(&self, out: &Path, acked_path: &Path) -> anyhow::Result<Proc> {
        let flags = [
            format!("--rate={}", self.args.rate),
            format!("--tx-size={}", self.args.tx_size),
            "--duration=100000".to_string(),
            "--core=all".to_string(),
            "--json".to_string(),
            format!("--acked-out={}", acked_path.display()),
        ];
        self.bed.start_load(0, &flags, &out.join("load-0.json"))
    }

    /// The perturbations, in turn, each with how the system took it.
    fn perturb(&mut self) -> anyhow::Result<Vec<Step>> {
        let mut steps = Vec::new();
        self.kill_and_restart_each_core(&mut steps)?;
        if self.args.chaos_away_s > 0 {
            self.away_under_load(&mut steps)?;
        }
        self.freeze_a_core(&mut steps)?;
        self.kill_a_driver(&mut steps)?;
        self.restart_every_core(&mut steps)?;
        Ok(steps)
    }

    /// kill -9 each core and restart it from its store 2 s later.
    fn kill_and_restart_each_core(&mut self, steps: &mut Vec<Step>) -> anyhow::Result<()> {
        for i in 0..self.cores.len() {
            self.cores[i].kill();
            std::thread::sleep(Duration::from_secs(2));
            self.cores[i] = self.bed.start_core(i)?;
            let r = self.recovery(i);
            let what = format!("core {i}: SIGKILL, restart from its store after 2 s");
            record(steps, what, r);
            std::thread::sleep(Duration::from_secs(2));
        }
        Ok(())
    }

    /// kill -9 a core, keep it away under load for `--chaos-away-s`, restart it from its store:
    /// it is back once within 2 rounds of the others, and then the gap its install left must be
    /// filled too (its `gap_entries` gauge back at 0 after at least one install).
    fn away_under_load(&mut self, steps: &mut Vec<Step>) -> anyhow::Result<()> {
        let i = 1;
        let away = self.args.chaos_away_s;
        self.cores[i].kill();
        std::thread::sleep(Duration::from_secs(away));
        self.cores[i] = self.bed.start_core(i)?;
        let since = Instant::now();
        let r = self.recovery(i);
        let what = format!("core {i}: SIGKILL, away {away} s under load, restart from its store");
        record(steps, what, r);
        let port = self.bed.core_metrics[i];
        let mut filled = None;
        while since.elapsed() < RECOVERY_LIMIT {
            let installed = self.metric(port, "sleepyseal_core_checkpoints_installed_total");
            let open = self.metric(port, "sleepyseal_core_gap_entries");
            if installed.is_some_and(|n| n > 0) && open == Some(0) {
                filled = Some(since.elapsed().as_secs_f64());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let entries = self.metric(port, "sleepyseal_core_gap_entries_filled_total");
        let what = format!(
            "core {i}: the gap its checkpoint install left filled ({} entries; seconds from its \
             restart)",
            entries.map_or("?".into(), |e| e.to_string())
        );
        record(steps, what, filled);
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    }

    /// SIGSTOP a core for 10 s.
    fn freeze_a_core(&mut self, steps: &mut Vec<Step>) -> anyhow::Result<()> {
        self.cores[0].signal("STOP")?;
        std::thread::sleep(Duration::from_secs(10));
        self.cores[0].signal("CONT")?;
        let r = self.recovery(0);
        let what = "core 0: SIGSTOP for 10 s, then SIGCONT".to_string();
        record(steps, what, r);
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    }

    /// Kill a standalone driver mid-run; commits must go on (the other drivers) and a new one
    /// joins.
    fn kill_a_driver(&mut self, steps: &mut Vec<Step>) -> anyhow::Result<()> {
        let before = self.max_committed_round();
        self.drivers[0].kill();
        let since = Instant::now();
        let mut resumed = None;
        while since.elapsed() < RECOVERY_LIMIT {
            if self.max_committed_round() >= before + 4 {
                resumed = Some(since.elapsed().as_secs_f64());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let what = "driver 0: SIGKILL (commits advance 4 rounds on the other drivers)".to_string();
        record(steps, what, resumed);
        std::thread::sleep(Duration::from_secs(2));
        self.drivers[0] = self.bed.start_driver(0, Some(0))?;
        Ok(())
    }

    /// Restart every core, one after another (SIGTERM, start).
    fn restart_every_core(&mut self, steps: &mut Vec<Step>) -> anyhow::Result<()> {
        for i in 0..self.cores.len() {
            self.cores[i].stop(Duration::from_secs(10));
            self.cores[i] = self.bed.start_core(i)?;
            let r = self.recovery(i);
            let what = format!("core {i}: rolling restart (SIGTERM, start)");
            record(steps, what, r);
        }
        Ok(())
    }

    /// Seconds until core `i` is within [`RECOVERED_WITHIN_ROUNDS`] of the most advanced other
    /// core (`None` after [`RECOVERY_LIMIT`]).
    fn recovery(&self, i: usize) -> Option<f64> {
        let since = Instant::now();
        while since.elapsed() < RECOVERY_LIMIT {
            let rounds: Vec<Option<u64>> = (0..self.cores.len())
                .map(|j| self.metric(self.bed.core_metrics[j], "sleepyseal_core_round"))
                .collect();
            if let Some(mine) = rounds[i] {
                let others = rounds
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .filter_map(|(_, r)| *r)
                    .max()
                    .unwrap_or(0);
                if mine + RECOVERED_WITHIN_ROUNDS >= others && mine > 0 {
                    return Some(since.elapsed().as_secs_f64());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The highest last committed round any core reports.
    fn max_committed_round(&self) -> u64 {
        self.bed
            .core_metrics
            .iter()
            .filter_map(|p| self.metric(*p, "sleepyseal_core_last_committed_round"))
            .max()
            .unwrap_or(0)
    }

    /// Metric `name` of the process whose metrics are on `port`, if it answers.
    fn metric(&self, port: u16, name: &str) -> Option<u64> {
        let text = testbed::scrape(self.rt, port, Duration::from_millis(500))?;
        sleepyseal_net::metrics::sample(&text, name).map(|v| v as u64)
    }

    /// Stops drivers and cores, closes the clients, deletes the testbed unless kept.
    fn stop(&mut self) {
        for p in self.drivers.iter_mut() {
            p.stop(Duration::from_secs(5));
        }
        for p in self.cores.iter_mut() {
            p.stop(Duration::from_secs(10));
        }
        self.rt.block_on(self.clients.close());
        self.bed.remove(self.args.keep_testbed);
    }
}
