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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use sleepyseal_core::machine::{
    DEFAULT_BATCH_SIZE_BYTES, DEFAULT_GC_DEPTH, DEFAULT_LEADER_TIMEOUT_MS,
    DEFAULT_STRAGGLER_WAIT_MS,
};
use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::{AuthorityIndex, CoreError};
use sleepyseal_net::{Clients, GenesisOptions, NetLimits};

use crate::client::{parse_transaction, unix_micros, TX_HEADER_BYTES};
use crate::node::{runtime, shutdown_signal, DEFAULT_MAX_BATCH_DELAY_MS};
use crate::procs::{check_ports_free, Kind, Proc};
use crate::report::{self, Observed, Report, RunConfig};

/// Flags of `sleepyseal local`.
#[derive(Args, Debug, Clone)]
pub struct LocalArgs {
    /// Number of cores (validators).
    #[arg(long, default_value_t = 4)]
    pub cores: usize,
    /// Number of drivers.
    #[arg(long, default_value_t = 1)]
    pub drivers: usize,
    /// Stake per core, comma separated (default: 1 each).
    #[arg(long, value_delimiter = ',')]
    pub stakes: Option<Vec<u64>>,
    /// Input rate, transactions per second (open loop).
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    /// A sweep: one fresh run per rate, comma separated (overrides --rate).
    #[arg(long, value_delimiter = ',')]
    pub rates: Option<Vec<u64>>,
    /// Bytes per transaction (at least 24).
    #[arg(long, default_value_t = 512)]
    pub tx_size: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Most seconds to wait, after the load stops, for acknowledged transactions to commit.
    #[arg(long, default_value_t = 10)]
    pub drain: u64,
    /// Payload bytes per header (`sleepyseal core --batch-size`).
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE_BYTES)]
    pub batch_size: usize,
    /// How long (ms) a core may wait for a full batch (`sleepyseal core --max-batch-delay-ms`).
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH_DELAY_MS)]
    pub max_batch_delay_ms: u64,
    /// How long (ms) a core with a quorum waits for a live straggler's certificate
    /// (`sleepyseal core --straggler-wait-ms`).
    #[arg(long, default_value_t = DEFAULT_STRAGGLER_WAIT_MS)]
    pub straggler_wait_ms: u64,
    /// Signatures per verification batch (`sleepyseal core --verify-batch`).
    #[arg(long, default_value_t = 64)]
    pub verify_batch: usize,
    /// Signature verification threads per core.
    #[arg(long, default_value_t = 2)]
    pub verify_threads: usize,
    /// Requests in flight per core per driver (`sleepyseal driver --pipeline-depth`).
    #[arg(long, default_value_t = 2)]
    pub pipeline_depth: usize,
    /// Rounds of the DAG kept below the last committed leader.
    #[arg(long, default_value_t = DEFAULT_GC_DEPTH)]
    pub gc_depth: u64,
    /// How long (ms) a core waits for the leader, and for votes on it, before advancing without
    /// them (`sleepyseal core --leader-timeout-ms` and `--vote-timeout-ms`).
    #[arg(long, default_value_t = DEFAULT_LEADER_TIMEOUT_MS)]
    pub leader_timeout: u64,
    /// Cores that fail: the last K cores are never started (or killed at --crash-at).
    #[arg(long, default_value_t = 0)]
    pub crash: usize,
    /// Seconds after the load starts at which the --crash cores are killed (0: never started).
    #[arg(long, default_value_t = 0)]
    pub crash_at: u64,
    /// Load client processes (the rate is split between them).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// QUIC port of core 0; core i uses base-port + i, metrics use base-port + 1000 + i (cores)
    /// and base-port + 1100 + j (drivers).
    #[arg(long, default_value_t = 7300)]
    pub base_port: u16,
    /// Directory for the report, plots, logs and metrics (default: results/local-<unix time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep the testbed (keys, stores) in the output directory instead of deleting it.
    #[arg(long)]
    pub keep_testbed: bool,
    /// Print the report as one JSON object on stdout (an array for a sweep).
    #[arg(long)]
    pub json: bool,
    /// Instead of a benchmark, a chaos run with a workload check: kill -9 and restart each core,
    /// SIGSTOP a core for 10 s, kill a driver, restart every core in turn; then compare every
    /// core's committed sequence and check each acknowledged transaction committed exactly once.
    /// Uses --cores (≥ 4), --drivers (at least 2), --rate and --tx-size (e.g. --rate 2000
    /// --tx-size 64).
    #[arg(long)]
    pub chaos: bool,
}

/// Runs the benchmark (or a sweep) and prints its report.
pub fn main(args: LocalArgs) -> anyhow::Result<()> {
    validate(&args)?;
    if args.chaos {
        return crate::chaos::main(args);
    }
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(format!("local-{}", unix_micros() / 1_000_000))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let rates = args.rates.clone().unwrap_or_else(|| vec![args.rate]);
    let sweep = rates.len() > 1;
    let rt = runtime("harness")?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        let signal = {
            let _context = rt.enter();
            shutdown_signal()
        };
        rt.spawn(async move {
            signal.await;
            interrupted.store(true, Ordering::SeqCst);
        });
    }
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
        let report = run_once(&rt, &args, *rate, &dir, &interrupted)?;
        report::write_run(&dir, &report)?;
        if !args.json {
            println!("{}", report::table(&report));
        }
        reports.push(report);
    }
    if sweep {
        report::write_sweep(&out, &reports)?;
        if !args.json {
            println!("{}", report::sweep_table(&reports));
        }
    }
    if args.json {
        let value = if sweep {
            serde_json::to_value(&reports)?
        } else {
            serde_json::to_value(&reports[0])?
        };
        println!("{value}");
    }
    eprintln!("results in {}", out.display());
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn validate(args: &LocalArgs) -> anyhow::Result<()> {
    if args.cores == 0 || args.cores > 100 {
        bail!("--cores must be in 1..=100");
    }
    if args.drivers == 0 {
        bail!("--drivers must be at least 1");
    }
    if let Some(stakes) = &args.stakes {
        if stakes.len() != args.cores {
            bail!(
                "--stakes lists {} stakes for {} cores",
                stakes.len(),
                args.cores
            );
        }
    }
    if args.crash >= args.cores {
        bail!("--crash must leave at least one core running");
    }
    if args.crash_at > 0 && args.crash == 0 {
        bail!("--crash-at needs --crash K");
    }
    if args.tx_size < TX_HEADER_BYTES {
        bail!("--tx-size must be at least {TX_HEADER_BYTES} (client id, sequence, send time)");
    }
    if args.duration == 0 {
        bail!("--duration must be positive");
    }
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let rates = args.rates.clone().unwrap_or_else(|| vec![args.rate]);
    if rates.is_empty() || rates.contains(&0) {
        bail!("rates must be positive");
    }
    if rates.iter().any(|r| *r < args.clients as u64) {
        bail!("every rate must be at least one transaction per second per client");
    }
    let top = usize::from(args.base_port) + 1_100 + args.drivers;
    if top > usize::from(u16::MAX) || args.cores > 1_000 {
        bail!(
            "--base-port {} leaves no room for the metrics ports",
            args.base_port
        );
    }
    Ok(())
}

/// The processes of one run; dropping it kills whatever still runs.
struct Testbed {
    cores: Vec<Option<Proc>>,
    drivers: Vec<Proc>,
    loads: Vec<Proc>,
}

impl Testbed {
    fn all(&self) -> impl Iterator<Item = &Proc> {
        self.cores
            .iter()
            .flatten()
            .chain(self.drivers.iter())
            .chain(self.loads.iter())
    }

    fn stop_all(&mut self) {
        for p in self.loads.iter_mut().chain(self.drivers.iter_mut()) {
            p.stop(Duration::from_secs(5));
        }
        for p in self.cores.iter_mut().flatten() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// A process that died on its own, other than a crashed core or a finished load client.
    fn failed(&mut self) -> Option<String> {
        for p in self
            .cores
            .iter_mut()
            .flatten()
            .chain(self.drivers.iter_mut())
        {
            if let Some(status) = p.exited() {
                return Some(format!(
                    "{} {} exited ({status}); its log ends with:\n{}",
                    p.kind.name(),
                    p.index,
                    p.log_tail(15)
                ));
            }
        }
        None
    }
}

/// CPU seconds per process kind.
fn cpu_by_kind(bed: &Testbed) -> Vec<(Kind, f64)> {
    let mut out: Vec<(Kind, f64)> = Vec::new();
    for p in bed.all() {
        let cpu = p.cpu_seconds().unwrap_or(0.0);
        match out.iter_mut().find(|(k, _)| *k == p.kind) {
            Some((_, total)) => *total += cpu,
            None => out.push((p.kind, cpu)),
        }
    }
    out
}

/// Writes back the page cache before a run starts. Every core fsyncs each group commit, so
/// gigabytes left dirty by a build or by the previous run of a sweep (written back while the run
/// goes on) slowed the first seconds of a run: its rounds fell to a third and the backlog took
/// twenty seconds to drain.
fn flush_dirty_pages() {
    match std::process::Command::new("sync").status() {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("warning: `sync` before the run failed: {status}"),
        Err(e) => eprintln!("warning: `sync` before the run could not start: {e}"),
    }
}

fn run_once(
    rt: &tokio::runtime::Runtime,
    args: &LocalArgs,
    rate: u64,
    dir: &Path,
    interrupted: &AtomicBool,
) -> anyhow::Result<Report> {
    let n = args.cores;
    let logs = dir.join("logs");
    let metrics_dir = dir.join("metrics");
    std::fs::create_dir_all(&logs)?;
    std::fs::create_dir_all(&metrics_dir)?;
    let testbed_dir = dir.join("testbed");
    if testbed_dir.exists() {
        std::fs::remove_dir_all(&testbed_dir)
            .with_context(|| format!("remove the old {}", testbed_dir.display()))?;
    }
    flush_dirty_pages();
    let (core_metrics, driver_metrics) = claim_ports(args.base_port, n, args.drivers)?;
    let stakes = args.stakes.clone().unwrap_or_else(|| vec![1; n]);
    let committee_path = sleepyseal_net::genesis(
        &testbed_dir,
        &GenesisOptions {
            stakes,
            host: "127.0.0.1".into(),
            base_port: args.base_port,
            seed: Some(rate),
        },
    )?;
    let committee = committee_path.display().to_string();
    let testbed = sleepyseal_net::load_testbed(&committee_path)?;
    let crashed: Vec<usize> = (n - args.crash..n).collect();
    let live: Vec<usize> = (0..n - args.crash).collect();

    // Cores.
    let mut bed = Testbed {
        cores: Vec::new(),
        drivers: Vec::new(),
        loads: Vec::new(),
    };
    for (i, metrics_port) in core_metrics.iter().enumerate() {
        if crashed.contains(&i) && args.crash_at == 0 {
            bed.cores.push(None);
            continue;
        }
        bed.cores.push(Some(spawn_core(
            args,
            &committee,
            &testbed_dir,
            &logs,
            i,
            *metrics_port,
            &[],
        )?));
    }
    let watched = AuthorityIndex(live[0] as u16);
    let instance = testbed.committee.instance();
    let clients = rt.block_on(async { Clients::new(&testbed, NetLimits::default()) })?;
    let clients = Arc::new(clients);

    // Wait until every started core answers.
    let ready_deadline = Instant::now() + Duration::from_secs(30);
    let started_cores: Vec<usize> = (0..n).filter(|i| bed.cores[*i].is_some()).collect();
    for i in started_cores {
        wait_ready(rt, &clients, instance, i, ready_deadline, || bed.failed())?;
    }

    // Drivers.
    for (j, metrics_port) in driver_metrics.iter().enumerate() {
        bed.drivers
            .push(spawn_driver(args, &committee, &logs, j, *metrics_port)?);
    }

    // The watcher follows the commit stream from before the load starts.
    let load_seconds = args.warmup + args.duration;
    let load_start_us = unix_micros() + 200_000;
    let window = (
        load_start_us + args.warmup * 1_000_000,
        load_start_us + load_seconds * 1_000_000,
    );
    let observed = Arc::new(Mutex::new(Observed::new(load_start_us, window)));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = rt.spawn(watch_commits(
        clients.clone(),
        n,
        watched,
        instance,
        observed.clone(),
        stop_watch.clone(),
    ));

    // Load clients, on the cores that stay up.
    std::thread::sleep(Duration::from_micros(
        load_start_us.saturating_sub(unix_micros()),
    ));
    let targets = live
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let load_outputs: Vec<PathBuf> = (0..args.clients)
        .map(|c| dir.join(format!("load-{c}.json")))
        .collect();
    for (c, output) in load_outputs.iter().enumerate() {
        let share = rate / args.clients as u64 + u64::from((c as u64) < rate % args.clients as u64);
        let argv: Vec<String> = [
            "load".to_string(),
            format!("--committee={committee}"),
            format!("--rate={share}"),
            format!("--tx-size={}", args.tx_size),
            format!("--duration={load_seconds}"),
            format!("--core={targets}"),
            format!("--client-id={c}"),
            "--json".to_string(),
        ]
        .into();
        bed.loads.push(Proc::spawn(
            Kind::Load,
            c,
            &argv,
            &logs.join(format!("load-{c}.log")),
            Some(output),
        )?);
    }
    let started = Instant::now();
    let crash_at =
        (args.crash_at > 0 && args.crash > 0).then(|| Duration::from_secs(args.crash_at));
    let mut crash_done = crash_at.is_none();
    let mut cpu_at_start: Option<Vec<(Kind, f64)>> = None;
    let mut cpu_at_end: Option<Vec<(Kind, f64)>> = None;
    let mut progress = report::Progress::new(load_seconds);
    // The load phase.
    while started.elapsed() < Duration::from_secs(load_seconds) + Duration::from_millis(500) {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        if let Some(why) = bed.failed() {
            stop_watch.store(true, Ordering::SeqCst);
            bail!("{why}");
        }
        let now = unix_micros();
        if !crash_done && started.elapsed() >= crash_at.unwrap_or_default() {
            for i in &crashed {
                if let Some(p) = bed.cores[*i].as_mut() {
                    p.kill();
                }
                bed.cores[*i] = None;
            }
            crash_done = true;
        }
        if cpu_at_start.is_none() && now >= window.0 {
            cpu_at_start = Some(cpu_by_kind(&bed));
        }
        if cpu_at_end.is_none() && now >= window.1 {
            cpu_at_end = Some(cpu_by_kind(&bed));
        }
        progress.show(&observed.lock().expect("not poisoned"), now);
        for p in bed.loads.iter_mut() {
            p.sample_rss();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu_at_end = cpu_at_end.unwrap_or_else(|| cpu_by_kind(&bed));
    let cpu_at_start = cpu_at_start.unwrap_or_default();

    // Wait for the load clients to report, then drain.
    let load_deadline = Instant::now() + Duration::from_secs(15);
    for p in bed.loads.iter_mut() {
        while p.exited().is_none() && Instant::now() < load_deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let loads = report::read_loads(&load_outputs);
    let accepted: u64 = loads.iter().map(|l| l.accepted).sum();
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain);
    while Instant::now() < drain_deadline && !interrupted.load(Ordering::SeqCst) {
        if observed.lock().expect("not poisoned").load_committed >= accepted {
            break;
        }
        progress.show(&observed.lock().expect("not poisoned"), unix_micros());
        std::thread::sleep(Duration::from_millis(100));
    }
    progress.finish();
    stop_watch.store(true, Ordering::SeqCst);
    let _ = rt.block_on(watcher);

    // Metrics of every live process, then stop everything.
    let mut core_texts = Vec::new();
    for (i, port) in core_metrics.iter().enumerate() {
        if bed.cores[i].is_some() {
            core_texts.extend(scrape_to(
                rt,
                *port,
                &metrics_dir.join(format!("core-{i}.prom")),
            ));
        }
    }
    for (j, port) in driver_metrics.iter().enumerate() {
        scrape_to(rt, *port, &metrics_dir.join(format!("driver-{j}.prom")));
    }
    let from_cores = |name: &str| -> u64 {
        core_texts
            .iter()
            .filter_map(|t| sleepyseal_net::metrics::sample(t, name))
            .sum::<f64>() as u64
    };
    let core_totals = report::CoreTotals {
        own_headers_orphaned: from_cores("sleepyseal_core_own_headers_orphaned_total"),
        requeued_transactions: from_cores("sleepyseal_core_requeued_transactions_total"),
        busy_replies: from_cores("sleepyseal_core_busy_replies_total"),
    };
    let peak_rss: Vec<(Kind, u64)> = bed
        .all()
        .map(|p| (p.kind, p.peak_rss_kib().unwrap_or(0)))
        .collect();
    bed.stop_all();
    rt.block_on(clients.close());
    if !args.keep_testbed {
        let _ = std::fs::remove_dir_all(&testbed_dir);
    }
    let config = RunConfig {
        cores: n,
        drivers: args.drivers,
        clients: args.clients,
        rate,
        tx_size: args.tx_size,
        duration_s: args.duration,
        warmup_s: args.warmup,
        batch_size: args.batch_size,
        max_batch_delay_ms: args.max_batch_delay_ms,
        straggler_wait_ms: args.straggler_wait_ms,
        verify_batch: args.verify_batch,
        verify_threads: args.verify_threads,
        pipeline_depth: args.pipeline_depth,
        gc_depth: args.gc_depth,
        leader_timeout_ms: args.leader_timeout,
        crash: args.crash,
        crash_at_s: args.crash_at,
        watched_core: watched.0,
    };
    let observed = observed.lock().expect("not poisoned");
    Ok(report::build(
        config,
        core_totals,
        &observed,
        &loads,
        accepted,
        &report::ProcessSamples {
            cpu_start: cpu_at_start,
            cpu_end: cpu_at_end,
            peak_rss_kib: peak_rss,
        },
    ))
}

/// The metrics ports of `cores` cores and `drivers` drivers (QUIC: base + i; metrics: base +
/// 1000 + i and base + 1100 + j), after checking that all of them are free.
pub(crate) fn claim_ports(
    base: u16,
    cores: usize,
    drivers: usize,
) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
    let quic: Vec<u16> = (0..cores).map(|i| base + i as u16).collect();
    let core_metrics: Vec<u16> = (0..cores).map(|i| base + 1_000 + i as u16).collect();
    let driver_metrics: Vec<u16> = (0..drivers).map(|j| base + 1_100 + j as u16).collect();
    let tcp: Vec<u16> = core_metrics
        .iter()
        .chain(&driver_metrics)
        .copied()
        .collect();
    check_ports_free(&quic, &tcp)?;
    Ok((core_metrics, driver_metrics))
}

/// Starts core `i` of the testbed in `testbed_dir` with the harness's flags (plus `extra`).
pub(crate) fn spawn_core(
    args: &LocalArgs,
    committee: &str,
    testbed_dir: &Path,
    logs: &Path,
    i: usize,
    metrics_port: u16,
    extra: &[String],
) -> anyhow::Result<Proc> {
    let store = testbed_dir.join(format!("store-{i}"));
    let mut argv: Vec<String> = vec![
        "core".to_string(),
        format!("--committee={committee}"),
        format!(
            "--key={}",
            testbed_dir.join(format!("core-{i}.key")).display()
        ),
        format!("--store={}", store.display()),
        format!("--batch-size={}", args.batch_size),
        format!("--max-batch-delay-ms={}", args.max_batch_delay_ms),
        format!("--straggler-wait-ms={}", args.straggler_wait_ms),
        format!("--verify-batch={}", args.verify_batch),
        format!("--verify-threads={}", args.verify_threads),
        format!("--gc-depth={}", args.gc_depth),
        format!("--leader-timeout-ms={}", args.leader_timeout),
        format!("--vote-timeout-ms={}", args.leader_timeout),
        format!("--metrics-addr=127.0.0.1:{metrics_port}"),
    ];
    argv.extend_from_slice(extra);
    // Appending keeps earlier incarnations' lines (restarts).
    let log = logs.join(format!("core-{i}.log"));
    Proc::spawn(Kind::Core, i, &argv, &log, None)
}

/// Starts driver `j`.
pub(crate) fn spawn_driver(
    args: &LocalArgs,
    committee: &str,
    logs: &Path,
    j: usize,
    metrics_port: u16,
) -> anyhow::Result<Proc> {
    let argv: Vec<String> = vec![
        "driver".to_string(),
        format!("--committee={committee}"),
        format!("--pipeline-depth={}", args.pipeline_depth),
        format!("--metrics-addr=127.0.0.1:{metrics_port}"),
    ];
    Proc::spawn(
        Kind::Driver,
        j,
        &argv,
        &logs.join(format!("driver-{j}.log")),
        None,
    )
}

/// Waits until core `i` answers a read, failing on `deadline` or when `failed` reports a dead
/// process.
pub(crate) fn wait_ready(
    rt: &tokio::runtime::Runtime,
    clients: &Clients,
    instance: sleepyseal_core::Digest,
    i: usize,
    deadline: Instant,
    mut failed: impl FnMut() -> Option<String>,
) -> anyhow::Result<()> {
    loop {
        if let Some(why) = failed() {
            bail!("{why}");
        }
        let probe = Request {
            instance,
            body: RequestBody::ReadCommitted {
                from_index: 0,
                max: 1,
                with_payloads: false,
                wait_ms: 0,
            },
        };
        let client = clients.core(AuthorityIndex(i as u16)).clone();
        let ok = rt.block_on(async move {
            client
                .request(&probe, Duration::from_millis(500))
                .await
                .is_ok()
        });
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("core {i} did not answer within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Saves one process's metrics text and returns it (best effort: a failure is reported, not
/// fatal).
fn scrape_to(rt: &tokio::runtime::Runtime, port: u16, path: &Path) -> Option<String> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let text = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(2),
            sleepyseal_net::metrics::scrape(address),
        )
        .await
    });
    match text {
        Ok(Ok(text)) => {
            if let Err(e) = std::fs::write(path, &text) {
                eprintln!("write {}: {e}", path.display());
            }
            Some(text)
        }
        _ => {
            eprintln!("could not scrape metrics from {address}");
            None
        }
    }
}

/// Follows `core`'s commit stream with payloads until `stop`, recording every entry and every
/// load transaction into `observed`. A committed entry whose payload the watched core does not
/// hold yet (it inserted the certificate before the payload arrived) is completed from the other
/// cores, or read again a little later; only after 5 s is it counted as without payload.
async fn watch_commits(
    clients: Arc<Clients>,
    cores: usize,
    core: AuthorityIndex,
    instance: sleepyseal_core::Digest,
    observed: Arc<Mutex<Observed>>,
    stop: Arc<AtomicBool>,
) {
    let client = clients.core(core).clone();
    let mut next = 0u64;
    let mut waiting_since: Option<Instant> = None;
    // The entry the watcher is waiting on a payload for, and when it was first seen committed.
    let mut first_seen: Option<(u64, u64)> = None;
    while !stop.load(Ordering::SeqCst) {
        let request = Request {
            instance,
            body: RequestBody::ReadCommitted {
                from_index: next,
                max: 4_096,
                with_payloads: true,
                wait_ms: 200,
            },
        };
        let reply = client.request(&request, Duration::from_secs(5)).await;
        // Commit time: when the entry was first seen committed, whatever it took to get its
        // payload (that is the harness's business, not the system's latency).
        let seen_at = unix_micros();
        let (entries, mut payloads) = match reply {
            Ok(Response::Committed { entries, payloads }) => (entries, payloads),
            Ok(Response::Error(CoreError::CommittedEvicted { first_index })) => {
                observed.lock().expect("not poisoned").evicted += first_index - next;
                next = first_index;
                continue;
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let held = |payloads: &[sleepyseal_core::Payload], e: &sleepyseal_core::CommittedEntry| {
            e.payload.len == 0 || payloads.iter().any(|p| p.digest() == e.payload.digest)
        };
        let missing: Vec<_> = entries
            .iter()
            .filter(|e| !held(&payloads, e))
            .map(|e| e.payload.digest)
            .collect();
        if !missing.is_empty() {
            payloads.extend(fetch_payloads(&clients, cores, core, instance, missing).await);
        }
        {
            let mut o = observed.lock().expect("not poisoned");
            for e in &entries {
                let committed_at = match first_seen {
                    Some((index, at)) if index == e.index => at,
                    _ => seen_at,
                };
                let payload = payloads.iter().find(|p| p.digest() == e.payload.digest);
                let transactions = match (e.payload.len, payload) {
                    (0, _) => Some(Vec::new()),
                    (_, Some(p)) => p.transactions().ok(),
                    (_, None) => {
                        // Read again from here later, unless it has been missing too long.
                        let since = *waiting_since.get_or_insert_with(Instant::now);
                        first_seen.get_or_insert((e.index, committed_at));
                        if since.elapsed() < Duration::from_secs(5) {
                            break;
                        }
                        None
                    }
                };
                waiting_since = None;
                first_seen = None;
                o.record_entry(committed_at, e, transactions.as_deref(), parse_transaction);
                next = e.index + 1;
            }
        }
        if waiting_since.is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Asks every core but `skip` for the payloads with `digests`; returns those found.
async fn fetch_payloads(
    clients: &Clients,
    cores: usize,
    skip: AuthorityIndex,
    instance: sleepyseal_core::Digest,
    mut digests: Vec<sleepyseal_core::Digest>,
) -> Vec<sleepyseal_core::Payload> {
    let mut found = Vec::new();
    for i in 0..cores {
        let peer = AuthorityIndex(i as u16);
        if peer == skip || digests.is_empty() {
            continue;
        }
        let request = Request {
            instance,
            body: RequestBody::FetchPayloads {
                digests: digests.clone(),
            },
        };
        if let Ok(Response::Certificates { payloads, .. }) = clients
            .core(peer)
            .request(&request, Duration::from_secs(2))
            .await
        {
            digests.retain(|d| !payloads.iter().any(|p| p.digest() == *d));
            found.extend(payloads);
        }
    }
    found
}
